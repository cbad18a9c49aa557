"""`kumo data scan`: probing, bad input, resume, captions, workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_synth import ClipSpec, build_video, render_clip, render_dark_clip, write_bad_inputs, write_video

from kumovideo.cli import main
from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.captions import read_sidecar
from kumovideo.data.pipeline.config import ScanConfig
from kumovideo.data.pipeline.manifest import read_jsonl
from kumovideo.data.pipeline.probe import BadVideo, probe
from kumovideo.data.pipeline.scan import scan_folder

TWO_SHOTS = [ClipSpec("pan_left", frames=36, seed=11), ClipSpec("zoom_out", frames=36, seed=12)]


@pytest.fixture
def good_video(tmp_path):
    path = tmp_path / "in" / "good.mp4"
    path.parent.mkdir()
    build_video(path, TWO_SHOTS, ["cut"])
    return path


def test_probe_reports_container_facts(good_video):
    info = probe(good_video)
    assert info["container"].startswith("mov,mp4")
    assert info["codec"] == "h264"
    assert (info["width"], info["height"]) == (160, 120)
    assert info["fps"] == pytest.approx(24.0)
    assert info["frames"] == 72
    assert info["duration"] == pytest.approx(3.0, abs=0.05)


def test_bad_inputs_are_recorded_and_the_run_goes_on(good_video, capsys):
    folder = good_video.parent
    expected = write_bad_inputs(folder, good_video)
    (folder / "notes.txt").write_text("not scanned: not a video extension")
    manifest = folder.parent / "manifest.jsonl"
    assert main(["data", "scan", str(folder), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    records = {r["path"].rsplit("/", 1)[-1]: r for r in read_jsonl(manifest)}
    assert set(records) == set(expected) | {"good.mp4"}
    assert records["good.mp4"]["status"] == "ok" and len(records["good.mp4"]["clips"]) == 2
    for name, what in expected.items():
        assert records[name]["status"] == "error"
        assert what in records[name]["error"], records[name]["error"]
    out = capsys.readouterr().out
    assert "1 ok, 4 failed" in out
    for name in expected:
        assert f"failed: {folder / name}" in out


def test_truncated_file_with_index_in_front_is_caught_while_decoding(tmp_path):
    frames = 48
    path = tmp_path / "fs.mp4"
    from data_synth import render_clip, write_video

    write_video(path, render_clip(ClipSpec("pan_right", frames=frames), 160, 120), faststart=True)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 3 // 5])
    with pytest.raises(BadVideo, match="truncated"):
        analyze_video(tmp_path / "cut.mp4")


def test_resume_skips_recorded_files_and_repairs_a_partial_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        build_video(folder / f"v{i}.mp4", [ClipSpec("pan_right", frames=30, seed=i)], [])
    manifest = tmp_path / "m.jsonl"
    cfg = ScanConfig()
    first = scan_folder(folder, manifest, cfg, quiet=True)
    assert first.ok == 3
    lines = manifest.read_text().splitlines()
    # A run killed while writing its third record: two full lines and half of the third.
    manifest.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    again = scan_folder(folder, manifest, cfg, quiet=True)
    assert (again.skipped, again.ok) == (2, 1)
    records = read_jsonl(manifest)
    assert len(records) == 3 and len(manifest.read_text().splitlines()) == 3
    assert {r["path"] for r in records} == {str((folder / f"v{i}.mp4").resolve()) for i in range(3)}
    # Nothing left to do.
    assert scan_folder(folder, manifest, cfg, quiet=True).skipped == 3


def test_retry_errors_reanalyses_failed_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "later.mp4"
    bad.write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    assert scan_folder(folder, manifest, ScanConfig(), quiet=True).errors
    build_video(bad, [ClipSpec("tilt_up", frames=30)], [])  # the file was fixed
    assert scan_folder(folder, manifest, ScanConfig(), quiet=True).skipped == 1
    summary = scan_folder(folder, manifest, ScanConfig(), retry_errors=True, quiet=True)
    assert summary.ok == 1
    assert read_jsonl(manifest)[-1]["status"] == "ok"


def test_workers_give_the_same_records_as_one_process(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        build_video(
            folder / f"v{i}.mp4",
            [ClipSpec("pan_left", frames=30, seed=i), ClipSpec("static", frames=30, seed=9, subject=True)],
            ["cut"],
        )
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    scan_folder(folder, one, ScanConfig(), workers=1, quiet=True)
    scan_folder(folder, two, ScanConfig(), workers=2, quiet=True)

    def clips(path):
        return {
            r["path"]: [
                (c["start_frame"], c["end_frame"], c["camera"]["label"], round(c["motion"]["score"], 3))
                for c in r["clips"]
            ]
            for r in read_jsonl(path)
        }

    assert clips(one) == clips(two)


def test_sidecar_captions(tmp_path):
    video = tmp_path / "clip_00000.mp4"
    build_video(video, TWO_SHOTS, ["cut"])
    # ShapesWorld writes clip_NNNNN.txt beside each clip.
    (tmp_path / "clip_00000.txt").write_text("a red circle moves left on a black background\n")
    record = analyze_video(video)
    assert {c["caption"] for c in record["clips"]} == {"a red circle moves left on a black background"}
    assert {c["caption_source"] for c in record["clips"]} == {"sidecar"}
    # Per-segment captions in clip.json pick the segment each clip overlaps most.
    (tmp_path / "clip_00000.txt").unlink()
    (tmp_path / "clip_00000.json").write_text(
        json.dumps(
            {
                "segments": [
                    {"start": 0.0, "end": 1.5, "caption": "first shot"},
                    {"start": 1.5, "end": 3.0, "caption": "second shot"},
                ]
            }
        )
    )
    assert read_sidecar(video)["segments"]
    record = analyze_video(video)
    assert [c["caption"] for c in record["clips"]] == ["first shot", "second shot"]


class EchoCaptioner:
    """A stand-in captioning model: reports what it was given."""

    def __init__(self):
        self.calls = []

    def caption(self, frames, info):
        self.calls.append((len(frames), frames[0].shape, info["camera"]["label"]))
        return f"model saw a {info['camera']['label']} shot"


def test_captioner_hook_and_attribute_fallback(tmp_path):
    video = tmp_path / "v.mp4"
    build_video(video, TWO_SHOTS, ["cut"])
    captioner = EchoCaptioner()
    record = analyze_video(video, captioner=captioner)
    assert [c["caption"] for c in record["clips"]] == ["model saw a pan_left shot", "model saw a zoom_out shot"]
    assert {c["caption_source"] for c in record["clips"]} == {"model"}
    n, shape, _ = captioner.calls[0]
    assert 1 <= n <= 4 and shape[2] == 3
    plain = analyze_video(video)
    assert plain["clips"][0]["caption_source"] == "attributes"
    assert "pan to the left" in plain["clips"][0]["caption"]
    assert "zoom out" in plain["clips"][1]["caption"]


def test_long_shots_are_thinned_not_truncated(tmp_path):
    """A clip longer than max_overlay_samples allows keeps bounded memory and full range."""
    video = tmp_path / "long.mp4"
    build_video(video, [ClipSpec("pan_right", frames=200, speed=0.7, overlay="logo")], [])
    record = analyze_video(video, ScanConfig(max_overlay_samples=8))
    (clip,) = record["clips"]
    assert (clip["start_frame"], clip["end_frame"]) == (0, 200)
    assert clip["overlays"]["detected"]
    assert np.isclose(clip["duration"], 200 / 24, atol=0.01)


def test_dark_clip_with_a_moving_bright_subject_is_content(tmp_path):
    """A red disc crossing black: every frame's mean is under fade_threshold, but something in
    it is bright, so it is no fade. It used to vanish: no clip, nothing dropped."""
    path = tmp_path / "dark.mp4"
    frames = render_dark_clip(72, 160, 120)
    assert max(f.mean() for f in frames) < ScanConfig().fade_threshold
    write_video(path, frames)
    record = analyze_video(path)
    assert record["transitions"] == [] and record["dropped"] == []
    (clip,) = record["clips"]
    assert (clip["start_frame"], clip["end_frame"]) == (0, 72)
    assert clip["motion"]["score"] > 1.0  # passes the default static filter


def test_dark_shot_between_bright_ones_is_one_clip(tmp_path):
    """ThresholdDetector dips under fade_threshold across the dark shot; with no blank frame
    in it that dip is no fade, so the shot is kept whole (it used to be one long 'fade')."""
    bright = [render_clip(ClipSpec(cam, frames=48, seed=s), 160, 120) for cam, s in (("pan_right", 1), ("tilt_up", 2))]
    path = write_video(tmp_path / "sandwich.mp4", bright[0] + render_dark_clip(72, 160, 120) + bright[1])
    record = analyze_video(path)
    assert [(t["kind"], t["frame"]) for t in record["transitions"]] == [("cut", 48), ("cut", 120)]
    assert [(c["start_frame"], c["end_frame"]) for c in record["clips"]] == [(0, 48), (48, 120), (120, 168)]


def test_black_frames_are_dropped_with_a_reason(tmp_path, capsys):
    """An all-black file gives no clip and says why; black frames before a shot are listed."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_video(folder / "black.mp4", render_dark_clip(48, 160, 120, subject=False))
    write_video(folder / "lead.mp4", render_dark_clip(12, 160, 120, subject=False) + render_dark_clip(60, 160, 120))
    manifest = tmp_path / "m.jsonl"
    assert main(["data", "scan", str(folder), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    records = {r["path"].rsplit("/", 1)[-1]: r for r in read_jsonl(manifest)}
    black = records["black.mp4"]
    assert black["status"] == "ok" and black["clips"] == []
    (why,) = black["dropped"]
    assert (why["start_frame"], why["end_frame"]) == (0, 48)
    assert why["reason"].startswith("blank: every frame is black")
    lead = records["lead.mp4"]
    (clip,) = lead["clips"]
    (why,) = lead["dropped"]
    assert why["start_frame"] == 0 and why["end_frame"] == clip["start_frame"]
    assert 12 <= clip["start_frame"] <= 14 and why["reason"].startswith("blank:")
    out = capsys.readouterr().out
    assert "1 clips (1 ok files gave none), 2 stretches dropped (2 blank)" in out
    assert f"no clip: {folder / 'black.mp4'}: blank: every frame is black" in out
