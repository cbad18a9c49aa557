"""Dynamic score from dense optical flow (OpenCV DIS or Farneback).

Every ``1 / flow_pairs_per_second`` seconds a pair of frames a small gap apart (about 1/12 s)
gets a dense flow field at `flow_width` pixels wide. At low frame rates the gap is one frame
and pairs may follow one another back to back (under ~9 fps every frame starts a pair), so
any two frames of such a video are measured. For each pair we keep a handful of numbers
(`PairMotion`) and throw the field away:

* the mean flow magnitude: how much the picture moves at all;
* a global camera model: a similarity transform (translation, zoom, roll) fitted with RANSAC
  to a grid of flow vectors, so a moving subject does not drag the fit;
* the residual flow after removing the camera model, which separates the *subject* (pixels
  moving against the camera, residual over a threshold) from the *background*.

Per clip the pairs are averaged into the dynamic score. Its unit is **percent of the frame
width moved per second**, so it does not depend on resolution or frame rate: a pan crossing
the frame in five seconds scores 20, a tripod shot of a still room about 0. That is the
number near-static clips are filtered on, and what a video model receives as its motion
micro-conditioning (as Lumina-Video does with its optical-flow scores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

GRID_STEP = 8  # pixels between the flow vectors the camera model is fitted to
RANSAC_PX = 1.0  # reprojection error (pixels) under which a vector agrees with the camera
# A pixel belongs to the subject when its flow departs from the camera model by more than
# this many pixels per frame (at flow_width; ~0.3% of the width) *and* by three times the
# median departure, so noise and compression shimmer do not count as motion.
SUBJECT_PX_PER_FRAME = 0.5


@dataclass
class PairMotion:
    """Motion between frames `a` and `b` (per frame, i.e. divided by b - a)."""

    a: int
    b: int
    magnitude: float  # mean |flow|, pixels per frame at the flow width
    tx: float  # camera model translation of the picture, pixels per frame (+x right)
    ty: float  # (+y down)
    zoom: float  # relative scale change per frame (> 0: the picture grows)
    roll: float  # rotation, radians per frame
    subject_magnitude: float  # mean |flow| over subject pixels (0 when there are none)
    background_magnitude: float  # mean |flow| over the rest
    subject_fraction: float  # share of pixels that are subject
    inliers: float  # share of grid vectors that agree with the camera model


class FlowEstimator:
    """Dense optical flow between two grey frames."""

    def __init__(self, method: str = "dis"):
        self.method = method
        if method == "dis":
            # MEDIUM is accurate to a fraction of a pixel on textured content and still takes
            # only ~1-2 ms on a 160x90 frame.
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        elif method != "farneback":
            raise ValueError(f"unknown flow method {method!r}")

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self.method == "dis":
            return self._dis.calc(prev, nxt, None)
        return cv2.calcOpticalFlowFarneback(
            prev, nxt, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
        )


def pair_motion(flow: np.ndarray, a: int, b: int) -> PairMotion:
    """Summarise one flow field (from frame a to frame b) into a `PairMotion`."""
    gap = max(1, b - a)
    h, w = flow.shape[:2]
    mag = np.linalg.norm(flow, axis=2)
    ys, xs = np.mgrid[GRID_STEP // 2 : h : GRID_STEP, GRID_STEP // 2 : w : GRID_STEP]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    src = np.stack([xs.ravel() - cx, ys.ravel() - cy], axis=1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()].astype(np.float32)
    model, inl = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PX * gap,
        maxIters=500,
        confidence=0.99,
        refineIters=10,
    )
    if model is None:  # degenerate field (e.g. a blank frame): no camera motion measurable
        model, inl = np.array([[1, 0, 0], [0, 1, 0]], np.float64), np.zeros((len(src), 1))
    (p, q, tx), (r, s, ty) = model
    scale = math.hypot(p, r)
    roll = math.atan2(r, p)
    # Flow the camera model predicts at every pixel, and what is left over.
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32) - cx, np.arange(h, dtype=np.float32) - cy)
    model_fx = (p - 1) * gx + q * gy + tx
    model_fy = r * gx + (s - 1) * gy + ty
    residual = np.hypot(flow[..., 0] - model_fx, flow[..., 1] - model_fy)
    threshold = max(SUBJECT_PX_PER_FRAME * gap, 3.0 * float(np.median(residual)))
    subject = residual > threshold
    frac = float(subject.mean())
    return PairMotion(
        a=a,
        b=b,
        magnitude=float(mag.mean()) / gap,
        tx=float(tx) / gap,
        ty=float(ty) / gap,
        zoom=(scale ** (1.0 / gap)) - 1.0,
        roll=roll / gap,
        subject_magnitude=float(mag[subject].mean()) / gap if frac > 0 else 0.0,
        background_magnitude=float(mag[~subject].mean()) / gap if frac < 1 else 0.0,
        subject_fraction=frac,
        inliers=float(np.mean(inl)) if len(inl) else 0.0,
    )


class MotionSampler:
    """Picks frame pairs from a stream and measures each (see module docstring)."""

    def __init__(self, fps: float, method: str = "dis", pairs_per_second: float = 6.0):
        fps = fps if fps > 0 else 25.0
        self.every = max(1, round(fps / pairs_per_second))  # frames between pair starts
        # Frames within a pair: about 1/12 s, never less than one frame (under ~18 fps the
        # pair is two consecutive frames) and never more than `every`. When it equals
        # `every` (every frame starts a pair under ~9 fps) a pair's last frame is also the
        # first of the next one, which `feed` allows for.
        self.gap = max(1, min(self.every, round(fps / 12.0)))
        self._flow = FlowEstimator(method)
        self._first: tuple[int, np.ndarray] | None = None
        self.pairs: list[PairMotion] = []

    def feed(self, index: int, grey: np.ndarray) -> None:
        """Give the next frame (grey, at the flow width)."""
        # Close the open pair before this frame may open the next one: when gap == every the
        # frame that ends a pair also starts one, and opening first would overwrite the
        # pair's first frame, so no pair would ever complete.
        if self._first is not None and index - self._first[0] == self.gap:
            a, prev = self._first
            self.pairs.append(pair_motion(self._flow(prev, grey), a, index))
            self._first = None
        if index % self.every == 0:
            self._first = (index, grey)

    def take_before(self, frame: int) -> list[PairMotion]:
        """Remove and return the pairs that end before `frame`."""
        done = [p for p in self.pairs if p.b < frame]
        self.pairs = [p for p in self.pairs if p.b >= frame]
        return done


def pairs_within(pairs: list[PairMotion], start: int, end: int) -> list[PairMotion]:
    """Pairs lying wholly inside frames [start, end) (never across a transition)."""
    return [p for p in pairs if p.a >= start and p.b < end]


def dynamic_score(pairs: list[PairMotion], fps: float, flow_width: int) -> dict:
    """Per-clip dynamic score and its parts, in percent of the frame width per second.

    `score` is the mean flow magnitude over the clip; `subject` and `background` are the
    same measure restricted to subject and background pixels (averaged over the pairs
    that have any), and `subject_fraction` is the mean share of subject pixels.
    """
    to_pct = 100.0 * (fps if fps > 0 else 25.0) / flow_width
    if not pairs:
        return {"score": None, "subject": None, "background": None, "subject_fraction": None, "pairs": 0}
    with_subject = [p for p in pairs if p.subject_fraction > 0]
    return {
        "score": round(float(np.mean([p.magnitude for p in pairs])) * to_pct, 4),
        "subject": round(float(np.mean([p.subject_magnitude for p in with_subject])) * to_pct, 4)
        if with_subject
        else 0.0,
        "background": round(float(np.mean([p.background_magnitude for p in pairs])) * to_pct, 4),
        "subject_fraction": round(float(np.mean([p.subject_fraction for p in pairs])), 4),
        "pairs": len(pairs),
    }


def pair_to_dict(p: PairMotion) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(p).items()}


def clip_dynamic_score(frames: np.ndarray, fps: float, method: str = "dis", pairs_per_second: float = 6.0) -> dict:
    """The dynamic score (`dynamic_score`) of decoded frames, uint8 RGB (F, H, W, 3): the same
    pairs, flow and summary `kumo data scan` measures on a video, at the frames' own width
    (even). For clips that exist only as frames: rendered ShapesWorld clips, generated ones."""
    frames = np.asarray(frames)
    width = frames.shape[2] // 2 * 2
    sampler = MotionSampler(fps, method, pairs_per_second)
    for index, frame in enumerate(frames):
        sampler.feed(index, np.ascontiguousarray(cv2.cvtColor(frame[:, :width], cv2.COLOR_RGB2GRAY)))
    return dynamic_score(sampler.pairs, fps, width)
