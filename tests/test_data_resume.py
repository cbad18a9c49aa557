"""Re-running `kumo data cut` and `kumo data encode` into a folder they already wrote: a
resume with the same settings keeps what is done, other settings are refused, a killed run's
temp files are cleaned up, and the failure count covers the whole folder."""

from __future__ import annotations

import json
import shutil

import pytest
from cli_checks import assert_one_line_error
from data_synth import ClipSpec, build_video, tiny_vae

from kumovideo.cli import main
from kumovideo.data.pipeline.manifest import read_jsonl
from kumovideo.utils.atomic import default_file_mode


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A clip list of three clips (scan + filter of one three-shot video) and a tiny VAE."""
    root = tmp_path_factory.mktemp("resume")
    (root / "raw").mkdir()
    shots = [ClipSpec("pan_left", frames=40, seed=1), ClipSpec("zoom_out", frames=40, seed=3)]
    build_video(root / "raw" / "a.mp4", [*shots, ClipSpec("tilt_down", frames=40, seed=4)], ["cut", "cut"])
    (root / "cfg.yaml").write_text("filter:\n  min_seconds: 1.0\n")
    argv = ["data", "scan", str(root / "raw"), "-o", str(root / "manifest.jsonl"), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    argv = ["data", "filter", str(root / "manifest.jsonl"), "-o", str(root / "clips.jsonl")]
    assert main([*argv, "--config", str(root / "cfg.yaml")]) == 0
    assert len(read_jsonl(root / "clips.jsonl")) == 3
    tiny_vae().save_pretrained(root / "vae")
    return root


def _cut(work, out, *flags):
    return main(["data", "cut", str(work / "clips.jsonl"), "-o", str(out), "--workers", "1", "--quiet", *flags])


def _encode(work, cut, out, *flags):
    return main(["data", "encode", str(cut), "--vae", str(work / "vae"), "-o", str(out), "--quiet", *flags])


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cut_resume_with_other_settings_is_refused(work, tmp_path, capsys):
    out = tmp_path / "cut8"
    assert _cut(work, out, "--fps", "8", "--size", "64x48") == 0
    before = _contents(out)
    written = {(e["out_fps"], e["out_width"], e["out_height"]) for e in read_jsonl(out / "clips.jsonl")}
    assert written == {(8.0, 64, 48)}
    # Written files get the modes a plain open() gives, not the temp file's private 0o600.
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {default_file_mode()}
    capsys.readouterr()

    for flags, old, new in [
        (["--fps", "12", "--size", "64x48"], "--fps 8", "--fps 12"),
        (["--fps", "8", "--size", "32x32"], "--size 64x48", "--size 32x32"),
        (["--size", "64x48"], "--fps 8", "the source's frame rate (no --fps)"),
    ]:
        assert _cut(work, out, *flags) == 2
        assert_one_line_error(capsys, f"-o {out} holds clips cut with {old}", f"asks for {new}", "another -o folder")
        assert _contents(out) == before

    # The same settings resume: nothing to do, every file as it was.
    assert _cut(work, out, "--fps", "8", "--size", "64x48") == 0
    assert "cut 0 clips" in capsys.readouterr().out and _contents(out) == before


def test_encode_resume_with_other_settings_is_refused(work, tmp_path, capsys):
    cut, out = tmp_path / "cut", tmp_path / "latents"
    assert _cut(work, cut, "--fps", "8", "--size", "64x48") == 0
    assert _encode(work, cut, out, "--frames", "9", "--size", "64x48") == 0
    before = _contents(out)
    shutil.copytree(work / "vae", tmp_path / "other-vae")
    capsys.readouterr()

    for flags, old, new in [
        (["--frames", "5", "--size", "64x48"], "--frames 9", "--frames 5"),
        (["--frames", "9", "--size", "32x32"], "--size 64x48", "--size 32x32"),
        (["--frames", "9"], "--size 64x48", "each clip's own size (no --size)"),
        (["--frames", "9", "--aspect-buckets", "4096"], "--size 64x48", "--aspect-buckets 4096"),
        (["--frames", "9", "--size", "64x48", "--frame-latents"], "no --frame-latents", "--frame-latents"),
    ]:
        assert _encode(work, cut, out, *flags) == 2
        assert_one_line_error(capsys, f"-o {out} holds latents encoded with {old}", f"asks for {new}")
        assert _contents(out) == before
    argv = ["data", "encode", str(cut), "--vae", str(tmp_path / "other-vae"), "-o", str(out), "--frames", "9"]
    assert main([*argv, "--size", "64x48"]) == 2
    assert_one_line_error(capsys, f"--vae {(work / 'vae').resolve()}", f"--vae {(tmp_path / 'other-vae').resolve()}")

    # The same settings resume: nothing to encode, the folder bit for bit as it was.
    assert _encode(work, cut, out, "--frames", "9", "--size", "64x48") == 0
    assert "encoded 0 clips (3 already done" in capsys.readouterr().out and _contents(out) == before


def test_a_resume_removes_the_temp_files_a_killed_run_left(work, tmp_path, capsys):
    cut, out = tmp_path / "cut", tmp_path / "latents"
    assert _cut(work, cut, "--fps", "8", "--size", "64x48") == 0
    assert _encode(work, cut, out, "--frames", "5", "--size", "64x48") == 0
    clip_id = read_jsonl(cut / "clips.jsonl")[0]["id"]
    # What `kill -9` leaves mid-write (atomic_file's and the cut's temp names), and a user's
    # hidden files that only look alike: those stay.
    left = [f".{clip_id}.txt.tmp-rwk9mc80", f".{clip_id}.mp4.tmp-0a_b9c8d", ".clips.jsonl.tmp-x1y2z3w4"]
    users = [".DS_Store", ".notes.txt.tmp-rwk9mc80", f".{clip_id}.mp4.bak"]
    for name in left + users:
        (cut / name).write_bytes(b"partial")
    for name in [".shard-00000.safetensors.tmp-ab12cd34", ".index.json.tmp-5678efgh", ".index.json.keep"]:
        (out / name).write_bytes(b"partial")

    assert _cut(work, cut, "--fps", "8", "--size", "64x48") == 0
    assert sorted(p.name for p in cut.iterdir() if p.name.startswith(".")) == sorted(users)
    assert _encode(work, cut, out, "--frames", "5", "--size", "64x48") == 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".index.json.keep"]


def test_encode_counts_failures_over_the_whole_folder(work, tmp_path, capsys):
    cut, out = tmp_path / "cut", tmp_path / "latents"
    assert _cut(work, cut, "--fps", "8", "--size", "64x48") == 0
    broken = read_jsonl(cut / "clips.jsonl")[1]
    (cut / broken["file"]).write_bytes(b"not a video any more")
    capsys.readouterr()

    assert _encode(work, cut, out, "--frames", "5") == 0
    err = capsys.readouterr().err
    assert f"failed: {broken['id']}" in err
    assert err.endswith("kumo: 1 of 3 clips failed (listed above); the others were written\n")
    # A re-run retries the broken clip alone, and still counts it against the folder's three.
    assert _encode(work, cut, out, "--frames", "5") == 0
    captured = capsys.readouterr()
    assert "encoded 0 clips (2 already done, 1 failed)" in captured.out
    assert captured.err.endswith("kumo: 1 of 3 clips failed (listed above; 2 done before); the others were written\n")


def test_encode_sizes_patchify_by_default_and_other_sizes_are_warned_about(work, tmp_path, capsys):
    cut = tmp_path / "cut"
    assert _cut(work, cut, "--fps", "8", "--size", "72x40") == 0  # sides not multiples of 16
    capsys.readouterr()
    # No --size: each clip's own size, centre-cropped to multiples of 16 (VAE stride 8 x patch 2).
    assert _encode(work, cut, tmp_path / "own", "--frames", "5") == 0
    assert {tuple(c["size"]) for c in json.loads((tmp_path / "own" / "index.json").read_text())["clips"]} == {(32, 64)}
    assert "warning" not in capsys.readouterr().err
    # A --size the VAE takes but a patch-2 transformer cannot: encoded, with one warning up front.
    assert _encode(work, cut, tmp_path / "odd", "--frames", "5", "--size", "72x40") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "kumo: warning: encode size 72x40 is not a multiple of 16 (VAE stride 8 x patch 2), so `kumo train dit` "
        "cannot train on these latents; use e.g. --size 64x32 or 80x48"
    ]
