"""`load_pipeline(base_dir, deploy_dir)`: stock pipeline + W4A4 transformer, no base transformer read."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline, WanPipeline

from qvgen import quant
from qvgen.models import get_family, load_pipeline
from qvgen.models.pipeline import hf_progress_bars, progress_default


def deploy_from(base: Path, family: str, out: Path) -> None:
    transformer = get_family(family).load_transformer(base)
    quant.prepare_(transformer, quant.QuantConfig.w4a4())
    quant.initialize_(transformer, progress=False)
    quant.convert_(transformer)
    quant.save_quantized(transformer, out, identity=str(base))


def frames(pipe: object, kwargs: dict[str, object]) -> np.ndarray:
    out = pipe(prompt="a red ball moves left", generator=torch.Generator().manual_seed(0), **kwargs)  # type: ignore[operator]
    return np.asarray(out.frames)


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_load_pipeline_reads_no_base_transformer_and_matches_skeleton_load(
    family: str, tmp_path: Path
) -> None:
    fam = get_family(family)
    base, deploy = fam.save_tiny(tmp_path / "base"), tmp_path / "deploy"
    deploy_from(base, family, deploy)
    # reference: the old two-step path (float skeleton from the base checkpoint, then the deploy tensors)
    components = fam.load(base)
    reference = replace(components, transformer=quant.load_quantized(fam.load_transformer(base), deploy))
    kwargs = fam.sample_kwargs(
        components, height=32, width=32, num_frames=9, num_inference_steps=2, output_type="np"
    )
    expected = frames(fam.pipeline(reference), kwargs)

    shutil.rmtree(base / "transformer")  # bytes read from the base transformer folder: necessarily 0
    pipe = load_pipeline(base, deploy, progress=False)
    assert type(pipe) is (WanPipeline if family == "wan" else CogVideoXPipeline)
    assert sum(isinstance(m, quant.DeployLinear) for m in pipe.transformer.modules()) == len(
        quant.read_manifest(deploy).layers
    )
    assert not any(p.device.type == "meta" for p in pipe.transformer.parameters())
    np.testing.assert_array_equal(frames(pipe, kwargs), expected)


def test_load_pipeline_names_missing_base_component(tmp_path: Path) -> None:
    base = get_family("wan").save_tiny(tmp_path / "base")
    deploy_from(base, "wan", tmp_path / "deploy")
    shutil.rmtree(base / "vae")
    with pytest.raises(FileNotFoundError, match=r"missing component 'vae'"):
        load_pipeline(base, tmp_path / "deploy")


def test_load_pipeline_refuses_non_video_transformer(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    quant.prepare_(model, quant.QuantConfig.w4a4())
    quant.initialize_(model, progress=False)
    quant.convert_(model)
    quant.save_quantized(model, tmp_path / "deploy")
    with pytest.raises(ValueError, match=r"quant_manifest\.json: saved from a Sequential"):
        load_pipeline(tmp_path, tmp_path / "deploy")


def test_progress_default_and_hf_bars_restore() -> None:
    from transformers.utils import logging as tlog

    assert progress_default(True) and not progress_default(False)
    assert progress_default(None) is False  # pytest captures stdout: not a terminal
    before = tlog.is_progress_bar_enabled()
    with hf_progress_bars(not before):
        assert tlog.is_progress_bar_enabled() is (not before)
    assert tlog.is_progress_bar_enabled() is before
