"""Where along the long side of a non-square frame does a model's denoising error sit? The
v-prediction loss of cached clips of one W x H bucket at a few fixed noise levels, averaged
per native patch along the long side, against the mirror-image patches at its start.

    python scripts/position_loss.py --latents runs/aspect-probe-latents --width 224 --height 128
    python scripts/position_loss.py --model runs/my-lumina/pipeline --latents L --width 128 --height 224

A square model's grid of positions (8 native patches a side for the 128x128 base) ends
part-way along a wide frame's long side; ShapesWorld places objects symmetrically, so a
model that knows every position has the same loss over the last `grid - (long - grid)`
patches as over the first ones ("ratio" about 1). Held-out clips: write the cache with a
seed no training run used (`kumo train cache-latents ... --seed 7901 --buckets
224x128,128x224,128x128`). Fixed noise and timesteps per clip, so two models compare clip by
clip; about two minutes for 64 clips and three noise levels on one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def long_side_profile(error: torch.Tensor, width: int, height: int, patch: int) -> torch.Tensor:
    """(N, h, w) per-latent-pixel loss -> (long_side / patch,): the mean along the long side,
    per native patch (the latent pixels of one patch column, or row for tall frames, pooled)."""
    along = error.mean(dim=1) if width >= height else error.mean(dim=2)  # (N, long latent pixels)
    return along.reshape(along.shape[0], -1, patch).mean(-1).mean(0)


def mirrored_ratio(profile: torch.Tensor, grid: int) -> tuple[float, float, float] | None:
    """(first, last, last / first): the mean loss of the patches past a `grid`-patch square's
    positions and of as many patches at the start; None when the side is within the grid."""
    n = profile.numel()
    if n <= grid:
        return None
    beyond = n - grid
    first, last = profile[:beyond].mean().item(), profile[grid:].mean().item()
    return first, last, last / first


def main() -> None:
    from kumovideo.builtin import LUMINA_DIR
    from kumovideo.data.pipeline.encode import LatentShardDataset
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.training.objectives import diffuse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(LUMINA_DIR), help="pipeline folder (default: kumo-shapes-lumina)")
    parser.add_argument("--latents", required=True, help="a latent cache folder holding the W x H bucket")
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--grid", type=int, default=8, help="native patches a side the base was trained on")
    parser.add_argument("--n", type=int, default=64, help="clips of the bucket (default 64)")
    parser.add_argument("--timesteps", default="100,300,600", help="noise levels, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON of the profiles (default: not written)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    pipe = KumoPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    transformer = pipe.transformer.eval()
    patch = transformer.config.patch_size
    cache = LatentShardDataset(args.latents)  # a folder or its index.json
    # the cache records each clip's [H, W]
    clips = [i for i, clip in enumerate(cache.clips) if clip["size"] == [args.height, args.width]][: args.n]
    if not clips:
        raise SystemExit(f"position_loss: {args.latents} holds no {args.width}x{args.height} clip")
    motion = bool(getattr(transformer.config, "motion_conditioning", False))
    alphas = pipe.scheduler.alphas_cumprod.float()
    report = {
        "model": args.model,
        "latents": args.latents,
        "width": args.width,
        "height": args.height,
        "n": len(clips),
    }
    for t in (int(v) for v in args.timesteps.split(",")):
        generator = torch.Generator().manual_seed(0)  # the same latents and noise for every model
        errors = []
        for j in range(0, len(clips), 8):
            items = [cache[i] for i in clips[j : j + 8]]
            x0 = torch.stack([cache.sample_latent(item, generator) for item in items]).permute(0, 2, 1, 3, 4)
            noise = torch.randn(x0.shape, generator=generator)
            timesteps = torch.full((len(items),), t)
            x_t, v = diffuse(x0, noise, alphas[timesteps])
            extras = {"motion_score": torch.tensor([item["motion_score"] for item in items])} if motion else {}
            with torch.no_grad():
                text = pipe.encode_prompt([item["caption"] for item in items])
                v_pred = transformer(x_t, text, timesteps, return_dict=False, **extras)[0]
            errors.append((v_pred - v).pow(2).mean(dim=(1, 2)))  # (B, h, w)
        error = torch.cat(errors)
        profile = long_side_profile(error, args.width, args.height, patch)
        row = {"t": t, "loss": error.mean().item(), "profile": [round(v, 5) for v in profile.tolist()]}
        line = f"t={t}: loss {row['loss']:.4f}"
        if (mirrored := mirrored_ratio(profile, args.grid)) is not None:
            row.update(first=mirrored[0], last=mirrored[1], ratio=mirrored[2])
            line += f", first {mirrored[0]:.4f}, past the grid {mirrored[1]:.4f}, ratio {mirrored[2]:.2f}"
        print(line + "  [" + " ".join(f"{v:.3f}" for v in profile.tolist()) + "]", flush=True)
        report.setdefault("timesteps", []).append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
