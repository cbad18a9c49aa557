"""`kumo data filter` and `kumo data cut`: thresholds, config, stream copy and re-encode."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from data_synth import ClipSpec, build_video

from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.config import DataConfig, FilterConfig, ScanConfig, config_from_dict, load_config
from kumovideo.data.pipeline.cut import CutConfig, cut_one
from kumovideo.data.pipeline.filter import clip_entry, filter_records, rejections, split_long
from kumovideo.utils.errors import KumoInputError

REPO = Path(__file__).resolve().parents[1]


def _frames(path, start=0, end=None):
    with av.open(str(path)) as c:
        out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return out[start:end]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Four 1.5 s shots on 36-frame GOPs: a clean pan, a frozen shot, a logo, a zoom."""
    folder = tmp_path_factory.mktemp("fc")
    specs = [
        ClipSpec("pan_right", frames=36, seed=1, speed=2.0),
        ClipSpec("frozen", frames=36, seed=2),
        ClipSpec("tilt_up", frames=36, seed=3, speed=3.0, overlay="logo", corner=1),
        ClipSpec("zoom_in", frames=36, seed=4, speed=1.0),
    ]
    path = folder / "four.mp4"
    build_video(path, specs, ["cut"] * 3, gop=36)
    return folder, path, analyze_video(path)


def test_shipped_config_lists_exactly_the_defaults():
    data = yaml.safe_load((REPO / "configs" / "data_filter.yaml").read_text())
    assert config_from_dict(data).to_dict() == DataConfig().to_dict()
    # every key is spelled out, so the file documents the whole config
    assert {k: set(v) for k, v in data.items()} == {k: set(v) for k, v in DataConfig().to_dict().items()}


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter:\n  min_qualty: 0.5\n")
    with pytest.raises(KumoInputError, match=r"unknown key filter\.min_qualty"):
        load_config(bad)
    bad.write_text("scan:\n  flow_width: wide\n")
    with pytest.raises(KumoInputError, match=r"scan\.flow_width must be a whole number"):
        load_config(bad)
    bad.write_text("encode:\n  frames: 48\n")
    with pytest.raises(KumoInputError, match="4k\\+1"):
        load_config(bad)
    bad.write_text("filter:\n  cameras: [pan_sideways]\n")
    with pytest.raises(KumoInputError, match="pan_sideways"):
        load_config(bad)
    with pytest.raises(KumoInputError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("filter:\n  min_motion: 3\n  cameras: [static]\n")
    cfg = load_config(good)
    assert cfg.filter.min_motion == 3.0 and cfg.filter.cameras == ["static"]
    assert cfg.scan == DataConfig().scan


def test_filter_rejects_for_the_right_reasons(scanned):
    _, _, record = scanned
    assert [c["camera"]["label"] for c in record["clips"]] == ["pan_right", "static", "tilt_up", "zoom_in"]
    cfg = FilterConfig(min_seconds=1.0)
    kept, rejected, reasons = filter_records([record], cfg)
    assert [e["camera"]["label"] for e in kept] == ["pan_right", "zoom_in"]
    why = {e["camera"]["label"]: e["rejected"] for e in rejected}
    assert why == {"static": ["static"], "tilt_up": ["overlay"]}
    assert reasons == {"static": 1, "overlay": 1}
    # Each threshold is honoured on its own.
    pan = kept[0]
    assert rejections(pan, FilterConfig(min_seconds=2.0)) == ["too_short"]
    assert rejections(pan, FilterConfig(min_seconds=1.0, min_quality=1.01)) == ["low_quality"]
    assert rejections(pan, FilterConfig(min_seconds=1.0, max_motion=1.0)) == ["too_much_motion"]
    assert rejections(pan, FilterConfig(min_seconds=1.0, cameras=["static"])) == ["camera"]
    assert rejections(pan, FilterConfig(min_seconds=1.0, require_caption=True)) == ["no_caption"]
    assert rejections(pan, FilterConfig(min_seconds=1.0, min_width=320)) == ["too_small"]
    # Error records are skipped, not crashed on.
    assert filter_records([{"path": "x", "status": "error", "error": "empty"}], cfg)[0] == []


def test_moving_clip_at_8_fps_passes_the_static_filter(tmp_path):
    """8 fps (ShapesWorld's default) used to get no motion pairs, so every clip was 'static'."""
    path = tmp_path / "pan8.mp4"
    build_video(path, [ClipSpec("pan_right", frames=24, seed=5, speed=3.0)], [], fps=8)
    record = analyze_video(path)
    kept, rejected, reasons = filter_records([record], FilterConfig(min_seconds=1.0))
    assert [e["rejected"] for e in rejected] == [] and not reasons
    assert len(kept) == 1 and kept[0]["motion_score"] > FilterConfig().min_motion


def test_clip_without_a_motion_score_is_not_called_static(tmp_path):
    """A one-frame clip has no frame pair to measure: its own reason, never 'static'."""
    path = tmp_path / "one.mp4"
    build_video(path, [ClipSpec("pan_right", frames=1, seed=5)], [], fps=8)
    record = analyze_video(path, ScanConfig(min_clip_seconds=0.0))
    (clip,) = record["clips"]
    assert clip["motion"]["score"] is None and clip["motion"]["pairs"] == 0
    entry = clip_entry(record, clip)
    assert rejections(entry, FilterConfig(min_seconds=0.0)) == ["no_motion_score"]
    # Without a motion threshold there is nothing to judge it on.
    assert rejections(entry, FilterConfig(min_seconds=0.0, min_motion=None)) == []


def test_long_clips_are_split_into_equal_pieces(scanned):
    _, _, record = scanned
    entry = clip_entry(record, record["clips"][0])  # 36 frames, 1.5 s
    pieces = split_long(entry, 0.6)
    assert [(p["start_frame"], p["end_frame"]) for p in pieces] == [(0, 12), (12, 24), (24, 36)]
    assert [p["id"] for p in pieces] == [entry["id"] + f"-p{j}" for j in range(3)]
    assert all(p["caption"] == entry["caption"] for p in pieces)
    assert split_long(entry, None) == [entry]


def test_cut_stream_copies_whole_gops_exactly(scanned, tmp_path):
    _, path, record = scanned
    out = tmp_path / "clips"
    out.mkdir()
    source = _frames(path)
    for clip in record["clips"]:
        entry = clip_entry(record, clip)
        result = cut_one(entry, str(out), CutConfig())
        assert result["status"] == "ok" and result["method"] == "copy", result
        written = _frames(out / result["file"])
        assert len(written) == clip["frames"] == result["out_frames"]
        # Same packets, so the same decoded pixels.
        assert all(np.array_equal(a, b) for a, b in zip(written, source[clip["start_frame"] : clip["end_frame"]]))
        assert (out / f"{entry['id']}.txt").read_text().strip() == entry["caption"]
    assert not list(out.glob(".*"))  # no temp files left behind


def test_cut_reencodes_to_a_target_rate_and_size(scanned, tmp_path):
    _, path, record = scanned
    clip = record["clips"][0]
    entry = clip_entry(record, clip)
    result = cut_one(entry, str(tmp_path), CutConfig(fps=12, width=96, height=64))
    assert result["status"] == "ok" and result["method"] == "encode"
    assert (result["out_width"], result["out_height"]) == (96, 64)
    assert result["out_fps"] == pytest.approx(12)
    written = _frames(tmp_path / result["file"])
    assert len(written) == 18  # 1.5 s at 12 fps
    # Frame k shows source frame 2k (scaled to cover 96x64 and centre-cropped).
    import cv2

    src = _frames(path, clip["start_frame"], clip["end_frame"])
    ref = cv2.resize(src[10], (96, 72), interpolation=cv2.INTER_AREA)[4:68]
    assert np.abs(written[5].astype(int) - ref.astype(int)).mean() < 12


def test_cut_reencodes_when_the_clip_does_not_start_on_a_keyframe(scanned, tmp_path):
    _, path, record = scanned
    entry = clip_entry(record, record["clips"][3])
    entry.update(start_frame=entry["start_frame"] + 5, keyframe_before=entry["start_frame"])
    entry["frames"] = entry["end_frame"] - entry["start_frame"]
    result = cut_one(entry, str(tmp_path), CutConfig())
    assert result["method"] == "encode" and result["out_frames"] == 31
    src = _frames(path, entry["start_frame"], entry["end_frame"])
    out = _frames(tmp_path / result["file"])
    assert np.abs(out[0].astype(int) - src[0].astype(int)).mean() < 4
