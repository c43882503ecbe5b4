"""examples/compose.py (the README's compose script) runs end to end on a tiny Wan checkpoint."""

import runpy
from pathlib import Path

import numpy as np
import torch

from qvgen import quant
from qvgen.models import get_family

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compose.py"


def test_compose_example_trains_converts_saves_and_loads_a_w4a4_pipeline(tmp_path: Path) -> None:
    base = get_family("wan").save_tiny(tmp_path / "base")
    main = runpy.run_path(str(EXAMPLE))["main"]
    pipe = main(str(base), str(tmp_path / "deploy"))
    layers = quant.read_manifest(tmp_path / "deploy").layers
    deployed = [m for m in pipe.transformer.modules() if isinstance(m, quant.DeployLinear)]
    assert type(pipe).__name__ == "WanPipeline" and len(deployed) == len(layers) > 0
    assert not any(
        isinstance(m, quant.QuantLinear) for m in pipe.transformer.modules()
    )  # Φ removed, converted
    out = pipe(
        prompt="a red square moves left", height=32, width=32, num_frames=5, num_inference_steps=2,
        max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="np",
    ).frames  # fmt: skip
    assert np.asarray(out).shape == (1, 5, 32, 32, 3) and np.isfinite(out).all()
