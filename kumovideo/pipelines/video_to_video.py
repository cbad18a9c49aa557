"""Video-to-video by partial denoising (SDEdit: Meng et al. 2022, "SDEdit: Guided Image
Synthesis and Editing with Stochastic Differential Equations"): the source clip's latents are
noised to the level where a share `strength` of the sampling steps remains, and only those
steps run with the new prompt. Low strength keeps the source's layout and motion; 1 is
text-to-video. What the Videos API's remix (`POST /v1/videos/{id}/remix`) and
`kumo generate --video` run; the loop itself is `KumoPipeline.__call__`'s.

    source frames (F, H, W, 3) --fit, [-1, 1]--> (1, 3, F, H, W) --VAE mean--> x0 (1, F_lat, C, h, w)
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise,   t = the first of the last round(strength x steps) steps
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kumovideo.pipelines.conditioning import fit_image, load_image
from kumovideo.utils.errors import KumoInputError

# Measured on ShapesWorld (README, "Video-to-video and extension"): from 0.4 up a remix takes
# colour, shape and motion edits as often as text-to-video does; at 0.3, 9 points fewer colour edits;
# 0.6 keeps a margin above that edge and more of the layout than diffusers' 0.8.
DEFAULT_STRENGTH = 0.6


def video_strength(sampling_defaults: dict) -> float:
    """The strength a call that leaves it out runs at: the checkpoint's kumo_defaults.json
    `video_strength` (few-step models need more of their coarse steps), else DEFAULT_STRENGTH."""
    return float(sampling_defaults.get("video_strength", DEFAULT_STRENGTH))


def strength_start(num_inference_steps: int, strength: float) -> int:
    """Index of the first step run: the last round(strength x steps) of them, at least one
    (diffusers' img2img rounds down and can run none; one step is the least that changes x)."""
    return num_inference_steps - max(1, min(num_inference_steps, round(strength * num_inference_steps)))


def video_frames(video: Any, what: str = "video", num_frames: int | None = None) -> np.ndarray:
    """A clip as uint8 (F, H, W, 3): a path to a video file (PyAV; only its first `num_frames`
    frames decoded where given: a long file is never held whole), a uint8 (F, H, W, 3)
    array, a float tensor (F, 3, H, W) in [0, 1], or a list of images (`load_image`'s forms)."""
    if isinstance(video, (str, os.PathLike)):
        from kumovideo.utils.video_io import read_video_head

        if not Path(video).is_file():
            raise KumoInputError(f"{what} {video} not found; pass a video file (.mp4, .webm, .gif)")
        try:
            frames, _ = read_video_head(video, num_frames)
        except Exception as exc:  # PyAV's errors are many; any of them means the same to a user
            raise KumoInputError(f"{what} {video} cannot be decoded as a video ({type(exc).__name__})") from None
        return frames
    if torch.is_tensor(video):
        if video.ndim == 5 and video.shape[0] == 1:
            video = video[0]
        if video.ndim != 4 or video.shape[1] != 3 or not video.is_floating_point():
            raise KumoInputError(f"a video tensor must be float (F, 3, H, W) in [0, 1], got {tuple(video.shape)}")
        return (video.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[3] != 3:
            raise KumoInputError(f"a video array must be uint8 (F, H, W, 3) RGB, got {video.dtype} {video.shape}")
        return video
    if isinstance(video, (list, tuple)) and video:
        return np.stack([load_image(frame) for frame in video])
    raise KumoInputError(
        "video must be a path, a uint8 (F, H, W, 3) array, a (F, 3, H, W) tensor or a list of images, "
        f"not {type(video).__name__}"
    )


def check_video_length(available: int, num_frames: int, what: str = "video") -> None:
    """A source clip gives its first `num_frames` frames: it needs at least that many."""
    if available < num_frames:
        raise KumoInputError(
            f"{what} has {available} frames and the clip needs {num_frames}; pass a longer video or "
            "fewer frames (num_frames / --frames)"
        )


def read_source(source, num_frames: int, fps: float, max_pixels: int | None = None, what: str = "video") -> np.ndarray:
    """The source of a clip of `num_frames` frames at `fps`, uint8 (num_frames, H, W, 3): its
    frames at the clip's times (`read_video_head`'s `fps`), so a 30 fps upload remade at 8 fps
    keeps its speed instead of playing 3.75x slower. A source too short is a KumoInputError;
    ValueError (too many pixels, no frames) and PyAV's errors as `read_video_head`."""
    import math

    from kumovideo.utils.video_io import read_video_head

    frames, rate = read_video_head(source, num_frames, max_pixels=max_pixels, fps=fps)
    if len(frames) < num_frames and rate and not math.isclose(rate, fps):
        raise KumoInputError(
            f"{what} at {rate:g} fps is too short: the clip needs {num_frames} frames at {fps:g} fps "
            f"({(num_frames - 1) / fps:g} s of it); pass a longer video or a shorter clip"
        )
    check_video_length(len(frames), num_frames, what)
    return frames


def fit_video(frames: np.ndarray, num_frames: int, height: int, width: int, what: str = "video") -> torch.Tensor:
    """The first `num_frames` frames, each fitted to height x width (cover, centre-crop), as
    (1, 3, F, H, W) in [-1, 1]; a clip with fewer frames is refused with the count it needs."""
    check_video_length(len(frames), num_frames, what)
    frames = frames[:num_frames]
    if frames.shape[1:3] != (height, width):
        fit_image(frames[0], height, width, what)  # the one-line note, once for the clip
        frames = np.stack([fit_image(f, height, width, None) for f in frames])
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return x[None]


@torch.no_grad()
def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """(1, 3, F, H, W) in [-1, 1] -> the posterior mean's latents (1, F_lat, C, h, w), scaled
    as the transformer reads them (the mean: the same source gives the same start)."""
    x = video.to(device=vae.device, dtype=vae.dtype)
    latents = vae.encode(x).latent_dist.mean.float() * vae.config.scaling_factor
    return latents.permute(0, 2, 1, 3, 4)
