"""Visual quality measures: each one responds to the defect it is meant to catch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from data_synth import ClipSpec, render_clip, textured_image, write_video

from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.quality import (
    blockiness,
    clip_quality,
    colourfulness,
    exposure,
    frame_quality,
    noise_sigma,
    sharpness,
)


@pytest.fixture(scope="module")
def image():
    return textured_image(240, 320, seed=5)


def _jpeg(img, q):
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_sharpness_falls_with_blur(image):
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    values = [sharpness(cv2.GaussianBlur(grey, (0, 0), s)) if s else sharpness(grey) for s in (0, 1, 2, 4)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 10 * values[-1]


def test_noise_estimate_tracks_added_noise():
    smooth = cv2.GaussianBlur(textured_image(240, 320, seed=6), (0, 0), 3)
    grey = cv2.cvtColor(smooth, cv2.COLOR_BGR2GRAY).astype(np.float32)
    rng = np.random.default_rng(0)
    for sigma in (3.0, 6.0, 12.0):
        noisy = np.clip(grey + rng.normal(0, sigma, grey.shape), 0, 255).astype(np.uint8)
        assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.25)
    assert noise_sigma(grey.astype(np.uint8)) < 1.5


def test_blockiness_rises_with_heavy_compression(image):
    grey = lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)  # noqa: E731
    clean = blockiness(grey(cv2.GaussianBlur(image, (0, 0), 1.5)))
    blocky = blockiness(grey(_jpeg(cv2.GaussianBlur(image, (0, 0), 1.5), 5)))
    assert clean == pytest.approx(1.0, abs=0.1)
    assert blocky > clean + 0.3


def test_exposure_and_colourfulness(image):
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    clipped, level = exposure(grey)
    assert clipped < 0.05 and 40 < level < 215
    blown = np.clip(grey.astype(np.int32) * 3, 0, 255).astype(np.uint8)
    assert exposure(blown)[0] > 0.4
    assert colourfulness(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)) < 1.0
    assert colourfulness(image) > 20


def test_combined_score_ranks_defects_below_clean(image):
    rng = np.random.default_rng(1)
    clean = frame_quality(image)
    defects = {
        "blurred": cv2.GaussianBlur(image, (0, 0), 4),
        "noisy": np.clip(image + rng.normal(0, 18, image.shape), 0, 255).astype(np.uint8),
        "dark": (image * 0.12).astype(np.uint8),
        "blocky": _jpeg(cv2.GaussianBlur(image, (0, 0), 1.5), 3),
    }
    base = clip_quality([clean])
    assert base["score"] > 0.8
    assert set(base["parts"]) == {"sharpness", "exposure", "colourfulness", "blockiness", "noise"}
    for name, img in defects.items():
        q = clip_quality([frame_quality(img)])
        assert q["score"] < base["score"] - 0.1, (name, q)
    # The part that names the defect is the one that drops.
    assert clip_quality([frame_quality(defects["blurred"])])["parts"]["sharpness"] < 0.5
    assert clip_quality([frame_quality(defects["noisy"])])["parts"]["noise"] < 0.3
    assert clip_quality([frame_quality(defects["dark"])])["parts"]["exposure"] < 0.5
    assert clip_quality([frame_quality(defects["blocky"])])["parts"]["blockiness"] < 0.6


def test_scan_scores_a_blurred_shot_below_a_sharp_one(tmp_path):
    sharp = render_clip(ClipSpec("pan_right", frames=30, seed=3), 160, 120)
    blurred = [
        cv2.GaussianBlur(f, (0, 0), 2.5) for f in render_clip(ClipSpec("pan_left", frames=30, seed=4), 160, 120)
    ]
    write_video(tmp_path / "q.mp4", sharp + blurred)
    record = analyze_video(tmp_path / "q.mp4")
    a, b = record["clips"]
    assert a["quality"]["score"] > b["quality"]["score"] + 0.1
    assert a["quality"]["frames"] >= 2 and b["quality"]["raw"]["sharpness"] < a["quality"]["raw"]["sharpness"]


def test_quality_of_a_clip_is_the_median_of_its_frames(image):
    good = frame_quality(image)
    bad = frame_quality(cv2.GaussianBlur(image, (0, 0), 5))
    # One motion-blurred frame among sharp ones does not sink the clip.
    assert clip_quality([good, good, bad])["score"] == pytest.approx(clip_quality([good])["score"])
