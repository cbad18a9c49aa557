"""Atomic writes: build in a temp location beside the target, rename into place when done.

A process killed at any moment leaves either the old target or the new one, never a
half-written file or folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Yield a temp folder; on success it replaces `target` (the old one is removed). The
    temp folders a killed writer left beside `target` (their names carry its pid) are removed
    first, and the result gets the modes a plain mkdir/open would give (mkdtemp's is private)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        _fsync_with_default_modes(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb"):
    """Yield an open temp file; on success it is fsynced and renamed onto `target`."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_file_mode() -> int:
    """The mode a plain `open()` would give a new file (0o666 less the umask): mkstemp's
    temp files are 0o600, and a renamed output should not stay private."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def remove_abandoned(target: Path) -> None:
    """Remove `atomic_directory`'s temp and old folders beside `target` whose writer is dead
    (named `.NAME.tmp-PID-...` / `.NAME.old-PID`; a name without a pid is from before pids
    were written, and its writer is long gone)."""
    for path in target.parent.glob(f".{target.name}.*-*"):
        kind, _, rest = path.name[len(target.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not path.is_dir():
            continue
        pid = rest.split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_with_default_modes(folder: Path) -> None:
    """fsync every file and give files and folders the default modes (safetensors and
    mkdtemp make them private to the owner)."""
    file_mode = default_file_mode()
    folder_mode = file_mode | ((file_mode & 0o444) >> 2)  # x wherever r: 0o644 -> 0o755
    os.chmod(folder, folder_mode)
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(path, file_mode)
        elif path.is_dir():
            os.chmod(path, folder_mode)
