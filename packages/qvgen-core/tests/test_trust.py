"""Provenance, output-folder guards, whole-line logs, interrupts, strict configs and real full disks."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qvgen.core import (
    MARKER_NAME,
    ConfigError,
    Frozen,
    Interrupted,
    Provenance,
    ProvenanceMismatch,
    append_jsonl,
    atomic_write_bytes,
    canonical_digest,
    check_provenance,
    claim_output_dir,
    cli_main,
    expand_path,
    load_config,
    read_jsonl,
    repair_jsonl,
    replace_output_dir,
    write_errors_named,
    write_provenance,
)
from qvgen.core.testing import default_sigint, fill_filesystem, small_filesystem


class Data(Frozen):
    caption_dropout: float = 0.1
    root: Path = Path("data")
    shards: tuple[Path, ...] = ()


class Train(Frozen):
    max_steps: int = 10


class Run(Frozen):
    output_dir: Path
    train: Train = Train()
    data: Data = Data()


# --- provenance -------------------------------------------------------------------------------------------


def test_canonical_digest_ignores_key_order() -> None:
    assert canonical_digest({"a": 1, "b": [1, 2]}) == canonical_digest({"b": [1, 2], "a": 1})
    assert canonical_digest({"a": 1}) != canonical_digest({"a": 2})


def test_check_provenance_lists_every_changed_fact(tmp_path: Path) -> None:
    record = tmp_path / "p.json"
    old = Provenance.of("tool", {"caption[0]": "a red ball", "seed": 0, "encoder": "sha256:aa"})
    assert check_provenance(record, old, tmp_path, "rerun with --overwrite") is False
    write_provenance(record, old)
    assert check_provenance(record, old, tmp_path, "x") is True
    new = Provenance.of("tool", {"caption[0]": "a blue ball", "seed": 1, "encoder": "sha256:aa"})
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(record, new, tmp_path / "shard-0.tar", "rerun with --overwrite")
    msg = str(err.value)
    assert "shard-0.tar" in msg and "caption[0]: a red ball → a blue ball" in msg and "seed: 0 → 1" in msg
    assert "encoder" not in msg and "\n" not in msg


def test_a_corrupt_provenance_record_is_an_error_naming_it(tmp_path: Path) -> None:
    record = tmp_path / "p.json"
    record.write_text('{"tool": 1}')
    with pytest.raises(ValueError, match=r"p\.json: not a readable provenance record"):
        check_provenance(record, Provenance.of("t", {}), tmp_path, "x")


# --- output folders ---------------------------------------------------------------------------------------


def test_claim_refuses_a_folder_the_user_filled_and_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "important.bin").write_bytes(b"\1")
    with pytest.raises(ValueError, match="not empty and was not written by qvgen-x"):
        claim_output_dir(out, "qvgen-x")
    with pytest.raises(ValueError, match="never replaces a folder it did not create"):
        replace_output_dir(out, "qvgen-x", lambda tmp: (tmp / "model.bin").write_bytes(b""))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "notes.txt",
        "sub",
        "sub/important.bin",
    ]


def test_claim_marks_new_folders_and_accepts_its_own_again(tmp_path: Path) -> None:
    out = claim_output_dir(tmp_path / "new", "qvgen-x")
    assert (out / MARKER_NAME).is_file()
    (out / "a.txt").write_text("1")
    assert claim_output_dir(out, "qvgen-x") == out
    with pytest.raises(ValueError, match="written by qvgen-x, not qvgen-y"):
        claim_output_dir(out, "qvgen-y")


@pytest.mark.parametrize("relation", ["equal", "inside", "contains"])
def test_an_output_overlapping_an_input_is_refused(tmp_path: Path, relation: str) -> None:
    base = tmp_path / "base"
    (base / "transformer").mkdir(parents=True)
    out = {"equal": base, "inside": base / "student", "contains": tmp_path}[relation]
    with pytest.raises(ValueError, match="input"):
        claim_output_dir(out, "qvgen-x", inputs=[base])
    assert (base / "transformer").is_dir()


def test_replace_output_dir_swaps_in_a_complete_folder_and_keeps_the_old_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    replace_output_dir(out, "qvgen-x", lambda tmp: (tmp / "v.txt").write_text("1"))
    assert (out / "v.txt").read_text() == "1"

    def fail(tmp: Path) -> None:
        (tmp / "v.txt").write_text("2")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        replace_output_dir(out, "qvgen-x", fail)
    assert (out / "v.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_expand_path_expands_home_and_variables_and_refuses_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("QVGEN_RUNS", "/data/runs")
    monkeypatch.delenv("QVGEN_UNSET", raising=False)
    assert expand_path("~/x") == Path("/home/u/x")
    assert expand_path("${QVGEN_RUNS}/a") == Path("/data/runs/a")
    with pytest.raises(ValueError, match=r"output_dir: .*\$QVGEN_UNSET.*not set"):
        expand_path("$QVGEN_UNSET/a", "output_dir")


# --- strict configs ---------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> Run:
    path = tmp_path / "run.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(Run, path, overrides)


def test_a_yes_for_a_float_is_refused_not_read_as_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.caption_dropout"):
        _load(tmp_path, "output_dir: out\ndata:\n  caption_dropout: yes\n")


def test_set_refuses_a_bool_or_a_string_for_an_int(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.max_steps"):
        _load(tmp_path, "output_dir: out\n", ("train.max_steps=yes",))
    with pytest.raises(ConfigError, match=r"train.max_steps"):
        _load(tmp_path, "output_dir: out\ntrain:\n  max_steps: '4'\n")
    assert _load(tmp_path, "output_dir: out\n", ("train.max_steps=4",)).train.max_steps == 4
    assert _load(tmp_path, "output_dir: out\ndata:\n  caption_dropout: 0\n").data.caption_dropout == 0.0


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"duplicate key 'max_steps' \(first on line 3, again on line 4\)"):
        _load(tmp_path, "output_dir: out\ntrain:\n  max_steps: 4\n  max_steps: 8\n")


def test_path_fields_expand_home_and_variables_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QVGEN_DATA", "/d")
    cfg = _load(tmp_path, "output_dir: ~/x\ndata:\n  root: $QVGEN_DATA/r\n  shards: ['~/a', b]\n")
    assert cfg.output_dir == tmp_path / "x"
    assert cfg.data.root == Path("/d/r")
    assert cfg.data.shards == (tmp_path / "a", Path("b"))
    monkeypatch.delenv("QVGEN_DATA")
    with pytest.raises(ConfigError, match=r"data.root: .*QVGEN_DATA.*not set"):
        _load(tmp_path, "output_dir: x\ndata:\n  root: $QVGEN_DATA/r\n")


# --- whole-line logs --------------------------------------------------------------------------------------


def test_a_torn_last_line_is_dropped_with_a_warning_and_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1, "loss": 0.5})
    append_jsonl(log, {"step": 2, "loss": 0.4})
    with open(log, "ab") as f:
        f.write(b'{"step": 3, "lo')  # a kill in the middle of a write
    with caplog.at_level(logging.WARNING):
        assert [r["step"] for r in read_jsonl(log)] == [1, 2]
    assert "metrics.jsonl: line 3 is torn" in caplog.text
    assert [r["step"] for r in repair_jsonl(log)] == [1, 2]
    append_jsonl(log, {"step": 3, "loss": 0.3})
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3]


def test_a_malformed_middle_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2,,}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        read_jsonl(log)
    log.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 2 holds a list"):
        read_jsonl(log)


# --- interrupts -------------------------------------------------------------------------------------------


def _interrupting(args: list[str]) -> int:
    if args == ["plain"]:
        raise KeyboardInterrupt
    raise Interrupted("interrupted at step 7; the last checkpoint is ckpt/step-5; resume with: x run c.yaml")


def test_cli_main_turns_an_interrupt_into_one_line_and_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main("qvgen-x", _interrupting, ["plain"]) == 130
    assert capsys.readouterr().err == "qvgen-x: interrupted\n"
    assert cli_main("qvgen-x", _interrupting, ["step"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "qvgen-x: interrupted at step 7; the last checkpoint is ckpt/step-5; resume with: x run c.yaml"
    ]
    with pytest.raises(KeyboardInterrupt):
        cli_main("qvgen-x", _interrupting, ["plain", "--debug"])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_ends_a_cli_with_one_line(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import sys, time, pathlib
        from qvgen.core import cli_main
        def work(args):
            pathlib.Path({str(ready)!r}).write_text("1")
            while True:
                time.sleep(0.05)
        sys.exit(cli_main("qvgen-x", work, []))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    for _ in range(600):
        if ready.exists():
            break
        proc.poll()
        assert proc.returncode is None
        import time

        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err.splitlines() == ["qvgen-x: interrupted"]


# --- real full disks --------------------------------------------------------------------------------------


def test_a_real_full_disk_is_one_oserror_naming_the_path_and_keeps_the_old_file(tmp_path: Path) -> None:
    with small_filesystem(1 << 20) as fs:
        target = fs / "export" / "model.bin"
        atomic_write_bytes(target, b"old")
        with pytest.raises(OSError) as err:
            atomic_write_bytes(target, b"\1" * (2 << 20))
        assert err.value.errno == errno.ENOSPC
        assert str(err.value) == f"[Errno 28] cannot write {target}: no space left on device"
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]


def test_a_library_full_disk_message_becomes_enospc(tmp_path: Path) -> None:
    with small_filesystem(1 << 20) as fs:
        fill_filesystem(fs)
        with pytest.raises(OSError) as err, write_errors_named(fs / "ckpt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        assert "cannot write" in str(err.value) and "no space left on device" in str(err.value)
    with pytest.raises(RuntimeError, match="unexpected pos"), write_errors_named(tmp_path / "ckpt"):
        raise RuntimeError("unexpected pos 64 vs 0")  # not full: not blamed on the disk


def test_marker_files_are_json(tmp_path: Path) -> None:
    out = claim_output_dir(tmp_path / "o", "qvgen-x")
    assert json.loads((out / MARKER_NAME).read_text())["tool"] == "qvgen-x"
    assert os.listdir(out) == [MARKER_NAME]
