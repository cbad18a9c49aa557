"""Probe a video file: container, codec, frame rate, frame count, size, duration.

Probing only reads the container header (PyAV / FFmpeg), so it is cheap. Files that cannot be
opened raise `BadVideo` with a reason a person can act on; the scan records the reason and
moves on. Truncation that only shows while decoding (an MP4 whose index is at the front but
whose data stops early) is caught by the decode pass in `analyze.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av


class BadVideo(Exception):
    """A file that cannot be used; `str(exc)` is the reason recorded in the manifest."""


# Leading bytes of the common video containers, used to tell "this is a damaged video" from
# "this is not a video at all" when FFmpeg rejects a file.
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "AVI"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
    (0, b"FLV", "FLV"),
)


def sniff_container(path: str | Path) -> str | None:
    """The container family a file's first bytes announce, or None."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:1] == b"\x47" and len(head) >= 1:  # MPEG-TS sync byte; weak, checked last
        return "MPEG-TS"
    return None


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open a file with PyAV, turning FFmpeg's errors into a `BadVideo` with a clear reason."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadVideo(f"broken symbolic link: its target {os.readlink(path)} does not exist")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadVideo(f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise BadVideo("empty file (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        family = sniff_container(path)
        detail = getattr(exc, "strerror", None) or str(exc)
        if family is not None:
            raise BadVideo(f"truncated or corrupt {family} file: FFmpeg cannot read its header ({detail})") from exc
        raise BadVideo(f"not a video file: no known container format ({detail})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadVideo(f"cannot open file: {exc}") from exc


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_container(container: av.container.InputContainer, path: str | Path) -> dict[str, Any]:
    """Header facts about an open container's first video stream (raises `BadVideo`)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise BadVideo(f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    fps = _fps(stream)
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE is microseconds
    frames = int(stream.frames or 0)
    if frames == 0 and duration and fps:
        frames = int(round(duration * fps))  # the container does not say; estimate
    ctx = stream.codec_context
    tags = {k.lower(): v for k, v in (container.metadata or {}).items()}
    return {
        "path": str(path),
        "bytes": os.path.getsize(path),
        "container": container.format.name,
        "codec": ctx.name if ctx is not None else None,
        "pix_fmt": ctx.pix_fmt if ctx is not None else None,
        "width": int(stream.width or (ctx.width if ctx is not None else 0)),
        "height": int(stream.height or (ctx.height if ctx is not None else 0)),
        "fps": fps,
        "frames": frames,  # as declared by the container (or estimated from duration)
        "duration": duration,
        "bit_rate": int(container.bit_rate or 0) or None,
        "has_audio": bool(container.streams.audio),
        "tags": {k: str(v) for k, v in tags.items()},
    }


def probe(path: str | Path) -> dict[str, Any]:
    """Probe `path` (raises `BadVideo`)."""
    with open_container(path) as container:
        info = probe_container(container, path)
    if info["width"] <= 0 or info["height"] <= 0:
        raise BadVideo("video stream has no frame size (corrupt header)")
    return info
