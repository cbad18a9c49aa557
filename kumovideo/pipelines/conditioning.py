"""Conditioning frames: known frames placed at their index in the latent, one mechanism for
image-to-video and for keyframe interpolation (docs/conditioning.md).

Each known pixel frame is encoded by the VAE *as a single image* (a 1-frame clip). With the
causal VAE that is latent frame 0 of a clip that starts with it (up to the VAE's GroupNorm
statistics, taken over the whole clip: 0.05 at most for the built-in VAE), so the I2V
image's latent is the clip's own first latent. Latent frame k >= 1 covers pixel frames
t(k-1)+1 .. tk (t = 4: frames 4k-3 .. 4k); a known frame i lands in latent frame
k = ceil(i / t), in one of two slots by its place in that group:

    slot "end" (0): i = tk, and i = 0 (latent frame 0 is frame 0 alone)
    slot "mid" (1): i = tk - t/2          (t = 4: i = 4k - 2)

The condition of a latent frame is [end latent (C), mid latent (C), end mask, mid mask],
2C + 2 channels, zeros where nothing is known. I2V fills the end slot of latent frame 0;
x4 interpolation (every 4th frame known) the end slots of every latent frame; x2 (every
2nd frame) the end and mid slots. Nothing blended or held is ever encoded, and training
reads the same per-frame latents from its shards (`kumo train cache-latents --frame-latents`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kumovideo.models.transformer_kumo import condition_channels
from kumovideo.utils.errors import KumoInputError

logger = logging.getLogger(__name__)

END, MID = 0, 1  # slots of a latent frame
# What a conditioned training example knows (`conditioning:` of a DiT config): the first
# frame; every 4th frame; every 2nd frame; nothing (plain text-to-video).
TASKS = ("i2v", "interpolate4", "interpolate2", "none")


# ------------------------------------------------------------------------ where frames go


def latent_slot(frame: int, temporal: int = 4) -> tuple[int, int]:
    """(latent frame, slot) of known pixel frame `frame`: frame 0 and frames tk are "end"
    slots of latent frame k, frames tk - t/2 "mid" slots; other frames have no slot."""
    if frame == 0:
        return 0, END
    k = math.ceil(frame / temporal)
    if frame == temporal * k:
        return k, END
    if frame == temporal * k - temporal // 2:
        return k, MID
    raise KumoInputError(
        f"conditioning frame {frame} cannot be placed: known frames must be 0 or even "
        f"(a latent frame holds frames {temporal}k and {temporal}k-{temporal // 2}); use an even index"
    )


def check_frame_indices(indices: Any, num_frames: int, temporal: int = 4) -> list[int]:
    """The known frames' indices, sorted: whole numbers from 0 to num_frames - 1, each with a slot."""
    checked = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise KumoInputError(f"conditioning frame index {index!r} must be a whole number (a frame index)")
        if not 0 <= index < num_frames:
            raise KumoInputError(
                f"conditioning frame {index} is outside the clip's {num_frames} frames; use 0 .. {num_frames - 1}"
            )
        latent_slot(int(index), temporal)
        checked.append(int(index))
    return sorted(checked)


def task_frames(task: str, num_frames: int) -> list[int]:
    """The pixel frames a training task knows (`TASKS`)."""
    step = {"i2v": None, "interpolate4": 4, "interpolate2": 2, "none": None}[task]
    if task == "i2v":
        return [0]
    return list(range(0, num_frames, step)) if step else []


def place_latents(
    frame_latents: Mapping[int, torch.Tensor],
    latent_frames: int,
    latent_shape: tuple[int, int, int],
    temporal: int = 4,
) -> torch.Tensor:
    """The condition (F_lat, 2C + 2, h, w) from image latents (C, h, w) by pixel frame index;
    `latent_shape` is (C, h, w), for a condition with nothing known."""
    c, h, w = latent_shape
    condition = torch.zeros(latent_frames, condition_channels(c), h, w)
    for frame, latent in frame_latents.items():
        k, slot = latent_slot(frame, temporal)
        if k >= latent_frames:
            raise KumoInputError(f"conditioning frame {frame} lies past the clip's {latent_frames} latent frames")
        condition[k, slot * c : (slot + 1) * c] = latent.float().cpu()
        condition[k, 2 * c + slot] = 1.0  # the mask: this slot is known
    return condition


# ------------------------------------------------------------------------ images


def _rgb_array(image) -> np.ndarray:
    """uint8 (H, W, 3) of a PIL image. Greyscale of more than 8 bits a sample is scaled to 8
    bits: PIL's convert("RGB") clips it instead, so a 16-bit PNG (mode I;16) came out white
    wherever it was above 255 of 65535, and a float TIFF in [0, 1] (mode F) black. (16-bit
    colour PNGs open as 8-bit RGB/RGBA already.)"""
    if not image.mode.startswith(("I", "F")):
        return np.asarray(image.convert("RGB"))
    grey = np.asarray(image).astype(np.float64)
    brightest = float(np.nanmax(grey, initial=0))
    if image.mode.startswith("I;16"):  # 16-bit PNG and TIFF
        full_scale = 65535
    elif image.mode == "F" and brightest <= 1.0:  # float TIFFs: [0, 1] (PIL's convert made them black)
        full_scale = 1.0
    else:  # "I", 32-bit: 32-bit TIFFs, but 16-bit PGMs too (and floats past 1): the smallest depth that holds them
        full_scale = 255 if brightest <= 255 else 65535 if brightest <= 65535 else 2**32 - 1
    grey = np.nan_to_num(grey, nan=0.0)
    grey = np.clip(np.round(grey * (255 / full_scale)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _decode_image(source, what: str, max_pixels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as opened:  # reads the header only; decoding waits for convert
            if max_pixels is not None and opened.width * opened.height > max_pixels:
                raise KumoInputError(
                    f"{what} is {opened.width}x{opened.height} pixels, over the {max_pixels / 1e6:g} megapixels "
                    "taken here; scale it down (it is fitted to the clip's size anyway)"
                )
            return _rgb_array(opened)
    except KumoInputError:  # the size refusal above (a ValueError, which the next clause would reword)
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KumoInputError(f"{what} cannot be read as an image ({type(exc).__name__}); pass a PNG or JPEG") from None


def load_image(image: Any, max_pixels: int | None = None) -> np.ndarray:
    """An image as uint8 (H, W, 3): a path, the bytes of an image file (an upload), a PIL
    image, a numpy uint8 (H, W, 3) array, or a float tensor (3, H, W) in [0, 1] (diffusers'
    I2V convention). `max_pixels`: a file with more is refused before it is decoded (a
    server's guard against small files of huge images; PIL's own bomb check is far above)."""
    if isinstance(image, (str, os.PathLike)):
        if Path(image).is_dir():
            raise KumoInputError(f"image {image} is a folder; pass a PNG or JPEG file")
        if not Path(image).is_file():
            raise KumoInputError(f"image {image} not found; pass a PNG or JPEG file")
        return _decode_image(image, f"image {image}", max_pixels)
    if isinstance(image, (bytes, bytearray)):
        import io

        if not image:
            raise KumoInputError("the image is an empty file; pass a PNG or JPEG")
        return _decode_image(io.BytesIO(image), f"the image ({len(image)} bytes)", max_pixels)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return _rgb_array(image)
    if torch.is_tensor(image):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise KumoInputError(
                f"an image tensor must be float (3, H, W) in [0, 1], got {image.dtype} {tuple(image.shape)}"
            )
        return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise KumoInputError(f"an image array must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        return image
    raise KumoInputError(
        f"image must be a path, a PIL image, a uint8 (H, W, 3) array or a (3, H, W) tensor, not {type(image).__name__}"
    )


def fit_image(image: np.ndarray, height: int, width: int, what: str | None = "image") -> np.ndarray:
    """uint8 (H, W, 3) scaled to cover height x width and centre-cropped to it; a one-line
    note says so when its size differs (`what=None`: the caller says it once for many)."""
    ih, iw = image.shape[:2]
    if (ih, iw) == (height, width):
        return image
    from PIL import Image

    if what is not None:
        logger.warning("%s is %dx%d: resized and centre-cropped to the clip's %dx%d", what, iw, ih, width, height)
    scale = max(height / ih, width / iw)
    sh, sw = max(height, round(ih * scale)), max(width, round(iw * scale))
    resized = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BICUBIC))
    top, left = (sh - height) // 2, (sw - width) // 2
    return resized[top : top + height, left : left + width]


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (N, 3, H, W) float in [-1, 1] (the VAE's range)."""
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return stacked / 127.5 - 1.0


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, batch_size: int = 64, scaled: bool = True) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> image latents (N, C, h, w), each frame encoded alone as a
    1-frame clip (posterior mean: the same latent every time it is asked for); times the
    VAE's scaling factor unless `scaled=False` (how latent shards store them)."""
    scale = vae.config.scaling_factor if scaled else 1.0
    out = []
    for chunk in images.split(batch_size):
        x = chunk[:, :, None].to(device=vae.device, dtype=vae.dtype)  # (n, 3, 1, H, W)
        out.append(vae.encode(x).latent_dist.mean[:, :, 0].float() * scale)
    return torch.cat(out)


def even_frame_latents(vae, video: torch.Tensor) -> torch.Tensor:
    """Unscaled image latents of frames 0, 2, 4, ... of clips (B, 3, F, H, W) in [-1, 1]:
    (B, (F + 1) // 2, C, h, w), what latent shards keep for conditioning (`--frame-latents`)."""
    b, _, f = video.shape[:3]
    frames = video[:, :, ::2].permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B * F_even, 3, H, W)
    latents = encode_images(vae, frames, scaled=False)
    return latents.view(b, (f + 1) // 2, *latents.shape[1:])


def shard_frame_latents(
    frame_latents: torch.Tensor, frames: list[int], scaling_factor: float
) -> dict[int, torch.Tensor]:
    """{pixel frame: scaled latent (C, h, w)} of the `frames` a training task knows, from a
    shard's unscaled latents of frames 0, 2, 4, ... ((F_even, C, h, w))."""
    return {i: frame_latents[i // 2].float() * scaling_factor for i in frames if i // 2 < len(frame_latents)}


def build_conditions(
    vae, frames: list[Mapping[int, Any]], num_frames: int, height: int, width: int, temporal: int, spatial: int
) -> torch.Tensor:
    """Conditions (B, F_lat, 2C + 2, h, w) for a batch: each item's known frames {pixel frame
    index: image}, all encoded in one pass."""
    latent_frames = (num_frames - 1) // temporal + 1
    shape = (vae.config.latent_channels, height // spatial, width // spatial)
    keys, pixels = [], []
    for b, known in enumerate(frames):
        for index in check_frame_indices(list(known), num_frames, temporal):
            what = "image" if index == 0 and len(known) == 1 else f"conditioning frame {index}"
            pixels.append(fit_image(load_image(known[index]), height, width, what))
            keys.append((b, index))
    latents = encode_images(vae, images_to_tensor(pixels)) if pixels else None
    by_item: list[dict[int, torch.Tensor]] = [{} for _ in frames]
    for (b, index), latent in zip(keys, latents if latents is not None else []):
        by_item[b][index] = latent
    return torch.stack([place_latents(known, latent_frames, shape, temporal) for known in by_item])
