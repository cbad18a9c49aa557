"""Camera movement: static, pan left/right, tilt up/down, zoom in/out, with speed.

Input is the global camera model of each sampled frame pair (`motion.PairMotion`: the
translation and zoom of the similarity transform fitted to the flow field with RANSAC). Per
clip we take the median of each parameter over the pairs, so a few bad pairs (a flash, a
passing object filling the frame) do not decide the label.

Names follow film convention and describe the camera, not the picture:

* pan left: the camera turns left, so the picture slides **right** (tx > 0);
* tilt up: the camera turns up, so the picture slides **down** (ty > 0);
* zoom in: the picture grows (zoom > 0).

To compare a zoom with a pan, the zoom is turned into the displacement it causes at the
left/right frame edge (zoom x half the width). The largest of the three movements names the
class, unless it is below `STATIC_SPEED`, in which case the shot is static.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # motion needs OpenCV; the config check reads CAMERA_CLASSES without it
    from kumovideo.data.pipeline.motion import PairMotion

CAMERA_CLASSES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")

# Movement under 2% of the frame width per second reads as a locked-off camera: handheld
# drift and flow noise stay below it, while the slowest deliberate pan (the frame crossed in
# ~30 s) is above it.
STATIC_SPEED = 2.0


def classify_camera(pairs: list[PairMotion], fps: float, flow_width: int) -> dict:
    """Camera class of a clip, with speed and the per-axis rates behind it.

    Returns a dict: `label` (one of `CAMERA_CLASSES`, None without pairs), `speed` (percent
    of the frame width per second for pans and tilts; percent scale change per second for
    zooms), `pan`, `tilt` (percent of the frame width per second of picture motion, +right
    and +down), `zoom` (percent scale change per second), and `agreement`, the share of pairs
    whose own label matches.
    """
    if not pairs:
        return {"label": None, "speed": None, "pan": None, "tilt": None, "zoom": None, "agreement": None}
    fps = fps if fps > 0 else 25.0
    tx = float(np.median([p.tx for p in pairs]))
    ty = float(np.median([p.ty for p in pairs]))
    zoom = float(np.median([p.zoom for p in pairs]))
    label = _label(tx, ty, zoom, fps, flow_width)
    per_pair = [_label(p.tx, p.ty, p.zoom, fps, flow_width) for p in pairs]
    pct = 100.0 * fps / flow_width  # pixels per frame -> percent of width per second
    pan, tilt, zoom_pct = tx * pct, ty * pct, zoom * 100.0 * fps
    speed = {
        "static": 0.0,
        "pan_left": abs(pan),
        "pan_right": abs(pan),
        "tilt_up": abs(tilt),
        "tilt_down": abs(tilt),
        "zoom_in": abs(zoom_pct),
        "zoom_out": abs(zoom_pct),
    }[label]
    return {
        "label": label,
        "speed": round(speed, 3),
        "pan": round(pan, 3),
        "tilt": round(tilt, 3),
        "zoom": round(zoom_pct, 3),
        "agreement": round(per_pair.count(label) / len(per_pair), 3),
    }


def _label(tx: float, ty: float, zoom: float, fps: float, flow_width: int) -> str:
    """Class of one set of per-frame rates (pixels per frame at `flow_width`)."""
    edge = zoom * flow_width / 2.0  # pixels per frame a zoom moves the frame edge
    moves = {"pan": abs(tx), "tilt": abs(ty), "zoom": abs(edge)}
    axis = max(moves, key=moves.get)
    if moves[axis] * 100.0 * fps / flow_width < STATIC_SPEED:
        return "static"
    if axis == "pan":
        return "pan_left" if tx > 0 else "pan_right"
    if axis == "tilt":
        return "tilt_up" if ty > 0 else "tilt_down"
    return "zoom_in" if zoom > 0 else "zoom_out"
