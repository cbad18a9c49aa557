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
from safetensors.torch import save

from kumovideo.data.pipeline.encode import INDEX_FORMAT, INDEX_VERSION
from kumovideo.data.pipeline.manifest import atomic_write_bytes, atomic_write_json
from kumovideo.training.runtime import progress
from kumovideo.training.shapes_batches import shapes_batch


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
) -> Path:
    """Encode clips 0..num_clips-1 of the ShapesWorld stream `seed`; resumes a partial cache."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    if index_path.exists():
        import json

        index = json.loads(index_path.read_text())
    else:
        index = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "vae": {
                "path": str(vae_path),
                "scaling_factor": float(vae.config.scaling_factor),
                "latent_channels": int(vae.config.latent_channels),
                "temporal_compression": int(vae.config.temporal_compression_ratio),
                "spatial_compression": 2 ** (len(vae.config.block_out_channels) - 1),
            },
            "storage_dtype": "float16",
            "sampling": "latent = (mean + std * randn) * scaling_factor",
            "source": {"world": "shapes-world-v1", "seed": seed, "size": size, "num_frames": num_frames},
            "clips": [],
            "shards": [],
        }
    done = len(index["clips"])
    if done % batch_size:
        raise ValueError(f"cache in {out_dir} holds {done} clips, not a multiple of batch_size={batch_size}")
    vae.to(device).eval()
    tensors: dict[str, torch.Tensor] = {}
    meta: list[dict] = []
    start = time.perf_counter()

    def flush() -> None:
        if not meta:
            return
        name = f"shard-{len(index['shards']):05d}.safetensors"
        atomic_write_bytes(out_dir / name, save(tensors, metadata={"format": INDEX_FORMAT}))
        for m in meta:
            m["shard"] = name
        index["shards"].append(name)
        index["clips"].extend(meta)
        atomic_write_json(index_path, index)
        tensors.clear()
        meta.clear()

    bar = progress(num_clips, done, True, desc="cache latents")
    for batch_index in range(done // batch_size, (num_clips + batch_size - 1) // batch_size):
        videos, captions = shapes_batch(seed, batch_index, batch_size, 0, 1, size, num_frames)
        posterior = vae.encode(videos.to(device)).latent_dist
        for i, text in enumerate(captions):
            clip_id = f"shapes-{seed}-{batch_index * batch_size + i:07d}"
            tensors[f"{clip_id}/mean"] = posterior.mean[i].to("cpu", torch.float16).contiguous()
            tensors[f"{clip_id}/std"] = posterior.std[i].to("cpu", torch.float16).contiguous()
            meta.append({"id": clip_id, "caption": text, "shape": list(posterior.mean[i].shape), "fps": 8,
                         "num_frames": num_frames, "size": [size, size], "motion_score": None})
        bar.update(len(captions))
        if len(meta) >= shard_size:
            flush()
    flush()
    bar.close()
    atomic_write_json(index_path, index)
    print(f"cached {len(index['clips'])} clips in {out_dir} ({time.perf_counter() - start:.0f} s)")
    return index_path
