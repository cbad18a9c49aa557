"""Scene transitions: hard cuts and fades, which give the clip boundaries.

Three of PySceneDetect's detectors see every analysis frame:

* `ContentDetector` scores the change in hue, saturation and lightness between consecutive
  frames; a score over `content_threshold` is a cut. It finds every cut but also fires on
  fast camera moves over fine texture, so its cuts must be *confirmed* (below).
* `AdaptiveDetector` compares each frame's score with the average of its neighbours: a cut
  is a lone spike, a fast pan is high everywhere. Its cuts are taken as they are.
* `ThresholdDetector` watches the mean pixel level and places a cut in the middle of every
  dip under `fade_threshold`: fades through black. A mean that low is also what a small
  bright subject on a black background gives, so a dip counts only where it holds blank
  frames (below); a dip without any is a dark shot, not a fade, and is ignored.

Our own frame-difference checks, on a 64-pixel-wide thumbnail, add what those lack:

* a cut confirmation: the mean luma difference at the cut must be a spike against the
  median of the surrounding frames (`cut_spike_ratio`), or the colour histograms either side
  must differ (`cut_hist_distance`, Bhattacharyya distance);
* fade spans: the run of *blank* frames plus the frames either side whose contrast ramps
  monotonically towards it are *transition frames*, cut out of both neighbouring clips.
  A frame is blank when it is black or uniform:

  - black: its mean is under `fade_threshold` *and* nothing in it is bright (99.5% of its
    pixels have every channel under `DARK_PEAK_RATIO` x `fade_threshold`). PySceneDetect
    documents its threshold that way ("each pixel value ... must be <=" it) though its code
    tests only the mean; the mean alone calls a bright subject on a black background a
    fade, however much it moves.
  - uniform: luma standard deviation under `BLANK_STD`, in any colour, so fades through
    white count too.

Candidates from all sources closer than `merge_frames` are merged into one transition.

The detector is streaming: `feed` one frame at a time, and `settled_until()` says up to which
frame no new transition can appear, so the caller can finish clips and free memory on
hour-long inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode, ThresholdDetector

from kumovideo.data.pipeline.config import ScanConfig

THUMB_WIDTH = 64  # frame-difference checks need only a coarse image
SPIKE_WINDOW = 6  # frames either side whose median difference is the local baseline
BLANK_STD = 4.0  # a frame whose luma standard deviation is under this is uniform (blank)
# A dark frame (mean under fade_threshold) is black only if its bright part, the 99.5th
# percentile of the brightest channel, stays under this many times fade_threshold (48 at the
# default 12). Deep in a fade through black every pixel is scaled down, so even highlights
# end up under it (255 at a 10% level is 26); a small red circle on black (230) does not.
DARK_PEAK_RATIO = 4.0
DARK_PEAK_PERCENTILE = 99.5  # up to 0.5% of the frame may be brighter (noise, a stray pixel)
MIN_CUT_DIFF = 6.0  # a cut changes the mean luma by at least this much (0-255 scale)


@dataclass
class Transition:
    """A boundary between two scenes.

    `frame` is the first frame of the next scene; frames in [start, end) belong to neither
    scene (empty for a hard cut, the fade for a fade).
    """

    kind: str  # "cut" or "fade"
    frame: int
    start: int
    end: int
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "frame": self.frame,
            "start": self.start,
            "end": self.end,
            "sources": sorted(set(self.sources)),
        }


@dataclass
class _Candidate:
    frame: int
    source: str  # "content", "adaptive", "threshold", "blank"
    start: int
    end: int


class TransitionDetector:
    """Streaming cut and fade detector; see the module docstring."""

    def __init__(self, fps: float, cfg: ScanConfig):
        self.fps = fps if fps > 0 else 25.0
        self.cfg = cfg
        short = 2  # frames; short scenes are dropped later by min_clip_seconds, not here
        self._content = ContentDetector(threshold=cfg.content_threshold, min_scene_len=short)
        self._adaptive = AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=short)
        self._threshold = ThresholdDetector(
            threshold=cfg.fade_threshold, fade_bias=0.0, min_scene_len=short, add_final_scene=False
        )
        self._raw: list[_Candidate] = []  # detector outputs not yet turned into transitions
        # Per-frame signals (a few floats per frame, so whole videos fit easily).
        self.diff: list[float] = []  # mean |luma change| from the previous frame
        self.hist_dist: list[float] = []  # colour-histogram distance from the previous frame
        self.mean: list[float] = []  # mean pixel level, as ThresholdDetector computes it
        self.std: list[float] = []  # luma standard deviation (contrast)
        self.peak: list[float] = []  # bright part: DARK_PEAK_PERCENTILE of the max channel
        self._prev_thumb: np.ndarray | None = None
        self._prev_hist: np.ndarray | None = None
        self._done_until = 0  # transitions with frame < this have been returned
        self._last_blank: int | None = None  # latest blank frame and the start of its run
        self._blank_run_start = 0
        self.blank_frames = 0  # how many frames were blank (all of them: nothing to analyse)
        self._n = 0

    # ------------------------------------------------------------------ feeding
    def feed(self, index: int, bgr: np.ndarray) -> None:
        """Process frame `index` (frames must come in order, starting at 0)."""
        assert index == self._n, "frames must be fed in order"
        tc = FrameTimecode(index, self.fps)
        for det, source in ((self._content, "content"), (self._adaptive, "adaptive"), (self._threshold, "threshold")):
            for cut in det.process_frame(tc, bgr):
                self._raw.append(_Candidate(cut.frame_num, source, cut.frame_num, cut.frame_num))
        h, w = bgr.shape[:2]
        thumb = cv2.resize(bgr, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
        luma = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY).astype(np.float32)
        hsv = cv2.cvtColor(thumb, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256])
        hist = cv2.normalize(hist, None).flatten()
        if self._prev_thumb is None:
            self.diff.append(0.0)
            self.hist_dist.append(0.0)
        else:
            self.diff.append(float(np.mean(np.abs(luma - self._prev_thumb))))
            self.hist_dist.append(float(cv2.compareHist(self._prev_hist, hist, cv2.HISTCMP_BHATTACHARYYA)))
        self.mean.append(float(bgr.mean()))
        self.std.append(float(luma.std()))
        # HSV's V channel is max(B, G, R): the brightest channel of each pixel.
        self.peak.append(float(np.percentile(hsv[..., 2], DARK_PEAK_PERCENTILE)))
        self._prev_thumb, self._prev_hist = luma, hist
        if self._is_blank(index):
            self.blank_frames += 1
            if self._last_blank != index - 1:
                self._blank_run_start = index
            self._last_blank = index
        self._n += 1

    @property
    def frames_seen(self) -> int:
        return self._n

    def _is_blank(self, i: int) -> bool:
        """Black (dark *and* nothing bright in it) or uniform; see the module docstring."""
        if self.std[i] < BLANK_STD:
            return True
        dark = self.cfg.fade_threshold
        return self.mean[i] < dark and self.peak[i] < DARK_PEAK_RATIO * dark

    def settled_until(self) -> int:
        """Frames before this index will get no new transitions."""
        # Delay of the slowest streaming source: the adaptive window, our spike window, the
        # merge window and the longest fade ramp, plus a frame of slack.
        delay = self._adaptive.window_width + SPIKE_WINDOW + self.cfg.merge_frames + self.cfg.max_fade_frames + 2
        horizon = self._n - delay
        # Near a blank run a fade boundary (and its span) is only known once the run and the
        # ramp out of it have ended.
        if self._last_blank is not None and self._n - self._last_blank <= delay:
            horizon = min(horizon, self._blank_run_start - delay)
        return max(self._done_until, horizon)

    # ------------------------------------------------------------------ decisions
    def _spike(self, t: int) -> float:
        """How many times larger the luma change at t is than the local median change."""
        lo, hi = max(1, t - SPIKE_WINDOW), min(self._n, t + SPIKE_WINDOW + 1)
        neighbours = [self.diff[j] for j in range(lo, hi) if j != t]
        base = float(np.median(neighbours)) if neighbours else 0.0
        return self.diff[t] / max(base, 0.5)

    def _confirmed_cut(self, frame: int) -> bool:
        """Frame-difference check of a ContentDetector cut (allowing one frame of slack)."""
        for t in (frame, frame - 1, frame + 1):
            if not 0 < t < self._n or self.diff[t] < MIN_CUT_DIFF:
                continue
            if self._spike(t) >= self.cfg.cut_spike_ratio:
                return True
            if self.hist_dist[t] >= self.cfg.cut_hist_distance:
                return True
        return False

    def _fade_span(self, frame: int) -> tuple[int, int] | None:
        """The blank run near `frame` widened by the ramps into and out of it, or None."""
        reach = self.cfg.merge_frames
        seeds = [t for t in range(max(0, frame - reach), min(self._n, frame + reach + 1)) if self._is_blank(t)]
        if not seeds:
            return None
        a = b = seeds[0]
        while a > 0 and self._is_blank(a - 1):
            a -= 1
        while b + 1 < self._n and self._is_blank(b + 1):
            b += 1
        return self._widen(a, b + 1)

    def _widen(self, a: int, b: int) -> tuple[int, int]:
        """Extend the blank run [a, b) over frames whose contrast ramps towards it."""
        limit = self.cfg.max_fade_frames
        start = a
        while start > 0 and a - start < limit and self.std[start - 1] > self.std[start] * 1.03 + 0.2:
            start -= 1
        end = b
        while end < self._n and end - b < limit and end > 0 and self.std[end] > self.std[end - 1] * 1.03 + 0.2:
            end += 1
        return start, end

    def _blank_runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Maximal blank runs [a, b) whose middle lies in [lo, hi)."""
        runs = []
        t = max(0, lo - self.cfg.max_fade_frames)
        while t < min(hi + self.cfg.max_fade_frames, self._n):
            if self._is_blank(t):
                a = t
                while t < self._n and self._is_blank(t):
                    t += 1
                if lo <= (a + t) // 2 < hi:
                    runs.append((a, t))
            else:
                t += 1
        return runs

    def _look_back(self) -> int:
        return self.cfg.max_fade_frames + 2 * self.cfg.merge_frames

    def _transitions_in(self, lo: int, hi: int) -> list[Transition]:
        """Merged transitions whose boundary frame lies in [lo, hi).

        Candidates from a look-back window are merged too, so that a cut the ContentDetector
        reports at the end of a fade-in joins the fade it belongs to even when the fade's
        boundary was returned by an earlier call.
        """
        back = lo - self._look_back()
        cands: list[_Candidate] = []
        for c in self._raw:
            if not back <= c.frame < hi + self.cfg.merge_frames:
                continue
            if c.source == "content" and not self._confirmed_cut(c.frame):
                continue  # fast motion, not a cut
            if c.source == "threshold":
                span = self._fade_span(c.frame)
                if span is None:
                    # The mean dipped but no frame near the dip is blank: a dark shot (a
                    # bright subject on black), whose middle is no boundary.
                    continue
                c = _Candidate(c.frame, c.source, *span)
            cands.append(c)
        for a, b in self._blank_runs(back, hi):
            if a == 0 or b >= self._n:
                # A fade in from black at the very start, or out at the very end: no boundary,
                # but its frames are still trimmed (see `edge_blank`).
                continue
            start, end = self._widen(a, b)
            cands.append(_Candidate((a + b + 1) // 2, "blank", start, end))
        # Each candidate covers [start, end] (a single frame for a cut, the whole fade for a
        # fade); candidates whose spans come within merge_frames of each other are one
        # transition. This also folds the cut ContentDetector reports where a fade-out
        # begins or a fade-in ends into that fade.
        cands.sort(key=lambda c: (min(c.start, c.frame), c.frame))
        merged: list[list[_Candidate]] = []
        reach = -1
        for c in cands:
            if merged and min(c.start, c.frame) <= reach + self.cfg.merge_frames:
                merged[-1].append(c)
            else:
                merged.append([c])
                reach = -1
            reach = max(reach, c.end, c.frame)
        out = []
        for group in merged:
            fades = [c for c in group if c.source in ("threshold", "blank") and c.end > c.start]
            if fades:
                # Prefer PySceneDetect's placement (middle of the dip), our span for trimming.
                ref = next((c for c in fades if c.source == "threshold"), fades[0])
                start = min(c.start for c in fades)
                end = max(c.end for c in fades)
                frame = min(max(ref.frame, start), max(end, start))
                tr = Transition("fade", frame, start, end, [c.source for c in group])
            else:
                order = {"adaptive": 0, "content": 1, "threshold": 2, "blank": 3}
                ref = min(group, key=lambda c: order[c.source])
                tr = Transition("cut", ref.frame, ref.frame, ref.frame, [c.source for c in group])
            if lo <= tr.frame < hi and 0 < tr.frame < self._n:
                out.append(tr)
        return out

    def take_settled(self) -> list[Transition]:
        """Transitions that became final since the last call."""
        until = self.settled_until()
        if until <= self._done_until:
            return []
        out = self._transitions_in(self._done_until, until)
        self._done_until = until
        # Forget detector outputs that can no longer matter.
        keep_from = until - self._look_back() - self.cfg.merge_frames
        self._raw = [c for c in self._raw if c.frame >= keep_from]
        return out

    def finish(self) -> list[Transition]:
        """Flush the detectors at end of stream; returns the remaining transitions."""
        if self._n:
            tc = FrameTimecode(self._n - 1, self.fps)
            for det, source in (
                (self._content, "content"),
                (self._adaptive, "adaptive"),
                (self._threshold, "threshold"),
            ):
                for cut in det.post_process(tc):
                    self._raw.append(_Candidate(cut.frame_num, source, cut.frame_num, cut.frame_num))
        out = self._transitions_in(self._done_until, self._n + 1)
        self._done_until = self._n + 1
        return out

    def leading_blank(self) -> int:
        """Frames blank, or fading in from blank, at the very start (0 if none)."""
        if not self._n or not self._is_blank(0):
            return 0
        b = 0
        while b < self._n and self._is_blank(b):
            b += 1
        return self._widen(0, b)[1]

    def trailing_blank(self) -> int:
        """First frame of the blank (or fading-out) run at the very end (frames seen if none)."""
        if not self._n or not self._is_blank(self._n - 1):
            return self._n
        a = self._n - 1
        while a > 0 and self._is_blank(a - 1):
            a -= 1
        return self._widen(a, self._n)[0]
