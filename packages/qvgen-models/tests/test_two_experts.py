"""Issue 34, two experts: a Wan 2.2 A14B-shaped deploy folder loads with `load_pipeline` without reading either
full-precision expert, keeps `boundary_ratio`, and samples each expert on the steps the fp pipeline gives it."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import WanPipeline

from qvgen import quant
from qvgen.models import (
    EXPERTS,
    ExpertsManifest,
    expert_timestep_mask,
    get_family,
    load_pipeline,
    read_experts_manifest,
    write_experts_folder,
)
from qvgen.models.testing import tiny_two_expert_checkpoint

BOUNDARY = 0.875
KWARGS = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 6, "max_sequence_length": 16}


def _deploy_expert(base: Path, expert: str, out: Path) -> Path:
    transformer = get_family("wan").load_transformer(base / expert)
    quant.prepare_(transformer, quant.QuantConfig.w4a4())
    quant.initialize_(transformer, progress=False)
    quant.convert_(transformer)
    quant.save_quantized(transformer, out, identity=f"{base}/{expert}")
    return out


@pytest.fixture(scope="module")
def two_expert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a copy of the tiny two-expert base folder, its two-expert deploy folder)."""
    root = tmp_path_factory.mktemp("two-expert")
    base = shutil.copytree(tiny_two_expert_checkpoint(0, BOUNDARY), root / "base")
    parts = {e: _deploy_expert(base, e, root / "parts" / e) for e in EXPERTS}
    deploy = write_experts_folder(
        root / "deploy", parts, ExpertsManifest(content="deploy", boundary_ratio=BOUNDARY)
    )
    return base, deploy


def _expert_calls(pipe: WanPipeline) -> list[tuple[str, float]]:
    """Sample once, recording (expert, timestep) for each transformer call (CFG: two calls a step)."""
    calls: list[tuple[str, float]] = []
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(
            lambda _m, _a, kw, name=name: calls.append((name, float(kw["timestep"].flatten()[0]))),
            with_kwargs=True,
        )
        for name in EXPERTS
    ]
    pipe(prompt="a red ball", negative_prompt="blurry", generator=torch.Generator().manual_seed(0),
         output_type="latent", **KWARGS)  # fmt: skip
    for h in hooks:
        h.remove()
    return calls


def test_tiny_base_is_two_expert_with_boundary() -> None:
    index = json.loads((tiny_two_expert_checkpoint(0, BOUNDARY) / "model_index.json").read_text())
    assert index["boundary_ratio"] == BOUNDARY and index["transformer_2"][1] == "WanTransformer3DModel"


def test_load_pipeline_two_experts_reads_no_fp_expert_and_switches_at_the_boundary(
    two_expert: tuple[Path, Path],
) -> None:
    base, deploy = two_expert
    fp = WanPipeline.from_pretrained(base)
    fp.set_progress_bar_config(disable=True)
    expected = _expert_calls(fp)
    moved = {e: base.parent / f"fp-{e}" for e in EXPERTS}
    for e, away in moved.items():  # no full-precision bytes of either expert can be read
        (base / e).rename(away)
    try:
        pipe = load_pipeline(base, deploy, progress=False)
    finally:
        for e, away in moved.items():
            away.rename(base / e)
    assert pipe.config.boundary_ratio == BOUNDARY
    for e in EXPERTS:
        model = getattr(pipe, e)
        layers = quant.read_manifest(deploy / e).layers
        assert sum(isinstance(m, quant.DeployLinear) for m in model.modules()) == len(layers)
        assert not any(p.device.type == "meta" for p in model.parameters())
    assert pipe.transformer is not pipe.transformer_2
    got = _expert_calls(pipe)
    assert [name for name, _ in got] == [name for name, _ in expected]
    names = {name for name, _ in got}
    assert names == set(EXPERTS), "the tiny schedule must cross the boundary"
    for name, t in got:  # the pipeline's rule, as training uses it
        assert bool(expert_timestep_mask(torch.tensor([t]), name, BOUNDARY, 1000)), (name, t)


def test_load_pipeline_refuses_one_transformer_deploy_on_a_two_expert_base(
    two_expert: tuple[Path, Path],
) -> None:
    base, deploy = two_expert
    with pytest.raises(ValueError, match=r"two-expert Wan 2\.2 folder"):
        load_pipeline(base, deploy / "transformer")


def test_load_pipeline_refuses_a_different_boundary(two_expert: tuple[Path, Path], tmp_path: Path) -> None:
    base, deploy = two_expert
    other = write_experts_folder(
        tmp_path / "deploy",
        {e: deploy / e for e in EXPERTS},
        ExpertsManifest(content="deploy", boundary_ratio=0.9),
    )
    assert read_experts_manifest(other) == ExpertsManifest(content="deploy", boundary_ratio=0.9)
    with pytest.raises(ValueError, match=r"boundary_ratio 0\.9 \(trained for\) != 0\.875"):
        load_pipeline(base, other)


def test_expert_timestep_mask_splits_at_the_boundary() -> None:
    t = torch.tensor([999.0, 875.0, 874.9, 0.0])
    assert expert_timestep_mask(t, "transformer", BOUNDARY, 1000).tolist() == [True, True, False, False]
    assert expert_timestep_mask(t, "transformer_2", BOUNDARY, 1000).tolist() == [False, False, True, True]
