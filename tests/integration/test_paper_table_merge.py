"""benchmarks/paper_table.py --merge: one table from work folders run side by side (e.g. one per bit width)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvgen.eval import EvalReport, SampleRecord, VariantReport, VariantSummary, VideoMetrics


@pytest.fixture(scope="module")
def paper_table(import_benchmark):
    return import_benchmark("paper_table")


def _variant(name: str, prompts: list[str], flicker: float = 0.9) -> VariantReport:
    samples = tuple(
        SampleRecord(prompt=p, index=i, seed=i, video=VideoMetrics(path=f"{name}/{i}.mp4", temporal_flickering=flicker,
                                                                    motion_energy=0.1))
        for i, p in enumerate(prompts)
    )  # fmt: skip
    return VariantReport(name=name, kind="deploy", source=name, samples=samples,
                         summary=VariantSummary(temporal_flickering=flicker, motion_energy=0.1))  # fmt: skip


def _folder(root: Path, bits: int, steps: int, prompts: list[str], teacher_bytes: bytes = b"teacher") -> Path:
    """A paper_table work folder of one bit width: teacher snapshot, report.json and trained-run records."""
    (root / "teacher" / "transformer").mkdir(parents=True)
    (root / "teacher" / "transformer" / "w.safetensors").write_bytes(teacher_bytes)
    names = [f"rtn-w{bits}a{bits}", f"lsq-w{bits}a{bits}-s0", f"qvgen-w{bits}a{bits}-s1"]
    (root / "runs").mkdir()
    for name in names:
        losses = [] if name.startswith("rtn") else [1.0] * steps
        record = {"config": "c", "deploy_dir": str(root / name), "phi_rank": None, "losses": losses}
        (root / "runs" / f"{name}.trained.json").write_text(json.dumps(record))
    report = EvalReport(family="wan", created="now", pipeline_kwargs={}, teacher=_variant("teacher", prompts),
                        variants=tuple(_variant(n, prompts) for n in names),
                        training_curves={names[1]: ((1, 1.0),)})  # fmt: skip
    (root / "report").mkdir()
    (root / "report" / "report.json").write_text(report.model_dump_json())
    return root


def test_merge_joins_the_bit_widths_and_checks_they_sampled_the_same_teacher(paper_table, tmp_path):
    prompts = ["a red bar moves left", "a blue circle moves up"]
    four, three = _folder(tmp_path / "pt4", 4, 5, prompts), _folder(tmp_path / "pt3", 3, 5, prompts)
    digest = paper_table.teacher_digest(four / "teacher")

    runs, report = paper_table.merge_runs([four, three], "report", digest, steps=5)
    assert sorted(runs) == sorted(["rtn-w4a4", "lsq-w4a4-s0", "qvgen-w4a4-s1", "rtn-w3a3", "lsq-w3a3-s0",
                                   "qvgen-w3a3-s1"])  # fmt: skip
    assert runs["qvgen-w3a3-s1"][:3] == ("qvgen", 3, 1) and runs["rtn-w4a4"][:3] == ("rtn", 4, 0)
    assert {v.name for v in report.variants} == set(runs)
    assert set(report.training_curves) == {"lsq-w4a4-s0", "lsq-w3a3-s0"}

    with pytest.raises(ValueError, match="not --steps 7"):
        paper_table.merge_runs([four], "report", digest, steps=7)
    with pytest.raises(ValueError, match="more than one folder"):
        paper_table.merge_runs([four, four], "report", digest, steps=5)
    other = _folder(tmp_path / "other", 3, 5, prompts, teacher_bytes=b"another teacher")
    with pytest.raises(ValueError, match=r"other/teacher: weights sha256"):
        paper_table.merge_runs([four, other], "report", digest, steps=5)
    record_path = three / "runs" / "qvgen-w3a3-s1.trained.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(record | {"decay_period": 2}))
    assert paper_table.merge_runs([four, three], "report", digest, steps=5, period=2)
    with pytest.raises(ValueError, match=r"qvgen-w3a3-s1.trained.json: Φ halved every 2 steps, not 3"):
        paper_table.merge_runs([four, three], "report", digest, steps=5, period=3)
    moved = _folder(tmp_path / "moved", 3, 5, list(reversed(prompts)))
    with pytest.raises(ValueError, match="teacher samples differ"):
        paper_table.merge_runs([four, moved], "report", digest, steps=5)


def test_kind_table_splits_one_and_two_object_videos(paper_table):
    videos = {"overall": [1.0, 0.5, 0.0, 0.2], "colour": [1.0, 1.0, 0.0, 0.0], "shape": [1.0, 0.0, 0.5, 0.5],
              "motion": [1.0, 0.5, 1.0, 1.0]}  # fmt: skip
    cell = paper_table.Cell("QVGen", "W4A4", videos, {"overall": [0.4]}, 0, 4)
    table = paper_table.kind_table(cell, [cell], two_object_videos=1)
    rows = [line for line in table.splitlines() if line.startswith("| QVGen |")]
    assert rows == ["| QVGen | W4A4 | 0.667 / 0.500 / 0.833 | 0.500 | 0.200 |"] * 2
    none = paper_table.kind_table(cell, [], two_object_videos=0)
    assert none.splitlines()[-1].endswith("| 0.425 | — |")


def test_merge_reads_the_reports_own_run_records_and_checks_prompts_and_recipe(paper_table, tmp_path):
    prompts = ["a red bar moves left", "a blue circle moves up"]
    four = _folder(tmp_path / "pt4", 4, 5, prompts)
    digest = paper_table.teacher_digest(four / "teacher")
    # a later recipe trained in the same folder replaced runs/; the report keeps its own records
    frozen = {n: json.loads((four / "runs" / f"{n}.trained.json").read_text()) for n in
              ("rtn-w4a4", "lsq-w4a4-s0", "qvgen-w4a4-s1")}  # fmt: skip
    frozen["lsq-w4a4-s0"]["losses"] = [2.0] * 5
    (four / "report" / "runs.json").write_text(json.dumps(frozen))
    runs, _ = paper_table.merge_runs([four], "report", digest, steps=5)
    assert runs["lsq-w4a4-s0"][3]["losses"] == [2.0] * 5

    with pytest.raises(ValueError, match="not the planned prompts"):
        paper_table.merge_runs([four], "report", digest, steps=5, prompts=list(reversed(prompts)))
    assert paper_table.merge_runs([four], "report", digest, steps=5, prompts=prompts)

    frozen["lsq-w4a4-s0"]["recipe"] = {"optim": {"lr": 2e-3}, "train": {"seed": 0}}
    (four / "report" / "runs.json").write_text(json.dumps(frozen))

    def recipe(method: str, bits: int, seed: int) -> dict:
        return {"optim": {"lr": 2e-4}, "train": {"seed": seed}}

    with pytest.raises(
        ValueError, match=r"lsq-w4a4-s0.trained.json: trained with another recipe .*differs in optim"
    ):
        paper_table.merge_runs([four], "report", digest, steps=5, recipe=recipe)


def test_train_cached_keys_on_the_teacher_weights_and_never_trains_over_another_recipe(
    paper_table, tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from qvgen.demo.flow import TrainBudget, run_config

    trained = []

    def fake_train(cfg):
        trained.append(cfg.output_dir)
        deploy = cfg.output_dir / "final" / "deploy"
        deploy.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(deploy_dir=deploy, phi_rank=None, losses=[1.0, 0.5])

    monkeypatch.setattr(paper_table, "train_variant", fake_train)
    cfg = run_config("lsq", 4, tmp_path / "teacher", tmp_path / "shards", TrainBudget(steps=2),
                     tmp_path / "runs" / "lsq-w4a4-s0", progress=False)  # fmt: skip
    marker = tmp_path / "runs" / "lsq-w4a4-s0.trained.json"
    first = paper_table.train_cached(cfg, marker, teacher_hash="aaaa")
    assert paper_table.train_cached(cfg, marker, teacher_hash="aaaa") == first and len(trained) == 1
    assert first["teacher"] == "aaaa" and first["recipe"]["optim"]["lr"]["weights"] == cfg.optim.lr.weights
    with pytest.raises(ValueError, match="another recipe or teacher"):  # same paths, other teacher weights
        paper_table.train_cached(cfg, marker, teacher_hash="bbbb")
    other = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"weight_decay": 0.5})})
    with pytest.raises(ValueError, match="another recipe or teacher"):
        paper_table.train_cached(other, marker, teacher_hash="aaaa")
    assert len(trained) == 1 and (tmp_path / "runs" / "lsq-w4a4-s0" / "final" / "deploy").is_dir()
