"""benchmarks/qvgen_ablations.py pairs each QVGen row with the LSQ row of its own setting and keeps the
training-seed row out of the "best knob"."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def ablations():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as top-level modules
    try:
        yield importlib.import_module("qvgen_ablations")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _cell(paper_table, psnr: list[float]):
    n = len(psnr)
    videos = {"psnr_db": psnr, "step_relative_mse": [0.1] * n, "overall": [0.5] * n}
    return paper_table.Cell("row", "W4A4", videos, {"overall": [0.5]}, 0, n)


def test_rows_pair_with_the_lsq_of_their_setting_and_the_budget_overrides_validate(ablations):
    from qvgen.demo import TrainBudget, decay_period, decay_steps

    plan = ablations.variants(300)
    for name, v in plan.items():
        assert plan[v.reference].method == "lsq", name
        budget = TrainBudget.model_validate({"steps": 300, **v.budget})
        if v.method == "qvgen":
            assert decay_period(budget.initial_rank, decay_steps(budget)) >= 1
    assert plan["qvgen-2x"].reference == "lsq-2x" and plan["qvgen-hp"].reference == "lsq-hp"
    assert plan["qvgen-hp"].high_precision == plan["lsq-hp"].high_precision != ()


def test_key_line_reports_the_best_knob_not_the_seed_row(ablations):
    import paper_table

    plan = ablations.variants(300)
    base = [20.0, 21.0, 20.5, 21.5]
    shifts = {name: 0.0 for name in plan} | {"qvgen": -0.3, "qvgen-r4": 0.2, "qvgen-s1": 0.9, "lsq-s1": 0.1}
    cells = {name: _cell(paper_table, [x + shifts[name] for x in base]) for name in plan}
    runs = {name: {"losses": [1.0] * 20} for name in plan}
    table, psnr = ablations.tables(cells, plan, runs)
    assert table.count("\n") == len(plan) + 1 and psnr["qvgen"].mean == pytest.approx(-0.3)
    assert psnr["qvgen-s1"].mean == pytest.approx(0.8)  # paired with lsq-s1, not with lsq
    line = ablations.key_line(cells, psnr)
    assert "best_variant=qvgen-r4 best_minus_lsq_psnr=+0.20" in line
    assert "base_minus_lsq_psnr=-0.30" in line and "seed_spread_psnr=1.20" in line
