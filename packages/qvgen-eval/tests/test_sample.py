"""Sampling on the tiny Wan and CogVideoX: timestep groups under CFG, the CLI, 2-process sampling."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qvgen import quant
from qvgen.eval import (
    SamplingSettings,
    from_components,
    generate,
    pipeline_kwargs,
    plan_items,
    read_video,
    sidecar_path,
)
from qvgen.eval.cli import main
from qvgen.eval.probes import record_clip_groups
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint

SMALL = {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": 4}


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_under_cfg_every_quantized_layer_uses_the_group_of_the_timestep_being_denoised(family):
    fam = get_family(family)
    components = fam.load(tiny_checkpoint(family))
    groups = 50
    cfg = quant.QuantConfig(activation=quant.ClippedDynamicActivation(groups=groups, group_mode="bin"))
    layers = quant.prepare_(components.transformer, cfg, layer_roles=fam.layer_roles)
    quant.initialize_(components.transformer, progress=False)
    model = from_components(fam, components)
    kwargs = pipeline_kwargs(model, SamplingSettings(**SMALL, guidance_scale=5.0))
    item = plan_items(["a cat playing piano"], 1, seed=3)[0]

    with record_clip_groups(components.transformer) as calls:
        generate(model, item, kwargs)

    schedule = [float(t) for t in model.pipeline.scheduler.timesteps]
    assert len(set(schedule)) == SMALL["num_inference_steps"]
    if family == "wan":  # cond and uncond as two calls per step, batch 1 each
        expected = [[t] for t in schedule for _ in range(2)]
    else:  # CFG batched: one call per step, batch 2
        expected = [[t, t] for t in schedule]
    assert [c.timestep.double().tolist() for c in calls] == expected
    for call, ts in zip(calls, expected, strict=True):
        assert set(call.groups) == {f"{name}.act_quantizer" for name in layers}
        want = [min(groups - 1, math.floor(t * groups / 1000)) for t in ts]
        for name, g in call.groups.items():
            assert g.tolist() == want, (name, ts)
    used = {tuple(g.tolist()) for c in calls for g in c.groups.values()}
    assert len(used) == SMALL["num_inference_steps"]  # one distinct group per step, never a call counter


def _write_config(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def _sample_config(tmp_path: Path, out: Path, prompts: list[str]) -> Path:
    return _write_config(
        tmp_path / f"sample-{out.name}.yaml",
        family="wan",
        model={"kind": "full_precision", "path": str(tiny_checkpoint("wan"))},
        prompts={"prompts": prompts},
        out_dir=str(out),
        seed=5,
        sampling={**SMALL, "guidance_scale": 4.0},
        device="cpu",
    )


def test_cli_sample_writes_vbench_named_videos_and_skips_existing(tmp_path, capsys):
    cfg = _sample_config(tmp_path, tmp_path / "out", ["a dog", "a cat"])
    assert main(["sample", str(cfg), "--set", "prompts.videos_per_prompt=2"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("*.mp4"))
    assert names == ["a cat-0.mp4", "a cat-1.mp4", "a dog-0.mp4", "a dog-1.mp4"]
    assert read_video(tmp_path / "out" / "a cat-1.mp4").shape == (9, 32, 32, 3)
    assert "wrote 4, skipped 0" in capsys.readouterr().out
    assert main(["sample", str(cfg), "--set", "prompts.videos_per_prompt=2"]) == 0
    assert "wrote 0, skipped 4" in capsys.readouterr().out


def test_cli_sample_config_errors_exit_2_naming_the_field(tmp_path, capsys):
    cfg = _sample_config(tmp_path, tmp_path / "out", ["a dog"])
    assert main(["sample", str(cfg), "--set", "seed=9", "--dry-run"]) == 0
    assert '"seed": 9' in capsys.readouterr().out
    assert main(["sample", str(cfg), "--set", "sampling.height=30"]) == 2
    assert "height" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_cogvideox_only_setting_is_refused_for_wan(tmp_path, capsys):
    cfg = _sample_config(tmp_path, tmp_path / "out", ["a dog"])
    assert main(["sample", str(cfg), "--set", "sampling.use_dynamic_cfg=true"]) == 2
    assert "use_dynamic_cfg is a CogVideoX setting" in capsys.readouterr().err
    assert main(["sample", str(cfg), "--set", "family=cogvideox", "--set", "sampling.use_dynamic_cfg=false",
                 "--dry-run"]) == 0  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_sample_each_prompt_exactly_once_and_match_one_process(tmp_path):
    prompts = ["a red car", "a blue bird", "a green tree"]
    out = tmp_path / "dist"
    cfg = _sample_config(tmp_path, out, prompts)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "qvgen.eval.cli", "sample", str(cfg)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    lines = sorted(line for stdout, _ in results for line in stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0/2: wrote 2, skipped 0", "rank 1/2: wrote 1, skipped 0"]
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{p}-0.mp4" for p in prompts)
    assert all(sidecar_path(out / f"{p}-0.mp4").is_file() for p in prompts)

    single = tmp_path / "single"
    assert main(["sample", str(_sample_config(tmp_path, single, prompts))]) == 0
    for p in prompts:
        assert np.array_equal(read_video(out / f"{p}-0.mp4"), read_video(single / f"{p}-0.mp4")), p


def test_generate_is_reproducible_for_a_seed_and_differs_across_seeds():
    fam = get_family("wan")
    model = from_components(fam, fam.load(tiny_checkpoint("wan")))
    kwargs = pipeline_kwargs(model, SamplingSettings(**SMALL, guidance_scale=5.0))
    a, b, c = plan_items(["a cat"], 1, 0)[0], plan_items(["a cat"], 1, 0)[0], plan_items(["a cat"], 1, 1)[0]
    ga, gb, gc = (generate(model, i, kwargs) for i in (a, b, c))
    assert torch.equal(ga.latents, gb.latents) and np.array_equal(ga.frames, gb.frames)
    assert not torch.equal(ga.latents, gc.latents)
    assert ga.frames.shape == (9, 32, 32, 3) and ga.frames.min() >= 0.0 and ga.frames.max() <= 1.0


@pytest.mark.parametrize(("variant", "fps"), [("t2v", 16), ("ti2v", 24)])
def test_sample_writes_the_frame_rate_of_the_checkpoint(tmp_path, variant, fps):
    """Wan 2.1 clips are 16 fps, Wan 2.2 TI2V-5B's 24 (read from the folder's pipeline config)."""
    import av

    from qvgen.models.testing import tiny_wan_checkpoint

    cfg = _write_config(
        tmp_path / "sample.yaml", family="wan", out_dir=str(tmp_path / "out"), seed=0, device="cpu",
        model={"kind": "full_precision", "path": str(tiny_wan_checkpoint(variant))},
        prompts={"prompts": ["a dog"]}, sampling={**SMALL, "height": 64, "width": 64},
    )  # fmt: skip
    assert main(["sample", str(cfg)]) == 0
    with av.open(str(tmp_path / "out" / "a dog-0.mp4")) as container:
        assert container.streams.video[0].average_rate == fps
