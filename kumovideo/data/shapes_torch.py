"""ShapesWorld clips rendered with torch, many at once, on any device.

The numpy renderer (`shapes_world.render_clip`) draws one clip at a time at about 150
clips/s on one CPU core at 128x128x17 (docs/gpu.md): far below what a GPU trains on.
This module draws a batch of clips in a few tensor operations, pixel for pixel as the
numpy renderer does:

* the specs (rejection-sampled start positions, captions) still come from
  `shapes_world.sample_example` on the CPU, so the stream is the same clips;
* ShapesWorld v1.1 clips too: any W x H frame and a motion amount m per clip (each
  table holds clips of one frame size; m may differ from clip to clip);
* each object's per-frame centre and radius come from `shapes_world.object_track`
  (float64), called as `render_clip` calls it (the clip's (W, H) and m), then cast to
  float32 as `shape_coverage` casts them;
* signed distance, coverage and "over" compositing run in the numpy renderer's dtypes:
  float32, except where numpy promotes a triangle's edges to float64 (its 1/sqrt(5) is a
  NumPy float64 scalar, and NumPy 2 lets that widen a float32 array); `TRIANGLE_DTYPE`
  reads what this NumPy does.

On the CPU the frames equal `render_clip`'s exactly (tests/test_shapes_torch.py); on a
GPU the compiler may fuse a multiply and an add, which can move a pixel by one level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kumovideo.data.shapes_world import (
    ALL_COLOURS,
    BACKGROUNDS,
    SHAPES,
    ClipSpec,
    object_track,
    sample_example,
)

MAX_OBJECTS = 2
SHAPE_IDS = {name: i for i, name in enumerate(SHAPES)}
CIRCLE, SQUARE, TRIANGLE = (SHAPE_IDS[name] for name in ("circle", "square", "triangle"))

_INV_SQRT5 = 1.0 / np.sqrt(5.0)  # as shape_signed_distance computes it: a NumPy float64 scalar
TRIANGLE_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
    (np.ones(1, np.float32) * _INV_SQRT5).dtype
]
_INV_SQRT5 = float(_INV_SQRT5)


@dataclass
class SpecTable:
    """B clips of one frame size (W x H) and frame count as arrays: cheap to pickle from a
    worker process, and all a batch render needs. Absent second objects have present=False.
    `size` is the clips' `ClipSpec.size` (S = min(W, H)); `width` x `height` is their frame."""

    size: int
    num_frames: int
    width: int
    height: int
    background: np.ndarray  # (B, 3) float32 RGB
    colour: np.ndarray  # (B, K, 3) float32 RGB
    shape: np.ndarray  # (B, K) int64, index into SHAPES
    present: np.ndarray  # (B, K) bool
    cx: np.ndarray  # (B, K, F) float32 centre x, pixels
    cy: np.ndarray  # (B, K, F) float32 centre y, pixels
    radius: np.ndarray  # (B, K, F) float32
    motion_amount: np.ndarray  # (B,) float64, each clip's m (`ClipSpec.motion_amount`)

    def __len__(self) -> int:
        return len(self.background)

    def select(self, rows) -> SpecTable:
        """The clips at `rows` (indices or a boolean mask), in that order."""
        per_clip = ("background", "colour", "shape", "present", "cx", "cy", "radius", "motion_amount")
        return dataclasses.replace(self, **{name: getattr(self, name)[rows] for name in per_clip})


def spec_table(specs: Sequence[ClipSpec]) -> SpecTable:
    """The table of `specs` (all of one size, W x H frame and frame count; any motion amounts)."""
    if not specs:
        raise ValueError("spec_table needs at least one clip")
    size, frame, frames = specs[0].size, specs[0].frame, specs[0].num_frames
    if any(s.size != size or s.frame != frame or s.num_frames != frames for s in specs):
        raise ValueError("a batch render needs clips of one size (W x H frame) and one frame count")
    n = len(specs)
    table = SpecTable(
        size=size,
        num_frames=frames,
        width=frame[0],
        height=frame[1],
        background=np.array([BACKGROUNDS[s.background] for s in specs], dtype=np.float32),
        colour=np.zeros((n, MAX_OBJECTS, 3), np.float32),
        shape=np.zeros((n, MAX_OBJECTS), np.int64),
        present=np.zeros((n, MAX_OBJECTS), bool),
        cx=np.zeros((n, MAX_OBJECTS, frames), np.float32),
        cy=np.zeros((n, MAX_OBJECTS, frames), np.float32),
        radius=np.zeros((n, MAX_OBJECTS, frames), np.float32),
        motion_amount=np.array([s.motion_amount for s in specs], dtype=np.float64),
    )
    for i, spec in enumerate(specs):
        for k, obj in enumerate(spec.objects):
            table.colour[i, k] = ALL_COLOURS[obj.colour]  # the held-back cyan too
            table.shape[i, k] = SHAPE_IDS[obj.shape]
            table.present[i, k] = True
            # As render_clip calls it: the clip's (W, H) frame and its motion amount.
            track = object_track(obj, spec.frame, frames, spec.motion_amount)
            table.cx[i, k], table.cy[i, k], table.radius[i, k] = track
    return table


def example_table(
    seed: int,
    indices: Sequence[int],
    size: int,
    num_frames: int,
    width: int | None = None,
    height: int | None = None,
    motion_amounts: tuple[float, float] | None = None,
    two_object_share: float | None = None,
) -> tuple[SpecTable, list[str]]:
    """Examples `indices` of the ShapesWorld stream `seed` (`sample_example`, clips only):
    their table and captions. v1.1: a `width` x `height` frame (None: `size`) and m drawn
    from `motion_amounts` (None: m = 1); the table's `motion_amount` holds each clip's m
    (for `shapes_world.motion_score_of`); `two_object_share` of them with two objects (None:
    the stream's even mix). Runs on the CPU; a training kit maps it over worker processes."""
    specs, captions = [], []
    for index in indices:
        spec, text = sample_example(
            seed,
            int(index),
            size=size,
            num_frames=num_frames,
            width=width,
            height=height,
            motion_amounts=motion_amounts,
            two_object_share=two_object_share,
        )
        specs.append(spec)
        captions.append(text)
    return spec_table(specs), captions


def _signed_distance(shape, x, y, cx, cy, radius):
    """`shape_signed_distance` for every clip's own shape: (B, F, H, W), in the dtype of
    the numpy renderer's triangle path (circles and squares are exact in it)."""
    dx = x - cx
    dy = y - cy
    # A float32 square root correctly rounded, as NumPy's is: torch's own can be one ulp
    # off on the CPU; through float64 it is exact (53 bits >= 2 * 24 + 2).
    circle = torch.sqrt((dx * dx + dy * dy).double()).float() - radius
    square = torch.maximum(dx.abs() - radius, dy.abs() - radius)
    base = dy - radius
    left = (-2.0 * (dx + radius) - (dy - radius)).to(TRIANGLE_DTYPE) * _INV_SQRT5
    right = (2.0 * (dx - radius) - (dy - radius)).to(TRIANGLE_DTYPE) * _INV_SQRT5
    triangle = torch.maximum(base.to(TRIANGLE_DTYPE), torch.maximum(left, right))
    shape = shape.view(-1, 1, 1, 1)
    flat = torch.where(shape == CIRCLE, circle, square)
    return flat, triangle


def render_table(table: SpecTable, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB frames (B, F, H, W, 3) of every clip in `table`, as `render_clip` draws them."""
    device = torch.device(device)
    width, height = table.width, table.height

    def on_device(array, dtype=None):
        return torch.as_tensor(array, device=device, dtype=dtype)

    x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5).view(1, 1, 1, width)
    y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5).view(1, 1, height, 1)
    frames = on_device(table.background).view(-1, 1, 1, 1, 3).expand(-1, table.num_frames, height, width, 3)
    frames = frames.contiguous()
    for k in range(table.shape.shape[1]):
        if not table.present[:, k].any():
            continue
        track = [on_device(getattr(table, name)[:, k]).view(-1, table.num_frames, 1, 1) for name in ("cx", "cy")]
        radius = on_device(table.radius[:, k]).view(-1, table.num_frames, 1, 1)
        shape = on_device(table.shape[:, k])
        flat, triangle = _signed_distance(shape, x, y, track[0], track[1], radius)
        present = on_device(table.present[:, k]).view(-1, 1, 1, 1, 1)
        colour = on_device(table.colour[:, k]).view(-1, 1, 1, 1, 3)
        # "Over" compositing, each path in the numpy renderer's dtype.
        alpha = torch.clamp(0.5 - flat, 0.0, 1.0).unsqueeze(-1)
        over_flat = frames + alpha * (colour - frames)
        alpha = torch.clamp(0.5 - triangle, 0.0, 1.0).unsqueeze(-1)
        over_triangle = (frames.to(TRIANGLE_DTYPE) + alpha * (colour - frames).to(TRIANGLE_DTYPE)).float()
        is_triangle = (shape == TRIANGLE).view(-1, 1, 1, 1, 1)
        frames = torch.where(present, torch.where(is_triangle, over_triangle, over_flat), frames)
    return torch.round(frames).to(torch.uint8)


def to_vae_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (B, F, H, W, 3) -> float video (B, 3, F, H, W) in [-1, 1]: what
    `shapes_batches.shapes_batch` hands the VAE (`frames_to_tensor`, stacked)."""
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def render_clips(specs: Sequence[ClipSpec], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 frames (B, F, H, W, 3) of `specs` (one W x H frame and frame count)."""
    return render_table(spec_table(specs), device)
