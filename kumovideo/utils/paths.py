"""Checks on where a command will write, made before any work: a run that fails at the
end because its output folder can't be created has wasted all of it."""

from __future__ import annotations

import errno
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
        # /proc and the like exist but refuse new files with ENOENT, "No such file or
        # directory", which would send the user looking for a folder that is there.
        reason = "the folder takes no new files" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
        raise KumoInputError(f"cannot write to {folder}: {reason}; choose another {what}") from None
    os.close(fd)
    os.unlink(probe)


def _nearest_existing(path: Path) -> Path:
    """The nearest part of `path` that is already there (a file, under which nothing can be made, or a folder)."""
    while not path.exists():
        path = path.parent
    return path


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """An output folder that exists or can be created: not a file, under no file, in a
    place this process can write. Nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KumoInputError(f"{flag} {path} is an existing file; pass a folder path")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise KumoInputError(
            f"{flag} {path}: {existing} is a file, so no folder can be made under it; pass another path"
        )
    check_writable_folder(existing, flag)
    return path


def check_output_file(path: str | os.PathLike, what: str, example: str = "clip.mp4") -> Path:
    """An output file this process can create or replace: its folder exists, is a folder and
    takes new files, and the path is not itself a folder. Nothing is created here. `what`
    names the path in messages ("-o", "--wav"); `example` is a file name to suggest."""
    path = Path(path)
    folder = path.parent  # Path("clip.mp4").parent is Path(".")
    if not folder.is_dir():
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            raise KumoInputError(f"{what} {path}: {existing} is a file, not a folder; choose another {what} path")
        raise KumoInputError(
            f"{what} {path}: folder {folder} does not exist; create it first or choose another {what} path"
        )
    if path.is_dir():
        raise KumoInputError(f"{what} {path} is a folder; give a file name such as {path / example}")
    check_writable_folder(folder, f"{what} path")
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links


def check_not_overwriting(inputs: dict[str, Path], outputs: dict[str, Path | None]) -> None:
    """Refuse an output that is an input (or another output): writing it would destroy that
    file. Keys are the flags the paths came from, for the one-line error."""
    named = [(flag, Path(path)) for flag, path in outputs.items() if path is not None]
    for i, (flag, path) in enumerate(named):
        for other, other_path in [(k, Path(v)) for k, v in inputs.items()] + named[:i]:
            if _same_file(path, other_path):
                raise KumoInputError(
                    f"{flag} {path} is the same file as {other} {other_path}; "
                    "writing it would destroy that file: choose another output"
                )
