"""Measurements of conditioning frames (`kumo eval i2v`, `kumo eval interpolate`):
PSNR of frames, where each object of a ShapesWorld caption is in a frame (by the judge's
own measurement, `shapes_judge`), and the linear-blend baseline of interpolation.
"""

from __future__ import annotations

import math

import numpy as np

from kumovideo.data.shapes_world import parse_caption
from kumovideo.evaluation import shapes_judge as judge


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between uint8 images or videos of one shape (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def object_centres(frame: np.ndarray, caption: str) -> dict[str, tuple[float, float] | None]:
    """Centre (x, y) / S of each named object of `caption` in one uint8 frame (S, S, 3), by
    the judge's steps (`shapes_judge._judge_object`: the largest confident blob of the
    object's colour, its soft coverage against the border's background, the centre of the
    coverage profiles); None for an object that is not there."""
    frames = frame[None]
    side = frame.shape[0]
    labels, distance = judge.nearest_palette(frames)
    ring = max(1, side // 32)
    border = judge._border(labels, ring)
    background = int(np.bincount(border, minlength=len(judge.PALETTE_NAMES)).argmax())
    background_rgb = judge._border(frames, ring)[border == background].astype(np.float32).mean(0)
    confident = distance < judge.COLOUR_TOLERANCE
    colours = [obj["colour"] for obj in parse_caption(caption)["objects"]]
    centres: dict[str, tuple[float, float] | None] = {}
    for colour in colours:
        core = judge.largest_component((labels == judge.PALETTE_NAMES.index(colour)) & confident)
        others = np.zeros_like(core)
        for other in colours:
            if other != colour:
                others |= (labels == judge.PALETTE_NAMES.index(other)) & confident
        if not core.any():
            centres[colour] = None
            continue
        object_rgb = np.median(frames[core].astype(np.float32), axis=0)
        alpha = judge._alpha_map(frames, judge._dilate(core, 2) & ~others, background_rgb, object_rgb)
        if alpha.sum() < judge.MIN_AREA * side * side:
            centres[colour] = None
            continue
        cx, cy, _, _ = judge._profiles(alpha)
        centres[colour] = (float(cx[0]) / side, float(cy[0]) / side)
    return centres


def start_errors(generated: np.ndarray, image: np.ndarray, caption: str) -> list[float]:
    """Per named object, the distance / S between its centre in the generated first frame and
    in the conditioning image (inf when it is missing from the generated frame; objects the
    judge cannot find in the image itself are left out)."""
    want, got = object_centres(image, caption), object_centres(generated, caption)
    errors = []
    for colour, target in want.items():
        if target is None:
            continue
        found = got.get(colour)
        errors.append(math.inf if found is None else math.dist(found, target))
    return errors


def linear_blend(keyframes: np.ndarray, factor: int) -> np.ndarray:
    """The baseline interpolation: each in-between frame a cross-fade of its two neighbouring
    keyframes (N, H, W, 3) -> (factor (N - 1) + 1, H, W, 3) uint8 (it ghosts moving objects)."""
    keys = keyframes.astype(np.float64)
    out = [keys[0]]
    for a, b in zip(keys[:-1], keys[1:]):
        out += [(1 - w / factor) * a + (w / factor) * b for w in range(1, factor + 1)]
    return np.clip(np.round(np.stack(out)), 0, 255).astype(np.uint8)


def in_between(num_frames: int, factor: int) -> np.ndarray:
    """Indices of the frames that are not keyframes."""
    return np.array([i for i in range(num_frames) if i % factor])


def finite_mean(values: list[float]) -> float | None:
    """Mean of the finite values (None if there are none)."""
    kept = [v for v in values if math.isfinite(v)]
    return float(np.mean(kept)) if kept else None
