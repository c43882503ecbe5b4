"""Compare trained students of several paper_table work folders over the same held-out videos.

paper_table.py runs one recipe per work folder (one `--lr`, one `--decay-fraction`, ...). This script puts
students of several folders in one table, each row a run (or several training seeds of it, averaged per video
as in paper_table), and the paired differences asked for with `--diff A B` (mean ± 95 % t interval over the
same videos). It refuses folders whose teacher snapshot or teacher samples differ from the first's, so the
pairing is over identical prompts, seeds and teacher videos. Nothing is trained or sampled.

Usage: python benchmarks/compare_runs.py "LSQ lr 2e-4=/tmp/pt4:lsq-w4a4-s0+lsq-w4a4-s1" \
    "QVGen lr 2e-4=/tmp/pt4:qvgen-w4a4-s0" --diff "QVGen lr 2e-4" "LSQ lr 2e-4" [--out table.md]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from paper_table import (  # benchmarks/ is sys.path[0] as a script
    LOSS_TABLE_HEAD,
    Cell,
    _fmt,
    load_paired_report,
    loss_row,
    make_cell,
    mean_loss_windows,
    run_records,
    teacher_digest,
)

from qvgen.core import atomic_write_text
from qvgen.eval import EvalReport, paired_diff_ci

DIFF_METRICS = (("overall", 3), ("psnr_db", 2), ("step_relative_mse", 4))


@dataclass(frozen=True)
class RowSpec:
    """One table row: a label, a paper_table work folder and the runs (training seeds) it averages."""

    label: str
    folder: Path
    runs: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RowSpec:
        """`LABEL=FOLDER:RUN[+RUN...]`."""
        label, sep, rest = text.partition("=")
        folder, sep2, runs = rest.rpartition(":")
        if not (sep and sep2 and label and folder and runs):
            raise ValueError(f"row {text!r}: expected LABEL=FOLDER:RUN[+RUN...]")
        return cls(label, Path(folder), tuple(runs.split("+")))


@dataclass(frozen=True)
class Row:
    spec: RowSpec
    cell: Cell
    losses: list[list[float]]
    """Per run, its per-step training losses."""


def load_rows(specs: list[RowSpec], report_name: str = "report") -> tuple[list[Row], Cell]:
    """Every row's cell and training losses, and the teacher's cell. Refuses a folder whose teacher snapshot
    or teacher samples differ from the first folder's, a run missing from its folder's report or records,
    and two rows with one label."""
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"row labels must be unique: {labels}")
    reports: dict[Path, EvalReport] = {}
    first: tuple[Path, str, EvalReport] | None = None
    rows = []
    for spec in specs:
        if spec.folder not in reports:
            if first is None:
                digest = teacher_digest(spec.folder / "teacher")
                report = load_paired_report(spec.folder, report_name, digest, None, spec.folder)
                first = (spec.folder, digest, report)
            else:
                report = load_paired_report(spec.folder, report_name, first[1], first[2], first[0])
            reports[spec.folder] = report
        by_name = {v.name: v for v in reports[spec.folder].variants}
        missing = [r for r in spec.runs if r not in by_name]
        if missing:
            raise ValueError(f"{spec.folder}/{report_name}/report.json: no samples of run(s) {missing} "
                             f"(it has {sorted(by_name)})")  # fmt: skip
        records = run_records(spec.folder, report_name)  # the records of the report's own students
        losses = []
        for run in spec.runs:
            if run not in records:
                raise ValueError(
                    f"{spec.folder}/{report_name}: no trained-run record of {run} for row {spec.label!r}"
                )
            losses.append(records[run]["losses"])
        cell = make_cell(spec.label, "", [by_name[r] for r in spec.runs])  # bits: not shown here
        rows.append(Row(spec, cell, losses))
    assert first is not None, "no rows"
    return rows, make_cell("teacher", "FP", [first[2].teacher])


def tables(rows: list[Row], teacher: Cell, diffs: list[tuple[str, str]]) -> str:
    """The rows' table, the paired differences and the loss curves (mean of each tenth), as markdown."""
    fp = teacher.ci("overall").mean
    out = [
        "| row | seeds | adherence | ÷ teacher | PSNR vs teacher (dB) | per-seed PSNR | denoiser rel. MSE | loss, last tenth |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        f"| teacher | — | {_fmt(teacher.ci('overall'))} | 1.000 | — | — | — | — |",
    ]
    for row in rows:
        c = row.cell
        windows = mean_loss_windows(row.losses)
        last = "— (not trained)" if windows is None else f"{windows[-1]:.4f}"
        per_seed = ", ".join(f"{x:.2f}" for x in c.seed_means["psnr_db"])
        out.append(f"| {row.spec.label} | {len(row.spec.runs)} | {_fmt(c.ci('overall'))} | "
                   f"{c.ci('overall').mean / fp:.3f} | {_fmt(c.ci('psnr_db'), 2)} | {per_seed} | "
                   f"{_fmt(c.ci('step_relative_mse'), 4)} | {last} |")  # fmt: skip
    by_label = {r.spec.label: r for r in rows}
    if diffs:
        out += ["", "| difference (paired over the same videos) | adherence | PSNR (dB) | denoiser rel. MSE |",
                "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for a, b in diffs:
            ca, cb = by_label[a].cell, by_label[b].cell
            cells = [_fmt(paired_diff_ci(ca.videos[m], cb.videos[m]), d) for m, d in DIFF_METRICS]
            out.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    curves = [(r.spec.label, w) for r in rows if (w := mean_loss_windows(r.losses)) is not None]
    if curves:
        out += ["", *LOSS_TABLE_HEAD]
        out += [loss_row(label, w) for label, w in curves]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="LABEL=FOLDER:RUN[+RUN...]", help="one table row each")
    parser.add_argument("--diff", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="a paired difference A − B of two row labels (repeatable)")  # fmt: skip
    parser.add_argument("--report", default="report", help="report subfolder of every work folder")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    try:
        specs = [RowSpec.parse(r) for r in args.rows]
        labels = {s.label for s in specs}
        unknown = sorted({x for pair in args.diff for x in pair} - labels)
        if unknown:
            raise ValueError(f"--diff names unknown rows {unknown}; rows are {sorted(labels)}")
        rows, teacher = load_rows(specs, args.report)
    except ValueError as e:
        parser.error(str(e))
    text = tables(rows, teacher, [tuple(d) for d in args.diff])
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
