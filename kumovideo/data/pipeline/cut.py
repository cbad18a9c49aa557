"""`kumo data cut`: write every kept clip as its own MP4 (plus a caption sidecar).

Two ways to write a clip, chosen per clip:

* **stream copy**: the compressed packets are copied as they are: no quality loss and
  nearly free. Only possible when no new frame rate or size is asked for, the codec can live
  in MP4, and the clip is whole GOPs: it starts on a keyframe and ends on the next keyframe
  (or at the end of the file). Otherwise the first frames would reference a keyframe that
  is not there, or the last would reference frames beyond the clip.
* **re-encode**: decode from the keyframe before the clip, keep the clip's frames, resample
  to the target frame rate (nearest frame in time) and size (scale to cover, then centre
  crop, so nothing is stretched), and encode H.264 (yuv420p, `crf`).

Each clip is written to a temp file in the output folder and renamed into place when
complete. Audio is not copied: the clips are training video.
"""

from __future__ import annotations

import functools
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from kumovideo.data.pipeline.config import CutConfig
from kumovideo.data.pipeline.manifest import atomic_write_text

MP4_CODECS = {"h264", "hevc", "mpeg4", "av1", "vp9"}  # codecs MP4 can carry as they are


def target_geometry(entry: dict, cfg: CutConfig) -> tuple[float, int, int]:
    """Output (fps, width, height); a missing width or height keeps the aspect ratio."""
    fps = cfg.fps or entry["fps"]
    w, h = cfg.width, cfg.height
    if w is None and h is None:
        w, h = entry["width"], entry["height"]
    elif w is None:
        w = entry["width"] * h / entry["height"]
    elif h is None:
        h = entry["height"] * w / entry["width"]
    # H.264 in 4:2:0 needs even sizes.
    return fps, max(2, int(round(w / 2)) * 2), max(2, int(round(h / 2)) * 2)


def can_stream_copy(entry: dict, cfg: CutConfig) -> bool:
    fps, w, h = target_geometry(entry, cfg)
    if not cfg.stream_copy or (entry.get("codec") or "") not in MP4_CODECS:
        return False
    if abs(fps - entry["fps"]) > 1e-3 or (w, h) != (entry["width"], entry["height"]):
        return False
    if entry["keyframe_before"] != entry["start_frame"]:
        return False
    ends_on_gop = (
        entry["end_frame"] >= (entry.get("video_frames") or math.inf)
        or entry.get("next_keyframe") == entry["end_frame"]
    )
    return ends_on_gop


def _frame_index(pts: int | None, stream, first_time: float, fps: float) -> int | None:
    if pts is None:
        return None
    return int(round((float(pts * stream.time_base) - first_time) * fps))


def _seek(container, stream, entry: dict, frame: int) -> None:
    t = entry["first_time"] + frame / entry["fps"]
    container.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True)


def stream_copy(entry: dict, dst: Path) -> bool:
    """Copy the clip's packets into `dst`; False if the packets do not add up to the clip."""
    start, end, fps = entry["start_frame"], entry["end_frame"], entry["fps"]
    with av.open(entry["video"]) as src:
        ins = src.streams.video[0]
        _seek(src, ins, entry, start)
        packets = []
        for pkt in src.demux(ins):
            if pkt.size == 0 or pkt.pts is None:
                continue
            idx = _frame_index(pkt.pts, ins, entry["first_time"], fps)
            if not packets:
                if idx < start:
                    continue
                if idx != start or not pkt.is_keyframe:
                    return False
            elif pkt.is_keyframe and idx >= end:
                break
            packets.append(pkt)
        if len(packets) != end - start:
            return False
        offset = packets[0].pts
        with av.open(str(dst), "w", format="mp4") as out:
            outs = out.add_stream_from_template(ins)
            for pkt in packets:
                pkt.pts -= offset
                if pkt.dts is not None:
                    pkt.dts -= offset
                pkt.stream = outs
                out.mux(pkt)
    return True


def _fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Scale to cover (w, h) and centre-crop, keeping the aspect ratio."""
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    s = max(w / iw, h / ih)
    nw, nh = max(w, int(math.ceil(iw * s))), max(h, int(math.ceil(ih * s)))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return img[y0 : y0 + h, x0 : x0 + w]


def reencode(entry: dict, dst: Path, cfg: CutConfig) -> int:
    """Decode, resample and encode the clip into `dst`; returns frames written."""
    start, end, src_fps = entry["start_frame"], entry["end_frame"], entry["fps"]
    fps, w, h = target_geometry(entry, cfg)
    ratio = src_fps / fps  # source frames per output frame
    written = 0
    next_k = 0
    with av.open(entry["video"]) as src, av.open(str(dst), "w", format="mp4") as out:
        ins = src.streams.video[0]
        ins.thread_type = "AUTO"
        _seek(src, ins, entry, entry["keyframe_before"])
        outs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        outs.width, outs.height, outs.pix_fmt = w, h, "yuv420p"
        outs.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        for frame in src.decode(ins):
            idx = _frame_index(frame.pts, ins, entry["first_time"], src_fps)
            if idx is None or idx < start:
                continue
            if idx >= end:
                break
            j = idx - start
            img = None
            # Emit every output frame whose nearest source frame is this one.
            while next_k * ratio < end - start and int(math.floor(next_k * ratio + 0.5)) <= j:
                if img is None:
                    img = _fit(frame.to_ndarray(format="rgb24"), w, h)
                for pkt in outs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
                next_k += 1
                written += 1
        for pkt in outs.encode():
            out.mux(pkt)
    return written


def cut_one(entry: dict, out_dir: str, cfg: CutConfig) -> dict[str, Any]:
    """Write one clip (and its caption) into out_dir; returns the cut-manifest entry."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    dst = out / f"{entry['id']}.mp4"
    tmp = out / f".{entry['id']}.tmp.mp4"
    result = dict(entry)
    try:
        method = None
        if can_stream_copy(entry, cfg):
            if stream_copy(entry, tmp):
                method = "copy"
        if method is None:
            if reencode(entry, tmp, cfg) == 0:
                raise RuntimeError("no frames decoded in the clip's range")
            method = "encode"
        # Read back what was written, so the manifest states facts about the file.
        with av.open(str(tmp)) as chk:
            s = chk.streams.video[0]
            frames = s.frames or sum(1 for _ in chk.demux(s) if _.size)
            fps, w, h = float(s.average_rate or 0), s.width, s.height
        tmp.replace(dst)
        atomic_write_text(out / f"{entry['id']}.txt", entry["caption"] + "\n")
        result.update(
            file=dst.name, method=method, out_frames=frames, out_fps=fps, out_width=w, out_height=h, status="ok"
        )
    except Exception as exc:  # one bad clip must not end the run
        result.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        if tmp.exists():
            tmp.unlink()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def cut_task(cfg: CutConfig, out_dir: str):
    return functools.partial(cut_one, out_dir=out_dir, cfg=cfg)
