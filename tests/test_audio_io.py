"""kumovideo.utils.audio_io: probing, reading and writing audio, and muxing a soundtrack into a
video by stream copy (the video packets unchanged, the audio as long as the video)."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from kumovideo.utils.audio_io import (
    AUDIO_CODECS,
    COPYABLE_VIDEO,
    audio_codec_for,
    mux_audio,
    probe_media,
    read_audio,
    write_wav,
)
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import write_video

FPS = 8
NUM_FRAMES = 17
RATE = 16_000


def sine(freq: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def video_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 17-frame 8 fps clip as .mp4 (H.264) and .webm (VP9), written by the project's writer."""
    folder = tmp_path_factory.mktemp("audio_io")
    frames = np.random.default_rng(0).integers(0, 256, (NUM_FRAMES, 48, 64, 3), dtype=np.uint8)
    return {ext: write_video(frames, folder / f"clip{ext}", fps=FPS) for ext in (".mp4", ".webm", ".gif")}


@pytest.mark.parametrize("ext, codec", [(".mp4", "aac"), (".webm", "opus")])
def test_mux_copies_the_video_and_matches_its_duration(clips, tmp_path, ext, codec):
    out = mux_audio(clips[ext], sine(440, 3.0), RATE, tmp_path / f"out{ext}")
    assert video_packets(out) == video_packets(clips[ext])  # a stream copy: the same bytes
    info = probe_media(out)
    assert info.has_audio and info.audio_codec == codec
    assert (info.num_frames, info.fps) == (NUM_FRAMES, FPS)
    audio, rate = read_audio(out)
    frame_size = 1024 if codec == "aac" else 960  # samples per AAC frame; 20 ms Opus frames
    assert abs(len(audio) - NUM_FRAMES / FPS * rate) <= frame_size
    assert abs(peak_hz(audio, rate) - 440) <= 4.4


def test_short_audio_is_padded_to_the_video(clips, tmp_path):
    out = mux_audio(clips[".mp4"], sine(440, 0.5), RATE, tmp_path / "out.mp4")
    audio, rate = read_audio(out)
    assert abs(len(audio) - NUM_FRAMES / FPS * rate) <= 1024
    assert np.abs(audio[round(0.7 * rate) :]).max() < 0.01  # silence after the sound ends


def test_replace_audio_in_place(clips, tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(clips[".mp4"].read_bytes())
    mux_audio(target, sine(300, 2.125), RATE, target)
    before = digest(target)
    with pytest.raises(KumoInputError, match="already has an audio track; pass --replace-audio"):
        mux_audio(target, sine(600, 2.125), RATE, target)
    assert digest(target) == before  # refused: the input is unchanged
    mux_audio(target, sine(600, 2.125), RATE, target, replace_audio=True)
    audio, rate = read_audio(target, RATE)
    assert abs(peak_hz(audio, rate) - 600) <= 6
    with av.open(str(target)) as container:
        assert len(container.streams.audio) == 1  # the old track was dropped
    assert video_packets(target) == video_packets(clips[".mp4"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left behind


def test_read_audio_and_wav_keep_the_pitch(tmp_path):
    tone = sine(523.25, 1.0)
    wav = write_wav(tone, RATE, tmp_path / "tone.wav")
    audio, rate = read_audio(wav)
    assert rate == RATE and audio.dtype == np.float32 and audio.shape == tone.shape
    assert np.abs(audio - tone).max() < 1e-3  # 16-bit PCM
    assert abs(peak_hz(audio, rate) - 523.25) <= 5.2
    resampled, rate = read_audio(wav, 22_050)
    assert rate == 22_050 and abs(len(resampled) - 22_050) <= 64
    assert abs(peak_hz(resampled, rate) - 523.25) <= 5.2


def test_audio_codec_for():
    assert audio_codec_for("a.mp4") == "aac" and audio_codec_for("a.MOV") == "aac"
    assert audio_codec_for("a.webm") in ("libopus", "opus")
    # The refusal names every container audio_io muxes into, or the ones a caller writes.
    with pytest.raises(KumoInputError, match=r"a\.gif cannot hold audio; write \.mp4, \.mov, \.m4v, \.mkv or \.webm$"):
        audio_codec_for("a.gif")
    with pytest.raises(KumoInputError, match=r"a\.mkv cannot hold audio; write \.mp4 or \.webm$"):
        audio_codec_for("a.mkv", [".mp4", ".webm"])
    assert COPYABLE_VIDEO.keys() == AUDIO_CODECS.keys()


def encode_mkv(path, encoder: str, frames: np.ndarray):
    """A clip in Matroska by `encoder` with its default settings (x264: B-frames)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("ext", [".mov", ".m4v", ".mkv"])
def test_mux_an_h264_clip_into_every_container_that_takes_it(clips, tmp_path, ext):
    out = mux_audio(clips[".mp4"], sine(440, 3.0), RATE, tmp_path / f"out{ext}")
    assert video_packets(out) == video_packets(clips[".mp4"])
    info = probe_media(out)
    assert info.has_audio and info.audio_codec == "aac" and info.num_frames == NUM_FRAMES


def test_a_refused_copy_names_only_the_containers_that_take_the_codec(clips, tmp_path):
    # .mov and .m4v were offered for VP9, and then failed with a traceback from the muxer.
    for video, out, takers in [
        (clips[".mp4"], "out.webm", ".mp4, .mov, .m4v or .mkv"),
        (clips[".webm"], "out.mov", ".mp4, .mkv or .webm"),
        (clips[".webm"], "out.m4v", ".mp4, .mkv or .webm"),
    ]:
        with pytest.raises(KumoInputError, match=f"cannot be copied into .*; write {takers} instead$"):
            mux_audio(video, sine(440, 1.0), RATE, tmp_path / out)
        assert not (tmp_path / out).exists()


def test_mux_keeps_the_first_frames_of_a_clip_with_b_frames(tmp_path):
    # Matroska stores no decode times: the packets before the first B-frame came without a
    # dts and were dropped as if they were the demuxer's empty flush packet.
    frames = np.random.default_rng(1).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    source = encode_mkv(tmp_path / "b-frames.mkv", "libx264", frames)
    out = mux_audio(source, sine(440, 2.0), RATE, tmp_path / "out.mp4")
    assert video_packets(out) == video_packets(source)
    assert probe_media(out).num_frames == 9


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="needs an AV1 encoder")
def test_mux_copies_av1_decoded_by_libdav1d(tmp_path):
    # The copy was made from the decoder's name ("libdav1d"), which names no encoder: a traceback.
    frames = np.random.default_rng(2).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    source = encode_mkv(tmp_path / "av1.mkv", "libsvtav1", frames)
    assert probe_media(source).video_codec == "av1"
    out = mux_audio(source, sine(440, 2.0), RATE, tmp_path / "out.mp4")
    assert video_packets(out) == video_packets(source) and probe_media(out).has_audio


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm"])
def test_muxing_twice_writes_the_same_bytes(clips, tmp_path, ext):
    # Matroska and WebM wrote random track and segment UIDs: no two files were the same.
    video = clips[".webm"] if ext == ".webm" else clips[".mp4"]
    first, second = (mux_audio(video, sine(440, 3.0), RATE, tmp_path / f"{name}{ext}") for name in ("a", "b"))
    assert digest(first) == digest(second)
    wav_a, wav_b = (write_wav(sine(440, 1.0), RATE, tmp_path / f"{name}.wav") for name in ("a", "b"))
    assert digest(wav_a) == digest(wav_b)


def _no_frames_video(path):
    """A WebM whose video stream holds no frame (only audio packets were written)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libvpx-vp9", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 48_000, 0
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            out.mux(packet)
    return path


def test_refusals_write_nothing(clips, tmp_path):
    tone = sine(440, 1.0)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    sound_only = write_wav(tone, RATE, tmp_path / "tone.wav")
    refusals = [
        (clips[".mp4"], tmp_path / "out.gif", "cannot hold audio"),
        (text, tmp_path / "out.mp4", "not a video: .*PyAV could not open it"),
        (tmp_path / "missing.mp4", tmp_path / "out.mp4", "does not exist"),
        (_no_frames_video(tmp_path / "empty.webm"), tmp_path / "out.webm", "no frames"),
        (sound_only, tmp_path / "out.mp4", "not a video: .* has no video stream"),
        (clips[".mp4"], tmp_path / "out.webm", r"h264 video cannot be copied into \.webm; write \.mp4"),
        (clips[".gif"], tmp_path / "out.mp4", "gif video cannot be copied into .mp4; re-encode it"),
        (clips[".mp4"], tmp_path / "no_folder" / "out.mp4", "does not exist"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for video, out, message in refusals:
        with pytest.raises(KumoInputError, match=message) as caught:
            mux_audio(video, tone, RATE, out)
        assert "\n" not in str(caught.value)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(KumoInputError, match="no audio stream"):
        read_audio(clips[".mp4"])
    with pytest.raises(KumoInputError, match=r"must end in \.wav"):
        write_wav(tone, RATE, tmp_path / "tone.mp3")
    with pytest.raises(KumoInputError, match="mono float"):
        mux_audio(clips[".mp4"], np.zeros((2, 100), np.float32), RATE, tmp_path / "out.mp4")
    with pytest.raises(KumoInputError, match="no samples"):
        write_wav(np.zeros(0, np.float32), RATE, tmp_path / "empty.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
