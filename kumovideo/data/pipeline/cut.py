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

Audio (`keep_audio`, on by default) follows the clip's time range so video-to-audio training
gets (video, audio) pairs. A stream copy copies the audio packets in range (AAC, MP3, AC-3
and ALAC as they are; other codecs, and sound that does not span the clip, are re-encoded as
AAC with silence where the source has none); a re-encode re-encodes the audio segment as AAC,
cut to the written video's duration. Either way the clip's audio lasts as long as its video,
to within one audio frame.

Each clip is written to a temp file in the output folder (`.ID.mp4.tmp-XXXXXXXX`, the name
`kumovideo.utils.atomic` gives its temp files, so a resume finds a killed run's) and renamed
into place when complete. Each clip's manifest entry records the settings it was cut with
(`cut_settings`), so a resume with other settings is refused (`resume.py`).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from kumovideo.data.pipeline.config import CutConfig
from kumovideo.data.pipeline.manifest import atomic_write_text
from kumovideo.data.pipeline.resume import Setting
from kumovideo.utils.atomic import default_file_mode
from kumovideo.utils.audio_io import Interleaver, encode_audio, encoder_rate, fit_length, mux_interleaved
from kumovideo.utils.video_io import open_output, to_rgb

MP4_CODECS = {"h264", "hevc", "mpeg4", "av1", "vp9"}  # codecs MP4 can carry as they are
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "alac"}  # audio MP4 carries as it is


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


def cut_settings(cfg: CutConfig) -> dict[str, Any]:
    """The settings that shape a cut clip, as its manifest entry records them."""
    return {
        "fps": cfg.fps,
        "width": cfg.width,
        "height": cfg.height,
        "stream_copy": cfg.stream_copy,
        "crf": cfg.crf,
        "preset": cfg.preset,
        "keep_audio": cfg.keep_audio,
    }


def _size_flag(s: dict) -> str:
    if s.get("width") and s.get("height"):
        return f"--size {s['width']}x{s['height']}"
    if s.get("width") or s.get("height"):
        side = "width" if s.get("width") else "height"
        return f"cut.{side} {s[side]} (the other side from the source's aspect)"
    return "the source's size (no --size)"


# How each recorded cut setting reads in a message (check_same_settings).
CUT_SETTINGS = [
    Setting(("fps",), lambda s: f"--fps {s['fps']:g}" if s.get("fps") else "the source's frame rate (no --fps)"),
    Setting(("width", "height"), _size_flag),
    Setting(("stream_copy",), lambda s: "stream copy where possible" if s.get("stream_copy") else "--no-copy"),
    Setting(("crf",), lambda s: f"cut.crf {s.get('crf')}"),
    Setting(("preset",), lambda s: f"cut.preset {s.get('preset')}"),
    Setting(("keep_audio",), lambda s: f"cut.keep_audio {str(s.get('keep_audio')).lower()}"),
]


def can_stream_copy(entry: dict, cfg: CutConfig) -> bool:
    fps, w, h = target_geometry(entry, cfg)
    if not cfg.stream_copy or (entry.get("codec") or "") not in MP4_CODECS:
        return False
    if entry.get("rotation"):
        # A copy keeps the phone's display matrix, which most readers (`encode`'s among
        # them) ignore: they would see the clip sideways. Re-encoded, it is stored upright.
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


def keyframe_time(entry: dict) -> float:
    """Time (s) of the keyframe the clip is decoded from: as the scan saw it, else (a clip
    list of an older scan) its frame number at the average rate, exact at a constant rate."""
    t = entry.get("keyframe_before_time")
    return float(t) if t is not None else entry["first_time"] + entry["keyframe_before"] / entry["fps"]


def _seek(container, stream, seconds: float) -> None:
    container.seek(max(0, int(seconds / stream.time_base)), stream=stream, backward=True)


def numbered_frames(src, stream, entry: dict):
    """(frame number, frame) from the clip's keyframe on, numbered in decode order as the
    scan numbered them. Numbers from timestamps drift wherever the frame rate varies (phone
    video does), taking some frames twice, skipping others, even from across a cut."""
    t0, half = keyframe_time(entry), 0.5 / entry["fps"]
    _seek(src, stream, t0)
    frames = src.decode(stream)
    first = next((f for f in frames if f.time is not None and f.time >= t0 - half), None)
    if first is not None and first.time <= t0 + half:
        yield entry["keyframe_before"], first
        yield from enumerate(frames, entry["keyframe_before"] + 1)
        return
    src.seek(0)  # the seek missed the keyframe: count from the start, as the scan did
    yield from enumerate(src.decode(stream))


def _source_audio(src, keep_audio: bool):
    """The source's first audio stream when audio is to be kept, else None."""
    return src.streams.audio[0] if keep_audio and src.streams.audio else None


def _seek_audio(src, ain, seconds: float) -> None:
    """Seek to the audio at `seconds` or before; to the start of the file where the
    container cannot seek that stream (Matroska fails with EPERM on an audio track
    that holds no packets)."""
    try:
        src.seek(max(0, int(seconds / ain.time_base)), stream=ain, backward=True)
    except av.error.FFmpegError:
        src.seek(0)


def copy_audio_packets(src, ain, out, start_s: float, seconds: float) -> list | None:
    """The source's audio packets whose middle lies in [start_s, start_s + seconds), moved
    to the clip's timeline in a new stream of `out`: each end is off by under half a packet.
    None when they do not span the clip (the sound starts late or ends early: re-encode)."""
    tb = ain.time_base
    _seek_audio(src, ain, start_s - 1.0)
    packets = []
    for pkt in src.demux(ain):
        if pkt.size == 0 or pkt.pts is None:
            continue
        middle = float((pkt.pts + (pkt.duration or 0) / 2) * tb)
        if middle >= start_s + seconds:
            break
        if middle >= start_s:
            packets.append(pkt)
    if not packets or not _spans(packets, tb, start_s, seconds):
        return None
    outa = out.add_stream_from_template(ain)
    # A first packet that begins before the clip starts at 0 (MP4 audio may not start below 0).
    offset = min(packets[0].pts, round(start_s / tb))
    for pkt in packets:
        pkt.pts -= offset
        if pkt.dts is not None:
            pkt.dts -= offset
        pkt.stream = outa
    return packets


def _spans(packets: list, tb, start_s: float, seconds: float) -> bool:
    """Whether audio packets cover [start_s, start_s + seconds) to within a packet at each end."""
    packet_s = float(max(p.duration or 0 for p in packets) * tb)
    first_s = float(packets[0].pts * tb)
    last_end_s = float((packets[-1].pts + (packets[-1].duration or 0)) * tb)
    return first_s - start_s <= packet_s and start_s + seconds - last_end_s <= packet_s


def encode_audio_segment(src, ain, out, start_s: float, seconds: float) -> list:
    """Decode the source's audio over [start_s, start_s + seconds) and encode it as AAC in a
    new stream of `out` starting at 0, exactly `seconds` long (silence where the source has none)."""
    layout = "mono" if ain.codec_context.layout.nb_channels == 1 else "stereo"  # 5.1 and up: mixed to 2
    rate = encoder_rate("aac", ain.rate)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    # Start early: an AAC frame decodes properly only after the one before it.
    _seek_audio(src, ain, start_s - 0.5)
    first_time, chunks = None, []
    for frame in src.decode(ain):
        if frame.time is None:
            continue
        first_time = frame.time if first_time is None else first_time
        chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        if frame.time >= start_s + seconds:
            break
    chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    channels = 1 if layout == "mono" else 2
    decoded = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if first_time is None:  # no audio in range: all silence
        first_time = start_s
    skip = round((start_s - first_time) * rate)  # samples decoded before the clip (< 0: a gap before the sound)
    decoded = decoded[:, skip:] if skip >= 0 else np.pad(decoded, ((0, 0), (-skip, 0)))
    return encode_audio(out, fit_length(decoded, round(seconds * rate)), rate, "aac", layout)


def clip_audio(src, ain, out, start_s: float, seconds: float, copy: bool) -> list:
    """The clip's audio packets for `out`: copied where MP4 carries the codec and the packets
    span the clip, else re-encoded as AAC (silence where the source has no sound)."""
    if ain is None:
        return []
    if copy and ain.codec_context.name in MP4_AUDIO_CODECS:
        copied = copy_audio_packets(src, ain, out, start_s, seconds)
        if copied is not None:
            return copied
    return encode_audio_segment(src, ain, out, start_s, seconds)


def stream_copy(entry: dict, dst: Path, keep_audio: bool = True) -> bool:
    """Copy the clip's packets into `dst`; False if the packets do not add up to the clip."""
    start, end, fps = entry["start_frame"], entry["end_frame"], entry["fps"]
    with av.open(entry["video"]) as src:
        ins = src.streams.video[0]
        t0, half = keyframe_time(entry), 0.5 / fps
        _seek(src, ins, t0)
        packets = []
        # Counted in decode order from the clip's keyframe (found by its time), as the scan
        # counted frames; not numbered from timestamps (see numbered_frames).
        for pkt in src.demux(ins):
            if pkt.size == 0 or pkt.pts is None:
                continue
            if not packets:
                t = float(pkt.pts * ins.time_base)
                if not pkt.is_keyframe or t < t0 - half:
                    continue
                if t > t0 + half:
                    return False  # no keyframe where the scan saw one
            elif len(packets) == end - start:
                if not pkt.is_keyframe:
                    return False  # the clip would not end on a whole GOP
                break
            packets.append(pkt)
        if len(packets) != end - start:
            return False
        offset = packets[0].pts
        start_s = float(offset * ins.time_base)
        with open_output(dst, format="mp4") as out:
            outs = out.add_stream_from_template(ins)
            for pkt in packets:
                pkt.pts -= offset
                if pkt.dts is not None:
                    pkt.dts -= offset
                pkt.stream = outs
            audio = clip_audio(src, _source_audio(src, keep_audio), out, start_s, (end - start) / fps, copy=True)
            mux_interleaved(out, packets, audio)
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


def output_frame_count(source_frames: int, ratio: float) -> int:
    """Frames `reencode` emits for `source_frames` source frames (k while k * ratio < source_frames)."""
    count = 0
    while count * ratio < source_frames:
        count += 1
    return count


def reencode(entry: dict, dst: Path, cfg: CutConfig) -> int:
    """Decode, resample and encode the clip (and its audio) into `dst`; returns frames written."""
    start, end, src_fps = entry["start_frame"], entry["end_frame"], entry["fps"]
    fps, w, h = target_geometry(entry, cfg)
    ratio = src_fps / fps  # source frames per output frame
    written = 0
    next_k = 0
    with av.open(entry["video"]) as src, open_output(dst, format="mp4") as out:
        ins = src.streams.video[0]
        ins.thread_type = "AUTO"
        outs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        outs.width, outs.height, outs.pix_fmt = w, h, "yuv420p"
        outs.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        # The audio is encoded first (it is small) and muxed between the video packets as they come.
        seconds = output_frame_count(end - start, ratio) / fps
        # From the keyframe's own time: a variable rate makes frame / fps drift over a long file.
        start_s = keyframe_time(entry) + (start - entry["keyframe_before"]) / src_fps
        audio = clip_audio(src, _source_audio(src, cfg.keep_audio), out, start_s, seconds, copy=False)
        muxer = Interleaver(out, audio)
        for idx, frame in numbered_frames(src, ins, entry):
            if idx < start:
                continue
            if idx >= end:
                break
            j = idx - start
            img = None
            # Emit every output frame whose nearest source frame is this one.
            while next_k * ratio < end - start and int(math.floor(next_k * ratio + 0.5)) <= j:
                if img is None:
                    img = _fit(to_rgb(frame), w, h)
                for pkt in outs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    muxer.mux(pkt)
                next_k += 1
                written += 1
        for pkt in outs.encode():
            muxer.mux(pkt)
        muxer.finish(end_s=written / fps)  # a source that ran out early: no sound past the picture
    return written


def cut_one(entry: dict, out_dir: str, cfg: CutConfig) -> dict[str, Any]:
    """Write one clip (and its caption) into out_dir; returns the cut-manifest entry."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    dst = out / f"{entry['id']}.mp4"
    tmp = None
    result = dict(entry)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.tmp-", dir=out)
        os.close(fd)  # PyAV opens the file by name
        tmp = Path(tmp_name)
        method = None
        if can_stream_copy(entry, cfg):
            if stream_copy(entry, tmp, cfg.keep_audio):
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
            has_audio = bool(chk.streams.audio)
        os.chmod(tmp, default_file_mode())  # mkstemp's file is private to the owner
        tmp.replace(dst)
        atomic_write_text(out / f"{entry['id']}.txt", entry["caption"] + "\n")
        result.update(
            file=dst.name,
            method=method,
            out_frames=frames,
            out_fps=fps,
            out_width=w,
            out_height=h,
            has_audio=has_audio,
            cut_settings=cut_settings(cfg),
            status="ok",
        )
    except Exception as exc:  # one bad clip must not end the run
        result.update(status="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def cut_task(cfg: CutConfig, out_dir: str):
    return functools.partial(cut_one, out_dir=out_dir, cfg=cfg)
