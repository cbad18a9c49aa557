"""`kumo train cache-latents`: encode ShapesWorld clips with the trained VAE, once.

The DiT then trains from the cache instead of running the VAE encoder every step. The
output is the same sharded format `kumo data encode` writes for real footage
(`kumovideo.data.pipeline.encode`: posterior mean and std per clip, float16, an
`index.json`), so `LatentShardDataset` reads both.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kumovideo.data.pipeline.encode import LatentShardWriter
from kumovideo.data.shapes_world import DEFAULT_FPS, motion_score_of
from kumovideo.pipelines.conditioning import even_frame_latents
from kumovideo.training.runtime import progress
from kumovideo.training.shapes_batches import shapes_batch_v11
from kumovideo.utils.errors import KumoInputError


@torch.no_grad()
def cache_shapes_latents(
    vae,
    vae_path: str,
    out_dir: str | Path,
    num_clips: int,
    size: int,
    num_frames: int,
    seed: int,
    batch_size: int = 16,
    shard_size: int = 512,
    device: str | torch.device = "cpu",
    frame_latents: bool = False,
    buckets: list[tuple[int, int]] | None = None,
    motion_amounts: tuple[float, float] | None = None,
    held_back_share: float = 0.0,
) -> Path:
    """Encode clips 0..num_clips-1 of the ShapesWorld stream `seed`; resumes a partial cache.
    `frame_latents` also keeps each even frame's image latent (for conditioning frames).

    ShapesWorld v1.1: `buckets`, (W, H) frames taken in turn batch by batch (every batch one
    shape, so the training loop can draw batches per bucket); `motion_amounts`, m drawn per
    clip from that range, recorded as `motion_amount` and as the `motion_score` motion-
    conditioned training reads (`shapes_world.motion_score_of`); `held_back_share`, the share
    of clips drawn with the held-back colour cyan (`shapes_batches.has_held_back`): data for
    teaching a base model the new colour (LoRA), never for training a base model."""
    source = {"world": "shapes-world-v1", "seed": seed, "size": size, "num_frames": num_frames}
    if frame_latents:
        source["frame_latents"] = True
    if buckets:
        source["buckets"] = [list(b) for b in buckets]
    if motion_amounts:
        source["motion_amounts"] = list(motion_amounts)
    if held_back_share:
        source["held_back_share"] = held_back_share
    writer = LatentShardWriter(Path(out_dir), vae, vae_path, shard_size, source=source)
    done = len(writer.index["clips"])
    # Resuming a partial cache: the same clips, in batches of the same size, or the cache would mix two streams.
    if writer.index.get("source", source) != source:
        raise KumoInputError(
            f"{out_dir} already caches other clips ({writer.index['source']}); "
            "choose another --out, or the --seed, --size, --frames, --frame-latents, --buckets, --motion-range "
            "and --held-back-share it was written with"
        )
    cached_vae = writer.index["vae"]["path"]
    if done and Path(cached_vae).resolve() != Path(vae_path).resolve():
        raise KumoInputError(
            f"{out_dir} already caches clips encoded by the VAE {cached_vae}, not {vae_path}; "
            "choose another --out for this VAE"
        )
    if done % batch_size:
        raise KumoInputError(
            f"cache in {out_dir} holds {done} clips, not a multiple of --batch-size {batch_size}; "
            "resume it with the --batch-size it was written with"
        )
    vae.to(device).eval()
    start = time.perf_counter()
    bar = progress(num_clips, done, True, desc="cache latents")
    for batch_index in range(done // batch_size, (num_clips + batch_size - 1) // batch_size):
        frame = buckets[batch_index % len(buckets)] if buckets else (size, size)
        videos, captions, amounts = shapes_batch_v11(
            seed, batch_index, batch_size, 0, 1, size, num_frames, frame, motion_amounts, held_back_share
        )
        posterior = vae.encode(videos.to(device)).latent_dist
        frames = even_frame_latents(vae, videos.to(device)) if frame_latents else [None] * len(captions)
        for i, text in enumerate(captions):
            meta = {"caption": text, "fps": DEFAULT_FPS, "num_frames": num_frames, "size": [frame[1], frame[0]]}
            if motion_amounts:
                meta["motion_amount"] = round(amounts[i], 4)
                meta["motion_score"] = round(motion_score_of(amounts[i], num_frames, DEFAULT_FPS), 4)
            else:
                meta["motion_score"] = None
            writer.add(
                f"shapes-{seed}-{batch_index * batch_size + i:07d}",
                posterior.mean[i],
                posterior.std[i],
                meta,
                frames=frames[i],
            )
        bar.update(len(captions))
    writer.flush()
    bar.close()
    print(f"cached {len(writer.index['clips'])} clips in {out_dir} ({time.perf_counter() - start:.0f} s)")
    return Path(out_dir) / "index.json"
