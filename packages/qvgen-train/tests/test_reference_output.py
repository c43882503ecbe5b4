"""Issue 32, item 1: `qvgen-train import-reference --out DIR` deleted what was in DIR.

A DIR holding `notes.txt` and `sub/important.bin` ended up with only the student files (exit 0); with `--out`
equal to `--base` the base model was destroyed and the new manifest pointed at it; `--help` did not say DIR
is replaced. Now such a DIR is refused and left as it was, a rerun with other inputs is refused unless
`--overwrite`, and the help says what DIR may be.
"""

import pytest

from qvgen.core import MARKER_NAME, read_provenance
from qvgen.models import get_family, load_student, read_student_manifest
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.cli import main
from qvgen.train.reference import IMPORT_PROVENANCE
from qvgen.train.testing import write_reference_checkpoint


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    folder = write_reference_checkpoint(transformer, tmp_path_factory.mktemp("ref") / "transformer", seed=1)
    return base, folder


def _tree(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _import(reference, out, *extra):
    base, folder = reference
    return main(["import-reference", str(folder), "--base", str(base), "--out", str(out), *extra])


def test_an_out_folder_holding_user_files_is_refused_and_left_as_it_was(reference, tmp_path, capsys):
    out = tmp_path / "dir"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("notes")
    (out / "sub" / "important.bin").write_bytes(b"\x00\x01")
    before = _tree(out)
    assert _import(reference, out) == 2
    assert "not empty and was not written by qvgen-train import-reference" in capsys.readouterr().err
    assert _tree(out) == before


@pytest.mark.parametrize("where", ["base", "inside_base", "checkpoint"])
def test_an_out_folder_equal_to_or_inside_an_input_is_refused(reference, where, tmp_path, capsys):
    base, folder = reference
    out = {"base": base, "inside_base": base / "student", "checkpoint": folder}[where]
    before = _tree(base), _tree(folder)
    assert _import(reference, out) == 2
    assert "is also an input" in capsys.readouterr().err or where == "inside_base"
    assert (_tree(base), _tree(folder)) == before and not (base / "student").exists()


def test_a_rerun_with_other_inputs_is_refused_unless_overwrite(reference, tmp_path, capsys):
    out = tmp_path / "student"
    assert _import(reference, out) == 0
    assert (out / MARKER_NAME).is_file() and read_provenance(out / IMPORT_PROVENANCE) is not None
    load_student(out)  # the folder is an ordinary student folder
    first = _tree(out)
    assert _import(reference, out) == 0  # the same inputs: written again, same student
    assert _import(reference, out, "--act-bits", "8") == 2
    err = capsys.readouterr().err
    assert "was produced from other inputs (act_bits: 4 → 8)" in err and "--overwrite" in err
    assert _tree(out).keys() == first.keys()
    assert read_student_manifest(out).quant.activation.bits == 4
    assert _import(reference, out, "--act-bits", "8", "--overwrite") == 0
    assert read_student_manifest(out).quant.activation.bits == 8


def test_help_says_what_out_may_be(capsys):
    with pytest.raises(SystemExit):
        main(["import-reference", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "never --base" in text and "refused, never replaced" in text and "--overwrite" in text
