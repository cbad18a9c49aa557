"""Writing clips: the same frames give the same file, so `--seed` reproduces a clip byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np

from kumovideo.data.shapes_world import render_clip, sample_clip_spec
from kumovideo.utils.video_io import read_video, write_video


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
