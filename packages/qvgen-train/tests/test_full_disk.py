"""Issue 32, item 5: a real full disk printed a 40-line traceback naming neither the path nor "no space"
(`RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos` from torch.save inside accelerate's
`save_state`; `SafetensorError` from the export).

These tests mount a small tmpfs (`qvgen.core.testing.small_filesystem`; skipped where that is not possible)
and fill it for real: no `OSError` is raised by hand.
"""

import yaml

from qvgen.core.testing import fill_filesystem, small_filesystem
from qvgen.train import checkpoint as ckpt
from qvgen.train.cli import main

SIZE = 64 << 20
"""Room for the run folder and one checkpoint of the tiny LSQ run."""
LEFT = 64 << 10
"""What `fill_filesystem` leaves free: the metrics lines fit, a checkpoint or an export does not."""


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_full_disk_at_the_second_checkpoint_is_one_line_and_keeps_the_first(
    run_dict, wan_shards, tmp_path, monkeypatch, capsys
):
    with small_filesystem(SIZE) as fs:
        out = fs / "run"
        cfg = run_dict(
            "wan", wan_shards, out, aux=None, train={"max_steps": 6},
            checkpoint={"every_n_steps": 2, "keep_last": 2}, export={"fake_quant": False, "deploy": False},
        )  # fmt: skip
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        save = ckpt.save_checkpoint

        def save_then_fill_the_disk(*args, **kwargs):
            saved = save(*args, **kwargs)
            fill_filesystem(fs, leave_bytes=LEFT)
            return saved

        monkeypatch.setattr(ckpt, "save_checkpoint", save_then_fill_the_disk)
        capsys.readouterr()
        assert main(["run", str(tmp_path / "run.yaml")]) == 1
        second = out / "checkpoints" / "step-00000004"
        assert _errors(capsys) == [
            f"qvgen-train: error: [Errno 28] cannot write {second}: no space left on device "
            "(run again with --debug for the traceback)"
        ]
        assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]  # no .tmp left
        assert ckpt.verify_checkpoint(out / "checkpoints" / "step-00000002").step == 2


def test_a_full_disk_at_the_export_is_one_line_and_leaves_no_partial_folder(
    run_dict, wan_shards, tmp_path, capsys
):
    with small_filesystem(SIZE) as fs:
        out = fs / "run"
        cfg = run_dict(
            "wan", wan_shards, out, aux=None, train={"max_steps": 0}
        )  # PTQ: only the export writes
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        fill_filesystem(fs, leave_bytes=LEFT)
        capsys.readouterr()
        assert main(["run", str(tmp_path / "run.yaml")]) == 1
        assert _errors(capsys) == [
            f"qvgen-train: error: [Errno 28] cannot write {out / 'final' / 'fake_quant'}: no space left on device "
            "(run again with --debug for the traceback)"
        ]
        final = out / "final"
        assert not final.exists() or not any(final.iterdir())  # no half-written folder, no temp
