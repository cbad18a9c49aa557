"""One decode pass per video: probe, transitions, and every per-clip measure.

Each frame is decoded once and scaled by the decoder (swscale) to the analysis width. From
that stream:

* `scenes.TransitionDetector` sees every frame and yields cuts and fades;
* `motion.MotionSampler` computes optical flow on a few frame pairs per second;
* grey frames are kept a few times per second for overlay detection, colour thumbnails once a
  second for captions, and native frames are measured for quality twice a second.

Whenever the transition detector has *settled* a stretch of video, the clips in it are
finished: their samples are summarised and freed. Memory therefore depends on the longest
open clip, not on the length of the file, and even that is capped (`max_overlay_samples`).

The result is one manifest record per video (see `manifest.py` for the layout).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from kumovideo.data.pipeline.camera import classify_camera
from kumovideo.data.pipeline.captions import Captioner, caption_for_clip, read_sidecar, sidecar_warnings
from kumovideo.data.pipeline.config import ScanConfig
from kumovideo.data.pipeline.motion import MotionSampler, PairMotion, dynamic_score, pairs_within
from kumovideo.data.pipeline.overlays import CameraRates, analyse_overlays
from kumovideo.data.pipeline.probe import BadVideo, open_container, probe_container
from kumovideo.data.pipeline.quality import clip_quality, frame_quality
from kumovideo.data.pipeline.scenes import BLANK_STD, DARK_PEAK_RATIO, Transition, TransitionDetector
from kumovideo.utils.video_io import frame_rotation, upright, upright_size

CAPTION_FRAMES = 4  # colour thumbnails handed to a captioner per clip
MAX_COLOUR_SAMPLES = 32  # thumbnails kept per open clip (thinned beyond, like overlay frames)
# Smallest side the scan analyses: OpenCV's optical flow fails (or crashes) below it, and
# the VAE's unit (stride 8 x patch 2) is 16 anyway.
MIN_SIDE = 16
TRUNCATED_SHARE = 0.9  # decoding fewer than this share of the declared frames is truncation

# Every stretch of a readable video that ends up in no clip and no transition is listed under
# "dropped" with one of these reasons, so a video never yields fewer clips without saying why.
# A reason starts with its kind ("blank", "no clip"), except the older "shorter than N s".
SHORT_REASON = "shorter than {seconds:g} s"
BLANK_VIDEO_REASON = (
    "blank: every frame is black (mean under scan.fade_threshold {dark:g}, "
    "nothing brighter than {peak:g}) or one flat colour (luma std under {std:g})"
)
BLANK_START_REASON = "blank: black or flat frames (and the fade in from them) at the start"
BLANK_END_REASON = "blank: black or flat frames (and the fade out to them) at the end"
NO_CLIP_REASON = "no clip: every frame lies in a cut or fade transition (see transitions)"


def drop_kind(reason: str) -> str:
    """The kind of a "dropped" reason ("too short", "blank", ...), for counting them."""
    if reason.startswith("shorter than"):
        return "too short"
    return reason.split(":", 1)[0]


def video_key(path: str | Path) -> str:
    """A stable, readable id prefix for a video: its stem plus a hash of its full path."""
    path = Path(path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:48] or "video"
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


@dataclass
class _OpenClip:
    """Samples of the stretch of video after the last settled transition."""

    grey: list[tuple[int, np.ndarray]] = field(default_factory=list)
    colour: list[tuple[int, np.ndarray]] = field(default_factory=list)
    quality: list[tuple[int, dict]] = field(default_factory=list)

    def drop_before(self, frame: int) -> None:
        self.grey = [s for s in self.grey if s[0] >= frame]
        self.colour = [s for s in self.colour if s[0] >= frame]
        self.quality = [s for s in self.quality if s[0] >= frame]


class VideoAnalyzer:
    """Analyse one video into a manifest record (see `analyze_video`)."""

    def __init__(self, cfg: ScanConfig, captioner: Captioner | None = None, decoder_threads: int = 0):
        self.cfg = cfg
        self.captioner = captioner
        self.decoder_threads = decoder_threads

    def run(self, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        t0 = time.perf_counter()
        with open_container(path) as container:
            info = probe_container(container, path)
            if info["width"] <= 0 or info["height"] <= 0:
                raise BadVideo("video stream has no frame size (corrupt header)")
            if min(info["width"], info["height"]) < MIN_SIDE:
                raise BadVideo(
                    f"frames of {info['width']}x{info['height']} are too small to analyse "
                    f"(the scan needs at least {MIN_SIDE} px on each side)"
                )
            record = self._analyse(container, path, info)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        return record

    # ------------------------------------------------------------------------------
    def _analyse(self, container, path: Path, info: dict) -> dict[str, Any]:
        cfg = self.cfg
        fps = info["fps"] if info["fps"] > 0 else 25.0
        stream = container.streams.video[0]
        if self.decoder_threads == 1:
            stream.thread_type = "SLICE"
            stream.codec_context.thread_count = 1
        else:
            stream.thread_type = "AUTO"
        self._fps = fps
        self._info = info
        self._key = video_key(path)
        self._sidecar = read_sidecar(path)

        detector = TransitionDetector(fps, cfg)
        self._motion = MotionSampler(fps, cfg.flow_method, cfg.flow_pairs_per_second)
        overlay_every = max(1, round(fps / cfg.overlay_samples_per_second))
        quality_every = max(1, round(fps / cfg.quality_samples_per_second))
        colour_every = max(1, round(fps))  # one thumbnail a second for captions
        self._open = _OpenClip()
        self._clips: list[dict] = []
        self._dropped: list[dict] = []
        self._transitions: list[Transition] = []
        self._seg_start = 0  # first frame of the open segment
        self._overlay_stride = 1  # grows as long clips are thinned out
        self._colour_stride = 1
        keyframes: list[int] = []
        keyframe_times: list[float | None] = []  # seconds: where `cut` seeks to find frame keyframes[i]
        first_time = None
        n = 0
        decode_error = None
        try:
            for frame in container.decode(stream):
                if n == 0:
                    # A phone's portrait video is stored sideways with a display matrix that
                    # only the first frame carries here: analyse (and record the size of)
                    # the picture as a player shows it, so cut and encode keep it upright.
                    rotation = frame_rotation(frame)
                    aw, ah, fw, fh = self._set_sizes(info, rotation)
                    coded_size = dict(zip(("width", "height"), upright_size(aw, ah, rotation)))
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                small = upright(frame.reformat(**coded_size, format="bgr24").to_ndarray(), rotation)
                detector.feed(n, small)
                grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
                flow_grey = grey if fw == aw else cv2.resize(grey, (fw, fh), interpolation=cv2.INTER_AREA)
                self._motion.feed(n, flow_grey)
                if n % (overlay_every * self._overlay_stride) == 0:
                    self._open.grey.append((n, grey))
                    if len(self._open.grey) > cfg.max_overlay_samples:
                        self._thin_out()
                if n % (colour_every * self._colour_stride) == 0:
                    self._open.colour.append((n, small))
                    if len(self._open.colour) > MAX_COLOUR_SAMPLES:
                        self._open.colour = self._open.colour[::2]
                        self._colour_stride *= 2
                if n % quality_every == 0:
                    # As stored: every measure but blockiness ignores orientation, and the
                    # codec's 8x8 grid lies on the stored frame.
                    self._open.quality.append((n, frame_quality(frame.to_ndarray(format="bgr24"))))
                if frame.key_frame:
                    keyframes.append(n)
                    keyframe_times.append(None if frame.time is None else float(frame.time))
                n += 1
                if n % 32 == 0:
                    self._close_segments(detector.take_settled(), detector)
        except av.error.FFmpegError as exc:
            decode_error = exc
        declared = info["frames"]
        if decode_error is not None:
            raise BadVideo(
                f"truncated or corrupt: decoding stopped at frame {n}"
                f"{f' of {declared}' if declared else ''} ({decode_error})"
            )
        if n == 0:
            raise BadVideo("no frames: the video stream holds no frames")
        if declared and n < TRUNCATED_SHARE * declared - 2:
            raise BadVideo(f"truncated: decoded {n} of the {declared} frames the container declares")
        self._close_segments(detector.finish(), detector, final=True, n=n)

        info = dict(info)
        info["decoded_frames"] = n
        # Sidecar files that gave no caption, said once each by the scan (workers cannot log to it).
        warnings = sidecar_warnings(self._sidecar, [c["caption_source"] for c in self._clips])
        return {
            "path": str(path),
            "key": self._key,
            "status": "ok",
            "probe": info,
            "first_time": first_time or 0.0,
            "keyframes": keyframes,
            "keyframe_times": keyframe_times,
            "analysis_size": [aw, ah],
            "transitions": [t.to_dict() for t in self._transitions],
            "clips": self._clips,
            "dropped": self._dropped,
            **({"warnings": warnings} if warnings else {}),
        }

    def _set_sizes(self, info: dict, rotation: int) -> tuple[int, int, int, int]:
        """Analysis and flow sizes (aw, ah, fw, fh) of the upright picture; records its size
        and `rotation` in `info`."""
        cfg = self.cfg
        W, H = upright_size(info["width"], info["height"], rotation)
        info.update(width=W, height=H, rotation=rotation)
        aw = min(cfg.analysis_width, W)
        ah = _even(H * aw / W)
        aw = _even(aw)
        fw = _even(min(cfg.flow_width, aw))
        fh = _even(H * fw / W)
        if min(fw, fh) < MIN_SIDE:
            # A very wide or tall picture (a 1920x144 banner): OpenCV's DIS flow kills the
            # process (segfault) on frames under 16 px high, so the short side gets 16.
            scale = MIN_SIDE / min(W, H)
            fw, fh = 2 * math.ceil(W * scale / 2), 2 * math.ceil(H * scale / 2)
        self._sizes = (aw, ah, fw, fh)
        return self._sizes

    def _thin_out(self) -> None:
        """Halve the overlay sampling rate of the open clip (keeps memory bounded)."""
        self._open.grey = self._open.grey[::2]
        self._overlay_stride *= 2

    # ------------------------------------------------------------------------------
    def _close_segments(
        self, transitions: list[Transition], detector: TransitionDetector, final: bool = False, n: int = 0
    ) -> None:
        """Finish the segments ended by newly settled transitions (and the last one)."""
        for tr in transitions:
            self._transitions.append(tr)
            start = self._seg_start
            if not self._clips and not self._dropped:
                start = max(start, detector.leading_blank())
            self._finish_segment(start, tr.start, tr)
            self._seg_start = tr.end
            self._overlay_stride = self._colour_stride = 1
        if final:
            if detector.blank_frames == n:
                # Nothing but black (or flat) frames: a real loss of the whole file, so say so
                # rather than returning no clips and nothing dropped.
                cfg = self.cfg
                self._drop(
                    0,
                    n,
                    BLANK_VIDEO_REASON.format(
                        dark=cfg.fade_threshold, peak=DARK_PEAK_RATIO * cfg.fade_threshold, std=BLANK_STD
                    ),
                )
                return
            start = self._seg_start
            if not self._clips and not self._dropped:
                start = max(start, detector.leading_blank())
            end = min(n, detector.trailing_blank())
            self._finish_segment(start, end, None)
            self._drop_blank_edges(detector, n)
            if not self._clips and not self._dropped:
                self._drop(0, n, NO_CLIP_REASON)

    def _drop(self, start: int, end: int, reason: str) -> None:
        self._dropped.append({"start_frame": start, "end_frame": end, "reason": reason})

    def _drop_blank_edges(self, detector: TransitionDetector, n: int) -> None:
        """List the blank (or fading) frames trimmed off the very start and end.

        Fades between clips are listed under transitions; these edge fades have no
        boundary, so without this they would vanish from the record.
        """
        first = self._transitions[0].start if self._transitions else n
        last = self._transitions[-1].end if self._transitions else 0
        lead = min(detector.leading_blank(), first)
        if lead > 0:
            self._drop(0, lead, BLANK_START_REASON)
        trail = max(detector.trailing_blank(), last)
        if trail < n:
            self._drop(trail, n, BLANK_END_REASON)
        self._dropped.sort(key=lambda d: d["start_frame"])

    def _finish_segment(self, start: int, end: int, out: Transition | None) -> None:
        cfg = self.cfg
        fps = self._fps
        pairs = self._motion.take_before(end)
        if end - start < max(1, cfg.min_clip_seconds * fps):
            if end > start:
                self._drop(start, end, SHORT_REASON.format(seconds=cfg.min_clip_seconds))
            self._open.drop_before(end)
            return
        clip_pairs = pairs_within(pairs, start, end)
        grey = [(i, g) for i, g in self._open.grey if start <= i < end]
        colour = [c for i, c in self._open.colour if start <= i < end]
        quality = [q for i, q in self._open.quality if start <= i < end]
        self._open.drop_before(end)

        aw, ah, fw, fh = self._sizes
        motion = dynamic_score(clip_pairs, fps, fw)
        camera = classify_camera(clip_pairs, fps, fw)
        overlays = self._overlays(grey, clip_pairs)
        q = clip_quality(quality)
        if len(colour) > CAPTION_FRAMES:  # spread the thumbnails over the clip
            pick = np.linspace(0, len(colour) - 1, CAPTION_FRAMES).round().astype(int)
            colour = [colour[k] for k in pick]
        measures = {"camera": camera, "motion": motion, "quality": q, "overlays": overlays}
        start_s, end_s = start / fps, end / fps
        caption, source = caption_for_clip(
            self._sidecar, self._info.get("tags", {}), start_s, end_s, colour, measures, self.captioner
        )
        index = len(self._clips)
        self._clips.append(
            {
                "id": f"{self._key}-{index:04d}",
                "index": index,
                "start_frame": start,
                "end_frame": end,
                "frames": end - start,
                "start": round(start_s, 4),
                "end": round(end_s, 4),
                "duration": round(end_s - start_s, 4),
                "transition_out": out.kind if out is not None else None,
                **measures,
                "caption": caption,
                "caption_source": source,
            }
        )

    def _overlays(self, grey: list[tuple[int, np.ndarray]], pairs: list[PairMotion]) -> dict:
        aw, ah, fw, fh = self._sizes
        fps = self._fps
        if pairs:
            scale = aw / float(fw)  # flow pixels -> analysis pixels
            tx = float(np.median([p.tx for p in pairs])) * fps * scale
            ty = float(np.median([p.ty for p in pairs])) * fps * scale
            zoom = (1.0 + float(np.median([p.zoom for p in pairs]))) ** fps - 1.0
            rates = CameraRates(tx, ty, zoom)
        else:
            rates = CameraRates()
        if not grey:
            return {
                "status": "undetermined",
                "reason": "no frames sampled",
                "detected": False,
                "area": 0.0,
                "items": [],
                "judgeable": None,
            }
        frames = np.stack([g for _, g in grey])
        times = [i / fps for i, _ in grey]
        return analyse_overlays(frames, times, rates, (self._info["width"], self._info["height"]))


def analyze_video(
    path: str | Path, cfg: ScanConfig | None = None, captioner: Captioner | None = None, decoder_threads: int = 0
) -> dict[str, Any]:
    """Analyse one video; raises `BadVideo` for unusable files."""
    return VideoAnalyzer(cfg or ScanConfig(), captioner, decoder_threads).run(path)
