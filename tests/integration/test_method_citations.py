"""Every `docs/method.md §N` / `Bn` citation in the repository points at a section or bug row that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHOD = ROOT / "docs" / "method.md"
SOURCES = [
    p
    for pattern in ("packages/*/src/**/*.py", "packages/*/tests/*.py", "benchmarks/*.py", "configs/*.yaml")
    for p in ROOT.glob(pattern)
]


def _sections() -> tuple[set[str], set[str]]:
    text = METHOD.read_text(encoding="utf-8")
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.M))
    bugs = set(re.findall(r"^\| (B\d+) \|", text, flags=re.M))
    return sections, bugs


def test_method_spec_has_numbered_sections_and_bug_rows() -> None:
    sections, bugs = _sections()
    assert {"3.3", "4.2", "6.3", "7.1", "13"} <= sections
    assert {f"B{i}" for i in range(1, 19)} <= bugs


def test_every_method_citation_resolves() -> None:
    sections, bugs = _sections()
    bad = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        if re.search(r"(?<![\w/])method\.md", text):
            bad.append(f"{path.relative_to(ROOT)}: cites `method.md`; cite `docs/method.md`")
        for cited in re.findall(
            r"docs/method\.md ((?:§\d+(?:\.\d+)?|B\d+)(?:[,;]? ?(?:§\d+(?:\.\d+)?|B\d+))*)", text
        ):
            for ref in re.findall(r"§(\d+(?:\.\d+)?)|(B\d+)", cited):
                section, bug = ref
                missing = section not in sections if section else bug not in bugs
                if missing:
                    bad.append(
                        f"{path.relative_to(ROOT)}: docs/method.md {'§' + section if section else bug}"
                    )
    assert not bad, "\n".join(bad)
