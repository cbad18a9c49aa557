"""Writing and reading clips with PyAV. Writes are atomic: a temp file in the target folder,
renamed into place only when complete, so a crash never leaves a half-written clip."""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from kumovideo.utils.atomic import default_file_mode
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_file

# suffix -> (codec, pixel format, container options)
VIDEO_FORMATS = {
    # Reproducible files: the same frames must give the same bytes, or a seed would not
    # reproduce a clip. x264 as configured by default does not do that here: with several
    # threads, and (rarely) even with one through its macroblock-tree rate control, the
    # same frames encoded differently from run to run, up to 28 levels apart after
    # decoding. One thread without mbtree gave one file in 150 encodes of a noisy clip in
    # one process and in 12 fresh processes (crf and preset alone: 2 files in 30). The cost:
    # larger files at the same crf (+6 % for a 480x720x41 clip, +49 % for a 5 kB 64x64
    # one), and slightly higher fidelity (PSNR 41.95 vs 41.39 dB, 45.1 vs 43.2 dB); one
    # thread encodes 480x720x41 in the same 2.1-2.3 s on 2 cores.
    ".mp4": ("libx264", "yuv420p", {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "mbtree=0"}),
    ".webm": ("libvpx-vp9", "yuv420p", {"crf": "30", "b": "0"}),
    # FFmpeg's GIF encoder on frames Pillow reduced to 256 colours (`_palette_frames` says why).
    ".gif": ("gif", "pal8", {"gifflags": "-transdiff-offsetting"}),
}
# Muxers otherwise put random numbers in a file (Matroska/WebM: track and segment UIDs, so
# two writes of the same frames differed in 16 bytes) and their library's version; with
# `bitexact` the same packets give the same bytes. The encoded packets do not change.
REPRODUCIBLE_CONTAINER = {"fflags": "+bitexact"}
# A GIF frame's delay is a whole number of hundredths of a second, and browsers (and
# FFmpeg's GIF reader) play a delay under 2 as 10, a tenth of a second: at most 50 frames a
# second play at their rate. Rates up to 50 are kept exactly over the clip (`_palette_frames`).
GIF_FPS_MAX = 50


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an output path we can't write, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise KumoInputError(f"output {path} has suffix {path.suffix or '(none)'!r}; use .mp4, .webm or .gif")
    return check_output_file(path, "-o", example="clip.mp4")


def check_output_fps(path: str | os.PathLike, fps: float) -> float:
    """`fps` if a file at `path` can play at that rate, else a one-line KumoInputError (a .gif
    over GIF_FPS_MAX); check it before the frames are made."""
    if Path(path).suffix.lower() == ".gif" and fps > GIF_FPS_MAX:
        raise KumoInputError(
            f"{Path(path).name} would run at {fps:g} fps, but a GIF plays at most {GIF_FPS_MAX} "
            f"(viewers stretch shorter frame delays to 1/10 s); use {GIF_FPS_MAX} fps or less, or write .mp4 or .webm"
        )
    return fps


def open_output(path: str | os.PathLike, **options):
    """A PyAV output container that writes the same bytes for the same packets."""
    import av

    return av.open(str(path), mode="w", container_options=REPRODUCIBLE_CONTAINER, **options)


def atomic_path(path: Path):
    """A temp path beside `path` with the same suffix (codecs are chosen by suffix)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 8) -> Path:
    """Write uint8 frames (F, H, W, 3) to .mp4 (H.264, yuv420p), .webm (VP9) or .gif (at most
    GIF_FPS_MAX fps). The same frames give the same bytes."""

    if not isinstance(path, (str, os.PathLike)):
        raise KumoInputError(f"path must be a file path (.mp4, .webm or .gif), not {type(path).__name__}")
    path = check_output_path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise KumoInputError(
            f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}; "
            "kumovideo.pipelines.frames_to_uint8 converts a pipeline's output"
        )
    if 0 in frames.shape[:3]:
        raise KumoInputError(f"frames of shape {frames.shape} hold no picture; pass at least one frame of 1x1 or more")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not (fps > 0 and math.isfinite(fps)):
        raise KumoInputError(f"fps={fps!r}; pass a positive frame rate such as 8")
    check_output_fps(path, fps)
    codec, pix_fmt, options = VIDEO_FORMATS[path.suffix.lower()]
    height, width = frames.shape[1:3]
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):  # 4:2:0 needs even sides
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")

    tmp = atomic_path(path)
    try:
        if pix_fmt == "pal8":
            frames = _palette_frames(frames)
        _write_with_pyav(frames, tmp, fps, codec, pix_fmt, options)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _palette_frames(frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """GIF frames: each frame reduced to 256 colours by Pillow, as Pillow's own GIF writer
    does (swscale has no rgb24 -> pal8 path), as PyAV's pal8 (indices, ARGB palette) pairs.

    Why FFmpeg writes the GIF and not Pillow: a frame's delay is whole hundredths of a
    second, and Pillow writes the one delay it is given to every frame (8 fps: 12 cs, 8.33
    fps), and drops a frame that repeats the one before (a still clip came back as one
    frame). FFmpeg's muxer keeps time in hundredths and writes each delay as the step between
    rounded start times: 8 fps gives 13, 12, 13, ... cs, frame i starting at round(100 i / 8)
    cs, so the clip's time is exact; and it writes every frame. Its inter-frame cropping and
    transparency (gifflags) compare palette indices, wrong once a frame's palette differs:
    every frame is written whole, with its own palette (about 8% larger than Pillow's)."""
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)
        colours = np.asarray(image.getpalette(), np.uint8).reshape(-1, 3)
        palette = np.zeros((256, 4), np.uint8)
        palette[:, 0] = 255  # opaque: FFmpeg would make a fully transparent entry the GIF's transparent colour
        palette[: len(colours), 1:] = colours
        out.append((np.asarray(image), palette))
    return out


def _write_with_pyav(frames, path: Path, fps: int, codec: str, pix_fmt: str, options: dict) -> None:
    """Encode frames: uint8 (F, H, W, 3) RGB, or (indices, palette) pairs for pal8."""
    import av

    first = frames[0][0] if pix_fmt == "pal8" else frames[0]
    height, width = first.shape[:2]
    source_format = "pal8" if pix_fmt == "pal8" else "rgb24"
    with open_output(path) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=source_format)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def frame_rotation(frame) -> int:
    """How far a decoded frame must be turned counterclockwise to be seen as its player
    shows it: 0, 90, 180 or 270. Phones store a portrait video as landscape frames plus a
    display matrix (the old "rotate" tag), and FFmpeg's decoders leave the turning to the
    player. Needs PyAV 14+ (`VideoFrame.rotation`); older PyAV reads 0."""
    degrees = getattr(frame, "rotation", 0) or 0  # counterclockwise, in [-180, 180]
    return int(round(degrees / 90.0)) % 4 * 90


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """`image` (H, W[, C]) turned `rotation` degrees counterclockwise (`frame_rotation`), as
    a contiguous array (OpenCV refuses the strided view np.rot90 gives)."""
    if not rotation:
        return image
    return np.ascontiguousarray(np.rot90(image, rotation // 90))


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of a frame once turned upright."""
    return (height, width) if rotation in (90, 270) else (width, height)


def to_rgb(frame) -> np.ndarray:
    """A decoded frame as uint8 RGB (H, W, 3), upright as a player shows it."""
    return upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole clip: uint8 frames (F, H, W, 3), upright as a player shows them
    (`frame_rotation`), and its frame rate (a GIF's from its frames' start times: `gif_rate`)."""
    return read_video_head(path)


def read_video_head(
    source, max_frames: int | None = None, max_pixels: int | None = None, fps: float | None = None
) -> tuple[np.ndarray, float]:
    """The first `max_frames` frames of a clip (a path, or an upload's bytes; None: all) as
    uint8 (F, H, W, 3), upright, and its frame rate (a GIF's from its frames' start times:
    FFmpeg reads an 8 fps GIF as 8.33; 0 if it has none). With `fps` and a clip at another
    rate, `max_frames` frames are taken at a clip of `fps`'s times instead (frame i: the
    source's round(i x rate / fps)), so a 30 fps source remade at 8 fps keeps its speed. Only
    the frames up to the last one taken are decoded, and only those taken are kept, so a long
    upload costs only what is used. ValueError when a frame has more than `max_pixels` (read
    from the stream's header, before decoding) or when there are no frames; PyAV's own errors
    for what it cannot read."""
    import io

    import av

    def opened():
        return av.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))

    with opened() as container:
        if not container.streams.video:
            raise ValueError("it holds no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.codec_context.name == "gif":
            packets = [p for p in container.demux(stream) if p.size]
            rate = (gif_rate([p.pts for p in packets], packets[-1].duration) if packets else None) or rate
    resample = max_frames is not None and fps is not None and rate > 0 and not math.isclose(rate, fps)
    wanted = [round(i * rate / fps) for i in range(max_frames)] if resample else None  # None: the first ones
    last = wanted[-1] if resample else (max_frames - 1 if max_frames is not None else math.inf)
    needed, kept = set(wanted or ()), {}
    with opened() as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(f"its frames are {width}x{height}, over the {max_pixels / 1e6:g} megapixels taken here")
        for index, frame in enumerate(container.decode(stream)):
            if not resample or index in needed:
                kept[index] = to_rgb(frame)
            if index >= last:
                break
    if not kept:
        raise ValueError("it holds no video frames")
    return np.stack([kept[i] for i in wanted if i in kept] if resample else list(kept.values())), rate


def gif_rate(starts: list[int | None], last_delay: int | None) -> float | None:
    """The frame rate of a GIF from its frames' start times and the last frame's delay, in
    hundredths of a second: the simplest rate r (an integer where one fits) that keeps every
    start within half a hundredth of 100 i / r, as a writer that keeps exact time does
    (FFmpeg's "average rate" of the 8 fps GIF `write_video` writes is 8.33). None when
    the starts are not those of one rate (a GIF with uneven delays)."""
    if any(start is None for start in starts):
        return None
    half = Fraction(1, 2)
    # frame i starts at 100 i / r, within 1/2: 100 i / (start + 1/2) <= r <= 100 i / (start - 1/2)
    spans = [(i, start - starts[0]) for i, start in enumerate(starts) if i > 0]
    if not spans and last_delay:  # one frame: its own delay
        spans = [(1, last_delay)]
    if not spans:
        return None
    low = max(Fraction(100 * i) / (start + half) for i, start in spans)
    highs = [Fraction(100 * i) / (start - half) for i, start in spans if start > half]
    high = min(highs) if highs else Fraction(GIF_FPS_MAX)
    if low > high:
        return None
    last, last_start = spans[-1]
    average = Fraction(100 * last) / last_start if last_start else low  # frames over time
    for denominator in range(1, 1001):
        numerators = range(math.ceil(low * denominator), math.floor(high * denominator) + 1)
        if numerators:  # several only for a clip of a few frames: the one nearest the average
            return float(Fraction(min(numerators, key=lambda n: abs(n - average * denominator)), denominator))
    return float(min(max(average, low), high))
