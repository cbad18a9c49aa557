"""ShapesWorld training batches by step number.

Batch `step` of rank `rank` is made of the examples `sample_example(seed, index)` with
indices fixed by (step, rank), so any step's batch can be rebuilt without the ones before
it: that is what makes resume exact, and what keeps DDP ranks on disjoint data.
"""

from __future__ import annotations

import numpy as np
import torch

from kumovideo.data.shapes_world import HELD_BACK, frames_to_tensor, render_clip, sample_example

# Tags the per-clip held-back draw's generator, [seed, index, tag]: apart from the clip's own
# [seed, index] (and from `is_image_step`'s [seed, step, 7]).
_HELD_BACK_TAG = 31


def shapes_batch(
    seed: int, step: int, batch_size: int, rank: int, world_size: int, size: int, num_frames: int
) -> tuple[torch.Tensor, list[str]]:
    """Videos (B, 3, F, S, S) in [-1, 1] (the VAE's layout) and their captions."""
    videos, captions, _ = shapes_batch_v11(seed, step, batch_size, rank, world_size, size, num_frames)
    return videos, captions


def shapes_batch_v11(
    seed: int,
    step: int,
    batch_size: int,
    rank: int,
    world_size: int,
    size: int,
    num_frames: int,
    frame: tuple[int, int] | None = None,
    motion_amounts: tuple[float, float] | None = None,
    held_back_share: float = 0.0,
    two_object_share: float | None = None,
) -> tuple[torch.Tensor, list[str], list[float]]:
    """`shapes_batch` with ShapesWorld v1.1's settings: a (W, H) frame (None: S x S), m
    drawn from `motion_amounts` (None: 1) and about `held_back_share` of the clips with the
    held-back colour (`has_held_back`; 0: none, the base stream), `two_object_share` of them
    with two objects (None: the stream's own even mix). Videos (B, 3, F, H, W), captions,
    each clip's m."""
    width, height = frame or (None, None)
    first = (step * world_size + rank) * batch_size
    videos, captions, amounts = [], [], []
    for index in range(first, first + batch_size):
        spec, text = sample_example(
            seed,
            index,
            size=size,
            num_frames=num_frames,
            width=width,
            height=height,
            motion_amounts=motion_amounts,
            include=HELD_BACK if has_held_back(seed, index, held_back_share) else None,
            two_object_share=two_object_share,
        )
        videos.append(frames_to_tensor(render_clip(spec)))  # (F, 3, H, W)
        captions.append(text)
        amounts.append(spec.motion_amount)
    return torch.stack(videos).permute(0, 2, 1, 3, 4).contiguous(), captions, amounts


def has_held_back(seed: int, index: int, share: float) -> bool:
    """Whether example `index` of the stream `seed` shows the held-back colour, for a cache
    where `share` of the clips do. Decided by a generator of its own per (seed, index), so a
    resumed or sharded run decides each clip as a fresh one does; share 0 draws nothing."""
    return share > 0 and np.random.default_rng([seed, index, _HELD_BACK_TAG]).random() < share


def random_crop(
    videos: torch.Tensor, crop: int | None, crop_frames: int | None, generator: torch.Generator
) -> torch.Tensor:
    """One random (time, y, x) window for the whole batch: (B, 3, F, S, S) -> (B, 3, f, c, c)."""
    _, _, frames, height, width = videos.shape
    f = crop_frames or frames
    c = crop or height
    t0 = int(torch.randint(0, frames - f + 1, (1,), generator=generator))
    y0 = int(torch.randint(0, height - c + 1, (1,), generator=generator))
    x0 = int(torch.randint(0, width - c + 1, (1,), generator=generator))
    return videos[:, :, t0 : t0 + f, y0 : y0 + c, x0 : x0 + c]


def is_image_step(seed: int, step: int, image_prob: float) -> bool:
    """Whether global step `step` trains on 1-frame images (same answer on every rank)."""
    return image_prob > 0 and np.random.default_rng([seed, step, 7]).random() < image_prob
