"""`kumo data cut` keeps the source's sound: each clip carries the audio of its own time range,
as long as its video, whether the video was stream-copied or re-encoded (cut.keep_audio)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from kumovideo.data.pipeline.config import config_from_dict
from kumovideo.data.pipeline.cut import CutConfig, cut_one
from kumovideo.utils.audio_io import read_audio
from kumovideo.utils.errors import KumoInputError

FPS = 12
SECONDS = 4
RATE = 44_100
AAC_FRAME = 1024  # samples per AAC frame: how far a clip's audio may differ from its video


def tone_of_second(second: int) -> float:
    """The source plays one pitch per second, so a clip's sound tells which time it came from."""
    return 300.0 + 200.0 * second


def source_audio(rate: int) -> np.ndarray:
    t = np.arange(SECONDS * rate) / rate
    freq = np.array([tone_of_second(int(x)) for x in t])
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return (0.4 * np.sin(phase)).astype(np.float32)


def write_source(path, video_codec: str, audio_codec: str, options: dict, audio_seconds: float = SECONDS) -> None:
    """A 4 s, 12 fps clip with a keyframe every second, and the pitch-per-second tone in stereo."""
    frames = np.random.default_rng(0).integers(0, 256, (SECONDS * FPS, 48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt, video.options = 64, 48, "yuv420p", options
        rate = 48_000 if "opus" in audio_codec else RATE
        audio = out.add_stream(audio_codec, rate=rate, layout="stereo")
        samples = np.repeat(source_audio(rate)[None, : round(audio_seconds * rate)], 2, axis=0)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)


def audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cut_audio")
    paths = {"mp4": folder / "source.mp4", "webm": folder / "source.webm", "short": folder / "short_sound.mp4"}
    x264 = {"g": str(FPS), "keyint_min": str(FPS), "sc_threshold": "0"}
    vp9 = {"g": str(FPS), "keyint_min": str(FPS), "crf": "40", "b": "0"}
    write_source(paths["mp4"], "libx264", "aac", x264)
    write_source(paths["webm"], "libvpx-vp9", "libopus", vp9)
    write_source(paths["short"], "libx264", "aac", x264, audio_seconds=2.5)
    return paths


def entry_for(path, start_frame: int, end_frame: int, clip_id: str) -> dict:
    """A filter-stage clip entry (what `kumo data cut` reads) for frames [start, end)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes, first_time = [], None
        for index, frame in enumerate(container.decode(stream)):
            first_time = frame.time if first_time is None else first_time
            if frame.key_frame:
                keyframes.append(index)
        frames, codec = index + 1, stream.codec_context.name
    before = max(k for k in keyframes if k <= start_frame)
    after = [k for k in keyframes if k >= end_frame]
    return {
        "id": clip_id,
        "video": str(path),
        "fps": float(FPS),
        "width": 64,
        "height": 48,
        "codec": codec,
        "video_frames": frames,
        "first_time": first_time,
        "keyframe_before": before,
        "next_keyframe": after[0] if after else None,
        "start_frame": start_frame,
        "end_frame": end_frame,
        "caption": "a test clip",
    }


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def check_clip_sound(result: dict, folder, start_s: float) -> None:
    """The clip has audio as long as its video, and it is the source's sound from `start_s` on."""
    assert result["status"] == "ok", result.get("error")
    assert result["has_audio"] is True
    audio, rate = read_audio(folder / result["file"])
    video_seconds = result["out_frames"] / result["out_fps"]
    assert abs(len(audio) / rate - video_seconds) <= AAC_FRAME / rate
    # Time-aligned: the first 0.4 s and the last 0.4 s carry the tones of their seconds.
    window = round(0.4 * rate)
    first, last = audio[AAC_FRAME : AAC_FRAME + window], audio[-window - AAC_FRAME : -AAC_FRAME]
    assert abs(peak_hz(first, rate) - tone_of_second(int(start_s + 0.05))) < 15
    end_s = start_s + video_seconds
    assert abs(peak_hz(last, rate) - tone_of_second(int(end_s - 0.05))) < 15


@pytest.mark.parametrize("source", ["mp4", "webm"])
def test_stream_copy_keeps_the_clips_audio(sources, tmp_path, source):
    # Frames 12-36 are whole GOPs (1 s to 3 s): the video is copied; MP4 takes AAC as it is,
    # the WebM's Opus is re-encoded as AAC.
    result = cut_one(entry_for(sources[source], 12, 36, "copy"), str(tmp_path), CutConfig())
    assert result["method"] == "copy"
    check_clip_sound(result, tmp_path, start_s=1.0)
    copied = audio_packets(tmp_path / result["file"])
    from_source = audio_packets(sources[source])
    if source == "mp4":  # AAC packets copied as they are: a run of the source's packets
        first = from_source.index(copied[0])
        assert copied == from_source[first : first + len(copied)]
    else:
        assert not set(copied) & set(from_source)


def test_sound_that_ends_early_is_padded_with_silence(sources, tmp_path):
    # The source's sound stops at 2.5 s; the clip is 1 s to 3 s: its last half second is silent.
    result = cut_one(entry_for(sources["short"], 12, 36, "short"), str(tmp_path), CutConfig())
    assert result["status"] == "ok" and result["method"] == "copy" and result["has_audio"] is True
    audio, rate = read_audio(tmp_path / result["file"])
    assert abs(len(audio) / rate - 2.0) <= AAC_FRAME / rate
    assert np.abs(audio[-round(0.4 * rate) :]).max() < 0.01
    assert abs(peak_hz(audio[AAC_FRAME : AAC_FRAME + round(0.4 * rate)], rate) - tone_of_second(1)) < 15


@pytest.mark.parametrize("cfg", [CutConfig(), CutConfig(fps=8)], ids=["same-rate", "8fps"])
def test_reencode_keeps_the_clips_audio(sources, tmp_path, cfg):
    # Frames 15-39 (1.25 s to 3.25 s) start inside a GOP: re-encoded, video and sound.
    result = cut_one(entry_for(sources["mp4"], 15, 39, "encode"), str(tmp_path), cfg)
    assert result["method"] == "encode"
    check_clip_sound(result, tmp_path, start_s=1.25)


@pytest.mark.parametrize("start_frame", [12, 15], ids=["copy", "encode"])
def test_keep_audio_false_writes_silent_clips(sources, tmp_path, start_frame):
    result = cut_one(entry_for(sources["mp4"], start_frame, 36, "silent"), str(tmp_path), CutConfig(keep_audio=False))
    assert result["status"] == "ok" and result["has_audio"] is False
    with av.open(str(tmp_path / result["file"])) as container:
        assert not container.streams.audio


def test_keep_audio_is_checked_in_the_config():
    assert config_from_dict({"cut": {"keep_audio": False}}).cut.keep_audio is False
    with pytest.raises(KumoInputError, match=r"cut\.keep_audio must be true or false"):
        config_from_dict({"cut": {"keep_audio": "yes"}})
