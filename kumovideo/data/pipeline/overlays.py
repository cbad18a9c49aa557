"""Static overlays (logos, watermarks, burned-in captions) and subtitle bands.

An overlay is drawn on top of the picture, so it stays put while the picture under it
moves. Over a clip's sampled frames (grey, at the analysis width) three measures show it:

* **edge persistence**: an edge present in (nearly) every frame at the same pixel, with
  the same direction. We compare the gradient of the *temporal mean* frame with the mean
  gradient magnitude (`coherence`, 0-1): moving content's edges land somewhere else in each
  frame and average out (coherence ~ 1/sqrt(frames)); an overlay's outline and lettering
  are the same edge every time (coherence ~ 1), even when the overlay is semi-transparent.
* **temporal variance**: the per-pixel standard deviation over time. An opaque overlay
  does not vary, a semi-transparent one varies much less than the picture around it.
* **the rest moves**, made precise with the camera model from the optical flow
  (`motion.py`): from the camera's pan, tilt and zoom we know how far the scene travelled
  under every pixel. An edge can only be judged if the scene moved *across* it (along the
  edge's normal) by at least `MIN_TRAVEL` pixels: a horizon during a pan slides along
  itself and looks static (the aperture problem), and near the centre of a zoom nothing
  moves. When too little of the frame can be judged -- a frozen clip, a locked-off camera
  -- a static scene and an overlay look the same, and the clip is reported as
  ``undetermined`` rather than guessed at.

Persistent, still pixels the scene moved under are grouped into components (a closing
joins the strokes of a logo). A component of plausible size is an overlay when the scene
moved across enough of its edges and it has strokes in both orientations; it is reported
with its box and its area as a share of the frame.

**Subtitles** change every few seconds, so over the whole clip they are not persistent.
The same test runs in short sliding windows (under a second) over the bottom third: text
lines show as wide, short, dense components of edges present in every frame of the window.
Text lines whose edges change from one window to a later one are different subtitles;
two or more different texts in the band make a subtitle band.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COHERENT = 0.75  # coherence above which an edge is the same edge in every frame
# Gradient (Sobel, 0-255 luma) of the temporal mean frame that counts as an edge: a step of
# about 25 grey levels. Overlays are drawn to be seen, so their edges are far stronger.
MIN_EDGE = 100.0
PRESENT = 0.9  # share of frames an edge must be present in (half MIN_EDGE) to persist
STILL_RATIO = 0.5  # still: varies less than half as much as the picture around it
RING = 6  # pixels around a candidate's box that it is compared with (_still)
FLAT_STD = 8.0  # a ring varying less than this (grey levels, std) is flat: no evidence
MIN_TRAVEL = 6.0  # pixels the scene must move across an edge for the edge to be judged
MIN_JUDGEABLE = 0.35  # below this share of judgeable pixels the clip is undetermined
MIN_AREA = 0.002  # smallest overlay, as a share of the frame (a 10x6 logo at 256x144)
MAX_AREA = 0.15  # larger static regions are scenery moving with the camera, not overlays
MIN_ORIENTATION = 0.15  # share of edge pixels each orientation needs (see _judged)
MIN_ACROSS = 0.25  # share of an overlay's edges the scene must have moved across (_judged)
MIN_SAMPLES = 4  # fewer frames cannot tell still from moving
SUBTITLE_WINDOW_S = 0.75  # shortest window in which a subtitle line must stay put
SUBTITLE_MAX_WINDOW_S = 1.25  # longest window (subtitles stay up ~1.5 s or more)
SUBTITLE_TOP = 2.0 / 3.0  # subtitles live below this share of the frame height


@dataclass
class CameraRates:
    """Camera motion of a clip in analysis pixels: picture translation per second (+x right,
    +y down) and relative zoom per second (> 0: the picture grows)."""

    tx: float = 0.0
    ty: float = 0.0
    zoom: float = 0.0

    def displacement(self, h: int, w: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
        """How far (dx, dy pixels) the scene moves under each pixel over `seconds`."""
        s = (1.0 + self.zoom) ** seconds - 1.0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        dx = s * (xs - (w - 1) / 2.0) + self.tx * seconds
        dy = s * (ys - (h - 1) / 2.0) + self.ty * seconds
        return dx, dy


@dataclass
class _EdgeStats:
    """Gradient statistics of a stack of frames (see the module docstring)."""

    mean_x: np.ndarray  # temporal mean of the x gradient
    mean_y: np.ndarray
    mean_mag: np.ndarray  # temporal mean of the gradient magnitude
    present: np.ndarray  # share of frames with an edge at the pixel

    @property
    def mean_grad(self) -> np.ndarray:
        return np.hypot(self.mean_x, self.mean_y)

    def persistent(self, present: float) -> np.ndarray:
        g = self.mean_grad
        return (g >= MIN_EDGE) & (g >= COHERENT * self.mean_mag) & (self.present >= present)

    def normal_travel(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """Scene travel across each pixel's edge (along the edge normal), in pixels."""
        g = self.mean_grad
        return np.abs(dx * self.mean_x + dy * self.mean_y) / np.maximum(g, 1e-6)

    @property
    def vertical(self) -> np.ndarray:
        """Whether each pixel's edge is closer to vertical than horizontal (|gx| > |gy|)."""
        return np.abs(self.mean_x) > np.abs(self.mean_y)


def _gradients(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gx = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) for g in frames])
    gy = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) for g in frames])
    return gx, gy, np.hypot(gx, gy)


def _edge_stats(gx: np.ndarray, gy: np.ndarray, mag: np.ndarray) -> _EdgeStats:
    return _EdgeStats(gx.mean(axis=0), gy.mean(axis=0), mag.mean(axis=0), (mag >= MIN_EDGE / 2).mean(axis=0))


def _still(std: np.ndarray, mask: np.ndarray, box) -> bool:
    """Temporal variance test: the component varies much less than the picture around it.

    An edge pixel sits between a stroke and whatever is beside it, so each pixel takes the
    smallest standard deviation of its 3x3 neighbourhood (semi-transparent strokes are one
    or two pixels wide and vary by a fraction of the picture behind them). The reference
    is a ring of `RING` pixels around the component's box; when that ring is flat the test
    abstains (passes).
    """
    x0, y0, x1, y1 = box
    h, w = std.shape
    inner = cv2.erode(std[y0:y1, x0:x1], np.ones((3, 3), np.uint8))[mask[y0:y1, x0:x1]]
    ring = np.ones((min(h, y1 + RING) - max(0, y0 - RING), min(w, x1 + RING) - max(0, x0 - RING)), bool)
    ring[y0 - max(0, y0 - RING) : y1 - max(0, y0 - RING), x0 - max(0, x0 - RING) : x1 - max(0, x0 - RING)] = False
    around = std[max(0, y0 - RING) : y1 + RING, max(0, x0 - RING) : x1 + RING][ring]
    if inner.size == 0 or around.size == 0:
        return False
    ring_std = float(np.median(around))
    if ring_std < FLAT_STD:
        # The picture around is flat (sky, a wall): moving or not, it hardly changes, so the
        # variance says nothing and the edge tests decide.
        return True
    # At least a quarter of the edge pixels must touch a still stroke (the others straddle
    # the stroke and the moving picture behind it).
    return float(np.percentile(inner, 25)) < STILL_RATIO * ring_std


def _judged(mask: np.ndarray, across: np.ndarray, vertical: np.ndarray, box) -> bool:
    """Whether a component of static-looking edges is an overlay rather than scenery.

    * Enough of its edges were crossed by the moving scene (`across`): edges that the scene
      only slid along (the aperture problem) look static whatever they are.
    * Lettering and logos have both vertical and horizontal strokes; a piece of scenery
      that looks static because it slides along itself has one orientation only.
    """
    x0, y0, x1, y1 = box
    m = mask[y0:y1, x0:x1]
    total = np.count_nonzero(m)
    if total == 0:
        return False
    if np.count_nonzero(m & across[y0:y1, x0:x1]) < MIN_ACROSS * total:
        return False
    v = np.count_nonzero(m & vertical[y0:y1, x0:x1]) / total
    return MIN_ORIENTATION <= v <= 1.0 - MIN_ORIENTATION


def _components(mask: np.ndarray, close: tuple[int, int]) -> list[tuple[int, int, int, int, int]]:
    """Connected components after closing with a (w, h) rectangle: (x0, y0, x1, y1, pixels)."""
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, close))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, _area = stats[i]
        pixels = int(np.count_nonzero(mask[labels == i]))
        out.append((int(x), int(y), int(x + w), int(y + h), pixels))
    return out


def detect_static_overlays(frames: np.ndarray, times: list[float], camera: CameraRates) -> dict:
    """Static overlays in a clip given as an (N, H, W) uint8 stack of grey frames.

    Returns {"status": "ok" | "undetermined", "judgeable": share of pixels the scene moved
    under, "items": [{"box": [x0, y0, x1, y1] (pixels of these frames), "area": share}]}.
    """
    n, h, w = frames.shape
    if n < MIN_SAMPLES:
        return {"status": "undetermined", "reason": "too few frames", "judgeable": None, "items": []}
    dx, dy = camera.displacement(h, w, times[-1] - times[0])
    moved = np.hypot(dx, dy) >= MIN_TRAVEL
    share = float(moved.mean())
    if share < MIN_JUDGEABLE:
        return {
            "status": "undetermined",
            "reason": "the camera barely moves, so a static scene and an overlay look the same",
            "judgeable": round(share, 4),
            "items": [],
        }
    stats = _edge_stats(*_gradients(frames))
    std = frames.astype(np.float32).std(axis=0)
    mask = stats.persistent(PRESENT) & moved
    across = stats.normal_travel(dx, dy) >= MIN_TRAVEL
    items = []
    for x0, y0, x1, y1, pixels in _components(mask, (5, 5)):
        box = (x0, y0, x1, y1)
        area = (x1 - x0) * (y1 - y0) / float(h * w)
        if not MIN_AREA <= area <= MAX_AREA:
            continue
        if min(x1 - x0, y1 - y0) < 3 or pixels < 12:
            continue  # a thin line (a letterbox edge) or a few stray pixels
        if not _still(std, mask, box) or not _judged(mask, across, stats.vertical, box):
            continue
        items.append({"box": [x0, y0, x1, y1], "area": round(area, 5)})
    return {"status": "ok", "judgeable": round(share, 4), "items": items}


def detect_subtitles(frames: np.ndarray, times: list[float], camera: CameraRates) -> dict:
    """Subtitle band in the bottom third: text lines that hold for a while, then change.

    `times` are the frames' timestamps in seconds. Returns {"found": bool, "box": [...] or
    None, "lines": windows with a text line, "changes": distinct texts seen}.
    """
    n, h, w = frames.shape
    top = int(h * SUBTITLE_TOP)
    gx, gy, mag = _gradients(frames[:, top:, :])
    rate = (n - 1) / max(times[-1] - times[0], 1e-6)
    # The window must be long enough for the scene to move under most of the band, but not
    # longer than a subtitle stays up: the shortest of the allowed lengths that does.
    win = max(3, int(round(SUBTITLE_WINDOW_S * rate)) + 1)
    longest = max(win, int(round(SUBTITLE_MAX_WINDOW_S * rate)) + 1)
    while win < min(longest, n):
        dx, dy = camera.displacement(h, w, (win - 1) / rate)
        if np.median(np.hypot(dx[top:], dy[top:])) >= MIN_TRAVEL:
            break
        win += 1
    lines: list[tuple[list[int], np.ndarray]] = []  # (box, persistent-edge mask)
    for i in range(0, n - win + 1):
        j = i + win
        stats = _edge_stats(gx[i:j], gy[i:j], mag[i:j])
        dx, dy = (d[top:] for d in camera.displacement(h, w, times[j - 1] - times[i]))
        persistent = stats.persistent(1.0) & (np.hypot(dx, dy) >= MIN_TRAVEL)
        across = stats.normal_travel(dx, dy) >= MIN_TRAVEL
        line = _text_line(persistent, across, stats.vertical, w)
        if line is not None:
            lines.append((line, persistent))
    if len(lines) < 2:
        return {"found": False, "box": None, "lines": len(lines), "changes": 0}
    # Distinct texts: a line whose edges overlap the previous distinct text's little is new.
    texts = [lines[0]]
    for box, mask in lines[1:]:
        ref_box, ref = texts[-1]
        x0, x1 = min(box[0], ref_box[0]), max(box[2], ref_box[2])
        a, b = mask[:, x0:x1], ref[:, x0:x1]
        if np.count_nonzero(a & b) < 0.5 * max(1, np.count_nonzero(a | b)):
            texts.append((box, mask))
    if len(texts) < 2:
        return {"found": False, "box": None, "lines": len(lines), "changes": 1}
    x0 = min(b[0] for b, _ in lines)
    y0 = min(b[1] for b, _ in lines) + top
    x1 = max(b[2] for b, _ in lines)
    y1 = max(b[3] for b, _ in lines) + top
    return {"found": True, "box": [x0, y0, x1, y1], "lines": len(lines), "changes": len(texts)}


def _text_line(persistent: np.ndarray, across: np.ndarray, vertical: np.ndarray, width: int) -> list[int] | None:
    """The widest text-like component of a persistent-edge mask: wide, short, dense."""
    bh = persistent.shape[0]
    best = None
    # A wide, short closing kernel joins letters and words of one line but not two lines.
    for x0, y0, x1, y1, pixels in _components(persistent, (max(5, width // 40), 3)):
        bw, bhh = x1 - x0, y1 - y0
        if bw < width * 0.12 or bhh < 3 or bhh > bh * 0.8 or bw < 2.5 * bhh:
            continue
        if pixels / float(bw * bhh) < 0.2:  # lettering fills a good part of its box
            continue
        if not _judged(persistent, across, vertical, (x0, y0, x1, y1)):
            continue
        if best is None or bw > best[2] - best[0]:
            best = [x0, y0, x1, y1]
    return best


def analyse_overlays(
    frames: np.ndarray, times: list[float], camera: CameraRates, native_size: tuple[int, int]
) -> dict:
    """Static overlays and subtitles of one clip, boxes scaled to native pixels.

    Returns {"status", "detected", "area" (total share of the frame), "items": [{"kind":
    "static" | "subtitle", "box": [x0, y0, x1, y1], "area"}], "judgeable"}.
    """
    n, h, w = frames.shape
    sx, sy = native_size[0] / float(w), native_size[1] / float(h)
    static = detect_static_overlays(frames, times, camera)
    items = [{"kind": "static", **it} for it in static["items"]]
    subs = detect_subtitles(frames, times, camera) if n >= 3 else {"found": False}
    if subs["found"]:
        x0, y0, x1, y1 = subs["box"]
        area = (x1 - x0) * (y1 - y0) / float(h * w)
        # A static text item inside the subtitle band is the same thing seen whole-clip.
        items = [it for it in items if not _inside(it["box"], subs["box"])]
        items.append({"kind": "subtitle", "box": [x0, y0, x1, y1], "area": round(area, 5)})
    for it in items:
        x0, y0, x1, y1 = it["box"]
        it["box"] = [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]
    status = "ok" if (static["status"] == "ok" or subs["found"]) else static["status"]
    out = {
        "status": status,
        "detected": bool(items),
        "area": round(sum(it["area"] for it in items), 5),
        "items": items,
        "judgeable": static.get("judgeable"),
    }
    if status != "ok":
        out["reason"] = static.get("reason")
    return out


def _inside(box, outer, slack: int = 2) -> bool:
    return (
        box[0] >= outer[0] - slack
        and box[1] >= outer[1] - slack
        and box[2] <= outer[2] + slack
        and box[3] <= outer[3] + slack
    )
