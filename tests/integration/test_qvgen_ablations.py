"""benchmarks/qvgen_ablations.py pairs each QVGen row with the LSQ row of its own setting and keeps the
training-seed row out of the "best knob"."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ablations(import_benchmark):
    return import_benchmark("qvgen_ablations")


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
    assert (
        plan["qvgen-a8"].reference == "lsq-a8" and plan["qvgen-a8"].act_bits == plan["lsq-a8"].act_bits == 8
    )


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


def test_the_table_scripts_share_their_command_line(ablations):
    import argparse

    import paper_table

    parser = argparse.ArgumentParser()
    paper_table.add_setting_arguments(parser, Path("outputs/x"))
    args = parser.parse_args(["--quick", "--prompts", "8"])
    assert (args.quick, args.out, args.prompts) == (True, Path("outputs/x"), 8)
    assert args.teacher == paper_table.DEFAULT_TEACHER_DIR
    assert ablations.add_setting_arguments is paper_table.add_setting_arguments


def test_its_section_replaces_only_itself_in_results(ablations, tmp_path, monkeypatch):
    import paper_table

    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n## paper_table\n\ntable\n\n### baselines\n\nrows\n\n## newcomer\n\nn\n"
    )
    monkeypatch.setattr(paper_table, "RESULTS", results)
    paper_table.write_section("first\n\n`qvgen_ablations a=1`", ablations.SECTION)
    paper_table.write_section("second\n\n`qvgen_ablations a=2`", ablations.SECTION)
    text = results.read_text()
    assert text.count("## qvgen_ablations") == 1 and "a=2" in text and "a=1" not in text
    assert "## paper_table\n\ntable\n\n### baselines\n\nrows" in text and "## newcomer\n\nn" in text


def test_teacher_row_and_ratio_and_untrained_rtn_rows(ablations):
    import paper_table

    plan = {n: v for n, v in ablations.variants(300).items() if n in ("lsq", "rtn", "rtn-minmax")}
    base = [20.0, 21.0, 20.5, 21.5]
    cells = {name: _cell(paper_table, base) for name in plan}
    runs = {"lsq": {"losses": [1.0] * 20}, "rtn": {"losses": []}, "rtn-minmax": {"losses": []}}
    teacher = paper_table.Cell("teacher", "FP", {"overall": [0.8] * 4}, {"overall": [0.8]}, 0, 4)
    table, psnr = ablations.tables(cells, plan, runs, teacher)
    rows = table.splitlines()
    assert rows[2].startswith("| teacher |") and rows[0].count("|") == rows[2].count("|") == rows[3].count(
        "|"
    )
    assert "| 0.625 |" in rows[3] and "not trained" in table  # 0.5 / 0.8
    assert set(psnr) == {"rtn", "rtn-minmax"} and plan["rtn-minmax"].act_clip_init == pytest.approx(0.9999)
