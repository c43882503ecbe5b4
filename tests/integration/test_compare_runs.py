"""benchmarks/compare_runs.py: students of several paper_table work folders, paired over the same videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvgen.eval import (
    EvalReport,
    FidelityMetrics,
    SampleRecord,
    VariantReport,
    VariantSummary,
    VideoAdherence,
    VideoMetrics,
)

PROMPTS = ["a red circle moves left", "a blue square moves up", "a green bar moves right"]


@pytest.fixture(scope="module")
def compare(import_benchmark):
    return import_benchmark("compare_runs")


def _variant(name: str, psnr: list[float] | None, adherence: list[float]) -> VariantReport:
    samples = []
    for i, (prompt, a) in enumerate(zip(PROMPTS, adherence, strict=True)):
        fidelity = None
        if psnr is not None:
            fidelity = FidelityMetrics(latent_mse=0.1, psnr_db=psnr[i], ssim=0.9, motion_energy_ratio=1.0,
                                       step_errors=())  # fmt: skip
        score = VideoAdherence(caption=prompt, objects=(), found=(), colour=a, shape=a, motion=a)
        samples.append(SampleRecord(prompt=prompt, index=0, seed=i, video=VideoMetrics(path=f"{name}/{i}.mp4",
                                    temporal_flickering=0.9, motion_energy=0.1), fidelity=fidelity,
                                    scores={"adherence": score}))  # fmt: skip
    return VariantReport(name=name, kind="deploy", source=name, samples=tuple(samples),
                         summary=VariantSummary(temporal_flickering=0.9, motion_energy=0.1))  # fmt: skip


def _folder(root: Path, runs: dict[str, float], teacher_seed_shift: int = 0) -> Path:
    """A paper_table work folder: teacher snapshot, trained-run records and a report whose run `name` has
    PSNR `base + k` on video k."""
    (root / "teacher").mkdir(parents=True)
    (root / "teacher" / "w.safetensors").write_bytes(b"teacher")
    (root / "runs").mkdir()
    for name in runs:
        record = {"config": "c", "deploy_dir": str(root / name), "losses": [2.0] * 10 + [1.0] * 10}
        (root / "runs" / f"{name}.trained.json").write_text(json.dumps(record))
    teacher = _variant("teacher", None, [1.0, 1.0, 1.0])
    if teacher_seed_shift:
        teacher = teacher.model_copy(update={"samples": tuple(
            s.model_copy(update={"seed": s.seed + teacher_seed_shift}) for s in teacher.samples)})  # fmt: skip
    variants = tuple(_variant(n, [base + k for k in range(3)], [1.0, 0.5, 1.0]) for n, base in runs.items())
    report = EvalReport(family="wan", created="now", pipeline_kwargs={}, teacher=teacher, variants=variants)
    (root / "report").mkdir()
    (root / "report" / "report.json").write_text(report.model_dump_json())
    return root


def test_rows_pair_across_folders_and_average_their_seeds(compare, tmp_path):
    a = _folder(tmp_path / "a", {"lsq-w4a4-s0": 20.0, "lsq-w4a4-s1": 22.0})
    b = _folder(tmp_path / "b", {"qvgen-w4a4-s0": 21.5})
    specs = [
        compare.RowSpec.parse(f"LSQ={a}:lsq-w4a4-s0+lsq-w4a4-s1"),
        compare.RowSpec.parse(f"QVGen={b}:qvgen-w4a4-s0"),
    ]
    rows, teacher = compare.load_rows(specs)
    assert rows[0].cell.videos["psnr_db"] == [21.0, 22.0, 23.0]  # the two seeds averaged per video
    assert teacher.ci("overall").mean == 1.0
    text = compare.tables(rows, teacher, [("QVGen", "LSQ")])
    # paired: the per-video shift is exactly 0.5 dB
    assert "| QVGen − LSQ | 0.000 ± 0.000 | 0.50 ± 0.00 |" in text
    assert "| LSQ | 2 | 0.833 ± 0.717 | 0.833 | 22.00 ± 2.48 | 21.00, 23.00 |" in text
    assert "2.0000 → 2.0000 → " in text  # tenths of 20 steps: five at 2.0, five at 1.0
    assert text.count("1.0000 | +0.0 % |") == 2


def test_folders_that_sampled_other_videos_are_refused(compare, tmp_path):
    a = _folder(tmp_path / "a", {"lsq-w4a4-s0": 20.0})
    shifted = _folder(tmp_path / "b", {"qvgen-w4a4-s0": 21.0}, teacher_seed_shift=7)
    with pytest.raises(ValueError, match="teacher samples differ"):
        compare.load_rows(
            [compare.RowSpec.parse(f"L={a}:lsq-w4a4-s0"), compare.RowSpec.parse(f"Q={shifted}:qvgen-w4a4-s0")]
        )
    with pytest.raises(ValueError, match="no samples of run"):
        compare.load_rows([compare.RowSpec.parse(f"L={a}:lsq-w4a4-s9")])
    (a / "runs" / "lsq-w4a4-s0.trained.json").unlink()
    with pytest.raises(ValueError, match=r"report: no trained-run record of lsq-w4a4-s0"):
        compare.load_rows([compare.RowSpec.parse(f"L={a}:lsq-w4a4-s0")])
    with pytest.raises(ValueError, match="LABEL=FOLDER:RUN"):
        compare.RowSpec.parse("no-folder-here")


def test_main_rejects_unknown_diff_rows_and_writes_the_table(compare, tmp_path, capsys):
    a = _folder(tmp_path / "a", {"lsq-w4a4-s0": 20.0, "qvgen-w4a4-s0": 20.2})
    with pytest.raises(SystemExit):
        compare.main([f"L={a}:lsq-w4a4-s0", "--diff", "L", "nope"])
    assert "unknown rows ['nope']" in capsys.readouterr().err
    out = tmp_path / "table.md"
    assert (
        compare.main([f"L={a}:lsq-w4a4-s0", f"Q={a}:qvgen-w4a4-s0", "--diff", "Q", "L", "--out", str(out)])
        == 0
    )
    assert "| Q − L | 0.000 ± 0.000 | 0.20 ± 0.00 |" in out.read_text()
