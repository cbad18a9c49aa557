"""`kumo data` end to end through the command line, and its user errors."""

from __future__ import annotations

import json
import re

import pytest
from cli_checks import assert_one_line_error as _one_line_error
from data_synth import ClipSpec, build_video, tiny_vae, write_bad_inputs

from kumovideo.cli import main
from kumovideo.data.pipeline.config import RANGES, DataConfig, config_from_dict, load_config
from kumovideo.data.pipeline.encode import LatentShardDataset
from kumovideo.data.pipeline.manifest import read_jsonl
from kumovideo.utils.errors import KumoInputError


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    videos = root / "raw"
    videos.mkdir()
    build_video(
        videos / "a.mp4",
        [
            ClipSpec("pan_left", frames=40, seed=1),
            ClipSpec("frozen", frames=40, seed=2),
            ClipSpec("zoom_out", frames=40, seed=3),
        ],
        ["cut", "fade"],
    )
    build_video(videos / "b.mp4", [ClipSpec("tilt_down", frames=40, seed=4)], [])
    (videos / "b.txt").write_text("a slow look down a colourful wall\n")
    write_bad_inputs(videos, videos / "a.mp4")
    return root


def test_scan_filter_cut_encode(raw, capsys):
    from diffusers import AutoencoderKLCogVideoX

    vae_dir = raw / "vae"
    tiny_vae().save_pretrained(vae_dir)
    cfg = raw / "cfg.yaml"
    cfg.write_text("filter:\n  min_seconds: 1.0\n")
    manifest, clips = raw / "manifest.jsonl", raw / "clips.jsonl"

    # Exit status 0 with a summary: the broken files are recorded, the good ones scanned.
    assert main(["data", "scan", str(raw / "raw"), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "2 ok, 4 failed" in captured.out and "real time" in captured.out
    assert captured.err.endswith("kumo: 4 of 6 files failed (listed above); the others were written\n")

    assert (
        main(
            [
                "data",
                "filter",
                str(manifest),
                "-o",
                str(clips),
                "--config",
                str(cfg),
                "--rejected",
                str(raw / "rejected.jsonl"),
            ]
        )
        == 0
    )
    kept = read_jsonl(clips)
    assert sorted(e["camera"]["label"] for e in kept) == ["pan_left", "tilt_down", "zoom_out"]
    assert [e["rejected"] for e in read_jsonl(raw / "rejected.jsonl")] == [["static"]]
    assert "kept 3 of 4 clips" in capsys.readouterr().out

    assert main(["data", "cut", str(clips), "-o", str(raw / "cut"), "--workers", "1", "--quiet"]) == 0
    cut = read_jsonl(raw / "cut" / "clips.jsonl")
    assert len(cut) == 3 and all((raw / "cut" / e["file"]).is_file() for e in cut)
    assert "tilt_down" in {e["camera"]["label"] for e in cut}
    assert {e["caption"] for e in cut if e["camera"]["label"] == "tilt_down"} == {"a slow look down a colourful wall"}
    # Cutting again resumes: every clip is already there.
    assert main(["data", "cut", str(clips), "-o", str(raw / "cut"), "--quiet"]) == 0
    assert "3 already done" in capsys.readouterr().out

    # A folder that is not a VAE, and one with pickled weights only (they can run code),
    # are refused in one line with nothing written.
    (raw / "vae-empty").mkdir()
    capsys.readouterr()
    assert (
        main(
            [
                "data",
                "encode",
                str(raw / "cut"),
                "--vae",
                str(raw / "vae-empty"),
                "-o",
                str(raw / "nolatents"),
                "--frames",
                "9",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a VAE folder (no config.json)" in err
    assert not (raw / "nolatents").exists()
    pickled = raw / "vae-pickled"
    AutoencoderKLCogVideoX.from_pretrained(vae_dir).save_pretrained(pickled, safe_serialization=False)
    capsys.readouterr()
    assert (
        main(
            [
                "data",
                "encode",
                str(raw / "cut"),
                "--vae",
                str(pickled),
                "-o",
                str(raw / "nolatents"),
                "--frames",
                "9",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no .safetensors weights" in err
    assert not (raw / "nolatents").exists()

    assert (
        main(
            [
                "data",
                "encode",
                str(raw / "cut"),
                "--vae",
                str(vae_dir),
                "-o",
                str(raw / "latents"),
                "--frames",
                "9",
                "--shard-size",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    ds = LatentShardDataset(raw / "latents" / "index.json")
    assert len(ds) == 3
    # 160x120 clips, cropped to multiples of 16 (VAE stride 8 x patch 2): 160x112.
    assert ds[0]["latent_mean"].shape == (4, 3, 14, 20)
    index = json.loads((raw / "latents" / "index.json").read_text())
    assert len(index["shards"]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "scan", "{root}/nowhere", "-o", "{root}/m.jsonl"], "input folder"),
        (["data", "scan", "{root}/raw", "-o", "{root}/raw/b.txt/m.jsonl"], "b.txt is an existing file"),
        (
            ["data", "scan", "{root}/raw", "-o", "{root}/m.jsonl", "--config", "{root}/bad.yaml"],
            "unknown key filter.min_qualty",
        ),
        (["data", "filter", "{root}/missing.jsonl", "-o", "{root}/c.jsonl"], "manifest"),
        (["data", "cut", "{root}/raw/b.txt", "-o", "{root}/raw/b.txt/out"], "no folder can be made under it"),
        (["data", "cut", "{root}/raw/b.txt", "-o", "{root}/o", "--size", "big"], "WIDTHxHEIGHT"),
        (["data", "encode", "{root}/raw", "--vae", "{root}/novae", "-o", "{root}/l"], "cut manifest"),
    ],
)
def test_user_errors_exit_2_with_one_line(raw, capsys, argv, message):
    (raw / "bad.yaml").write_text("filter:\n  min_qualty: 0.5\n")
    code = main([a.format(root=raw) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kumo: error: ") and err.count("\n") == 1
    assert message in err


# ------------------------------------------------------------------ bad input, refused up front
SCAN_RECORD = {"path": "/videos/gone.mp4", "key": "gone-0", "status": "error", "error": "empty file"}
CLIP = {
    "id": "c0",
    "video": "/videos/gone.mp4",
    "fps": 24.0,
    "width": 64,
    "height": 48,
    "codec": "h264",
    "first_time": 0.0,
    "keyframe_before": 0,
    "start_frame": 0,
    "end_frame": 10,
    "caption": "a clip",
}


def _jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def work(tmp_path, raw):
    """A scan manifest, a clip list and a cut folder (tiny, hand-written), plus config files."""
    _jsonl(tmp_path / "manifest.jsonl", SCAN_RECORD)
    _jsonl(tmp_path / "clips.jsonl", CLIP)
    (tmp_path / "cut").mkdir()
    _jsonl(tmp_path / "cut" / "clips.jsonl", {"id": "c0", "file": "c0.mp4", "caption": "a clip"})
    (tmp_path / "vae").mkdir()
    (tmp_path / "video.mp4").write_bytes((raw / "raw" / "b.mp4").read_bytes())
    return tmp_path


@pytest.mark.parametrize(
    "argv, names",
    [
        (["data", "filter", "{w}/manifest.jsonl", "-o", "{w}/manifest.jsonl"], ["-o", "same file"]),
        (
            [
                "data",
                "filter",
                "{w}/manifest.jsonl",
                "-o",
                "{w}/k.jsonl",
                "--rejected",
                "{w}/../{name}/manifest.jsonl",
            ],
            ["--rejected", "same file"],
        ),
        (
            ["data", "filter", "{w}/manifest.jsonl", "-o", "{w}/k.jsonl", "--rejected", "{w}/k.jsonl"],
            ["--rejected", "same file as -o"],
        ),
        (["data", "cut", "{w}/cut/clips.jsonl", "-o", "{w}/cut"], ["CLIPS", "same file"]),
    ],
)
def test_an_output_that_is_an_input_is_refused(work, capsys, argv, names):
    before = {p: p.read_bytes() for p in work.rglob("*.jsonl")}
    code = main([a.format(w=work, name=work.name) for a in argv])
    assert code == 2
    _one_line_error(capsys, *names)
    assert {p: p.read_bytes() for p in work.rglob("*.jsonl")} == before
    assert not (work / "k.jsonl").exists()


@pytest.mark.parametrize(
    "content, names",
    [
        (b"my shopping list\n", ["line 1 is not JSON"]),
        (b"data", ["line 1 is not JSON"]),  # no newline: not mistaken for a half-written record
        (b'{"path": "/v.mp4", "key": "v", "status": "error"}\n{"a": 1}\n', ["line 2 has no 'path' key"]),
        (json.dumps(CLIP).encode() + b"\n", ["line 1 has no 'path' key"]),
        (b"\x00\x9e\xff binary", ["not UTF-8 text"]),
    ],
)
def test_scan_appends_only_to_a_scan_manifest(raw, tmp_path, capsys, content, names):
    target = tmp_path / "notes.txt"
    target.write_bytes(content)
    code = main(["data", "scan", str(raw / "raw"), "-o", str(target), "--workers", "1", "--quiet"])
    assert code == 2
    _one_line_error(capsys, str(target), "not a scan manifest", *names)
    assert target.read_bytes() == content


@pytest.mark.parametrize(
    "argv, config, names",
    [
        # config values out of range or inconsistent, refused whatever the command
        (
            ["data", "scan", "{raw}/raw", "-o", "{w}/out/m.jsonl"],
            "scan:\n  flow_width: -5\n",
            ["scan.flow_width must be a number in [16, 16384], got -5"],
        ),
        (
            ["data", "filter", "{w}/manifest.jsonl", "-o", "{w}/out/k.jsonl"],
            "filter:\n  min_quality: 5\n",
            ["filter.min_quality must be a number in [0, 1]"],
        ),
        (
            ["data", "filter", "{w}/manifest.jsonl", "-o", "{w}/out/k.jsonl"],
            "filter:\n  min_seconds: 30\n  max_seconds: 5\n",
            ["filter.min_seconds (30)", "max_seconds (5)"],
        ),
        (
            ["data", "cut", "{w}/clips.jsonl", "-o", "{w}/out/clips"],
            "cut:\n  preset: turbo\n",
            ["cut.preset", "veryfast", "'turbo'"],
        ),
        (
            ["data", "scan", "{raw}/raw", "-o", "{w}/out/m.jsonl"],
            "scan: [1,\n",
            ["not valid YAML", "line 2, column 1"],
        ),
        (
            ["data", "scan", "{raw}/raw", "-o", "{w}/out/m.jsonl"],
            "scan:\n  captioner: nomodule:Nope\n",
            ["scan.captioner 'nomodule:Nope' cannot be loaded", "No module named 'nomodule'"],
        ),
        # flags
        (["data", "scan", "{raw}/raw", "-o", "{w}/out/m.jsonl", "--ray", "bogus"], None, ["--ray 'bogus'"]),
        (["data", "cut", "{w}/clips.jsonl", "-o", "{w}/out/clips", "--fps", "0"], None, ["--fps 0"]),
        (["data", "cut", "{w}/clips.jsonl", "-o", "{w}/out/clips", "--size", "64"], None, ["--size '64'"]),
        (["data", "cut", "{w}/clips.jsonl", "-o", "{w}/out/clips", "--workers", "0"], None, ["--workers 0"]),
        (
            ["data", "encode", "{w}/cut", "--vae", "{w}/vae", "-o", "{w}/out/latents", "--device", "gpu"],
            None,
            ["unknown device 'gpu'"],
        ),
        # inputs that are not what the command reads: named with the line that is wrong
        (
            ["data", "filter", "{w}/video.mp4", "-o", "{w}/out/k.jsonl"],
            None,
            ["video.mp4 is not UTF-8 text", "not a scan manifest"],
        ),
        (
            ["data", "filter", "{w}/clips.jsonl", "-o", "{w}/out/k.jsonl"],
            None,
            ["clips.jsonl line 1 has no 'path' key", "`kumo data scan`"],
        ),
        (["data", "filter", "{w}/bad.jsonl", "-o", "{w}/out/k.jsonl"], None, ["bad.jsonl line 2 is not JSON"]),
        (["data", "filter", "{w}/empty.jsonl", "-o", "{w}/out/k.jsonl"], None, ["holds no records"]),
        (["data", "cut", "{w}/bad.jsonl", "-o", "{w}/out/clips"], None, ["bad.jsonl line 1 has no 'id' key"]),
        (
            ["data", "encode", "{w}/bad.jsonl", "--vae", "{w}/vae", "-o", "{w}/out/latents"],
            None,
            ["bad.jsonl line 1 has no 'id' key", "cut manifest"],
        ),
    ],
)
def test_refused_before_any_work_with_nothing_left_behind(raw, work, capsys, argv, config, names):
    _jsonl(work / "bad.jsonl", SCAN_RECORD)
    with open(work / "bad.jsonl", "a") as fh:
        fh.write("not json\n")
    (work / "empty.jsonl").write_text("")
    if config is not None:
        (work / "cfg.yaml").write_text(config)
        argv = argv + ["--config", "{w}/cfg.yaml"]
    (work / "out").mkdir()  # every output goes in here: a file, or a folder cut/encode create
    code = main([a.format(raw=raw, w=work) for a in argv])
    assert code == 2
    _one_line_error(capsys, *names)
    assert list((work / "out").iterdir()) == []


def test_encode_refuses_cuda_without_a_gpu(work, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code = main(
        ["data", "encode", str(work / "cut"), "--vae", str(work / "vae"), "-o", str(work / "out"), "--device", "cuda"]
    )
    assert code == 2
    _one_line_error(capsys, "'cuda'", "no CUDA GPU", "--device cpu")
    assert not (work / "out").exists()


def test_encode_refuses_a_corrupt_vae_and_a_foreign_index(raw, work, capsys):
    from diffusers import AutoencoderKLCogVideoX

    vae = work / "vae"
    AutoencoderKLCogVideoX(
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2,
    ).save_pretrained(vae)
    weights = vae / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a cut-short download
    code = main(["data", "encode", str(work / "cut"), "--vae", str(vae), "-o", str(work / "out")])
    assert code == 2
    _one_line_error(capsys, f"--vae {vae}: cannot load the VAE", "re-download")
    assert not (work / "out").exists()

    # An -o folder holding someone else's index.json is refused before the VAE loads.
    (work / "out").mkdir()
    (work / "out" / "index.json").write_text("my notes, not JSON")
    code = main(["data", "encode", str(work / "cut"), "--vae", str(vae), "-o", str(work / "out")])
    assert code == 2
    _one_line_error(capsys, "index.json is not a kumovideo latent index")
    assert (work / "out" / "index.json").read_text() == "my notes, not JSON"
    assert [p.name for p in (work / "out").iterdir()] == ["index.json"]


def test_a_stage_with_failed_clips_finishes_and_says_so(work, capsys):
    # The clip's source video is gone: that clip fails, the run finishes and says so.
    code = main(["data", "cut", str(work / "clips.jsonl"), "-o", str(work / "out"), "--workers", "1", "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "failed: c0:" in captured.out
    assert captured.err == "kumo: 1 of 1 clips failed (listed above); the others were written\n"
    assert read_jsonl(work / "out" / "clips.jsonl") == []


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("scan", {"flow_width": -5}, "scan.flow_width must be a number in [16, 16384], got -5"),
        ("scan", {"flow_pairs_per_second": 0}, "scan.flow_pairs_per_second must be a number > 0"),
        ("scan", {"cut_hist_distance": 2}, "scan.cut_hist_distance must be a number in [0, 1]"),
        ("scan", {"captioner": "nocolon"}, "scan.captioner must be 'module:ClassName'"),
        ("filter", {"min_quality": 5}, "filter.min_quality must be a number in [0, 1], got 5"),
        ("filter", {"max_overlay_area": -0.1}, "filter.max_overlay_area must be a number in [0, 1]"),
        ("filter", {"min_motion": 50, "max_motion": 10}, "filter.min_motion (50) is greater than"),
        ("cut", {"crf": 99}, "cut.crf must be a number in [0, 51], got 99"),
        ("cut", {"fps": 0}, "cut.fps must be a number in (0, 1000]"),
        ("cut", {"width": 10**20}, "cut.width must be a number in [2, 16384], got 100000000000000000000"),
        ("cut", {"fps": 1e30}, "cut.fps must be a number in (0, 1000], got 1e+30"),
        ("cut", {"preset": "turbo"}, "cut.preset must be an x264 preset"),
        ("encode", {"shard_size": 0}, "encode.shard_size must be a number in [1, 2147483647], got 0"),
    ],
)
def test_config_values_are_checked_against_their_range(section, values, message):
    with pytest.raises(KumoInputError, match="^" + re.escape(f"cfg.yaml: {message}")):
        config_from_dict({section: values}, source="cfg.yaml")


def test_the_shipped_config_and_the_defaults_are_in_range():
    import dataclasses
    from pathlib import Path

    shipped = load_config(Path(__file__).resolve().parents[1] / "configs" / "data_filter.yaml")
    assert shipped.to_dict() == DataConfig().to_dict()
    for name in RANGES:  # every range names a real key
        section, key = name.split(".")
        assert key in {f.name for f in dataclasses.fields(getattr(DataConfig(), section))}, name
    assert config_from_dict({"filter": {"max_seconds": None, "min_quality": None}}).filter.max_seconds is None


@pytest.mark.parametrize("command", ["cut", "encode"])
def test_an_output_folder_holding_other_files_is_refused(work, capsys, command):
    # Outputs are named after clip ids (c0.mp4, c0.txt) and shard numbers: a folder with a
    # user's files in it could lose some of them, so it is refused before any work.
    out = work / "out"
    out.mkdir()
    ours = "c0.mp4" if command == "cut" else "shard-00000.safetensors"  # from a killed run: fine alone
    (out / ours).write_bytes(b"ours")
    (out / "holiday.mp4").write_bytes(b"someone's video")
    args = (
        ["data", "cut", str(work / "clips.jsonl"), "-o", str(out), "--workers", "1", "--quiet"]
        if command == "cut"
        else ["data", "encode", str(work / "cut"), "--vae", str(work / "vae"), "-o", str(out)]
    )
    assert main(args) == 2
    _one_line_error(capsys, f"-o {out}", "holiday.mp4", "new or empty folder")
    assert sorted(p.name for p in out.iterdir()) == sorted([ours, "holiday.mp4"])
    assert (out / "holiday.mp4").read_bytes() == b"someone's video"


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda r: r["clips"][0].pop("caption"), ["line 1", "clips[0] without a 'caption' key"]),
        (lambda r: r.pop("probe"), ["line 1", "has no 'probe' object"]),
        (lambda r: r.update(clips=["not a clip"]), ["line 1", "clips[0] that is not a JSON object"]),
    ],
)
def test_filter_names_a_hand_edited_scan_record(work, capsys, change, names):
    # A scan record that says "ok" but lacks what filter reads: one line, no KeyError.
    record = {
        "path": "/videos/a.mp4",
        "key": "a-0",
        "status": "ok",
        "probe": {"fps": 24.0, "width": 64, "height": 48},
        "clips": [
            {
                "id": "a-0-0",
                "start_frame": 0,
                "end_frame": 24,
                "start": 0.0,
                "end": 1.0,
                "duration": 1.0,
                "caption": "a clip",
                "caption_source": "sidecar",
            }
        ],
    }
    change(record)
    _jsonl(work / "edited.jsonl", record)
    assert main(["data", "filter", str(work / "edited.jsonl"), "-o", str(work / "kept.jsonl")]) == 2
    _one_line_error(capsys, *names)
    assert not (work / "kept.jsonl").exists()


def test_scan_and_filter_create_their_output_folders(raw, tmp_path, capsys):
    # As cut and encode create theirs: a fresh work folder needs no mkdir first.
    manifest = tmp_path / "work" / "scans" / "manifest.jsonl"
    assert main(["data", "scan", str(raw / "raw"), "-o", str(manifest), "--workers", "1", "--quiet"]) == 0
    assert len(read_jsonl(manifest)) == 6
    kept, rejected = tmp_path / "work" / "kept" / "clips.jsonl", tmp_path / "rejects" / "rejected.jsonl"
    assert main(["data", "filter", str(manifest), "-o", str(kept), "--rejected", str(rejected)]) == 0
    assert kept.is_file() and rejected.is_file()
