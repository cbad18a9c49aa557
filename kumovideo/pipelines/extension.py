"""Make a clip longer: the next segment generated from the clip's last frames.

A model trained with conditioning frames (docs/conditioning.md) makes the segment with the
source's last K frames known (K odd, default 5: given at the segment's frames 0, 2, ..., K - 1,
the even slots its interpolation training knows; K = 1 is image-to-video from the last
frame), and the segment's frames after them are appended: a segment of F frames adds F - K.
The prompt says what happens next (in ShapesWorld: the motion goes on). What `kumo extend`
and the Videos API's `POST /v1/videos/extensions` run.

    source (N, H, W, 3) --last K frames--> conditioned model (F frames) --> source + segment[K:]
    (N + F - K, H, W, 3); a longer extension is several segments, each from the last K so far.
"""

from __future__ import annotations

import numpy as np
import torch

from kumovideo.pipelines import checks
from kumovideo.pipelines.interpolation import check_keyframes
from kumovideo.utils.errors import KumoInputError


def frames_to_add(seconds: float, fps: float) -> int:
    """The frames `seconds` add to a clip at `fps`: the nearest whole number, at least one (2 s
    at 29.97 fps add 60). The one rule of `kumo extend --seconds` and the Videos API's
    extension `seconds`."""
    return max(1, round(seconds * fps))


# Known frames each segment starts from: the clip's last 5, given at the segment's frames 0, 2
# and 4 (the even slots the model knows from interpolation). From the last frame alone the
# model cannot tell which way an object is growing or shrinking: on 10 grow/shrink clips the
# size kept its trend in 4 from one frame, 10 from three (README, "Video-to-video and extension").
DEFAULT_CONTEXT = 5


def context_frames(available: int, context: int = DEFAULT_CONTEXT, clip_frames: int | None = None) -> int:
    """The known frames a segment starts from: `context` (odd: frames 0, 2, ... of the
    segment), fewer when the clip has fewer (the largest odd count it has); short of the
    model's `clip_frames` where given, so that a segment makes new frames."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 1 or context % 2 == 0:
        raise KumoInputError(f"context={context!r} must be an odd number of frames >= 1 (1: the last frame alone)")
    known = min(context, available if available % 2 else available - 1)
    if clip_frames is not None and known >= clip_frames:
        raise KumoInputError(f"context={context} leaves no new frames in the model's {clip_frames}-frame clips")
    return known


def segment_frames(pipe, added_frames: int, context: int = 1) -> tuple[int, int]:
    """(segments, frames per segment) that add at least `added_frames` frames: segments of the
    model's own clip length, each adding that - `context` (what the last adds past the request
    is cut off). `added_frames` must be at least 1."""
    if isinstance(added_frames, bool) or not isinstance(added_frames, int) or added_frames < 1:
        raise KumoInputError(f"add at least one frame, got {added_frames!r}")
    clip = pipe.default_clip()["num_frames"]
    per = clip - context_frames(context, context, clip)
    segments = -(-added_frames // per)
    return segments, clip


@torch.no_grad()
def extend_frames(
    pipe,
    frames: np.ndarray,
    added_frames: int,
    prompt: str,
    generator: torch.Generator | None = None,
    context: int = DEFAULT_CONTEXT,
    **call,
) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> (N + added_frames, H, W, 3): the source kept exactly, then
    `added_frames` new ones, made segment by segment by `pipe` (a model with conditioning
    frames) from the last `context` frames so far (`context_frames`), at the source's size
    (its sides must be ones the model takes). `call`: more `pipe(...)` arguments (steps,
    guidance, image_guidance_scale, ...)."""
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8

    checks.check_frame_conditioning(pipe.transformer.config)
    frames = check_keyframes(frames, least=1, task="extending a clip")
    height, width = frames.shape[1:3]
    pipe.geometry.check_sides(height, width, "the clip to extend")
    known = context_frames(len(frames), context)
    segments, per = segment_frames(pipe, added_frames, known)
    made = frames
    for _ in range(segments):
        tail = made[len(made) - known :]  # already the clip's size: every segment is made at it
        given = {i: tail[i] for i in range(0, known, 2)}
        out = pipe(
            prompt,
            conditioning_frames=given,
            num_frames=per,
            height=height,
            width=width,
            generator=generator,
            output_type="pt",
            **call,
        ).frames[0]
        made = np.concatenate([made, frames_to_uint8(out)[known:]])  # its first `known` frames are the tail's
    return made[: len(frames) + added_frames]
