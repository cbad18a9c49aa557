"""Writing clips: the same frames give the same file, so `--seed` reproduces a clip byte for byte."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from kumovideo.data.shapes_world import render_clip, sample_clip_spec
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import check_output_fps, gif_rate, read_video, write_video


def test_the_same_frames_write_the_same_mp4(tmp_path):
    # A rendered clip with noise on it, like a generated one (x264's threaded lookahead made
    # such clips differ from one write to the next by up to 28 levels).
    rng = np.random.default_rng(3)
    frames = render_clip(sample_clip_spec(rng, size=64, num_frames=17)).astype(np.float32)
    frames = np.clip(frames + rng.normal(0, 12, frames.shape), 0, 255).astype(np.uint8)
    digests = {
        hashlib.sha256(write_video(frames, tmp_path / f"clip{i}.mp4").read_bytes()).hexdigest() for i in range(6)
    }
    assert len(digests) == 1
    decoded, fps = read_video(tmp_path / "clip0.mp4")
    assert decoded.shape == frames.shape and fps == 8


def noisy_clip(num_frames: int = 17, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = render_clip(sample_clip_spec(rng, size=64, num_frames=num_frames)).astype(np.float32)
    return np.clip(frames + rng.normal(0, 12, frames.shape), 0, 255).astype(np.uint8)


def gif_delays_cs(path) -> list[int]:
    """Each frame's delay in hundredths of a second, as Pillow (not FFmpeg, the writer) reads them."""
    from PIL import Image

    delays = []
    with Image.open(path) as image:
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"] // 10)
    return delays


@pytest.mark.parametrize("fps", [8, 12, 30, 32, 50])
def test_gif_delays_keep_the_clip_at_its_frame_rate(tmp_path, fps):
    # One rounded delay for every frame drifted: 8 fps was 12 cs a frame (8.33 fps), 32 fps 3 cs (33.3).
    frames = render_clip(sample_clip_spec(np.random.default_rng(0), size=64, num_frames=17))
    path = write_video(frames, tmp_path / "clip.gif", fps=fps)
    delays = gif_delays_cs(path)
    assert len(delays) == 17
    assert set(delays) <= {math.floor(100 / fps), math.ceil(100 / fps)}
    starts = np.cumsum([0, *delays[:-1]])
    assert np.abs(starts - 100 * np.arange(17) / fps).max() <= 0.5  # every frame on time, to the 1/100 s
    decoded, read_fps = read_video(path)
    assert len(decoded) == 17 and read_fps == fps


def test_a_gif_keeps_repeated_frames_and_pillows_colours(tmp_path):
    from PIL import Image

    # Pillow's GIF writer dropped a frame equal to the one before: a still clip came back as one frame.
    still = np.repeat(noisy_clip(1), 5, axis=0)
    decoded, fps = read_video(write_video(still, tmp_path / "still.gif", fps=8))
    assert decoded.shape == still.shape and fps == 8
    # The colours are Pillow's 256-colour reduction of each frame, exactly.
    frames = noisy_clip()
    decoded, _ = read_video(write_video(frames, tmp_path / "clip.gif", fps=8))
    reduced = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE).convert("RGB") for f in frames]
    np.testing.assert_array_equal(decoded, np.stack([np.asarray(image) for image in reduced]))


def test_a_gif_over_50_fps_is_refused_before_writing(tmp_path):
    with pytest.raises(KumoInputError, match="a GIF plays at most 50") as caught:
        write_video(noisy_clip(1), tmp_path / "fast.gif", fps=64)
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []
    assert check_output_fps(tmp_path / "fast.mp4", 64) == 64


def test_gif_rate():
    assert gif_rate([0, 10, 20, 30], 10) == 10  # a GIF from elsewhere, 10 cs a frame
    assert gif_rate([0, 13, 25, 38, 50], 13) == 8
    assert gif_rate([0, 8, 16, 24, 32], 8) == 12.5
    assert gif_rate([0], 4) == 25  # one frame: its own delay
    assert gif_rate([0, 10, 30], 10) is None  # uneven delays: no one rate


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_every_format_writes_the_same_bytes_for_the_same_frames(tmp_path, suffix):
    # Matroska wrote a random track UID: two .webm writes of the same frames differed in 16 bytes.
    frames = noisy_clip(9)
    first, second = (write_video(frames, tmp_path / f"{name}{suffix}").read_bytes() for name in ("a", "b"))
    assert first == second
