"""`kumo data encode`: VAE latents in sharded safetensors, and the dataset that reads them."""

from __future__ import annotations

import json

import pytest
import torch
from data_synth import ClipSpec, render_clip, tiny_vae, write_video
from safetensors import safe_open

from kumovideo.data.pipeline.config import EncodeConfig
from kumovideo.data.pipeline.encode import LatentShardDataset, encode_clips, frames_for_vae, read_clip
from kumovideo.data.pipeline.manifest import atomic_write_jsonl


@pytest.fixture(scope="module")
def cut_dir(tmp_path_factory):
    """A folder as `kumo data cut` leaves it: three clips, their captions, clips.jsonl."""
    folder = tmp_path_factory.mktemp("cut")
    entries = []
    for i, (cam, n) in enumerate([("pan_left", 12), ("zoom_in", 9), ("tilt_up", 6)]):
        name = f"clip-{i}.mp4"
        write_video(folder / name, render_clip(ClipSpec(cam, frames=n, seed=i), 64, 48))
        (folder / f"clip-{i}.txt").write_text(f"caption {i}\n")
        entries.append(
            {
                "id": f"clip-{i}",
                "file": name,
                "caption": f"caption {i}",
                "caption_source": "sidecar",
                "motion_score": 10.0 + i,
                "status": "ok",
                "camera": {"label": cam},
                "quality": {"score": 0.9},
                "out_frames": n,
                "video": f"/src/{i}.mp4",
            }
        )
    atomic_write_jsonl(folder / "clips.jsonl", entries)
    return folder, entries


def test_frame_counts_are_4k_plus_1():
    assert [frames_for_vae(n, 49) for n in (1, 4, 5, 8, 9, 12, 13, 100)] == [1, 1, 5, 5, 9, 9, 13, 49]
    assert frames_for_vae(0, 49) == 0


def test_encode_writes_shards_an_index_and_matches_the_vae(cut_dir, tmp_path):
    folder, entries = cut_dir
    vae = tiny_vae()
    out = tmp_path / "latents"
    cfg = EncodeConfig(frames=9, shard_size=2)
    summary = encode_clips(entries, folder, vae, "tiny", out, cfg, quiet=True)
    assert summary["encoded"] == 3 and summary["shards"] == 2 and not summary["errors"]
    index = json.loads((out / "index.json").read_text())
    assert index["shards"] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert [c["id"] for c in index["clips"]] == ["clip-0", "clip-1", "clip-2"]
    assert [c["shard"] for c in index["clips"]] == ["shard-00000.safetensors"] * 2 + ["shard-00001.safetensors"]
    # 9 frames -> 3 latent frames, 5 frames (6 available) -> 2; 48x64 -> 6x8.
    assert [c["shape"] for c in index["clips"]] == [[4, 3, 6, 8], [4, 3, 6, 8], [4, 2, 6, 8]]
    assert [c["num_frames"] for c in index["clips"]] == [9, 9, 5]
    assert index["vae"]["scaling_factor"] == pytest.approx(vae.config.scaling_factor)
    with safe_open(str(out / "shard-00000.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"clip-0/mean", "clip-0/std", "clip-1/mean", "clip-1/std"}
        stored_mean = f.get_tensor("clip-0/mean")
        assert stored_mean.dtype == torch.float16
    # The stored posterior is the VAE's own.
    x, _ = read_clip(folder / "clip-0.mp4", 9, None, None)
    with torch.no_grad():
        dist = vae.encode(x[None]).latent_dist
    torch.testing.assert_close(stored_mean.float(), dist.mean[0], atol=2e-3, rtol=2e-3)

    ds = LatentShardDataset(out / "index.json")
    assert len(ds) == 3
    item = ds[2]
    assert set(item) == {"latent_mean", "latent_std", "caption", "motion_score"}
    assert item["latent_mean"].shape == (4, 2, 6, 8) and item["latent_mean"].dtype == torch.float32
    assert (item["latent_std"] > 0).all()
    assert item["caption"] == "caption 2" and item["motion_score"] == 12.0
    sample = ds.sample_latent(item, torch.Generator().manual_seed(0))
    assert sample.shape == (4, 2, 6, 8)
    # A DataLoader batches items and can run workers (the dataset pickles without handles).
    loader = torch.utils.data.DataLoader(LatentShardDataset(out), batch_size=2)
    batch = next(iter(loader))
    assert batch["latent_mean"].shape == (2, 4, 3, 6, 8) and batch["caption"] == ["caption 0", "caption 1"]

    # Re-running resumes: nothing left to encode, the index is unchanged.
    again = encode_clips(entries, folder, vae, "tiny", out, cfg, quiet=True)
    assert again["encoded"] == 0 and again["skipped"] == 3
    assert json.loads((out / "index.json").read_text()) == index
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_encode_reports_a_broken_clip_and_keeps_going(cut_dir, tmp_path):
    folder, entries = cut_dir
    broken = dict(entries[0], id="broken", file="missing.mp4")
    summary = encode_clips(
        [broken, entries[1]], folder, tiny_vae(), "tiny", tmp_path / "l", EncodeConfig(frames=5), quiet=True
    )
    assert summary["encoded"] == 1 and summary["errors"][0][0] == "broken"
    assert len(LatentShardDataset(tmp_path / "l" / "index.json")) == 1
