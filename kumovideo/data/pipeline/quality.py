"""Visual quality: sharpness, exposure, colourfulness, blockiness and noise, and one score.

Each measure is a classical, weight-free image statistic, taken on a few frames per second
(`quality_samples_per_second`) and summarised per clip by the median, so one motion-blurred
frame does not sink a clip:

* **sharpness**: variance of the Laplacian of the luma. Edges give large second
  derivatives; blur removes them. Measured at a fixed 480-line height (larger frames are
  reduced first) so a 4K file is not penalised for its pixel count.
* **exposure**: share of pixels clipped to black (<= 4) or white (>= 251), and the mean
  level; crushed shadows and blown highlights carry no detail to learn from.
* **colourfulness**: Hasler and Suesstrunk's metric (2003) on the opponent channels
  rg = R - G and yb = (R + G) / 2 - B; about 0 for grey footage, 15 "slightly colourful",
  45 "quite colourful", over 80 "extremely colourful".
* **blockiness**: mean luma step across the 8-pixel block grid divided by the mean step
  inside blocks, on the native frame (the codec grid lives there). 1.0 is no visible block
  structure; heavy DCT compression pushes it well above.
* **noise**: Immerkaer's fast noise variance estimate (1996): the standard deviation of a
  Laplacian-difference kernel's response, which cancels smooth image structure and keeps
  the noise; in grey levels.

Each part is mapped to [0, 1] (1 = good) and the parts are combined by a weighted mean
(`WEIGHTS`); the raw values and the mapped parts are kept in the manifest so a user can
filter on any of them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

QUALITY_HEIGHT = 480  # frames taller than this are reduced before sharpness/noise/exposure
BLOCK = 8  # the DCT block size of MPEG-family codecs

# How much each part counts in the combined score. Sharpness and exposure decide whether a
# frame shows anything usable; noise and blocking are artefacts a generator would copy;
# colourfulness is weighted lightly because black-and-white footage is legitimate.
WEIGHTS = {"sharpness": 0.35, "exposure": 0.25, "noise": 0.15, "blockiness": 0.15, "colourfulness": 0.10}


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian (larger: sharper)."""
    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


def exposure(grey: np.ndarray) -> tuple[float, float]:
    """(share of clipped pixels, mean level 0-255)."""
    clipped = float(np.count_nonzero((grey <= 4) | (grey >= 251))) / grey.size
    return clipped, float(grey.mean())


def colourfulness(bgr: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness (0 for grey images)."""
    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def blockiness(grey: np.ndarray) -> float:
    """Mean step across 8x8 block edges over the mean step inside blocks (1: no blocking)."""
    g = grey.astype(np.float32)
    h, w = g.shape
    if h < 2 * BLOCK or w < 2 * BLOCK:
        return 1.0
    dx = np.abs(np.diff(g, axis=1))  # dx[:, j] is the step between columns j and j+1
    dy = np.abs(np.diff(g, axis=0))
    col = np.arange(dx.shape[1])
    row = np.arange(dy.shape[0])
    on_x, on_y = (col % BLOCK) == BLOCK - 1, (row % BLOCK) == BLOCK - 1
    across = dx[:, on_x].mean() + dy[on_y, :].mean()
    inside = dx[:, ~on_x].mean() + dy[~on_y, :].mean()
    return float(across / max(inside, 1e-3))


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's noise standard deviation estimate, in grey levels."""
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    resp = cv2.filter2D(grey.astype(np.float64), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2.0) * np.abs(resp).sum() / (6.0 * (w - 2) * (h - 2)))


def frame_quality(bgr: np.ndarray) -> dict[str, float]:
    """Raw measures of one native-resolution BGR frame."""
    grey_native = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    block = blockiness(_centre_crop(grey_native, 512))
    h, w = grey_native.shape
    if h > QUALITY_HEIGHT:
        size = (round(w * QUALITY_HEIGHT / h), QUALITY_HEIGHT)
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    else:
        grey = grey_native
    clipped, mean_level = exposure(grey)
    return {
        "sharpness": sharpness(grey),
        "clipped": clipped,
        "brightness": mean_level,
        "colourfulness": colourfulness(bgr),
        "blockiness": block,
        "noise": noise_sigma(grey),
    }


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of at most size x size, aligned to the 8-pixel block grid."""
    h, w = img.shape[:2]
    ch, cw = min(h, size), min(w, size)
    y0 = ((h - ch) // 2) // BLOCK * BLOCK
    x0 = ((w - cw) // 2) // BLOCK * BLOCK
    return img[y0 : y0 + ch, x0 : x0 + cw]


def quality_parts(raw: dict[str, float]) -> dict[str, float]:
    """Map raw measures to [0, 1] parts (1 = good). The anchors are commented inline."""
    # Variance of Laplacian: ~10 is a smear, ~1000 a crisp, detailed frame (log scale).
    sharp = _clip01((math.log10(max(raw["sharpness"], 1e-6)) - 1.0) / 2.0)
    # Losing a third of the pixels to clipping is a failed exposure; a mean level under 40 or
    # over 215 is too dark or too bright to show detail.
    level = raw["brightness"]
    expo = _clip01(1.0 - raw["clipped"] / 0.33) * _clip01(min(level, 255.0 - level) / 40.0)
    # Colourfulness 40 is "quite colourful" (Hasler-Suesstrunk); beyond it adds nothing.
    colour = _clip01(raw["colourfulness"] / 40.0)
    # Block-edge steps 50% larger than in-block steps are plainly visible blocking.
    block = _clip01(1.0 - (raw["blockiness"] - 1.05) / 0.5)
    # Noise sigma of 2 grey levels is clean camera footage; 12 is very grainy.
    noise = _clip01(1.0 - (raw["noise"] - 2.0) / 10.0)
    return {"sharpness": sharp, "exposure": expo, "colourfulness": colour, "blockiness": block, "noise": noise}


def combine(parts: dict[str, float]) -> float:
    return float(sum(WEIGHTS[k] * parts[k] for k in WEIGHTS) / sum(WEIGHTS.values()))


def clip_quality(samples: list[dict[str, float]]) -> dict:
    """Median of each raw measure over a clip's sampled frames, the parts and the score."""
    if not samples:
        return {"score": None, "parts": None, "raw": None, "frames": 0}
    raw = {k: float(np.median([s[k] for s in samples])) for k in samples[0]}
    parts = quality_parts(raw)
    return {
        "score": round(combine(parts), 4),
        "parts": {k: round(v, 4) for k, v in parts.items()},
        "raw": {k: round(v, 4) for k, v in raw.items()},
        "frames": len(samples),
    }
