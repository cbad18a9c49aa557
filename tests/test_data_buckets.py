"""Any aspect ratio: `kumo data encode --aspect-buckets`, `LatentShardDataset.indices_by_shape`,
and ShapesWorld v1.1 frames from `kumo shapes render --width --height --motion-range`."""

from __future__ import annotations

import json
import re

import av
import cv2
import numpy as np
import pytest
from cli_checks import assert_one_line_error
from data_synth import tiny_vae, write_video

from kumovideo.cli import main
from kumovideo.data.pipeline.config import config_from_dict
from kumovideo.data.pipeline.encode import LatentShardDataset, read_clip
from kumovideo.geometry import aspect_buckets, nearest_bucket
from kumovideo.utils.errors import KumoInputError

# Source frames (W, H): two landscape clips of different aspects and one portrait clip.
SOURCES = {"wide": (96, 64), "wider": (100, 60), "tall": (64, 96)}
AREA = 64 * 64  # buckets of the tiny VAE (stride 8, unit 16): 48x80, 64x64, 80x48


def disc_frames(width: int, height: int, n: int = 5) -> list[np.ndarray]:
    """A white disc (radius 24) on black, centred: round in the source, so round after any
    scaling that keeps the aspect, and an ellipse after one that stretches."""
    frame = np.zeros((height, width, 3), np.uint8)
    cv2.circle(frame, (width // 2, height // 2), 24, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    return [frame.copy() for _ in range(n)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A cut folder with the three clips and their clips.jsonl, and a tiny CogVideoX VAE."""

    root = tmp_path_factory.mktemp("buckets")
    cut = root / "cut"
    cut.mkdir()
    entries = []
    for i, (name, (w, h)) in enumerate(SOURCES.items()):
        write_video(cut / f"{name}.mp4", disc_frames(w, h))
        entry = {"id": name, "file": f"{name}.mp4", "caption": f"a disc, {name}", "status": "ok"}
        entries.append({**entry, "motion_score": 5.0 + i, "out_frames": 5, "out_width": w, "out_height": h})
    (cut / "clips.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    tiny_vae().save_pretrained(root / "vae")
    return root


def disc_extent(video) -> tuple[float, float]:
    """Width and height (pixels, sub-pixel from the anti-aliased edge) of the bright disc in
    the first frame of a (3, F, H, W) clip in [-1, 1]."""
    grey = (video[:, 0].mean(0).numpy() + 1.0) / 2.0  # 0..1
    return float(grey.sum(1).max()), float(grey.sum(0).max())  # widest row, tallest column


def test_bucketed_encode_keeps_each_clips_aspect_and_records_its_bucket(work, capsys):
    out = work / "latents"
    argv = ["data", "encode", str(work / "cut"), "--vae", str(work / "vae"), "-o", str(out)]
    assert main([*argv, "--aspect-buckets", "64x64", "--frames", "5", "--quiet"]) == 0
    assert "encoded 3 clips" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["aspect_buckets"] == {"area": AREA, "unit": 16, "max_ratio": 2.0}
    buckets = aspect_buckets(AREA, 16)
    clips = {c["id"]: c for c in index["clips"]}
    for name, (w, h) in SOURCES.items():
        bw, bh = nearest_bucket(w, h, buckets)
        assert clips[name]["bucket"] == [bw, bh] and clips[name]["size"] == [bh, bw]
        assert clips[name]["shape"] == [4, 2, bh // 8, bw // 8]  # 5 frames -> 2 latent frames
    assert clips["wide"]["bucket"] == clips["wider"]["bucket"] == [80, 48] and clips["tall"]["bucket"] == [48, 80]
    # The cut manifest's motion score (the scan's dynamic score) travels into the index.
    assert [clips[n]["motion_score"] for n in SOURCES] == [5.0, 6.0, 7.0]

    # One group per latent shape, in index order: the two landscape clips share a bucket.
    ds = LatentShardDataset(out)
    assert ds.indices_by_shape() == {(4, 2, 6, 10): [0, 1], (4, 2, 10, 6): [2]}
    assert ds[2]["latent_mean"].shape == (4, 2, 10, 6)

    # Scaled to cover the bucket and centre-cropped, never stretched: the disc stays round
    # (stretching 96x64 to 80x48 would make it 40 x 36 pixels).
    for name, (w, h) in SOURCES.items():
        video, _ = read_clip(work / "cut" / f"{name}.mp4", 5, None, None, buckets=buckets)
        bw, bh = nearest_bucket(w, h, buckets)
        assert video.shape == (3, 5, bh, bw)
        disc_w, disc_h = disc_extent(video)
        scale = max(bw / w, bh / h)
        assert disc_w == pytest.approx(disc_h, abs=1.0), name
        assert disc_w == pytest.approx(48 * scale, abs=2.0), name

    # Resuming with another size rule is refused before the VAE loads; nothing changes.
    before = (out / "index.json").read_text()
    assert main([*argv, "--size", "64x48"]) == 2
    assert_one_line_error(
        capsys, "latents encoded with --aspect-buckets 4096", "asks for --size 64x48", "another -o folder"
    )
    assert (out / "index.json").read_text() == before


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--aspect-buckets", "--size", "64x48"], ["--size and --aspect-buckets exclude each other"]),
        (["--size", "64x48", "--aspect-buckets", "4096"], ["--size and --aspect-buckets exclude each other"]),
        (["--aspect-buckets", "big"], ["--aspect-buckets 'big' is not an area", "256x256"]),
        (["--aspect-buckets", "10x10"], ["--aspect-buckets 10x10", "[256, 16777216]", "got 100"]),
    ],
)
def test_encode_bucket_flags_are_checked_before_any_work(work, capsys, flags, needles):
    out = work / "refused"
    argv = ["data", "encode", str(work / "cut"), "--vae", str(work / "vae"), "-o", str(out)]
    assert main([*argv, *flags]) == 2
    assert_one_line_error(capsys, *needles)
    assert not out.exists()


def test_encode_config_aspect_buckets_is_checked():
    assert config_from_dict({"encode": {"aspect_buckets": 65536}}).encode.aspect_buckets == 65536
    assert config_from_dict(None).encode.aspect_buckets is None
    message = "cfg.yaml: encode.aspect_buckets must be a number in [256, 16777216], got 100"
    with pytest.raises(KumoInputError, match=re.escape(message)):
        config_from_dict({"encode": {"aspect_buckets": 100}}, source="cfg.yaml")
    with pytest.raises(KumoInputError, match="exclude each other"):
        config_from_dict({"encode": {"aspect_buckets": 65536, "width": 256}}, source="cfg.yaml")


def _video_size(path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.width, s.height


def test_shapes_render_any_aspect_and_motion_range(tmp_path, capsys):
    out = tmp_path / "clips"
    assert main(["shapes", "render", "--width", "112", "--height", "64", "--n", "2", "--out", str(out)]) == 0
    assert "112x64" in capsys.readouterr().out
    for i in range(2):
        assert _video_size(out / f"clip_{i:05d}.mp4") == (112, 64)
        assert (out / f"clip_{i:05d}.txt").read_text().strip()
        side = json.loads((out / f"clip_{i:05d}.json").read_text())
        assert side == {"motion_amount": 1.0, "motion_score": 20.0, "width": 112, "height": 64}

    moving = tmp_path / "moving"
    args = ["--height", "96", "--size", "64", "--motion-range", "0.5,1.5", "--n", "3", "--frames", "9"]
    assert main(["shapes", "render", *args, "--out", str(moving)]) == 0
    amounts = []
    for i in range(3):
        assert _video_size(moving / f"clip_{i:05d}.mp4") == (64, 96)  # a side not given is --size
        side = json.loads((moving / f"clip_{i:05d}.json").read_text())
        assert 0.5 <= side["motion_amount"] <= 1.5 and (side["width"], side["height"]) == (64, 96)
        assert side["motion_score"] == pytest.approx(40.0 * side["motion_amount"], abs=1e-3)  # 9 frames at 8 fps
        amounts.append(side["motion_amount"])
    assert len(set(amounts)) == 3


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--width", "160", "--height", "64"], ["frame 160x64", "1:2 .. 2:1"]),
        (["--width", "100"], ["--width", "multiple of 16"]),
        (["--motion-range", "0.2,1.0"], ["--motion-range", "0.2", "[0.5, 1.5]"]),
        (["--motion-range", "fast"], ["--motion-range 'fast'", "LO,HI"]),
    ],
)
def test_shapes_render_v11_flags_are_checked(tmp_path, capsys, args, needles):
    out = tmp_path / "clips"
    assert main(["shapes", "render", "--n", "1", "--out", str(out), *args]) == 2
    assert_one_line_error(capsys, *needles)
    assert not out.exists()
