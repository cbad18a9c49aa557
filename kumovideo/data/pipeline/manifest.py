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
     "keyframe_times": [seconds of each keyframe],
     "analysis_size": [w, h], "transitions": [...], "clips": [{...}], "dropped": [...],
     "seconds"[, "warnings": ["a sidecar that gave no caption, and what was used", ...]]}
    {"path", "key", "status": "error", "error": "reason", "seconds"}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumovideo.utils.atomic import atomic_file
from kumovideo.utils.errors import KumoInputError


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


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a JSON Lines file the pipeline wrote (blank lines skipped). Strict: a
    line that is not a JSON object raises, naming the line (`read_manifest` is the checked
    reader for files a user passes)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"{path} line {number} is not a JSON object")
                records.append(record)
    return records


@dataclass(frozen=True)
class ManifestKind:
    """One kind of JSON Lines file the pipeline reads: the keys every record has, and which
    command writes it (for the error message)."""

    name: str
    keys: tuple[str, ...]
    written_by: str
    # Nested keys a record with status "ok" must also have: {field: keys of that object, or
    # of each object of that list}.
    ok_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()


SCAN_MANIFEST = ManifestKind(
    "scan manifest",
    ("path", "key", "status"),
    "the .jsonl that `kumo data scan` writes",
    ok_fields=(
        ("probe", ("fps", "width", "height")),
        ("clips", ("id", "start_frame", "end_frame", "start", "end", "duration", "caption", "caption_source")),
    ),
)
CLIP_LIST = ManifestKind(
    "clip list",
    ("id", "video", "fps", "width", "height", "first_time", "keyframe_before", "start_frame", "end_frame", "caption"),
    "the .jsonl that `kumo data filter` writes",
)
CUT_MANIFEST = ManifestKind("cut manifest", ("id", "file", "caption"), "the clips.jsonl that `kumo data cut` writes")

# Scan records are written with "path" first, so a line that a killed scan left half
# written starts like this. Only such a line may be cut off on resume.
_SCAN_RECORD_START = '{"path": '


def read_manifest(path: str | Path, kind: ManifestKind, resuming: bool = False) -> list[dict]:
    """Every record of a JSON Lines file of `kind`, checked line by line.

    Anything that is not such a file (binary data, a line that is not a JSON object, a
    record without the kind's keys) is a `KumoInputError` naming the file and line, so a
    wrong file is refused before it is read as empty or appended to. `resuming`: the file
    is an existing output to append to; a half-written last scan record (a killed run) is
    then left out, and `ManifestAppender` cuts it off.
    """
    path = Path(path)

    def refuse(where: str, problem: str) -> KumoInputError:
        if resuming:
            todo = "it is only appended to if it is one: choose another -o file"
        else:
            todo = f"pass {kind.written_by}"
        return KumoInputError(f"{where} {problem}, so the file is not a {kind.name}; {todo}")

    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                where = f"{path} line {number}"
                text = line.strip()
                if not text:
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    killed_write = not line.endswith("\n") and text.startswith(_SCAN_RECORD_START)
                    if killed_write and resuming:
                        continue
                    if killed_write:
                        raise refuse(
                            where, "is cut short (a killed `kumo data scan`? run it again with the same -o to finish)"
                        ) from None
                    raise refuse(where, "is not JSON") from None
                if not isinstance(record, dict):
                    raise refuse(where, "is not a JSON object")
                missing = [key for key in kind.keys if key not in record]
                if missing:
                    raise refuse(where, f"has no {missing[0]!r} key")
                if record.get("status") == "ok":
                    problem = _nested_problem(record, kind.ok_fields)
                    if problem:
                        raise refuse(where, problem)
                records.append(record)
    except UnicodeDecodeError:
        raise refuse(str(path), "is not UTF-8 text") from None
    return records


def _nested_problem(record: dict, fields: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    """What is missing from an "ok" record's nested objects (a hand-edited file), if anything."""
    for field, keys in fields:
        value = record.get(field)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{field}[{i}]" if isinstance(value, list) else field
            if not isinstance(item, dict):
                return f"has no {field!r} object" if value is None else f"has {where} that is not a JSON object"
            missing = [key for key in keys if key not in item]
            if missing:
                return f"has {where} without a {missing[0]!r} key"
    return None


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
    """Append records to a JSON Lines file, one durable line at a time.

    The file is opened (and a partial last line cut off) at the first record, so a run that
    fails before producing anything leaves no empty file behind. Check an existing file with
    `read_manifest` first: this class appends to whatever is there.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def append(self, record: dict) -> None:
        if self._fh is None:
            repair_tail(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> ManifestAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
