"""What a VAE does with ShapesWorld's held-back colour (docs/training.md, "Teaching the
built-in model cyan"): the mean colour of the cyan pixels after an encode/decode round trip,
and how far apart the encoder keeps cyan from blue and purple, on one-object cyan clips.

    python scripts/held_back_colour_check.py kumovideo/builtin/kumo-shapes/vae runs/builtin-vae-decoder-cyan/vae
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kumovideo.cli.eval_frames import vae_clip_round_trip
from kumovideo.data.shapes_world import (
    ALL_COLOURS,
    COLOURS,
    HELD_BACK,
    frames_to_tensor,
    render_clip,
    sample_clip_spec,
)
from kumovideo.pipelines.loading import load_vae


def encode(vae, clip: np.ndarray) -> torch.Tensor:
    """A uint8 clip (F, H, W, 3) -> its latent (posterior mode)."""
    return vae.encode(frames_to_tensor(clip).permute(1, 0, 2, 3)[None]).latent_dist.mode()


@torch.no_grad()
def check(folder: str, clips: int, seed: int) -> None:
    vae = load_vae(folder).float().eval()
    rng = np.random.default_rng(seed)
    target = np.array(ALL_COLOURS[HELD_BACK])
    colours, gaps = [], {"blue": [], "purple": []}
    for _ in range(clips):
        spec = sample_clip_spec(rng, size=128, num_frames=17, num_objects=1, include=HELD_BACK)
        clip = render_clip(spec)
        latent = encode(vae, clip)
        out = vae_clip_round_trip(vae, clip)
        cyan = np.abs(clip.reshape(-1, 3).astype(int) - target).sum(1) < 10
        colours.append(out.reshape(-1, 3)[cyan].mean(0))
        for other in gaps:  # the same clip with the object in another colour
            recoloured = clip.copy()
            recoloured.reshape(-1, 3)[cyan] = COLOURS[other]
            gaps[other].append(float((encode(vae, recoloured) - latent).norm()))
    mean = tuple(int(v) for v in np.mean(colours, 0).round())
    print(
        f"{folder}: cyan {tuple(int(v) for v in target)} comes back {mean} on {clips} clips; "
        + ", ".join(f"latent distance to {k} {np.mean(v):.2f}" for k, v in gaps.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vae", nargs="+", help="VAE folders")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    for folder in args.vae:
        check(folder, args.clips, args.seed)


if __name__ == "__main__":
    main()
