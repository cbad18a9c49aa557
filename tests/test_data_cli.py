"""`kumo data` end to end through the command line, and its user errors."""

from __future__ import annotations

import json

import pytest

from data_synth import ClipSpec, build_video, write_bad_inputs
from kumovideo.cli import main
from kumovideo.data.pipeline.encode import LatentShardDataset
from kumovideo.data.pipeline.manifest import read_jsonl


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    videos = root / "raw"
    videos.mkdir()
    build_video(videos / "a.mp4", [ClipSpec("pan_left", frames=40, seed=1),
                                   ClipSpec("frozen", frames=40, seed=2),
                                   ClipSpec("zoom_out", frames=40, seed=3)], ["cut", "fade"])
    build_video(videos / "b.mp4", [ClipSpec("tilt_down", frames=40, seed=4)], [])
    (videos / "b.txt").write_text("a slow look down a colourful wall\n")
    write_bad_inputs(videos, videos / "a.mp4")
    return root


def test_scan_filter_cut_encode(raw, capsys):
    from diffusers import AutoencoderKLCogVideoX

    vae_dir = raw / "vae"
    AutoencoderKLCogVideoX(block_out_channels=(8, 8, 16, 16), latent_channels=4,
                           layers_per_block=1, norm_num_groups=4,
                           down_block_types=("CogVideoXDownBlock3D",) * 4,
                           up_block_types=("CogVideoXUpBlock3D",) * 4).save_pretrained(vae_dir)
    cfg = raw / "cfg.yaml"
    cfg.write_text("filter:\n  min_seconds: 1.0\n")
    manifest, clips = raw / "manifest.jsonl", raw / "clips.jsonl"

    assert main(["data", "scan", str(raw / "raw"), "-o", str(manifest), "--workers", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 ok, 4 failed" in out and "real time" in out

    assert main(["data", "filter", str(manifest), "-o", str(clips), "--config", str(cfg),
                 "--rejected", str(raw / "rejected.jsonl")]) == 0
    kept = read_jsonl(clips)
    assert sorted(e["camera"]["label"] for e in kept) == ["pan_left", "tilt_down", "zoom_out"]
    assert [e["rejected"] for e in read_jsonl(raw / "rejected.jsonl")] == [["static"]]
    assert "kept 3 of 4 clips" in capsys.readouterr().out

    assert main(["data", "cut", str(clips), "-o", str(raw / "cut"), "--workers", "1",
                 "--quiet"]) == 0
    cut = read_jsonl(raw / "cut" / "clips.jsonl")
    assert len(cut) == 3 and all((raw / "cut" / e["file"]).is_file() for e in cut)
    assert "tilt_down" in {e["camera"]["label"] for e in cut}
    assert {e["caption"] for e in cut if e["camera"]["label"] == "tilt_down"} == {
        "a slow look down a colourful wall"}
    # Cutting again resumes: every clip is already there.
    assert main(["data", "cut", str(clips), "-o", str(raw / "cut"), "--quiet"]) == 0
    assert "3 already done" in capsys.readouterr().out

    # A folder that is not a VAE, and one with pickled weights only (they can run code),
    # are refused in one line with nothing written.
    (raw / "vae-empty").mkdir()
    capsys.readouterr()
    assert main(["data", "encode", str(raw / "cut"), "--vae", str(raw / "vae-empty"), "-o",
                 str(raw / "nolatents"), "--frames", "9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a VAE folder (no config.json)" in err
    assert not (raw / "nolatents").exists()
    pickled = raw / "vae-pickled"
    AutoencoderKLCogVideoX.from_pretrained(vae_dir).save_pretrained(pickled, safe_serialization=False)
    capsys.readouterr()
    assert main(["data", "encode", str(raw / "cut"), "--vae", str(pickled), "-o", str(raw / "nolatents"),
                 "--frames", "9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no .safetensors weights" in err
    assert not (raw / "nolatents").exists()

    assert main(["data", "encode", str(raw / "cut"), "--vae", str(vae_dir), "-o",
                 str(raw / "latents"), "--frames", "9", "--shard-size", "2", "--quiet"]) == 0
    ds = LatentShardDataset(raw / "latents" / "index.json")
    assert len(ds) == 3
    assert ds[0]["latent_mean"].shape == (4, 3, 15, 20)
    index = json.loads((raw / "latents" / "index.json").read_text())
    assert len(index["shards"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["data", "scan", "{root}/nowhere", "-o", "{root}/m.jsonl"], "input folder"),
    (["data", "scan", "{root}/raw", "-o", "{root}/no/such/dir/m.jsonl"], "output folder"),
    (["data", "scan", "{root}/raw", "-o", "{root}/m.jsonl", "--config", "{root}/bad.yaml"],
     "unknown key filter.min_qualty"),
    (["data", "filter", "{root}/missing.jsonl", "-o", "{root}/c.jsonl"], "manifest"),
    (["data", "cut", "{root}/raw/b.txt", "-o", "{root}/x/y/out"], "output folder"),
    (["data", "cut", "{root}/raw/b.txt", "-o", "{root}/o", "--size", "big"], "WIDTHxHEIGHT"),
    (["data", "encode", "{root}/raw", "--vae", "{root}/novae", "-o", "{root}/l"], "cut manifest"),
])
def test_user_errors_exit_2_with_one_line(raw, capsys, argv, message):
    (raw / "bad.yaml").write_text("filter:\n  min_qualty: 0.5\n")
    code = main([a.format(root=raw) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kumo: error: ") and err.count("\n") == 1
    assert message in err
