"""Checks on where a command will write, made before any work: a run that fails at the
end because its output folder can't be created has wasted all of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kumovideo.utils.errors import KumoInputError


def check_writable_folder(folder: Path, what: str) -> None:
    """Raise KumoInputError unless a file can be created in the existing `folder`. A real
    temp file is the only reliable test: permission bits say nothing about read-only
    mounts, /proc, or root."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".kumo-write-check-", dir=folder)
    except OSError as exc:
        raise KumoInputError(f"cannot write to {folder} ({exc.strerror or exc}); choose another {what}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """An output folder that exists or can be created: not a file, under no file, in a
    place this process can write. Nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KumoInputError(f"{flag} {path} is an existing file; pass a folder path")
    existing = path
    while not existing.exists():  # the nearest part of the path that is already there
        existing = existing.parent
    if not existing.is_dir():
        raise KumoInputError(
            f"{flag} {path}: {existing} is a file, so no folder can be made under it; pass another path"
        )
    check_writable_folder(existing, flag)
    return path
