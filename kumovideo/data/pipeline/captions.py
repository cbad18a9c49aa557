"""Captions for clips: sidecar files first, a captioning model when given, attributes last.

Where a caption comes from, in order:

1. **sidecar**: a file beside the video with the same stem. ``clip.txt`` holds one caption
   for the whole video (ShapesWorld's ``render_to_disk`` writes exactly this). ``clip.json``
   holds ``{"caption": "..."}`` (or ``"text"`` / ``"prompt"``), or per-time captions
   ``{"segments": [{"start": 0.0, "end": 4.2, "caption": "..."}, ...]}``; a clip takes the
   segment it overlaps most. A sidecar that is there but gives no caption (empty, or not
   a JSON object) is reported, and the scan warns once per file.
2. **metadata**: a ``comment`` or ``description`` tag in the container.
3. **model**: a `Captioner` you supply (``scan.captioner: "my.module:MyCaptioner"``), which
   receives a few RGB frames of the clip. This is the hook for re-captioning with a
   vision-language model.
4. **attributes**: without any of those, a plain sentence built from what the scan measured
   (camera movement, motion, brightness, dominant colour). It is honest but generic; the
   filter's ``require_caption`` drops clips whose caption came from here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from kumovideo.utils.errors import KumoInputError

CAPTION_KEYS = ("caption", "text", "prompt")


@runtime_checkable
class Captioner(Protocol):
    """A captioning model. `frames` are RGB uint8 arrays (H, W, 3) sampled from the clip;
    `info` holds the clip's measured attributes (camera, motion, quality). Return a caption."""

    def caption(self, frames: list[np.ndarray], info: dict[str, Any]) -> str: ...


def load_captioner(spec: str | None) -> Captioner | None:
    """Instantiate "package.module:ClassName" (no arguments), or None."""
    if not spec:
        return None
    if ":" not in spec:
        raise KumoInputError(f"scan.captioner {spec!r} must be 'module:ClassName'")
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KumoInputError(
            f"scan.captioner {spec!r} cannot be loaded ({exc}); check the module path and class name"
        ) from None
    except Exception as exc:  # the module itself fails to import (a bug, a missing file)
        raise KumoInputError(
            f"scan.captioner {spec!r} cannot be loaded: importing {module_name} "
            f"raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    try:
        captioner = obj() if isinstance(obj, type) else obj
    except Exception as exc:  # e.g. its model weights are missing
        raise KumoInputError(
            f"scan.captioner {spec!r} cannot be built: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(captioner, Captioner):
        raise KumoInputError(f"scan.captioner {spec!r} has no caption(frames, info) method")
    return captioner


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def read_caption_file(path: str | Path) -> str | None:
    """The caption a text file holds (stripped; bytes that are not UTF-8 replaced), None when
    the file is missing or holds only white space. The rule for every caption `.txt`: a
    video's sidecar, and the `<id>.txt` that `kumo data cut` writes and `encode` reads."""
    path = Path(path)
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace").strip() or None


def read_sidecar(video: str | Path) -> dict[str, Any] | None:
    """The sidecar caption data of a video: {"caption": str} and/or {"segments": [...]}, with
    "file", the sidecar's name. Sidecar files that are there but give no caption (an empty
    .txt, a .json that is not a JSON object or has an empty caption) are listed under
    "problems" as (path, what is wrong), so the scan can say what it used instead."""
    video = Path(video)
    txt = video.with_suffix(".txt")
    text = read_caption_file(txt)
    if text:
        return {"caption": text, "file": txt.name}
    problems = [(str(txt), "is empty")] if txt.is_file() else []
    js = video.with_suffix(".json")
    if js.is_file():
        data, problem = _json_sidecar(js)
        if data:
            return {**data, **({"problems": problems} if problems else {})}
        if problem:
            problems.append((str(js), problem))
    return {"problems": problems} if problems else None


def _json_sidecar(js: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(caption data, None) from a .json sidecar, or (None, what is wrong with it); (None,
    None) for a JSON object with no caption keys at all (other metadata, not a caption file)."""
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    out: dict[str, Any] = {"file": js.name}
    problem = None
    for key in CAPTION_KEYS:
        if key in data:
            if isinstance(data[key], str) and data[key].strip():
                out["caption"] = data[key].strip()
            else:
                problem = f'has an empty or non-text "{key}"'
            break
    segments = data.get("segments") or data.get("clips")
    if isinstance(segments, list):
        out["segments"] = [s for s in segments if isinstance(s, dict)]
    return (out, None) if len(out) > 1 else (None, problem)


# What a clip's caption came from, as a warning names it.
_SOURCE_NAMES = {
    "metadata": "the container's comment/description tag",
    "model": "the captioning model (scan.captioner)",
    "attributes": "the measured attributes (a generic sentence)",
}


def sidecar_warnings(sidecar: dict | None, sources: list[str]) -> list[str]:
    """One line per sidecar file that gave no caption (`read_sidecar`'s "problems"), saying
    what the video's clips (their `caption_source`s) were captioned from instead."""
    if not sidecar or not sidecar.get("problems"):
        return []
    names = [sidecar.get("file") if s == "sidecar" else _SOURCE_NAMES.get(s, s) for s in dict.fromkeys(sources)]
    instead = f"its clips were captioned from {' and '.join(names)} instead" if names else "the video gave no clip"
    return [f"{path} {problem}; {instead}" for path, problem in sidecar["problems"]]


def _segment_caption(segments: list[dict], start: float, end: float) -> str | None:
    """Caption of the segment overlapping [start, end) the most."""
    best, best_overlap = None, 0.0
    for seg in segments:
        text = next((seg[k] for k in CAPTION_KEYS if isinstance(seg.get(k), str)), None)
        try:
            s0, s1 = float(seg.get("start", 0.0)), float(seg.get("end", float("inf")))
        except (TypeError, ValueError):
            continue
        overlap = min(end, s1) - max(start, s0)
        if text and overlap > best_overlap:
            best, best_overlap = text.strip(), overlap
    return best


def caption_for_clip(
    sidecar: dict | None,
    tags: dict[str, str],
    start: float,
    end: float,
    frames: list[np.ndarray],
    info: dict[str, Any],
    captioner: Captioner | None,
) -> tuple[str, str]:
    """(caption, source) for one clip; source is sidecar/metadata/model/attributes."""
    if sidecar:
        if sidecar.get("segments"):
            text = _segment_caption(sidecar["segments"], start, end)
            if text:
                return text, "sidecar"
        if sidecar.get("caption"):
            return sidecar["caption"], "sidecar"
    for key in ("comment", "description"):
        if tags.get(key, "").strip():
            return tags[key].strip(), "metadata"
    if captioner is not None and frames:
        text = captioner.caption([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames], info)
        if text and text.strip():
            return text.strip(), "model"
    return attribute_caption(frames, info), "attributes"


_COLOUR_NAMES = (
    (0, "red"),
    (15, "orange"),
    (25, "yellow"),
    (35, "green"),
    (85, "cyan"),
    (100, "blue"),
    (130, "purple"),
    (160, "pink"),
    (175, "red"),
)


def _dominant_colour(frames: list[np.ndarray]) -> str:
    hsv = np.concatenate([cv2.cvtColor(f, cv2.COLOR_BGR2HSV).reshape(-1, 3) for f in frames])
    saturated = hsv[(hsv[:, 1] > 60) & (hsv[:, 2] > 50)]
    if len(saturated) < 0.15 * len(hsv):
        return "muted"
    hue = np.bincount(saturated[:, 0] // 5, minlength=36).argmax() * 5 + 2
    name = "red"
    for start, label in _COLOUR_NAMES:
        if hue >= start:
            name = label
    return name


def attribute_caption(frames: list[np.ndarray], info: dict[str, Any]) -> str:
    """A weight-free caption from measured attributes, e.g. "A fast pan to the right across a
    bright, mostly green scene, with a moving subject.\""""
    camera = (info.get("camera") or {}).get("label") or "static"
    motion = info.get("motion") or {}
    speed = (info.get("camera") or {}).get("speed") or 0.0
    pace = "slow " if speed < 10 else "fast " if speed > 40 else ""
    shot = {
        "static": "A static shot of",
        "pan_left": f"A {pace}pan to the left across",
        "pan_right": f"A {pace}pan to the right across",
        "tilt_up": f"A {pace}tilt up over",
        "tilt_down": f"A {pace}tilt down over",
        "zoom_in": f"A {pace}zoom in on",
        "zoom_out": f"A {pace}zoom out from",
    }[camera].replace("  ", " ")
    if frames:
        level = float(np.mean([f.mean() for f in frames]))
        light = "dark" if level < 70 else "bright" if level > 170 else ""
        colour = _dominant_colour(frames)
    else:
        light, colour = "", "muted"
    tone = "muted-colour" if colour == "muted" else f"mostly {colour}"
    scene = f"a {light + ', ' if light else ''}{tone} scene"
    extra = ""
    if (motion.get("subject_fraction") or 0) > 0.02 and (motion.get("subject") or 0) > 5:
        extra = ", with a moving subject"
    elif camera == "static" and (motion.get("score") or 0) < 1:
        extra = ", nearly still"
    return f"{shot} {scene}{extra}."
