"""benchmarks/baselines.py reports its rows with paper_table's statistics (cells with 95 % CIs, paired diffs)."""

from __future__ import annotations

import argparse

import pytest


@pytest.fixture(scope="module")
def baselines(import_benchmark):
    return import_benchmark("baselines")


def _cell(paper_table, label: str, overall: list[float], psnr: list[float], seeds: list[float]):
    videos = {"overall": overall, "colour": overall, "shape": overall, "motion": overall,
              "psnr_db": psnr, "latent_mse": [0.1] * len(overall)}  # fmt: skip
    return paper_table.Cell(label, "W4A4", videos, {"overall": seeds}, 1, len(overall))


def test_rows_use_paper_tables_cells_and_pair_against_lsq(baselines):
    import paper_table

    from qvgen.eval import mean_ci

    assert baselines.make_cell is paper_table.make_cell  # reused, not a copy
    lsq = [0.0, 1.0, 0.0, 1.0]
    cells = {key: _cell(paper_table, label, lsq, [20.0, 21.0, 20.0, 21.0], [0.5, 0.5])
             for key, (label, _, _) in baselines.ROWS.items()}  # fmt: skip
    cells["qdm-w4a4"] = _cell(
        paper_table, "Q-DM", [x + 0.1 for x in lsq], [21.0, 22.0, 21.0, 22.0], [0.4, 0.8]
    )
    fp = _cell(paper_table, "teacher", [1.0, 1.0, 0.0, 1.0], [0.0] * 4, [0.75])
    table, diffs = baselines.tables(fp, cells)

    qdm_row = next(line for line in table.splitlines() if line.startswith("| Q-DM |"))
    ci = mean_ci([x + 0.1 for x in lsq])
    assert f"| {ci.mean:.3f} ± {ci.ci95:.3f} |" in qdm_row  # mean ± 95 % t interval over the 4 videos
    assert "| 0.400, 0.800 | 1/4 |" in qdm_row  # per-seed means and unscorable count
    # paired over the same videos: +0.1 on every video → no spread, although the unpaired spread is large
    qdm_diff = next(line for line in diffs.splitlines() if line.startswith("| Q-DM |"))
    assert "| 0.100 ± 0.000 | 1.00 ± 0.00 |" in qdm_diff
    assert not any(line.startswith("| LSQ QAT") for line in diffs.splitlines())

    line = baselines.key_line(cells, 1.1279, 5, True)
    assert line.startswith("baselines efficientdm_w4a4_adherence=0.500 qdm_w4a4_adherence=0.600 ")
    assert line.endswith("svdquant_kept_branch_mem_ratio=1.1279 models_with_roles=5 reference_import_ok=true")


def test_quick_and_full_settings_are_paper_tables(baselines):
    import paper_table

    assert baselines.resolve_setting is paper_table.resolve_setting
    quick = argparse.Namespace(quick=True, steps=None, clips=None, prompts=None, two_object=None,
                               sampling_seeds=None, train_seeds=None)  # fmt: skip
    assert paper_table.resolve_setting(quick) == paper_table.SETTINGS["quick"]
    custom = paper_table.resolve_setting(argparse.Namespace(**{**vars(quick), "prompts": 12, "steps": 0}))
    assert (custom.prompts, custom.two_object, custom.steps) == (12, 3, 0)
    assert paper_table.SETTINGS["full"].prompts >= 64 and paper_table.SETTINGS["full"].train_seeds >= 3


def test_recount_redoes_only_the_static_checks(baselines):
    saved = "\n".join([
        "| row | 0.784 |",
        baselines.static_checks_sentence(["a", "b"], True),
        "",
        "baselines efficientdm_w4a4_adherence=0.784 models_with_roles=2 reference_import_ok=true",
    ])  # fmt: skip
    text = baselines.recount(saved, ["a", "b", "c"], False)
    assert text.splitlines()[0] == "| row | 0.784 |"  # the measured rows stay as they were
    assert "has a role (qvgen.models.REAL_MODELS, meta device): 3 (a, b, c)." in text
    assert "reference forward: False." in text
    assert text.endswith("efficientdm_w4a4_adherence=0.784 models_with_roles=3 reference_import_ok=false")
    with pytest.raises(SystemExit, match="no role/import sentence"):
        baselines.recount("| row |", ["a"], True)
