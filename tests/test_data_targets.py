"""The data pipeline's accuracy targets, measured on generated videos with known truth.

Four videos of twelve shots each (tests/data_synth.py): every camera class and frozen
shots, slow to fast, with moving subjects, sensor noise, logos and subtitles, joined by hard
cuts and fades through black. Each target of the task is computed and asserted:

* cut detection F1 >= 0.95 (a boundary counts within 2 frames);
* camera-movement class accuracy >= 90%;
* overlay detected in >= 90% of the clips that carry one, false alarms <= 5%;
* static clips rank below moving ones by the dynamic score in >= 95% of pairs.
"""

from __future__ import annotations

import pytest

from data_synth import (ClipSpec, boundary_f1, box_hit, build_benchmark_set, build_video,
                        match_clips)
from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.config import ScanConfig


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    out = []
    for path, truth in build_benchmark_set(folder, videos=4, clips=12):
        out.append((truth, analyze_video(path)))
    return out


def _pairs(analysed):
    for truth, record in analysed:
        for spec, k, clip in match_clips(truth, record["clips"]):
            yield truth, spec, k, clip


def test_cut_detection_f1(analysed):
    predicted, true, offset = [], [], 0
    for truth, record in analysed:
        predicted += [t["frame"] + offset for t in record["transitions"]]
        true += [b + offset for b in truth.boundaries]
        offset += truth.num_frames + 100  # keep videos apart
    precision, recall, f1 = boundary_f1(predicted, true, tolerance=2)
    assert len(true) == 44
    assert f1 >= 0.95, (precision, recall, f1)


def test_fades_are_found_as_fades_and_trimmed(analysed):
    """A fade's dark frames belong to neither clip; hard cuts are labelled cuts."""
    kinds = {"cut": [], "fade": []}
    for truth, record in analysed:
        for b in truth.boundaries:
            near = [t for t in record["transitions"] if abs(t["frame"] - b) <= 2]
            if near:
                kinds[near[0]["kind"]].append(near[0])
        for clip in record["clips"]:
            dark = [t for t in record["transitions"] if t["kind"] == "fade"]
            for t in dark:
                assert not (clip["start_frame"] < t["frame"] < clip["end_frame"]), (clip, t)
                assert clip["end_frame"] <= t["start"] or clip["start_frame"] >= t["end"]
    assert kinds["fade"] and kinds["cut"]
    assert all(t["end"] > t["start"] for t in kinds["fade"])


def test_camera_movement_accuracy(analysed):
    right = total = 0
    for _, spec, _, clip in _pairs(analysed):
        truth = "static" if spec.camera == "frozen" else spec.camera
        total += 1
        right += clip is not None and clip["camera"]["label"] == truth
    assert total == 48
    assert right / total >= 0.90, right / total


def test_camera_speed_is_measured(analysed):
    """Pan speed in percent of the frame width per second matches the rendered speed."""
    for _, spec, _, clip in _pairs(analysed):
        if clip is not None and spec.camera in ("pan_left", "pan_right"):
            expected = spec.speed * 24 / 160 * 100  # px/frame at 160 px, 24 fps
            assert clip["camera"]["speed"] == pytest.approx(expected, rel=0.15)


def test_overlay_detection_rate_and_false_alarms(analysed):
    hits, with_overlay, alarms, without = 0, 0, 0, 0
    subtitles_named = subtitles = 0
    for truth, spec, k, clip in _pairs(analysed):
        if spec.overlay:
            with_overlay += 1
            found = clip is not None and any(box_hit(it["box"], truth.overlay_boxes[k])
                                             for it in clip["overlays"]["items"])
            hits += found
            if spec.overlay == "subtitle":
                subtitles += 1
                subtitles_named += clip is not None and any(
                    it["kind"] == "subtitle" for it in clip["overlays"]["items"])
        elif clip is not None:
            without += 1
            alarms += clip["overlays"]["detected"]
    assert with_overlay >= 15 and without >= 20
    assert hits / with_overlay >= 0.90, (hits, with_overlay)
    assert alarms / without <= 0.05, (alarms, without)
    assert subtitles and subtitles_named / subtitles >= 0.75


def test_frozen_clips_leave_overlays_undetermined(analysed):
    """With nothing moving, an overlay and the scene look the same: no guess is made."""
    frozen = [clip for _, spec, _, clip in _pairs(analysed) if spec.camera == "frozen" and clip]
    assert frozen
    for clip in frozen:
        assert clip["overlays"]["status"] == "undetermined"
        assert not clip["overlays"]["detected"]


def test_static_clips_rank_below_moving_ones(analysed):
    static, moving = [], []
    for _, spec, _, clip in _pairs(analysed):
        if clip is None:
            continue
        still = spec.camera == "frozen" or (spec.camera == "static" and not spec.subject)
        (static if still else moving).append(clip["motion"]["score"])
    pairs = [(s, m) for s in static for m in moving]
    assert len(static) >= 5 and len(moving) >= 30
    assert sum(s < m for s, m in pairs) / len(pairs) >= 0.95


def test_subject_motion_is_separated_from_background(analysed):
    """A subject moving in a locked-off shot: subject flow far above background flow."""
    seen = 0
    for _, spec, _, clip in _pairs(analysed):
        if clip is not None and spec.camera == "static" and spec.subject:
            m = clip["motion"]
            assert m["subject"] > 5 * max(m["background"], 0.1)
            assert 0.01 < m["subject_fraction"] < 0.5
            seen += 1
    assert seen


def test_short_shots_are_dropped(tmp_path):
    specs = [ClipSpec("pan_right", frames=40, seed=1), ClipSpec("tilt_up", frames=12, seed=2),
             ClipSpec("zoom_in", frames=40, seed=3)]
    truth = build_video(tmp_path / "short.mp4", specs, ["cut", "cut"])
    record = analyze_video(tmp_path / "short.mp4", ScanConfig(min_clip_seconds=1.0))
    assert [c["camera"]["label"] for c in record["clips"]] == ["pan_right", "zoom_in"]
    assert record["dropped"] == [{"start_frame": 40, "end_frame": 52, "reason": "shorter than 1 s"}]
    assert [t["frame"] for t in record["transitions"]] == truth.boundaries
