"""Make a clip longer: the next segment generated from the clip's last frame.

A model trained with conditioning frames (docs/conditioning.md) makes the segment as
image-to-video from the source's last frame (its frame 0, the task it was trained on), and
the segment's frames after that one are appended; a segment of F frames adds F - 1. The
prompt says what happens next (in ShapesWorld: the motion goes on). What `kumo extend` and
the Videos API's `POST /v1/videos/extensions` run.

    source (N, H, W, 3) --last frame--> image-to-video (F frames) --> source + segment[1:]
    (N + F - 1, H, W, 3); a longer extension is several segments, each from the last frame.
"""

from __future__ import annotations

import numpy as np
import torch

from kumovideo.pipelines import checks
from kumovideo.pipelines.conditioning import fit_image
from kumovideo.utils.errors import KumoInputError


def frames_to_add(seconds: float, fps: float) -> int:
    """The frames `seconds` add to a clip at `fps`: the nearest whole number, at least one (2 s
    at 29.97 fps add 60). The one rule of `kumo extend --seconds` and the Videos API's
    extension `seconds`."""
    return max(1, round(seconds * fps))


def segment_frames(pipe, added_frames: int) -> tuple[int, int]:
    """(segments, frames per segment) that add at least `added_frames` frames: segments of the
    model's own clip length, each adding that - 1 (what the last adds past the request is cut
    off). `added_frames` must be at least 1."""
    if isinstance(added_frames, bool) or not isinstance(added_frames, int) or added_frames < 1:
        raise KumoInputError(f"add at least one frame, got {added_frames!r}")
    clip = pipe.default_clip()["num_frames"]
    per = clip - 1
    segments = -(-added_frames // per)
    return segments, clip


@torch.no_grad()
def extend_frames(
    pipe,
    frames: np.ndarray,
    added_frames: int,
    prompt: str,
    generator: torch.Generator | None = None,
    **call,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> (N + added_frames, H, W, 3): the source kept exactly, then
    `added_frames` new ones, made segment by segment by `pipe` (a model with conditioning
    frames) from the last frame so far, at the source's size (its sides must be ones the model
    takes). `call`: more `pipe(...)` arguments (steps, guidance, image_guidance_scale, ...)."""
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8

    checks.check_frame_conditioning(pipe.transformer.config)
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise KumoInputError("the clip to extend must be uint8 frames (N, H, W, 3)")
    if len(frames) < 1:
        raise KumoInputError("the clip to extend has no frames")
    height, width = frames.shape[1:3]
    pipe.geometry.check_sides(height, width, "the clip to extend")
    segments, per = segment_frames(pipe, added_frames)
    made = [frames]
    last = frames[-1]
    for _ in range(segments):
        out = pipe(
            prompt,
            image=fit_image(last, height, width, None),
            num_frames=per,
            height=height,
            width=width,
            generator=generator,
            output_type="pt",
            **call,
        ).frames[0]
        segment = frames_to_uint8(out)[1:]  # its frame 0 is `last`, already there
        made.append(segment)
        last = segment[-1]
    return np.concatenate(made)[: len(frames) + added_frames]
