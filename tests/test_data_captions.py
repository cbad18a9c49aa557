"""Captions through the pipeline: sidecar files that give no caption are reported at scan,
and the `<id>.txt` files that `kumo data cut` writes are what `kumo data encode` trains on."""

from __future__ import annotations

import json

from data_synth import ClipSpec, build_video, tiny_vae

from kumovideo.cli import main
from kumovideo.data.pipeline.encode import LatentShardDataset
from kumovideo.data.pipeline.manifest import read_jsonl


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("kumo: warning: ")]


def test_scan_warns_once_about_each_sidecar_that_gives_no_caption(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in "abcd":
        build_video(raw / f"{name}.mp4", [ClipSpec("pan_left", frames=30, seed=ord(name))], [])
    (raw / "a.json").write_text('{"caption": ')  # cut short
    (raw / "b.txt").write_text("  \n")  # empty
    (raw / "c.json").write_text('{"motion_amount": 1.0}')  # other metadata, not a caption file: no warning
    (raw / "d.txt").write_text("")
    (raw / "d.json").write_text('{"caption": "a caption from the json"}')
    manifest = tmp_path / "manifest.jsonl"
    # Two workers: the warnings come back from the worker processes with the records.
    assert main(["data", "scan", str(raw), "-o", str(manifest), "--workers", "2", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "4 ok, 0 failed" in captured.out
    attributes = "its clips were captioned from the measured attributes (a generic sentence) instead"
    assert sorted(_warnings(captured.err)) == [
        f"kumo: warning: {raw / 'a.json'} is not valid JSON (Expecting value at line 1, column 13); {attributes}",
        f"kumo: warning: {raw / 'b.txt'} is empty; {attributes}",
        f"kumo: warning: {raw / 'd.txt'} is empty; its clips were captioned from d.json instead",
    ]
    sources = {r["path"].rsplit("/", 1)[-1]: {c["caption_source"] for c in r["clips"]} for r in read_jsonl(manifest)}
    assert sources == {"a.mp4": {"attributes"}, "b.mp4": {"attributes"}, "c.mp4": {"attributes"}, "d.mp4": {"sidecar"}}

    # A resumed scan has nothing new to analyse and nothing new to say.
    assert main(["data", "scan", str(raw), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    assert _warnings(capsys.readouterr().err) == []


def test_encode_trains_on_the_caption_files_the_cut_wrote(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    shots = [ClipSpec("pan_left", frames=40, seed=1), ClipSpec("zoom_out", frames=40, seed=2)]
    build_video(raw / "a.mp4", [*shots, ClipSpec("tilt_down", frames=40, seed=3)], ["cut", "cut"])
    (raw / "a.txt").write_text("three shots of a textured wall\n")
    work = tmp_path / "work"
    work.mkdir()
    assert main(["data", "scan", str(raw), "-o", str(work / "manifest.jsonl"), "--workers", "1", "--quiet"]) == 0
    (tmp_path / "cfg.yaml").write_text("filter:\n  min_seconds: 1.0\n")
    argv = ["data", "filter", str(work / "manifest.jsonl"), "-o", str(work / "clips.jsonl")]
    assert main([*argv, "--config", str(tmp_path / "cfg.yaml")]) == 0
    cut = work / "cut"
    assert main(["data", "cut", str(work / "clips.jsonl"), "-o", str(cut), "--fps", "8", "--size", "64x48"]) == 0
    cut_said = capsys.readouterr().out
    ids = [e["id"] for e in read_jsonl(cut / "clips.jsonl")]
    assert len(ids) == 3
    tiny_vae().save_pretrained(tmp_path / "vae")

    # The user edits one caption and empties another.
    (cut / f"{ids[0]}.txt").write_text("a slow pan along a wall of coloured tiles\n")
    (cut / f"{ids[1]}.txt").write_text("")
    latents = work / "latents"
    argv = ["data", "encode", str(cut), "--vae", str(tmp_path / "vae"), "-o", str(latents), "--frames", "5", "--quiet"]
    assert main(argv) == 0
    assert _warnings(capsys.readouterr().err) == [
        f"kumo: warning: {cut / ids[1]}.txt is empty; using the clip's caption in the cut manifest instead"
    ]
    ds = LatentShardDataset(latents)
    assert [ds[i]["caption"] for i in range(3)] == [
        "a slow pan along a wall of coloured tiles",
        "three shots of a textured wall",
        "three shots of a textured wall",
    ]
    assert [c["caption_source"] for c in ds.clips] == ["edited", "sidecar", "sidecar"]

    # Editing after encoding: a re-run takes the new caption without encoding again.
    shard_bytes = {p.name: p.read_bytes() for p in latents.glob("shard-*")}
    (cut / f"{ids[2]}.txt").write_text("a tilt down a tiled wall\n")
    assert main(argv) == 0
    assert "encoded 0 clips (3 already done, 0 failed; captions of 1 done clips updated" in capsys.readouterr().out
    index = json.loads((latents / "index.json").read_text())
    assert index["clips"][2]["caption"] == "a tilt down a tiled wall"
    assert LatentShardDataset(latents)[2]["caption"] == "a tilt down a tiled wall"
    assert {p.name: p.read_bytes() for p in latents.glob("shard-*")} == shard_bytes
    # The cut says which files hold the captions.
    assert f"captions: {cut}/<clip id>.txt, which `kumo data encode` reads" in cut_said
