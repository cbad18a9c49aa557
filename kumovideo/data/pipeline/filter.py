"""`kumo data filter`: thresholds from the config decide which scanned clips are kept.

Every check is explicit and named, and every rejected clip lists *all* the checks it failed,
so a threshold can be tuned by looking at what it removes. Long clips are split into equal
pieces no longer than `max_seconds` before the checks (the measures are per clip, so each
piece inherits them).

Each output line is a self-contained clip entry: the source video, its frame range, the
measures, the caption and what `cut` needs (frame rate, size, keyframe before the start).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from kumovideo.data.pipeline.config import FilterConfig


def clip_entry(video: dict, clip: dict) -> dict[str, Any]:
    """A flat, self-contained description of one clip for `cut` and `encode`."""
    probe = video["probe"]
    keyframes = video.get("keyframes") or []
    times = video.get("keyframe_times") or []  # missing in manifests of older scans
    k = bisect.bisect_right(keyframes, clip["start_frame"]) - 1
    after = bisect.bisect_left(keyframes, clip["end_frame"])
    return {
        "id": clip["id"],
        "video": video["path"],
        "fps": probe["fps"],
        "width": probe["width"],
        "height": probe["height"],
        "rotation": probe.get("rotation", 0),  # the picture is upright once turned this far (cut does)
        "codec": probe.get("codec"),
        "video_frames": probe.get("decoded_frames") or probe.get("frames"),
        "first_time": video.get("first_time", 0.0),
        "keyframe_before": keyframes[k] if k >= 0 else 0,
        # Where `cut` seeks: frame numbers are decode order, which time gives only at a constant rate.
        "keyframe_before_time": times[k] if 0 <= k < len(times) else None,
        "keyframes_in_clip": [f for f in keyframes if clip["start_frame"] <= f < clip["end_frame"]],
        "keyframe_times_in_clip": [
            t for f, t in zip(keyframes, times) if clip["start_frame"] <= f < clip["end_frame"]
        ],
        "next_keyframe": keyframes[after] if after < len(keyframes) else None,
        "start_frame": clip["start_frame"],
        "end_frame": clip["end_frame"],
        "start": clip["start"],
        "end": clip["end"],
        "duration": clip["duration"],
        "caption": clip["caption"],
        "caption_source": clip["caption_source"],
        "motion_score": (clip.get("motion") or {}).get("score"),
        "motion": clip.get("motion"),
        "camera": clip.get("camera"),
        "quality": clip.get("quality"),
        "overlays": clip.get("overlays"),
    }


def split_long(entry: dict, max_seconds: float | None) -> list[dict]:
    """Split an entry into equal pieces of at most `max_seconds`."""
    if not max_seconds or entry["duration"] <= max_seconds:
        return [entry]
    pieces = math.ceil(entry["duration"] / max_seconds - 1e-9)
    fps = entry["fps"] or 25.0
    times = entry.get("keyframe_times_in_clip") or []
    start, end = entry["start_frame"], entry["end_frame"]
    bounds = [start + round((end - start) * j / pieces) for j in range(pieces + 1)]
    out = []
    for j in range(pieces):
        a, b = bounds[j], bounds[j + 1]
        piece = dict(entry)
        piece.update(
            id=f"{entry['id']}-p{j}",
            start_frame=a,
            end_frame=b,
            start=round(a / fps, 4),
            end=round(b / fps, 4),
            duration=round((b - a) / fps, 4),
            keyframes_in_clip=[f for f in entry["keyframes_in_clip"] if a <= f < b],
        )
        kf = [f for f in entry["keyframes_in_clip"] if f <= a]
        piece["keyframe_before"] = kf[-1] if kf else entry["keyframe_before"]
        if kf:
            piece["keyframe_before_time"] = dict(zip(entry["keyframes_in_clip"], times)).get(kf[-1])
        piece["keyframe_times_in_clip"] = [t for f, t in zip(entry["keyframes_in_clip"], times) if a <= f < b]
        nxt = [f for f in entry["keyframes_in_clip"] if f >= b]
        piece["next_keyframe"] = nxt[0] if nxt else entry["next_keyframe"]
        out.append(piece)
    return out


def rejections(entry: dict, cfg: FilterConfig) -> list[str]:
    """Names of the checks this clip fails (empty: keep it)."""
    why = []
    if entry["duration"] < cfg.min_seconds:
        why.append("too_short")
    if entry["width"] < cfg.min_width or entry["height"] < cfg.min_height:
        why.append("too_small")
    if entry["fps"] < cfg.min_fps:
        why.append("low_fps")
    score = (entry.get("quality") or {}).get("score")
    if cfg.min_quality is not None and (score is None or score < cfg.min_quality):
        why.append("low_quality")
    motion = entry.get("motion_score")
    if cfg.min_motion is not None:
        # No score means no frame pair was measured (a clip of a single frame, say), which
        # is not evidence that the clip is static: say so, so the two are never confused.
        if motion is None:
            why.append("no_motion_score")
        elif motion < cfg.min_motion:
            why.append("static")
    if cfg.max_motion is not None and motion is not None and motion > cfg.max_motion:
        why.append("too_much_motion")
    overlays = entry.get("overlays") or {}
    items = overlays.get("items") or []
    static_area = sum(it["area"] for it in items if it["kind"] == "static")
    if cfg.max_overlay_area is not None and static_area > cfg.max_overlay_area:
        why.append("overlay")
    if cfg.reject_subtitles and any(it["kind"] == "subtitle" for it in items):
        why.append("subtitles")
    label = (entry.get("camera") or {}).get("label")
    if cfg.cameras is not None and label not in cfg.cameras:
        why.append("camera")
    if cfg.require_caption and entry.get("caption_source") == "attributes":
        why.append("no_caption")
    return why


def filter_records(records: Iterable[dict], cfg: FilterConfig) -> tuple[list[dict], list[dict], Counter]:
    """(kept entries, rejected entries with "rejected": [...], counts per reason)."""
    kept, rejected, reasons = [], [], Counter()
    for video in records:
        if video.get("status") != "ok":
            continue
        for clip in video["clips"]:
            for entry in split_long(clip_entry(video, clip), cfg.max_seconds):
                why = rejections(entry, cfg)
                if why:
                    reasons.update(why)
                    rejected.append({**entry, "rejected": why})
                else:
                    kept.append(entry)
    return kept, rejected, reasons
