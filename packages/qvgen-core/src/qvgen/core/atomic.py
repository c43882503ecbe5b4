"""Atomic writes: a target is either what it was before or the complete new content, never half written.

Every writer builds the new content under a hidden temp name in the target's own folder (same filesystem),
fsyncs it, then renames it over the target. On any exception (a full disk, OSError 28 ENOSPC, included, and
KeyboardInterrupt) the temp is removed and the target is left as it was; OSErrors are re-raised naming the
target path, with the original as their cause.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to create the new file at a temp path beside `path`, then rename it over `path`.

    `write` gets a path that does not exist yet (e.g. `lambda p: safetensors.torch.save_file(t, p)`).
    Returns `path`.
    """
    target = Path(path)
    _make_parent(target)
    tmp = _temp_name(target, "tmp")
    try:
        write(tmp)
        if not tmp.is_file():
            raise RuntimeError(f"the writer for {target} did not create a file at {tmp}")
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException as e:
        full = _disk_full(target.parent)
        _remove(tmp)
        _reraise_naming(e, target, full)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (`encoding`, no newline translation); returns `path`."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_dir(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a fresh temp folder beside `path`, then swap it in for `path` by rename.

    An existing folder at `path` is replaced only once the new one is complete; if the swap fails it is put
    back. Returns `path`.
    """
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise FileExistsError(
            f"cannot write the folder {target}: a file of that name exists; remove it first"
        )
    _make_parent(target)
    tmp = _temp_name(target, "tmp")
    old: Path | None = None
    try:
        tmp.mkdir()
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            old = _temp_name(target, "old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                old = None
                raise
        else:
            os.replace(tmp, target)
    except BaseException as e:
        full = _disk_full(target.parent)
        _remove(tmp)
        _reraise_naming(e, target, full)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        _remove(old)
    return target


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temps a killed writer (SIGKILL, power loss) left beside `path`; return what was removed.

    Only names this module creates (`.<name>.tmp-<hex>`, `.<name>.old-<hex>`) are touched. Call it before
    rewriting `path` in a resumable job, never while another process may be writing `path`.
    """
    target = Path(path)
    stale = sorted(
        p
        for kind in ("tmp", "old")
        for p in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*")
        if len(p.name) == len(target.name) + len(kind) + 15  # "." + name + "." + kind + "-" + 12 hex
    )
    for p in stale:
        _remove(p)
    return stale


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (the digest manifests record for what was written)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(
    folders: Iterable[str | os.PathLike[str]], base: str | os.PathLike[str], pattern: str = "*"
) -> str:
    """Hex sha256 over the files matching `pattern` under `folders`, in path order: each file's path
    relative to `base`, then its bytes (a folder's digest; it moves with the folder's contents only)."""
    h = hashlib.sha256()
    base = Path(base)
    for folder in folders:
        for f in sorted(p for p in Path(folder).rglob(pattern) if p.is_file()):
            h.update(f.relative_to(base).as_posix().encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
    return h.hexdigest()


def _temp_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{secrets.token_hex(6)}")


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _reraise_naming(e, target)
        raise


@contextmanager
def write_errors_named(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, a failed write (a built-in OSError, or torch's / safetensors' / accelerate's own
    exception for a full disk) becomes one `OSError` naming `path` and the cause, e.g.
    `cannot write PATH: no space left on device`."""
    target = Path(path)
    try:
        yield
    except Exception as e:
        _reraise_naming(e, target, _disk_full(target if target.is_dir() else target.parent))
        raise


_FULL_DISK_HINTS = ("no space left on device", "errno 28", "os error 28")
_SHORT_WRITE_HINTS = (
    "unexpected pos",
    "file write failed",
    "failed to write",
    "write failed",
    "pytorchstreamwriter",
)


def _reraise_naming(e: BaseException, target: Path, disk_full: bool = False) -> None:
    """Raise a write failure again as one built-in OSError with `target` and the cause in its message.

    Built-in OSErrors keep their errno. torch (`RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos`), safetensors (`SafetensorError: ... No space left on device`) and others report a full disk in their
    own words; those become `OSError(ENOSPC)`. Anything else propagates unchanged.
    """
    if isinstance(e, OSError) and type(e).__module__ == "builtins":
        if str(target) in str(e):
            return
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"cannot write {target}: no space left on device") from e
        if e.errno is None:
            raise OSError(f"cannot write {target}: {e}") from e
        raise OSError(e.errno, f"cannot write {target}: {e.strerror or e}") from e
    if not isinstance(e, Exception) or isinstance(e, OSError):
        return
    text = str(e).lower()
    if any(h in text for h in _FULL_DISK_HINTS) or (disk_full and any(h in text for h in _SHORT_WRITE_HINTS)):
        raise OSError(errno.ENOSPC, f"cannot write {target}: no space left on device") from e


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    """True when the filesystem holding `folder` has less than `margin` bytes free (or cannot be asked)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as e:  # never hide the original error behind a cleanup failure
        logger.warning("could not remove the temp %s: %s", path, e)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Persist a rename; not every platform or filesystem can open or fsync a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
