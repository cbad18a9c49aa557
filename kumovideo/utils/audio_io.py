"""Reading, writing and muxing audio with PyAV.

`mux_audio` puts a soundtrack beside a video's own stream: the video packets are copied as
they are (no re-encode, so no quality loss and nothing to tune), the audio is encoded as AAC
(.mp4/.mov/.m4v/.mkv) or Opus (.webm) and trimmed or zero-padded to the video's duration.
Every check runs before anything is written, and writes are atomic (a temp file beside the
target, renamed into place), so a refused or failed call leaves the disk as it was.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from kumovideo.utils.atomic import default_file_mode
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_file
from kumovideo.utils.video_io import atomic_path, open_output

# The containers a soundtrack can be muxed into, by suffix -> the audio codec they get
# (None: Opus, resolved against this PyAV build). The one list: `kumo v2a -o` takes these,
# and every refusal names them from here.
AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".m4v": "aac", ".mkv": "aac", ".webm": None}
# Video codecs each of those containers can carry as they are (a stream copy cannot change
# the codec), as FFmpeg's muxers take them: .m4v (the iPod muxer) takes H.264 and MPEG-4
# only, .mov no VP9 or AV1 (found by muxing one clip of each codec into each container).
COPYABLE_VIDEO = {
    ".mp4": {"h264", "hevc", "mpeg4", "av1", "vp9"},
    ".mov": {"h264", "hevc", "mpeg4", "prores", "mjpeg"},
    ".m4v": {"h264", "mpeg4"},
    ".mkv": {"h264", "hevc", "mpeg4", "av1", "vp9", "vp8", "prores", "mjpeg", "mpeg2video", "theora", "ffv1"},
    ".webm": {"vp8", "vp9", "av1"},
}
OPUS_RATE = 48_000  # Opus runs at 48 kHz; other rates are resampled inside the encoder anyway


def suffix_list(suffixes: Iterable[str]) -> str:
    """Suffixes as a message names them: ".mp4, .mov or .webm"."""
    suffixes = list(suffixes)
    return " or ".join([", ".join(suffixes[:-1]), suffixes[-1]] if len(suffixes) > 1 else suffixes)


@dataclass(frozen=True)
class MediaInfo:
    """What a video file holds: its first video stream and, if any, its first audio stream."""

    path: Path
    num_frames: int
    fps: float
    duration_s: float  # num_frames / fps: the time the pictures cover, which audio must match
    width: int
    height: int
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    audio_sample_rate: int | None


def _open_input(path: str | os.PathLike):
    """Open a media file for reading; a missing file or one FFmpeg cannot parse is one line."""
    import av

    path = Path(path)
    if not path.exists():
        raise KumoInputError(f"{path} does not exist; pass an existing video file")
    if path.is_dir():
        raise KumoInputError(f"{path} is a folder; pass a video file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise KumoInputError(f"not a video: {path} (PyAV could not open it); pass an .mp4, .webm or .mkv") from None


def _count_frames(container, stream) -> int:
    """Frames of a video stream: the container's count, or its packets (WebM does not say)."""
    if stream.frames:
        return int(stream.frames)
    return sum(1 for packet in container.demux(stream) if packet.size)


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """Facts about a video file; KumoInputError if it is missing, not a video, or holds no frames."""
    with _open_input(path) as container:
        if not container.streams.video:
            raise KumoInputError(f"not a video: {path} has no video stream; pass a video file")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        num_frames = _count_frames(container, stream)
        audio = container.streams.audio[0] if container.streams.audio else None
        info = MediaInfo(
            path=Path(path),
            num_frames=num_frames,
            fps=fps,
            duration_s=num_frames / fps if fps else 0.0,
            width=int(stream.width),
            height=int(stream.height),
            video_codec=stream.codec_context.codec.canonical_name,  # "av1", not the decoder "libdav1d"
            has_audio=audio is not None,
            audio_codec=audio.codec_context.codec.canonical_name if audio is not None else None,
            audio_sample_rate=int(audio.rate) if audio is not None else None,
        )
    if num_frames == 0:
        raise KumoInputError(f"{path} has a video stream with no frames; pass a video that has pictures")
    if fps <= 0:
        raise KumoInputError(f"{path} has no frame rate in its header; re-encode it with a fixed frame rate")
    return info


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream as mono float32 (N,) in [-1, 1], resampled to `sample_rate`
    (None: the file's own rate); returns (audio, sample_rate)."""
    import av

    with _open_input(path) as container:
        if not container.streams.audio:
            raise KumoInputError(f"{path} has no audio stream; pass a file with sound")
        stream = container.streams.audio[0]
        rate = int(sample_rate or stream.rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))  # flush
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio.astype(np.float32, copy=False), rate


def _check_audio(audio, sample_rate) -> np.ndarray:
    """Mono float audio and a whole positive sample rate, or a one-line error."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise KumoInputError(f"audio must be mono float samples (N,), got {audio.dtype} {audio.shape}")
    if audio.size == 0:
        raise KumoInputError("audio holds no samples; pass at least one")
    if not np.isfinite(audio).all():
        raise KumoInputError("audio holds NaN or infinite samples; pass finite values in [-1, 1]")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise KumoInputError(f"sample_rate={sample_rate!r}; pass a whole number of samples per second such as 16000")
    return audio.astype(np.float32, copy=False)


def _commit(tmp: Path, path: Path) -> None:
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)


def write_wav(audio, sample_rate: int, path: str | os.PathLike) -> Path:
    """Write mono float audio to a 16-bit PCM .wav (atomic)."""
    import av

    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise KumoInputError(f"{path} must end in .wav (16-bit PCM WAV)")
    audio = _check_audio(audio, sample_rate)
    check_output_file(path, "wav", example="track.wav")
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).round().astype(np.int16)
    tmp = atomic_path(path)
    try:
        with open_output(tmp, format="wav") as out:
            stream = out.add_stream("pcm_s16le", rate=int(sample_rate), layout="mono")
            frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
            frame.sample_rate, frame.pts = int(sample_rate), 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _opus_encoder() -> str:
    import av

    return "libopus" if "libopus" in av.codecs_available else "opus"


def audio_codec_for(path: str | os.PathLike, suffixes: Iterable[str] = tuple(AUDIO_CODECS)) -> str:
    """The audio encoder for an output file, by suffix; KumoInputError for one that holds no
    audio, naming `suffixes` (those of AUDIO_CODECS a caller can write) as the ones to use."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_CODECS or suffix not in suffixes:
        raise KumoInputError(f"{path.name} cannot hold audio; write {suffix_list(suffixes)}")
    return AUDIO_CODECS[suffix] or _opus_encoder()


def encoder_rate(codec: str, sample_rate: int) -> int:
    """The rate to encode at: Opus always 48 kHz; AAC the given rate if it takes it, else 48 kHz."""
    import av

    if "opus" in codec:
        return OPUS_RATE
    rates = av.codec.Codec(codec, "w").audio_rates
    return sample_rate if not rates or sample_rate in rates else OPUS_RATE


def resample(samples: np.ndarray, rate_in: int, rate_out: int, layout: str = "mono") -> np.ndarray:
    """Planar float samples (C, N) at `rate_in` -> (C, M) at `rate_out` (FFmpeg's swresample)."""
    import av

    if rate_in == rate_out:
        return samples
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout)
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_out)
    out = [f.to_ndarray() for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out, axis=1) if out else np.zeros((samples.shape[0], 0), np.float32)


def fit_length(samples: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad (C, N) samples to exactly `num_samples` along time."""
    if samples.shape[1] >= num_samples:
        return samples[:, :num_samples]
    return np.pad(samples, ((0, 0), (0, num_samples - samples.shape[1])))


def encode_audio(out, samples: np.ndarray, sample_rate: int, codec: str, layout: str, start_s: float = 0.0):
    """Add an audio stream to the open output container `out` and encode planar float samples
    (C, N) into it, starting at `start_s`; returns the packets, to be muxed by the caller."""
    import av

    stream = out.add_stream(codec, rate=sample_rate, layout=layout)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = round(start_s * sample_rate)
    frame.time_base = Fraction(1, sample_rate)
    return [*stream.encode(frame), *stream.encode(None)]  # PyAV cuts the frame to the codec's frame size


def packet_time(packet) -> float:
    """A packet's decode time in seconds (its presentation time when it has no dts)."""
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else 0.0


class Interleaver:
    """Mux video packets as they come, each after the audio packets due before it, so players
    and demuxers read the two streams side by side (FFmpeg's own interleaver would hold every
    video packet back until audio arrives)."""

    def __init__(self, out, audio_packets: Iterable):
        self.out = out
        self.pending = deque(audio_packets)

    def mux(self, video_packet) -> None:
        while self.pending and packet_time(self.pending[0]) <= packet_time(video_packet):
            self.out.mux(self.pending.popleft())
        self.out.mux(video_packet)

    def finish(self, end_s: float = math.inf) -> None:
        """Mux the audio left, less packets starting at or after `end_s` (a video that came
        out shorter than planned)."""
        for packet in self.pending:
            if packet_time(packet) < end_s:
                self.out.mux(packet)
        self.pending.clear()


def mux_interleaved(out, video_packets: Iterable, audio_packets: Iterable) -> None:
    """Mux all of both streams' packets in time order."""
    interleaver = Interleaver(out, audio_packets)
    for packet in video_packets:
        interleaver.mux(packet)
    interleaver.finish()


def check_mux(video_path: Path, out_path: Path, replace_audio: bool) -> tuple[str, MediaInfo]:
    """Every refusal of `mux_audio`, before anything is written."""
    codec = audio_codec_for(out_path)
    check_output_file(out_path, "output", example="clip.mp4")
    info = probe_media(video_path)
    if info.has_audio and not replace_audio:
        raise KumoInputError(
            f"{video_path} already has an audio track; pass --replace-audio (replace_audio=True) to replace it"
        )
    video_codec = info.video_codec
    if video_codec not in COPYABLE_VIDEO[out_path.suffix.lower()]:
        takers = [suffix for suffix in AUDIO_CODECS if video_codec in COPYABLE_VIDEO[suffix]]
        todo = f"write {suffix_list(takers)} instead" if takers else "re-encode it as H.264 .mp4 or VP9 .webm first"
        raise KumoInputError(f"{video_path}'s {video_codec} video cannot be copied into {out_path.suffix}; {todo}")
    return codec, info


def mux_audio(
    video_path: str | os.PathLike,
    audio,
    sample_rate: int,
    out_path: str | os.PathLike,
    replace_audio: bool = False,
) -> Path:
    """Write `out_path`: `video_path`'s video stream copied packet by packet, plus mono float
    `audio` encoded for the container and trimmed or padded to the video's duration.
    `out_path` may be `video_path` (it is replaced only when the new file is complete)."""
    import av

    video_path, out_path = Path(video_path), Path(out_path)
    audio = _check_audio(audio, sample_rate)
    codec, info = check_mux(video_path, out_path, replace_audio)
    rate = encoder_rate(codec, int(sample_rate))
    samples = fit_length(resample(audio[None], int(sample_rate), rate), round(info.duration_s * rate))
    tmp = atomic_path(out_path)
    try:
        with av.open(str(video_path)) as src, open_output(tmp) as out:
            in_video = src.streams.video[0]
            out_video = out.add_stream_from_template(in_video, opaque=True)
            packets = [p for p in src.demux(in_video) if p.size]  # the last is an empty flush packet
            start_s = min((float(p.pts * p.time_base) for p in packets if p.pts is not None), default=0.0)
            audio_packets = encode_audio(out, samples, rate, codec, "mono", start_s)
            for packet in packets:
                packet.stream = out_video
            mux_interleaved(out, packets, audio_packets)
        _commit(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
