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

import logging
from typing import NamedTuple

import numpy as np
import torch

from kumovideo.pipelines import checks
from kumovideo.pipelines.conditioning import fit_image
from kumovideo.utils.errors import KumoInputError

logger = logging.getLogger(__name__)

FACTORS = (2, 4)


def check_factor(factor) -> int:
    if isinstance(factor, bool) or factor not in FACTORS:
        raise KumoInputError(f"interpolation factor {factor!r}: use 2 or 4 (frames between keyframes: 1 or 3)")
    return int(factor)


def check_prompt(prompt) -> str:
    """One caption for every window, "" (or None) for none; anything else is one line (None
    fell over in `prompt.strip()` with an AttributeError)."""
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise KumoInputError(f"prompt must be a string (the clip's caption) or None, not {type(prompt).__name__}")
    checks.check_prompts(prompt, None)
    return prompt


def check_keyframes(frames, least: int = 2, task: str = "interpolation") -> np.ndarray:
    """uint8 RGB frames (N, H, W, 3), N >= `least` (what `task` needs)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        what = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise KumoInputError(f"frames must be uint8 RGB video (N, H, W, 3), got {what}")
    if len(frames) < least:
        raise KumoInputError(f"{task} needs at least {least} frame{'s' if least > 1 else ''}, got {len(frames)}")
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


def clip_size(pipe) -> tuple[int, int]:
    """The model's own clip size: a conditioned model interpolates where it was trained (the
    64x64 built-in one run on 128x128 keyframes broke the shapes up)."""
    clip = pipe.default_clip()
    return clip["height"], clip["width"]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (..., h, w, 3) -> (..., height, width, 3), bicubic, each frame on its own."""
    from PIL import Image

    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in flat])
    return out.reshape(*frames.shape[:-3], height, width, 3)


def interpolation_steps(pipe, steps: int | None = None) -> int:
    """`steps`, else the checkpoint's `interpolation_steps` (kumo_defaults.json: the keyframes
    pin most of the clip, so fewer steps than text-to-video's suffice), else its default."""
    if steps is not None:
        return steps
    return pipe.sampling_defaults.get("interpolation_steps") or pipe.default_sampling()["num_inference_steps"]


class InterpolationGuidance(NamedTuple):
    text: float  # guidance_scale
    image: float | None  # image_guidance_scale (> 1: one more branch)


def interpolation_guidance(
    pipe, prompt: str, guidance_scale: float | None = None, image_guidance_scale: float | None = None
) -> InterpolationGuidance:
    """The scales given, else the checkpoint's (kumo_defaults.json). Text: 1 (no text
    guidance) without a prompt, else `interpolation_guidance_scale`, else its `guidance_scale`.
    Image: `interpolation_image_guidance_scale`, else none. The keyframes carry the clip: the
    caption helps the in-betweens, strong text guidance pulls them off the keyframes, and a
    little image guidance holds them closer (docs/conditioning.md has the sweep)."""
    defaults = pipe.sampling_defaults
    if guidance_scale is None:
        if check_prompt(prompt).strip():
            guidance_scale = defaults.get("interpolation_guidance_scale", pipe.default_sampling()["guidance_scale"])
        else:
            guidance_scale = 1.0
    if image_guidance_scale is None:
        image_guidance_scale = defaults.get("interpolation_image_guidance_scale")
    return InterpolationGuidance(guidance_scale, image_guidance_scale)


@torch.no_grad()
def interpolate_frames(
    pipe,
    frames: np.ndarray,
    factor: int,
    prompt: str | None = "",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    paste_keyframes: bool = True,
    guidance_rescale: float | None = None,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> (factor * (N - 1) + 1, H', W', 3) with frame factor * i
    the input's frame i exactly. The model runs at its own clip size: frames of the same
    aspect are scaled to it and the in-betweens scaled back (H' x W' = H x W); other aspects
    are resized and centre-cropped to it, with a note, and H' x W' is the model's size.
    Scales left out are the checkpoint's (`interpolation_guidance`: without a prompt, no text
    guidance), steps left out its `interpolation_steps` (kumo_defaults.json), else its
    `num_inference_steps`. `paste_keyframes=False` keeps the model's own keyframes (to
    measure them)."""
    factor = check_factor(factor)
    prompt = check_prompt(prompt)
    frames = check_keyframes(frames)
    checks.check_frame_conditioning(pipe.transformer.config)
    clip_frames = pipe.default_clip()["num_frames"]
    span = window_span(clip_frames, factor)
    height, width = clip_size(pipe)
    keyframes = frames  # pasted back into the output
    in_height, in_width = frames.shape[1:3]
    scale_back = (in_height, in_width) != (height, width) and in_height * width == in_width * height
    if scale_back:
        logger.warning(
            "the keyframes are %dx%d: interpolated at the model's %dx%d and scaled back",
            in_width,
            in_height,
            width,
            height,
        )
        frames = resize_frames(frames, height, width)
    elif (in_height, in_width) != (height, width):
        logger.warning(
            "the keyframes are %dx%d, another aspect than the model's: resized and centre-cropped to %dx%d",
            in_width,
            in_height,
            width,
            height,
        )
        frames = np.stack([fit_image(f, height, width, what=None) for f in frames])
        keyframes = frames
    guidance_scale, image_guidance_scale = interpolation_guidance(pipe, prompt, guidance_scale, image_guidance_scale)
    num_inference_steps = interpolation_steps(pipe, num_inference_steps)

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
        guidance_rescale=guidance_rescale,
        image_guidance_scale=image_guidance_scale,
        generator=generator,
        output_type="np",
    ).frames  # (windows, clip_frames, H, W, 3) in [0, 1]
    windows = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
    if scale_back:
        windows = resize_frames(windows, in_height, in_width)
    return assemble(windows, starts, keyframes, factor, paste_keyframes)


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
