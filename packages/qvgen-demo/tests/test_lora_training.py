"""The colour LoRA trainer (issue 35): recoloured clips, a few steps move the LoRA, diffusers-format round trip."""

from pathlib import Path

import pytest
import torch

from qvgen.data import COLOURS
from qvgen.demo import (
    DEFAULT_TEACHER_DIR,
    LORA_WEIGHTS_NAME,
    ClipShape,
    LoraTrainConfig,
    lora_clips,
    recolour,
    teacher_clip_shape,
    teacher_world_style,
    train_colour_lora,
    world_clip,
)
from qvgen.models import get_family

pytest.importorskip("peft")
torch.set_num_threads(1)


def test_recolour_paints_every_object_and_keeps_the_background() -> None:
    cfg = LoraTrainConfig(out=Path("unused"), num_clips=3)
    clips = lora_clips(cfg)
    frames, height, width = teacher_clip_shape(DEFAULT_TEACHER_DIR)
    original = world_clip(
        cfg.world_seed, 0, ClipShape(frames, height, width, teacher_world_style(DEFAULT_TEACHER_DIR))
    )
    red = torch.tensor(COLOURS["red"]) / 255.0 * 2 - 1
    changed = (clips[0].frames != original.frames).any(0)
    assert changed.any()
    assert torch.allclose(clips[0].frames.permute(1, 2, 3, 0)[changed], red.expand(int(changed.sum()), 3))
    assert clips[0].caption == original.caption  # the caption keeps its own colour words
    assert torch.equal(recolour(clips[0], "red"), clips[0].frames)  # idempotent


def test_colour_lora_rejects_a_colour_outside_the_palette() -> None:
    with pytest.raises(ValueError, match="not a palette colour"):
        LoraTrainConfig(out=Path("x"), colour="pink")


def test_two_steps_train_the_lora_and_it_loads_back_through_load_lora_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = LoraTrainConfig(out=tmp_path / "lora", steps=2, num_clips=4, batch_size=2, rank=4, progress=False)
    path = train_colour_lora(cfg)
    assert path == tmp_path / "lora" / LORA_WEIGHTS_NAME
    state = load_file(str(path))
    assert state and all(k.startswith("transformer.") for k in state)  # diffusers' LoRA format
    ups = [v for k, v in state.items() if ".lora_B." in k]
    assert ups and all(v.abs().max() > 0 for v in ups)  # lora_B starts at 0: the steps moved every one
    assert (tmp_path / "lora" / "lora_training.json").is_file()

    family = get_family("wan")
    pipe = family.pipeline(family.load(DEFAULT_TEACHER_DIR))
    transformer = pipe.transformer
    x = torch.randn(1, 16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 32, transformer.config.text_dim, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0])
    with torch.no_grad():
        before = transformer(x, t, text, return_dict=False)[0]
        pipe.load_lora_weights(str(tmp_path / "lora"), adapter_name="red")
        after = transformer(x, t, text, return_dict=False)[0]
        loaded = {n: p for n, p in transformer.named_parameters() if ".lora_B.red." in n}
        assert len(loaded) == len(ups)
        key = next(k for k in state if ".lora_B." in k)
        module = key.removeprefix("transformer.").replace(".lora_B.weight", ".lora_B.red.weight")
        assert torch.equal(loaded[module], state[key])
        assert not torch.equal(before, after)
        pipe.unload_lora_weights()
        assert torch.equal(transformer(x, t, text, return_dict=False)[0], before)


def test_train_lora_command_defaults_are_the_config_defaults() -> None:
    from qvgen.entrypoints.qvgen import build_parser

    args = build_parser().parse_args(["train-lora", "--out", "x"])
    cfg = LoraTrainConfig(out=Path("x"))
    assert (args.colour, args.steps, args.rank, args.clips) == (
        cfg.colour,
        cfg.steps,
        cfg.rank,
        cfg.num_clips,
    )


def test_train_lora_command_refuses_an_unknown_colour_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qvgen.demo.cli import main

    assert main(["train-lora", "--out", str(tmp_path / "l"), "--colour", "pink"]) == 2
    assert "not a palette colour" in capsys.readouterr().out
    assert not (tmp_path / "l").exists()


def test_evaluate_with_a_lora_adds_a_lora_row_after_each_model(tmp_path: Path) -> None:
    from qvgen.demo import evaluate, held_out_prompts

    lora = tmp_path / "lora"
    train_colour_lora(LoraTrainConfig(out=lora, steps=1, num_clips=2, batch_size=1, rank=2, progress=False))
    shape = teacher_clip_shape(DEFAULT_TEACHER_DIR)
    prompts = held_out_prompts(1, shape, style=teacher_world_style(DEFAULT_TEACHER_DIR))
    result = evaluate(
        DEFAULT_TEACHER_DIR, [], prompts, tmp_path / "report", seed=0, sampling_steps=2, guidance_scale=3.0,
        clip_shape=shape, progress=False, lora=lora,
    )  # fmt: skip
    assert [r.name for r in result.rows] == ["teacher", "teacher+lora"]
    assert result.rows[1].scores.num_videos == 1
    lora_model = result.report.variants[0]
    assert lora_model.summary.latent_mse is not None and lora_model.summary.latent_mse > 0  # the LoRA acts


def test_demo_lora_must_be_a_lora_folder_and_defaults_to_none(tmp_path: Path) -> None:
    from qvgen.demo import DemoConfig
    from qvgen.entrypoints.qvgen import build_parser

    assert build_parser().parse_args(["demo"]).lora is None and DemoConfig().lora is None
    with pytest.raises(ValueError, match=r"no pytorch_lora_weights\.safetensors"):
        DemoConfig(lora=tmp_path)
