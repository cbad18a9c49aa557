"""Frame interpolation with a conditioned pipeline (Kandinsky Video 1.1's keyframes, then
interpolation): N frames -> factor * (N - 1) + 1, the input frames kept as keyframes.

The model's clip (17 frames for the built-in model) is one window: keyframes every
`factor` frames fill 4 intervals at x4, 8 at x2 (docs/conditioning.md says which latent
slots they take). Longer inputs are cut into windows that share their end keyframes; when
N - 1 is not a multiple of a window's intervals the last window is shifted back to end on
the last keyframe (it overlaps the one before instead of being refused). A clip shorter
than one window conditions the keyframes it has and is cropped. All windows run in one
pipeline call, as one batch.
"""

from __future__ import annotations

import numpy as np
import torch

from kumovideo.pipelines import checks
from kumovideo.pipelines.conditioning import fit_image
from kumovideo.utils.errors import KumoInputError

FACTORS = (2, 4)


def check_factor(factor) -> int:
    if isinstance(factor, bool) or factor not in FACTORS:
        raise KumoInputError(f"interpolation factor {factor!r}: use 2 or 4 (frames between keyframes: 1 or 3)")
    return int(factor)


def check_keyframes(frames) -> np.ndarray:
    """uint8 RGB frames (N, H, W, 3), N >= 2."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        what = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise KumoInputError(f"frames must be uint8 RGB video (N, H, W, 3), got {what}")
    if len(frames) < 2:
        raise KumoInputError(f"interpolation needs at least 2 frames, got {len(frames)}")
    return frames


def window_span(clip_frames: int, factor: int) -> int:
    """Keyframe intervals one window covers: (17 - 1) / 4 = 4 at x4, 8 at x2."""
    if (clip_frames - 1) % factor:
        raise KumoInputError(f"the model's {clip_frames}-frame clip does not split into x{factor} intervals")
    return (clip_frames - 1) // factor


def window_starts(num_keyframes: int, span: int) -> list[int]:
    """The first keyframe of each window: every `span` keyframes, the last window shifted
    back to end on the last keyframe; one (partial) window for a shorter input."""
    intervals = num_keyframes - 1
    if intervals <= span:
        return [0]
    starts = list(range(0, intervals - span + 1, span))
    if starts[-1] + span < intervals:
        starts.append(intervals - span)
    return starts


def interpolated_length(num_keyframes: int, factor: int) -> int:
    return factor * (num_keyframes - 1) + 1


def clip_size(pipe, frames: np.ndarray) -> tuple[int, int]:
    """The frames' own size when the model can make it, else the model's."""
    geometry = pipe.geometry
    height, width = frames.shape[1:3]
    if geometry.is_valid_side(height) and geometry.is_valid_side(width):
        return height, width
    clip = pipe.default_clip()
    return clip["height"], clip["width"]


@torch.no_grad()
def interpolate_frames(
    pipe,
    frames: np.ndarray,
    factor: int,
    prompt: str = "",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    paste_keyframes: bool = True,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> (factor * (N - 1) + 1, H', W', 3) with frame factor * i
    the input's frame i exactly. H' x W' is the input's size when the model can make it,
    else the model's clip size (the frames resized and centre-cropped, with a note). Without
    a prompt there is no text guidance (guidance_scale 1: one branch, half the work).
    `paste_keyframes=False` keeps the model's own keyframes (to measure them)."""
    factor = check_factor(factor)
    frames = check_keyframes(frames)
    checks.check_frame_conditioning(pipe.transformer.config)
    clip_frames = pipe.default_clip()["num_frames"]
    span = window_span(clip_frames, factor)
    height, width = clip_size(pipe, frames)
    if frames.shape[1:3] != (height, width):
        frames = np.stack([fit_image(f, height, width, what=f"frame {i}") for i, f in enumerate(frames)])
    if guidance_scale is None and not prompt.strip():
        guidance_scale = 1.0

    starts = window_starts(len(frames), span)
    conditions = [{factor * j: frames[s + j] for j in range(min(span, len(frames) - 1 - s) + 1)} for s in starts]
    video = pipe(
        [prompt] * len(starts),
        conditioning_frames=conditions,
        num_frames=clip_frames,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        image_guidance_scale=image_guidance_scale,
        generator=generator,
        output_type="np",
    ).frames  # (windows, clip_frames, H, W, 3) in [0, 1]
    windows = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    return assemble(windows, starts, frames, factor, paste_keyframes)


def assemble(
    windows: np.ndarray, starts: list[int], keyframes: np.ndarray, factor: int, paste_keyframes: bool = True
) -> np.ndarray:
    """The output clip from the windows (W, clip_frames, H, W, 3), each placed at its first
    keyframe (an earlier window keeps the frames two share), cropped to the input's length,
    with the keyframes pasted back exactly."""
    total = interpolated_length(len(keyframes), factor)
    out = np.zeros((total, *windows.shape[2:]), dtype=np.uint8)
    filled = np.zeros(total, dtype=bool)
    for window, start in zip(windows, starts):
        first = factor * start
        count = min(len(window), total - first)
        new = ~filled[first : first + count]
        out[first : first + count][new] = window[:count][new]
        filled[first : first + count] = True
    if paste_keyframes:
        out[::factor] = keyframes
    return out
