"""The whole QVGen flow across packages, through the CLIs a user runs.

procedural mp4s (qvgen-data) → `qvgen-train precompute` with the tiny Wan's own VAE + UMT5 (qvgen-models)
→ `qvgen-train run`: a 4-step W4A4 QVGen run whose Φ decays to rank 0 (qvgen-quant, qvgen-aux)
→ fake-quant + real low-bit export → `qvgen-eval compare` against the teacher (qvgen-eval).

Regenerate the golden losses (only after an intended numerical change):
    QVGEN_PRINT_GOLDEN=1 pytest tests/integration/test_end_to_end.py -s
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from qvgen import auxiliary, quant
from qvgen.data import read_manifest, write_procedural_dataset
from qvgen.eval.cli import main as eval_main
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.cli import main as train_main

# Loss of each of the 4 training steps of the run below (torch 2.13 CPU, float32, 1 thread). Other x86 CPUs
# round differently in their vector kernels and a fake-quant rounding boundary can flip: on an AMD EPYC the
# 4th loss came out 0.5 % higher (the first three within 1e-3), so the check allows 1 %.
GOLDEN_LOSSES: tuple[float, ...] | None = (0.0051002, 0.0052289, 0.0049136, 0.0052867)


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    checkpoint = tiny_checkpoint("wan")
    captions = write_procedural_dataset(root / "videos", 6, seed=1, frames=9)
    pre = _write_yaml(
        root / "precompute.yaml",
        {
            "model": {"family": "wan", "checkpoint": str(checkpoint), "dtype": "float32"},
            "ingest": {"captions": str(captions)},
            "writer": {
                "buckets": [{"frames": 9, "height": 64, "width": 64}],
                "samples_per_shard": 4,
                "latent_dtype": "float32",
                "text_dtype": "float32",
            },
            "out_dir": str(root / "shards"),
        },
    )
    assert train_main(["precompute", str(pre)]) == 0
    run = _write_yaml(
        root / "run.yaml",
        {
            "model": {"family": "wan", "checkpoint": str(checkpoint), "dtype": "float32"},
            "quant": {"weight": {"kind": "lsq_plus", "bits": 4}, "activation": {"bits": 4}},
            "aux": {"decay": {"initial_rank": 2, "period": 1}},
            "data": {"shards": str(root / "shards"), "batch_size": 2, "num_workers": 0},
            "train": {"max_steps": 4, "caption_dropout": 0.0, "seed": 0},
            "logging": {"progress_bar": False},
            "checkpoint": {"every_n_steps": None},
            "output_dir": str(root / "run"),
        },
    )
    assert train_main(["run", str(run)]) == 0
    return {"root": root, "checkpoint": checkpoint, "run": root / "run"}


def test_precompute_writes_shards_with_the_family_encoder(flow: dict[str, Path]) -> None:
    manifest = read_manifest(flow["root"] / "shards")
    assert manifest.num_samples == 6
    assert manifest.family == "wan"


def test_run_decays_phi_to_rank_zero_and_logs_finite_losses(flow: dict[str, Path]) -> None:
    records = [json.loads(line) for line in (flow["run"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["phi_rank"] == 0
    losses = tuple(r["loss"] for r in records)
    assert all(math.isfinite(x) and x > 0 for x in losses)
    if os.environ.get("QVGEN_PRINT_GOLDEN"):
        print("GOLDEN_LOSSES =", losses)
    if GOLDEN_LOSSES is not None:
        assert losses == pytest.approx(GOLDEN_LOSSES, rel=1e-2)


def test_exported_deploy_student_loads_as_a_plain_w4a4_model(flow: dict[str, Path]) -> None:
    deploy_dirs = [p.parent for p in flow["run"].rglob("*.json") if "deploy" in p.parent.name]
    assert deploy_dirs, f"no deploy export under {flow['run']}"
    model = quant.load_quantized(get_family("wan").load_transformer(flow["checkpoint"]), deploy_dirs[0])
    assert quant.deployed_layers(model)
    assert not auxiliary.lowrank_parameters(model)


def test_eval_compare_scores_the_deployed_student_against_the_teacher(flow: dict[str, Path]) -> None:
    deploy_dir = next(p.parent for p in flow["run"].rglob("*.json") if "deploy" in p.parent.name)
    out = flow["root"] / "report"
    cfg = _write_yaml(
        flow["root"] / "compare.yaml",
        {
            "family": "wan",
            "teacher": {"path": str(flow["checkpoint"])},
            "variants": [{"name": "qvgen-w4a4", "model": {"kind": "deploy", "path": str(deploy_dir)}}],
            "prompts": {"prompts": ["a red square moves left"]},
            "out_dir": str(out),
            "sampling": {"height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 2},
            "device": "cpu",
        },
    )
    assert eval_main(["compare", str(cfg)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "qvgen-w4a4" in json.dumps(report)
    assert (out / "report.html").stat().st_size > 0
