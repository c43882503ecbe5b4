import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from qvgen.data import COLOURS, DIRECTIONS, SHAPES, make_clip
from qvgen.demo import (
    CARD_NAME,
    DEFAULT_TEACHER_DIR,
    REPORT_NAME,
    ClipShape,
    TeacherConfig,
    balanced_captions,
    build_teacher_components,
    heldout_captions,
    reevaluate_teacher,
    sample_teacher,
    train_teacher,
    world_clip,
    write_world_shards,
)
from qvgen.demo.cli import main
from qvgen.demo.model_card import model_card, retrain_command
from qvgen.demo.teacher_config import LEGACY_VALUES, report_config
from qvgen.demo.vae_training import clip_shape
from qvgen.models import get_family

MICRO = {
    "vae_image_steps": 2,
    "vae_image_batch_size": 2,
    "vae_steps": 2,
    "vae_batch_size": 2,
    "vae_clips": 2,
    "vae_finetune_steps": 2,
    "vae_decoder_steps": 2,
    "text_steps": 2,
    "text_batch_size": 4,
    "num_clips": 3,
    "steps": 2,
    "finetune_steps": 2,
    "batch_size": 2,
    "warmup_steps": 1,
    "eval_one_object": 1,
    "eval_two_object": 1,
    "eval_sample_seeds": 1,
    "num_inference_steps": 2,
    "guidance_sweep": [2.0, 3.0],
}


def _parse_caption():  # the grammar's parser is moving from qvgen.eval to qvgen.data
    import qvgen.data
    import qvgen.eval

    return getattr(qvgen.data, "parse_caption", None) or qvgen.eval.parse_caption


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    return train_teacher(TeacherConfig(out=root / "tiny", work_dir=root / "work", **MICRO), progress=False)


def test_two_step_run_writes_a_loadable_diffusers_folder_with_report_and_card(micro_teacher: Path):
    report = json.loads((micro_teacher / REPORT_NAME).read_text())
    assert report["vae"]["images"]["steps"] == 2 and report["vae"]["clips"]["steps"] == 2
    assert report["vae"]["clips_finetune"]["steps"] == 2 and report["vae"]["decoder"]["steps"] == 2
    assert set(report["phase_seconds"]) == {"text", "vae", "shards", "transformer", "decoder", "eval"}
    assert report["text_encoder"]["steps"] == 2 and report["text_encoder"]["trained_encoder"]
    assert report["transformer"]["steps"] == 2 and report["transformer"]["stage2"]["steps"] == 2
    assert report["config"]["num_clips"] == 3
    quality = report["quality"]
    assert set(quality) >= {"teacher", "ground_truth", "vae_reconstruction", "vae_psnr_db"}
    assert set(quality["teacher"]) == {"all", "one_object", "two_object"}
    assert list(quality["teacher_by_guidance"]) == ["3.0", "2.0"]
    assert quality["ground_truth"]["two_object"]["colour"] == 1.0  # the references really are scored
    card = (micro_teacher / CARD_NAME).read_text()
    assert retrain_command(report["config"]) in card
    family = get_family("wan")
    components = family.load(micro_teacher)
    # The latent statistics written into the VAE config normalise its latents of the training clips.
    cfg = TeacherConfig(**MICRO)
    clips = torch.stack([world_clip(cfg.world_seed, i, clip_shape(cfg)).frames for i in range(2)])
    with torch.no_grad():
        z = family.normalize_latents(components.vae.encode(clips).latent_dist.mean, components.vae.config)
    assert z.shape == (2, cfg.vae_z_dim, 3, 16, 16)
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-4
    assert torch.allclose(z.std(dim=(0, 2, 3, 4)), torch.ones(cfg.vae_z_dim), atol=1e-4)
    videos = sample_teacher(components, ["a red square moves left"], cfg, seed=0)
    assert videos.shape == (1, 9, 64, 64, 3) and np.isfinite(videos).all()


def test_wan_pipeline_samples_the_4x_latent_size_of_the_teacher_vae():
    components = build_teacher_components(seed=0, patch_size=4, z_dim=8)
    family = get_family("wan")
    pipe = family.pipeline(components)
    kwargs = family.sample_kwargs(
        components, height=64, width=64, num_frames=9, num_inference_steps=1, guidance_scale=1.0
    )
    generator = torch.Generator().manual_seed(0)
    latents = pipe(prompt=["a red square moves left"], generator=generator, output_type="latent", **kwargs)
    assert tuple(latents.frames.shape) == (1, 8, 3, 16, 16)  # 4× spatial, 4× temporal, z_dim channels
    assert components.transformer.config.patch_size == (1, 4, 4)
    frames = pipe(prompt=["a red square moves left"], output_type="np", **kwargs).frames
    assert frames.shape == (1, 9, 64, 64, 3)


def test_num_heads_4_makes_a_256_wide_transformer_that_holds_a_whole_token():
    components = build_teacher_components(seed=0, patch_size=4, num_heads=4)
    transformer: Any = components.transformer
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 256
    assert transformer.proj_out.in_features == transformer.proj_out.out_features == 16 * 4 * 4
    x = torch.randn(1, 16, 3, 16, 16)
    out = transformer(x, torch.tensor([500.0]), torch.randn(1, 16, 64), return_dict=False)[0]
    assert out.shape == x.shape


def test_text_length_32_holds_every_two_object_caption_and_16_does_not():
    from itertools import product

    from qvgen.data import COLOURS, DIRECTIONS, SHAPES, CaptionClause

    clauses = [CaptionClause(c, s, d).phrase for c, s, d in product(COLOURS, SHAPES, DIRECTIONS)]
    tokenizer = build_teacher_components(seed=0, patch_size=4, text_length=32).tokenizer
    assert tokenizer.model_max_length == 32
    lengths = {clause: len(tokenizer(clause).input_ids) for clause in clauses}  # each ends with </s>
    longest = sorted(clauses, key=lengths.__getitem__)[-2:]
    caption_tokens = len(tokenizer(" and ".join(longest)).input_ids)
    assert 16 < caption_tokens <= 32
    with pytest.raises(ValueError, match="text_length"):
        TeacherConfig(text_length=4)


def _tree_digest(folder: Path) -> str:

    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return digest.hexdigest()


def test_world_shards_are_lossless_and_identical_across_builds(tmp_path: Path):
    components = build_teacher_components(seed=0, patch_size=4)
    shape = ClipShape(frames=9, height=32, width=32)
    for name in ("a", "b"):
        write_world_shards(components, 5, 3, shape, tmp_path / name, batch=2, progress=False)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    from qvgen.data import LoaderConfig, make_loader

    batch = next(iter(make_loader(LoaderConfig(shards=tmp_path / "a", batch_size=3, mode="eval"))))
    truth = torch.stack([make_clip(5, i, frames=9, height=32, width=32).frames for i in range(3)])
    with torch.no_grad():
        expected = components.vae.encode(truth).latent_dist.mean
    torch.testing.assert_close(batch.latents_mean.float(), expected)  # no video codec in between


def _same_weights(a: Path, b: Path) -> bool:
    family = get_family("wan")
    ca, cb = family.load(a), family.load(b)
    pairs = [(ca.transformer, cb.transformer), (ca.vae, cb.vae)]
    return all(
        torch.equal(x, y)
        for ma, mb in pairs
        for x, y in zip(ma.state_dict().values(), mb.state_dict().values())
    )


def test_cli_run_of_the_same_config_reproduces_the_weights(micro_teacher: Path, tmp_path: Path, capsys):
    again = tmp_path / "again"
    argv = ["train-teacher", "--no-progress", "--out", str(again), "--vae-steps", "2", "--steps", "2"]
    argv += [f"--set={k}={json.dumps(v)}" for k, v in MICRO.items() if k not in {"vae_steps", "steps"}]
    assert main(argv) == 0
    assert f"wrote {again}" in capsys.readouterr().out
    assert _same_weights(micro_teacher, again)
    report_a = json.loads((micro_teacher / REPORT_NAME).read_text())
    report_b = json.loads((again / REPORT_NAME).read_text())
    assert report_a["quality"] == report_b["quality"]


def test_rerun_in_the_same_work_dir_reuses_the_vae_and_shards(micro_teacher: Path, tmp_path: Path):
    work = micro_teacher.parent / "work"
    again = train_teacher(TeacherConfig(out=tmp_path / "again", work_dir=work, **MICRO), progress=False)
    report = json.loads((again / REPORT_NAME).read_text())
    assert report["vae"]["reused_from"].startswith(str(work))
    assert report["transformer"]["reused_from"].startswith(str(work))
    assert report["transformer"]["stage2"]["reused_from"].startswith(str(work))
    assert report["vae"]["decoder"]["reused_from"].startswith(str(work))
    assert _same_weights(micro_teacher, again)


def test_vae_from_takes_another_teachers_vae_as_is_and_names_it(micro_teacher: Path, tmp_path: Path):
    cfg = TeacherConfig(out=tmp_path / "borrowed", work_dir=tmp_path / "work", vae_from=micro_teacher,
                        **{**MICRO, "steps": 1, "finetune_steps": 0})  # fmt: skip
    out = train_teacher(cfg, progress=False)
    weights = "diffusion_pytorch_model.safetensors"
    assert (out / "vae" / weights).read_bytes() == (micro_teacher / "vae" / weights).read_bytes()

    def config(folder: Path) -> dict:
        return {
            k: v
            for k, v in json.loads((folder / "vae/config.json").read_text()).items()
            if k != "_name_or_path"
        }

    assert config(out) == config(micro_teacher)  # latent statistics included
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["vae"]["from"] == str(micro_teacher) and report["vae"]["steps"] == 0
    assert report["vae"]["decoder"] == {"steps": 0}
    assert report["vae"]["source_retrain_command"].startswith("qvgen train-teacher")
    assert report["vae"]["source_config"] == json.loads((micro_teacher / REPORT_NAME).read_text())["config"]
    card = (out / CARD_NAME).read_text()
    assert f"the one of `{micro_teacher}`" in card and report["vae"]["sha256"][:12] in card
    assert "vae_from" in card  # in the retrain command and the config
    # borrowing from a teacher that borrowed credits the run that trained the VAE
    again = train_teacher(cfg.model_copy(update={"vae_from": out, "out": tmp_path / "again"}), progress=False)
    chained = json.loads((again / REPORT_NAME).read_text())["vae"]
    assert chained["from"] == str(out) and chained["source_config"] == report["vae"]["source_config"]
    assert chained["source_retrain_command"] == report["vae"]["source_retrain_command"]
    with pytest.raises(ValueError, match=r"vae/config.json: z_dim 16 differs .* vae_z_dim 8"):
        train_teacher(cfg.model_copy(update={"vae_z_dim": 8, "out": tmp_path / "z8"}), progress=False)
    with pytest.raises(FileNotFoundError, match="vae_from names no teacher folder"):
        train_teacher(cfg.model_copy(update={"vae_from": tmp_path, "out": tmp_path / "none"}), progress=False)


def test_a_borrowed_vae_is_known_by_its_content_not_its_path(micro_teacher: Path, tmp_path: Path):
    import dataclasses
    import shutil

    from qvgen.demo.teacher import _borrowed_vae, _identity
    from qvgen.demo.teacher_config import SHARD_FIELDS

    copy = shutil.copytree(micro_teacher, tmp_path / "copy")
    components = build_teacher_components(seed=0, patch_size=4)
    names = []
    for folder in (micro_teacher, copy):
        cfg = TeacherConfig(vae_from=folder, **MICRO)
        vae, _ = _borrowed_vae(type(components.vae), cfg)
        names.append(_identity(cfg, SHARD_FIELDS, dataclasses.replace(components, vae=vae)))
    assert names[0] == names[1]
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # another VAE under the same path
    assert _identity(cfg, SHARD_FIELDS, dataclasses.replace(components, vae=vae)) != names[1]


def test_train_teacher_refuses_to_overwrite_the_committed_teacher_without_the_flag(capsys):
    before = {p: p.stat().st_mtime_ns for p in DEFAULT_TEACHER_DIR.rglob("*")}
    assert main(["train-teacher", "--steps", "1"]) == 2
    assert "--overwrite-embedded" in capsys.readouterr().out
    assert main(["train-teacher", "--evaluate-only"]) == 2
    assert {p: p.stat().st_mtime_ns for p in DEFAULT_TEACHER_DIR.rglob("*")} == before


def test_train_teacher_refuses_an_out_folder_that_holds_something_else(tmp_path: Path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    assert main(["train-teacher", "--out", str(out), "--steps", "1"]) == 1
    assert "not a teacher folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_balanced_captions_cover_the_vocabulary_and_parse():
    captions = balanced_captions(84)
    parse = _parse_caption()
    claims = [parse(c)[0] for c in captions]
    assert len(set(captions)) == 84 == len(COLOURS) * len(SHAPES) * len(DIRECTIONS)
    assert {c.colour for c in claims[:28]} == set(COLOURS)
    assert {c.direction for c in claims[:28]} == set(DIRECTIONS)


def test_balanced_captions_of_the_elongated_world_use_its_shapes():
    from qvgen.data import SHAPE_SETS

    parse = _parse_caption()
    shapes = SHAPE_SETS["elongated"]
    assert {parse(c)[0].shape for c in balanced_captions(6, shapes)} == set(shapes)


def test_the_shape_set_enters_the_phase_digests_only_away_from_its_default():
    from qvgen.demo.teacher_config import SHARD_FIELDS, digest

    # the digest of a default-world config is the one it had before shape sets existed
    assert digest(TeacherConfig(), SHARD_FIELDS) == "54903a1b84e5"
    assert digest(TeacherConfig(shapes="elongated"), SHARD_FIELDS) != "54903a1b84e5"
    assert digest(TeacherConfig(text_steps=10), SHARD_FIELDS) != "54903a1b84e5"
    assert TeacherConfig(shapes="elongated").world_style.shapes == "elongated"
    assert '--set shapes="elongated"' in retrain_command(
        json.loads(TeacherConfig(shapes="elongated").model_dump_json())
    )


def test_heldout_captions_come_one_object_first_then_two_objects_from_the_eval_world():
    cfg = TeacherConfig(eval_one_object=3, eval_two_object=2)
    captions = heldout_captions(cfg)
    assert [c.count(" moves ") for c in captions] == [1, 1, 1, 2, 2]
    training = {world_clip(cfg.world_seed, i, clip_shape(cfg)).caption for i in range(5)}
    assert captions[0] == world_clip(cfg.eval_seed, 0, clip_shape(cfg), num_objects=1).caption
    assert training != set(captions)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("frames", 10, "4k\\+1"), ("height", 72, "multiples of 16"), ("vae_crop", 80, "vae_crop"),
     ("patch_size", 3, "patch_size")],
)  # fmt: skip
def test_config_rejects_shapes_the_wan_vae_cannot_take(field, value, message):
    with pytest.raises(ValidationError, match=message):
        TeacherConfig(**{field: value})


def test_evaluate_only_rescores_saved_weights_with_new_guidance(micro_teacher: Path, tmp_path: Path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(micro_teacher, folder)
    argv = ["train-teacher", "--evaluate-only", "--out", str(folder), "--set", "guidance_sweep=[4.0]"]
    assert main(argv) == 0
    report = json.loads((folder / REPORT_NAME).read_text())
    assert report["evaluated_separately"] and list(report["quality"]["teacher_by_guidance"]) == ["3.0", "4.0"]
    assert (folder / CARD_NAME).read_text() == model_card(report)
    with pytest.raises(ValueError, match="retrain instead"):
        reevaluate_teacher(folder, steps=5)


def test_cli_rejects_a_bad_setting_with_exit_code_2(capsys):
    assert main(["train-teacher", "--set", "frames=10"]) == 2
    assert "frames must be 4k+1" in capsys.readouterr().out


def test_set_values_are_yaml_and_only_given_fields_count_as_set():
    from qvgen.demo.cli import build_parser
    from qvgen.demo.teacher_cli import config_from_args

    argv = ["train-teacher", "--set", "guidance_sweep=[2, 4.5]", "--set", "vae_lr=0.002", "--steps", "7"]
    argv += ["--set", "steps=99", "--set", "out=runs/t"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.guidance_sweep == (2.0, 4.5) and cfg.vae_lr == 0.002 and cfg.out == Path("runs/t")
    assert cfg.steps == 7  # the named option wins over --set
    assert cfg.model_fields_set == {"guidance_sweep", "vae_lr", "steps", "out"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        config_from_args(build_parser().parse_args(["train-teacher", "--set", "steps"]))
    with pytest.raises(ValueError, match="guidance_sweep"):
        config_from_args(build_parser().parse_args(["train-teacher", "--set", "guidance_sweep=[0.5]"]))


def test_retrain_command_lists_only_changed_fields():
    default = retrain_command(json.loads(TeacherConfig().model_dump_json()))
    assert default == "qvgen train-teacher --out DIR"
    changed = json.loads(TeacherConfig(steps=10, guidance_sweep=(2.0,), out=Path("x")).model_dump_json())
    assert (
        retrain_command(changed) == "qvgen train-teacher --out DIR --set steps=10 --set guidance_sweep=[2.0]"
    )
    # a report written before the world and size fields existed is read with the values it was trained with
    legacy = {
        k: v for k, v in json.loads(TeacherConfig().model_dump_json()).items() if k not in LEGACY_VALUES
    }
    filled = report_config(legacy)
    assert {k: filled[k] for k in LEGACY_VALUES} == LEGACY_VALUES
    assert TeacherConfig.model_validate(filled).vae_z_dim == 16 and filled["steps"] == legacy["steps"]
    lanes = json.loads(TeacherConfig(layout="lanes", vae_z_dim=8).model_dump_json())
    assert retrain_command(lanes) == 'qvgen train-teacher --out DIR --set layout="lanes" --set vae_z_dim=8'


committed = pytest.mark.skipif(
    not (DEFAULT_TEACHER_DIR / "model_index.json").is_file(), reason="the teacher has not been trained yet"
)


@committed
def test_committed_teacher_is_small_and_documented():
    size = sum(p.stat().st_size for p in DEFAULT_TEACHER_DIR.rglob("*") if p.is_file())
    assert size < 20 * 2**20
    report = json.loads((DEFAULT_TEACHER_DIR / REPORT_NAME).read_text())
    card = (DEFAULT_TEACHER_DIR / CARD_NAME).read_text()
    # The card is rendered from the report of the run that wrote the weights, numbers included.
    assert card == model_card(report)
    assert f"{report['quality']['teacher']['all']['colour']:.3f}" in card


@committed
def test_committed_teacher_draws_the_stated_colour_above_chance():
    from qvgen.eval import score_videos

    components = get_family("wan").load(DEFAULT_TEACHER_DIR)
    report = json.loads((DEFAULT_TEACHER_DIR / REPORT_NAME).read_text())
    cfg = TeacherConfig.model_validate({**report_config(report["config"]), "out": DEFAULT_TEACHER_DIR})
    prompts = balanced_captions(8)
    videos = sample_teacher(components, prompts, cfg, seed=cfg.eval_seed)
    scores = score_videos(list(videos), prompts)
    # Chance is 1/7 for colour. Shape and motion of this teacher are near chance (1/3, 1/4): see its card.
    assert scores.colour > 0.5


def test_decoder_finetune_changes_the_decoder_only():
    from qvgen.demo.vae_training import finetune_decoder

    components = build_teacher_components(seed=0, patch_size=4)
    vae = components.vae
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    log = finetune_decoder(vae, TeacherConfig(**MICRO), progress=False)
    after = vae.state_dict()
    assert log["steps"] == 2
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert any(k.startswith("decoder.") for k in changed)
    assert not any(p.requires_grad for p in vae.parameters())


@committed
def test_recipe_of_the_committed_teacher_retrains_its_config(tmp_path: Path, monkeypatch):
    from qvgen.demo.cli import build_parser
    from qvgen.demo.teacher_cli import config_from_args

    monkeypatch.chdir(tmp_path)  # the recorded vae_from is relative to a checkout: read as the installed copy
    argv = ["train-teacher", "--recipe-of", str(DEFAULT_TEACHER_DIR), "--out", "again", "--set", "steps=10"]
    cfg = config_from_args(build_parser().parse_args(argv))
    recorded = report_config(json.loads((DEFAULT_TEACHER_DIR / REPORT_NAME).read_text())["config"])
    got = json.loads(cfg.model_dump_json())
    assert cfg.out == Path("again") and cfg.work_dir is None and cfg.steps == 10
    assert {k: v for k, v in got.items() if k not in ("out", "work_dir", "steps", "vae_from")} == {
        k: v for k, v in recorded.items() if k not in ("out", "work_dir", "steps", "vae_from")
    }
    assert cfg.vae_from is not None and (cfg.vae_from / "vae" / "config.json").is_file()
    assert cfg.vae_from.resolve() == DEFAULT_TEACHER_DIR.resolve()


def test_recipe_of_names_a_folder_without_a_report(tmp_path: Path):
    from qvgen.demo.cli import build_parser
    from qvgen.demo.teacher_cli import config_from_args

    with pytest.raises(ValueError, match=rf"{tmp_path}/{REPORT_NAME}: not a teacher training report"):
        config_from_args(build_parser().parse_args(["train-teacher", "--recipe-of", str(tmp_path)]))
    (tmp_path / REPORT_NAME).write_text(json.dumps({"config": [1, 2]}))
    with pytest.raises(ValueError, match="config is a list"):
        config_from_args(build_parser().parse_args(["train-teacher", "--recipe-of", str(tmp_path)]))
    argv = ["train-teacher", "--recipe-of", str(tmp_path), "--evaluate-only"]
    with pytest.raises(ValueError, match="give one"):
        config_from_args(build_parser().parse_args(argv))
