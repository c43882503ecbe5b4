import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from qvgen.data import COLOURS, DIRECTIONS, SHAPES, make_clip
from qvgen.demo.cli import main
from qvgen.demo.teacher import (
    CARD_NAME,
    DEFAULT_TEACHER_DIR,
    REPORT_NAME,
    TeacherConfig,
    balanced_captions,
    model_card,
    reevaluate_teacher,
    retrain_command,
    sample_teacher,
    train_teacher,
)
from qvgen.eval import parse_caption, score_videos
from qvgen.models import get_family

MICRO = {
    "vae_image_steps": 2,
    "vae_image_batch_size": 2,
    "vae_steps": 2,
    "vae_batch_size": 2,
    "vae_clips": 2,
    "num_clips": 3,
    "steps": 2,
    "batch_size": 2,
    "warmup_steps": 1,
    "eval_prompts": 2,
    "eval_clips": 2,
    "num_inference_steps": 2,
    "guidance_sweep": [2.0, 3.0],
}


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    return train_teacher(TeacherConfig(out=root / "tiny", work_dir=root / "work", **MICRO))


def test_two_step_run_writes_a_loadable_diffusers_folder_with_report_and_card(micro_teacher: Path):
    report = json.loads((micro_teacher / REPORT_NAME).read_text())
    assert report["vae"]["images"]["steps"] == 2 and report["vae"]["clips"]["steps"] == 2
    assert report["transformer"]["steps"] == 2
    assert report["config"]["num_clips"] == 3
    assert set(report["quality"]) >= {"teacher", "ground_truth", "vae_reconstruction", "vae_psnr_db"}
    assert list(report["quality"]["teacher_by_guidance"]) == ["2.0", "3.0"]
    card = (micro_teacher / CARD_NAME).read_text()
    assert retrain_command(report["config"]) in card
    family = get_family("wan")
    components = family.load(micro_teacher)
    # The latent statistics written into the VAE config normalise its latents of the training clips.
    cfg = TeacherConfig(**MICRO)
    clips = torch.stack([make_clip(cfg.world_seed, i, frames=9, max_objects=1).frames for i in range(2)])
    with torch.no_grad():
        z = family.normalize_latents(components.vae.encode(clips).latent_dist.mean, components.vae.config)
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-4
    assert torch.allclose(z.std(dim=(0, 2, 3, 4)), torch.ones(16), atol=1e-4)
    videos = sample_teacher(components, ["a red square moves left"], cfg, seed=0)
    assert videos.shape == (1, 9, 64, 64, 3) and np.isfinite(videos).all()


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
    argv = ["train-teacher", "--out", str(again), "--vae-steps", "2", "--steps", "2"]
    argv += [f"--set={k}={json.dumps(v)}" for k, v in MICRO.items() if k not in {"vae_steps", "steps"}]
    assert main(argv) == 0
    assert f"wrote {again}" in capsys.readouterr().out
    assert _same_weights(micro_teacher, again)
    report_a = json.loads((micro_teacher / REPORT_NAME).read_text())
    report_b = json.loads((again / REPORT_NAME).read_text())
    assert report_a["quality"] == report_b["quality"]


def test_rerun_in_the_same_work_dir_reuses_the_vae_and_shards(micro_teacher: Path, tmp_path: Path):
    work = micro_teacher.parent / "work"
    again = train_teacher(TeacherConfig(out=tmp_path / "again", work_dir=work, **MICRO))
    report = json.loads((again / REPORT_NAME).read_text())
    assert report["vae"]["reused_from"].startswith(str(work))
    assert _same_weights(micro_teacher, again)


def test_balanced_captions_cover_the_vocabulary_and_parse():
    captions = balanced_captions(84)
    claims = [parse_caption(c)[0] for c in captions]
    assert len(set(captions)) == 84 == len(COLOURS) * len(SHAPES) * len(DIRECTIONS)
    assert {c.colour for c in claims[:28]} == set(COLOURS) and {c.direction for c in claims[:28]} == set(
        DIRECTIONS
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("frames", 10, "4k\\+1"), ("height", 72, "multiples of 16"), ("vae_crop", 80, "vae_crop")],
)
def test_config_rejects_shapes_the_wan_vae_cannot_take(field, value, message):
    with pytest.raises(ValidationError, match=message):
        TeacherConfig(**{field: value})


def test_evaluate_only_rescores_saved_weights_with_new_guidance(micro_teacher: Path, tmp_path: Path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(micro_teacher, folder)
    assert (
        main(["train-teacher", "--evaluate-only", "--out", str(folder), "--set", "guidance_sweep=[4.0]"]) == 0
    )
    report = json.loads((folder / REPORT_NAME).read_text())
    assert report["evaluated_separately"] and list(report["quality"]["teacher_by_guidance"]) == ["2.0", "4.0"]
    assert (folder / CARD_NAME).read_text() == model_card(report)
    with pytest.raises(ValueError, match="retrain instead"):
        reevaluate_teacher(folder, steps=5)


def test_cli_rejects_a_bad_setting_with_exit_code_2(capsys):
    assert main(["train-teacher", "--set", "frames=10"]) == 2
    assert "frames must be 4k+1" in capsys.readouterr().out


def test_retrain_command_lists_only_changed_fields():
    assert retrain_command(json.loads(TeacherConfig().model_dump_json())) == "qvgen train-teacher"
    changed = json.loads(TeacherConfig(steps=10, out=Path("x")).model_dump_json())
    assert retrain_command(changed) == "qvgen train-teacher --set steps=10"


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
    assert f"{report['quality']['teacher']['colour']:.3f}" in card


@committed
def test_committed_teacher_draws_the_stated_colour_and_motion_above_chance():
    components = get_family("wan").load(DEFAULT_TEACHER_DIR)
    report = json.loads((DEFAULT_TEACHER_DIR / REPORT_NAME).read_text())
    cfg = TeacherConfig.model_validate({**report["config"], "out": DEFAULT_TEACHER_DIR})
    prompts = balanced_captions(8)
    videos = sample_teacher(components, prompts, cfg, seed=cfg.eval_seed)
    scores = score_videos(list(videos), prompts)
    # Chance is 1/7 for colour and 1/4 for motion; these 8 seeded prompts are the report's first 8.
    assert scores.colour > 1 / 7 and scores.motion > 1 / 4
