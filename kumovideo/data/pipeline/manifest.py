"""Manifests: JSON Lines files, one record per line, written so a crash loses nothing.

* The **scan manifest** grows one video record at a time: each record is written as a full
  line, flushed and fsynced before the next video is started. A run that is killed leaves
  at most one partial last line; the next run cuts that line off and skips every path that
  already has a record (resume).
* Every other output (the filtered clip list, the cut manifest, shard index files) is
  written whole to a temporary file in the same folder and renamed into place with
  `os.replace`, which is atomic on POSIX filesystems: readers see the old file or the new
  one, never half of one.

Scan record layout (one line per video; see docs/data-pipeline.md for every field)::

    {"path", "key", "status": "ok", "probe": {...}, "first_time", "keyframes": [...],
     "analysis_size": [w, h], "transitions": [...], "clips": [{...}], "dropped": [...],
     "seconds"}
    {"path", "key", "status": "error", "error": "reason", "seconds"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from kumovideo.utils.atomic import atomic_file


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, then rename it onto `path`."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSON Lines file; a broken line (a crash mid-write) is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def latest_by_path(records: Iterable[dict]) -> dict[str, dict]:
    """The last record of each path (a resumed run may retry a file and append again)."""
    out: dict[str, dict] = {}
    for rec in records:
        if "path" in rec:
            out[rec["path"]] = rec
    return out


def repair_tail(path: str | Path) -> int:
    """Cut off a partial last line left by a killed run; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Walk back to the last newline (files are small enough to read the tail in blocks).
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


class ManifestAppender:
    """Append records to a JSON Lines file, one durable line at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        repair_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ManifestAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
