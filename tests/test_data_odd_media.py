"""`kumo data` on media users really have: phone video with a display matrix, variable frame
rate, tiny and banner-shaped frames, symlinks, an audio track without packets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from data_synth import ClipSpec, render_clip, write_video

from kumovideo.cli import main
from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.config import CutConfig, FilterConfig, ScanConfig
from kumovideo.data.pipeline.cut import cut_one
from kumovideo.data.pipeline.filter import filter_records
from kumovideo.data.pipeline.manifest import read_jsonl
from kumovideo.data.pipeline.probe import BadVideo
from kumovideo.data.pipeline.scan import scan_folder, scan_one
from kumovideo.utils.video_io import read_video

# Keep every clip of these small synthetic videos: the frame-number barcode below is an
# overlay, and quality and motion are not what these tests are about.
KEEP_ALL = FilterConfig(min_seconds=0.5, max_seconds=None, min_quality=None, min_motion=None, max_overlay_area=None)


def encode(path: Path, frames: list[np.ndarray], fps: int = 24, *, codec="libx264", pix_fmt="yuv420p", **kw) -> Path:
    """Write BGR frames; `rotation` sets a display matrix, `pts_ms` each frame's time."""
    rotation, pts_ms = kw.pop("rotation", None), kw.pop("pts_ms", None)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.gop_size = kw.pop("gop", 12)
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if kw.pop("empty_audio", False):
            out.add_stream("pcm_s16le", rate=48000)  # a track that never gets a packet
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def stamp(img: np.ndarray, number: int) -> np.ndarray:
    """Draw `number` as an 8-bit barcode of 8x8 blocks along the top edge."""
    img = img.copy()
    for bit in range(8):
        img[:8, bit * 8 : bit * 8 + 8] = 255 if number >> bit & 1 else 0
    return img


def read_stamps(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        rows = [f.to_ndarray(format="rgb24")[:8, :64].mean(axis=(0, 2)) for f in c.decode(video=0)]
    return [sum(1 << b for b in range(8) if row[b * 8 + 2 : b * 8 + 6].mean() > 128) for row in rows]


def scan_and_keep(path: Path) -> list[dict]:
    kept, _, _ = filter_records([analyze_video(path)], KEEP_ALL)
    return kept


def test_phone_video_with_a_display_matrix_is_scanned_cut_and_read_upright(tmp_path):
    # A portrait picture with a red corner, stored as phones store it: landscape frames and a
    # display matrix saying "turn 90 degrees clockwise" (rotation -90).
    upright = [f.copy() for f in render_clip(ClipSpec("pan_left", frames=60, seed=5), 64, 96)]
    for f in upright:
        f[:16, :16] = (0, 0, 255)
    folder = tmp_path / "in"
    folder.mkdir()
    src = encode(folder / "phone.mp4", [np.rot90(f, 1) for f in upright], rotation=-90)

    record = analyze_video(src)
    assert (record["probe"]["width"], record["probe"]["height"], record["probe"]["rotation"]) == (64, 96, 270)
    frames, _ = read_video(src)
    assert frames.shape[1:3] == (96, 64)
    # Encode reads what a stream copy kept (with its display matrix) upright too.
    from kumovideo.data.pipeline.encode import read_clip  # here: torch would slow the workers' import of this module

    assert read_clip(src, 5, None, None)[0].shape == (3, 5, 96, 64)

    manifest, clips, out = tmp_path / "m.jsonl", tmp_path / "clips.jsonl", tmp_path / "cut"
    assert main(["data", "scan", str(folder), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    config = tmp_path / "keep.yaml"
    config.write_text("filter: {min_quality: null, min_motion: null, max_overlay_area: null}\n")
    assert main(["data", "filter", str(manifest), "-o", str(clips), "--config", str(config)]) == 0
    assert main(["data", "cut", str(clips), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    (entry,) = read_jsonl(out / "clips.jsonl")
    assert (entry["out_width"], entry["out_height"]) == (64, 96)
    # Stored upright, with no display matrix left for a reader to ignore.
    with av.open(str(out / entry["file"])) as c:
        first = next(c.decode(video=0))
        assert getattr(first, "rotation", 0) == 0
        rgb = first.to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb - upright[0][..., ::-1]).mean() < 8
    assert rgb[:12, :12, 0].mean() > 200 and rgb[:12, :12, 2].mean() < 60  # the red corner, top left


@pytest.mark.parametrize("durations_ms", [[33, 40, 27, 36], [1000 / 30] * 4 + [100] * 4], ids=["jitter", "slow-half"])
def test_variable_frame_rate_clips_hold_exactly_their_frames(tmp_path, durations_ms):
    """Cut numbers frames as the scan did (decode order): numbers from timestamps at the
    average rate took frames twice, skipped others, and pulled in frames across the cut."""
    shots = render_clip(ClipSpec("pan_left", frames=40, seed=1), 160, 120)
    shots += render_clip(ClipSpec("zoom_in", frames=40, seed=2), 160, 120)
    steps = np.repeat(durations_ms, len(shots) // len(durations_ms))
    pts = np.concatenate([[0], np.cumsum(steps)[:-1]]).round()
    src = encode(tmp_path / "vfr.mp4", [stamp(f, i) for i, f in enumerate(shots)], fps=30, pts_ms=pts, gop=10)

    entries = scan_and_keep(src)
    assert [(e["start_frame"], e["end_frame"]) for e in entries] == [(0, 40), (40, 80)]
    # Pieces that start inside a GOP are re-encoded from the keyframe before them.
    pieces, _, _ = filter_records([analyze_video(src)], FilterConfig(**{**KEEP_ALL.__dict__, "max_seconds": 0.9}))
    for name, todo, cfg in [
        ("copy", entries, CutConfig()),
        ("encode", entries, CutConfig(stream_copy=False)),
        ("pieces", pieces, CutConfig()),
    ]:
        out = tmp_path / name
        out.mkdir()
        for entry in todo:
            result = cut_one(entry, str(out), cfg)
            assert result["status"] == "ok", result
            assert read_stamps(out / result["file"]) == list(range(entry["start_frame"], entry["end_frame"])), name


def test_tiny_frames_are_refused_in_one_line_and_banners_are_analysed(tmp_path):
    still = render_clip(ClipSpec("pan_left", frames=30, seed=3), 160, 120)
    line = encode(tmp_path / "line.mkv", [f[60:61] for f in still], codec="ffv1", pix_fmt="bgr0")
    with pytest.raises(BadVideo, match=r"frames of 160x1 are too small to analyse"):
        analyze_video(line)
    # A 320x24 banner gives a 160x12 flow frame, on which OpenCV's DIS flow segfaults: the
    # whole scan died with it. In a child process, so the old crash fails only this test.
    banner = write_video(tmp_path / "banner.mp4", [np.ascontiguousarray(f[48:72].repeat(2, 1)) for f in still])
    code = "import sys; from kumovideo.data.pipeline.analyze import analyze_video; analyze_video(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(banner)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_unexpected_failure_is_recorded_on_one_line(tmp_path, monkeypatch):
    def fail(*args):
        raise RuntimeError("OpenCV(5.1.0) dis_flow.cpp: error: (-201) bad size in function 'calc'\n")

    monkeypatch.setattr("kumovideo.data.pipeline.scan.analyze_video", fail)
    record = scan_one(str(tmp_path / "x.mp4"), ScanConfig())
    assert record["status"] == "error" and "\n" not in record["error"]
    assert record["error"].endswith("in function 'calc'")


def test_symlinks_are_scanned_once_and_broken_ones_are_reported(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_video(folder / "clip.mp4", render_clip(ClipSpec("pan_left", frames=30, seed=4), 64, 48))
    os.symlink(folder / "clip.mp4", folder / "same clip.mp4")
    os.symlink(folder / "gone.mp4", folder / "broken.mp4")
    manifest = tmp_path / "m.jsonl"
    assert main(["data", "scan", str(folder), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    records = {Path(r["path"]).name: r for r in read_jsonl(manifest)}
    assert set(records) == {"clip.mp4", "broken.mp4"}  # the link to clip.mp4 is the same file
    assert records["clip.mp4"]["status"] == "ok"
    assert records["broken.mp4"]["error"] == f"broken symbolic link: its target {folder / 'gone.mp4'} does not exist"
    assert "1 ok, 1 failed" in capsys.readouterr().out


def test_an_audio_track_without_packets_is_cut_with_silence(tmp_path):
    frames = render_clip(ClipSpec("pan_left", frames=60, seed=6), 96, 64)
    src = encode(tmp_path / "rec.mkv", frames, empty_audio=True)
    (entry,) = scan_and_keep(src)
    out = tmp_path / "cut"
    out.mkdir()
    # Matroska cannot seek in an empty track (EPERM): the clip failed as "Operation not permitted".
    for cfg in (CutConfig(), CutConfig(fps=12)):
        result = cut_one(entry, str(out), cfg)
        assert result["status"] == "ok", result
        assert result["has_audio"]
        (out / result["file"]).unlink()
    json.dumps(result)  # the manifest entry stays JSON


class KillingCaptioner:
    """Dies as a worker killed by the OOM killer (or a decoder's segfault) would, on the one
    96 px wide video."""

    def caption(self, frames, info):
        if frames[0].shape[1] == 96:
            os.kill(os.getpid(), signal.SIGKILL)
        return "a clip"


def test_a_worker_that_dies_is_reported_and_the_scan_goes_on(tmp_path):
    """multiprocessing.Pool waited forever for the result of a worker that had died."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, width in (("a.mp4", 64), ("boom.mp4", 96), ("c.mp4", 64)):
        write_video(folder / name, render_clip(ClipSpec("pan_left", frames=30, seed=7), width, 48))
    manifest = tmp_path / "m.jsonl"
    cfg = ScanConfig(captioner=f"{Path(__file__).stem}:KillingCaptioner")
    summary = scan_folder(folder, manifest, cfg, workers=2, quiet=True)
    records = {Path(r["path"]).name: r for r in read_jsonl(manifest)}
    assert {n: r["status"] for n, r in records.items()} == {"a.mp4": "ok", "boom.mp4": "error", "c.mp4": "ok"}
    assert records["boom.mp4"]["error"].startswith("the worker process died")
    assert (summary.ok, len(summary.errors)) == (2, 1)
