import errno
import os
from pathlib import Path

import pytest

from qvgen.core import (
    atomic_dir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    files_sha256,
    remove_stale_temps,
)


def _enospc(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_text_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_write_full_disk_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        _enospc()

    with pytest.raises(OSError) as info:
        atomic_write(target, write)
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_atomic_write_full_disk_at_fsync_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError, match=r"m\.json") as info:
        atomic_write_bytes(target, b"new")
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_write_failed_rename_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", lambda *a: _enospc())
    with pytest.raises(OSError, match="cannot write"):
        atomic_write_text(tmp_path / "x.txt", "new")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_removes_the_temp_on_keyboard_interrupt_and_keeps_its_type(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.txt", write)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_non_os_errors_unchanged(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        raise ValueError("bad tensor")

    with pytest.raises(ValueError, match=r"^bad tensor$"):
        atomic_write(tmp_path / "x.txt", write)


def test_atomic_write_error_keeps_the_os_error_subclass(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere/src")

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "x.txt")):
        atomic_write(tmp_path / "x.txt", write)


def test_atomic_write_rejects_a_writer_that_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not create"):
        atomic_write(tmp_path / "x.txt", lambda tmp: None)


def test_atomic_write_new_file_respects_umask_not_private_temp_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.txt", "a")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_dir_swaps_a_complete_folder_in(tmp_path: Path) -> None:
    out = tmp_path / "run"
    atomic_dir(out, lambda d: (d / "a.txt").write_text("1"))
    atomic_dir(out, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_dir_failure_while_writing_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    atomic_dir(out, lambda d: (d / "a.txt").write_text("1"))

    def write(d: Path) -> None:
        (d / "big.bin").write_bytes(b"x")
        _enospc()

    with pytest.raises(OSError, match="run") as info:
        atomic_dir(out, write)
    assert info.value.errno == errno.ENOSPC
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_dir_failed_swap_puts_the_old_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    atomic_dir(out, lambda d: (d / "a.txt").write_text("1"))
    real_replace = os.replace
    calls = []

    def flaky(src: object, dst: object) -> None:
        calls.append(src)
        if len(calls) == 2:  # 1: old folder aside, 2: new folder in
            _enospc()
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="run"):
        atomic_dir(out, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_atomic_dir_refuses_to_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("keep me")
    with pytest.raises(FileExistsError, match="remove it first"):
        atomic_dir(tmp_path / "run", lambda d: None)
    assert (tmp_path / "run").read_text() == "keep me"


def test_remove_stale_temps_removes_only_this_modules_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "shard-000000.tar"
    stale_file = tmp_path / ".shard-000000.tar.tmp-0123456789ab"
    stale_file.write_text("killed mid-write")
    stale_dir = tmp_path / ".shard-000000.tar.old-ba9876543210"
    stale_dir.mkdir()
    keep = [
        tmp_path / ".shard-000000.tar.tmp-notmine",
        tmp_path / ".shard-000001.tar.tmp-0123456789ab",
        target,
    ]
    for p in keep:
        p.write_text("keep")
    assert remove_stale_temps(target) == [stale_dir, stale_file]
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom((1 << 22) + 17)  # more than one read chunk
    path = atomic_write_bytes(tmp_path / "t.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_files_sha256_hashes_names_and_bytes_of_the_matching_files(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "w.safetensors").write_bytes(b"weights")
    (tmp_path / "a" / "sub" / "x.safetensors").write_bytes(b"more")
    (tmp_path / "a" / "config.json").write_text('{"_name_or_path": "here"}')
    expected = hashlib.sha256(b"a/sub/x.safetensorsmorea/w.safetensorsweights").hexdigest()
    assert files_sha256([tmp_path / "a"], tmp_path, "*.safetensors") == expected
    everything = files_sha256([tmp_path / "a"], tmp_path)
    (tmp_path / "a" / "config.json").write_text('{"_name_or_path": "elsewhere"}')
    assert files_sha256([tmp_path / "a"], tmp_path, "*.safetensors") == expected  # config not covered
    assert files_sha256([tmp_path / "a"], tmp_path) != everything
