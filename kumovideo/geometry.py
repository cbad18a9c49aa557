"""Clip <-> latent <-> token geometry: the one place that knows how a clip of pixels maps to
the VAE latent and to MADiT's vision tokens.

    clip (F, H, W) pixels --VAE--> latent (F_lat, C, H/s, W/s) --patchify--> N tokens
    F_lat = (F - 1) // t + 1        (causal VAE: the first frame alone, then t frames each)
    N = F_lat * (H / s / p) * (W / s / p)

with s the VAE's spatial compression (8 for the CogVideoX VAE: 2 ** (number of blocks - 1)),
t its temporal compression (4) and p the transformer's patch size (2). Both compressions
are read from the VAE's config, never assumed; `ClipGeometry()` is the published model's
(8, 4, 2, 16 channels) for code that has no VAE at hand (FLOP counts of a named preset).

Valid clips: F = 2t*k + 1 (t*k + 1 for the compression, and the CogVideoX decoder restores
the first frame on its own only for an odd number of latent frames: an even count decodes
to the wrong number of frames), sides multiples of s*p.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kumovideo.utils.errors import KumoInputError


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """`key` of a model config, which may be a dict, a diffusers FrozenDict or an object with
    attributes (a `.config`); `default` where it has none."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def vae_compression(vae_config: Any) -> tuple[int, int]:
    """(spatial, temporal) compression of a CogVideoX-style VAE config (a dict, a diffusers
    FrozenDict or an object with attributes): each down block but the last halves the sides."""
    blocks = config_value(vae_config, "block_out_channels")
    if blocks is None:
        raise KumoInputError("the VAE config has no block_out_channels; it is not a CogVideoX-style 3D VAE config")
    return 2 ** (len(blocks) - 1), int(config_value(vae_config, "temporal_compression_ratio", 4))


@dataclass(frozen=True)
class ClipGeometry:
    spatial: int = 8  # pixels per latent pixel, per side
    temporal: int = 4  # frames per latent frame after the first
    patch: int = 2  # latent pixels per token, per side
    latent_channels: int = 16

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_configs(cls, vae_config: Any, transformer_config: Any = None) -> ClipGeometry:
        """From a VAE config and (for the patch size and channels) a transformer config."""
        spatial, temporal = vae_compression(vae_config)
        channels = config_value(vae_config, "latent_channels", cls.latent_channels)
        patch = cls.patch
        if transformer_config is not None:
            patch = config_value(transformer_config, "patch_size", patch)
            channels = config_value(transformer_config, "in_channels", channels)
        return cls(spatial=spatial, temporal=temporal, patch=int(patch), latent_channels=int(channels))

    @classmethod
    def of(cls, pipe: Any) -> ClipGeometry:
        """The geometry of a pipeline (anything with `.vae` and `.transformer`)."""
        return cls.from_configs(pipe.vae.config, pipe.transformer.config)

    # ---------------------------------------------------------------- frames

    @property
    def frame_step(self) -> int:
        """Valid frame counts are frame_step * k + 1 (two latent frames per step)."""
        return 2 * self.temporal

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of `num_frames` (the causal VAE's first frame is alone)."""
        return (num_frames - 1) // self.temporal + 1

    def num_frames(self, latent_frames: int) -> int:
        """Frames the decoder makes from `latent_frames` latent frames."""
        return (latent_frames - 1) * self.temporal + 1

    def encodable_frames(self, available: int) -> int:
        """The most frames (temporal * k + 1) the encoder takes from a clip of `available`."""
        return 0 if available < 1 else self.num_frames(self.latent_frames(available))

    def is_encodable_frames(self, num_frames: int) -> bool:
        """Whether the encoder maps this many frames to whole latent frames (temporal * k + 1);
        decoding back to the same count needs `is_valid_frames` too."""
        return num_frames >= 1 and (num_frames - 1) % self.temporal == 0

    def is_valid_frames(self, num_frames: int) -> bool:
        """Whether the VAE encodes and decodes a clip of this many frames back to itself."""
        return num_frames >= 1 and (num_frames - 1) % self.frame_step == 0

    def nearest_frames(self, num_frames: int) -> tuple[int, int]:
        """The valid frame counts just below (or at) and just above `num_frames`."""
        lower = max(1, (num_frames - 1) // self.frame_step * self.frame_step + 1)
        return lower, lower + self.frame_step

    # ---------------------------------------------------------------- sides

    @property
    def side_multiple(self) -> int:
        """Heights and widths are multiples of this (VAE stride x patch size)."""
        return self.spatial * self.patch

    def is_encodable_side(self, value: int) -> bool:
        """Whether the encoder maps a side of this many pixels to whole latent pixels."""
        return value % self.spatial == 0

    def is_valid_side(self, value: int) -> bool:
        return value >= self.side_multiple and value % self.side_multiple == 0

    def nearest_sides(self, value: int) -> tuple[int, int]:
        m = self.side_multiple
        lower = max(m, value // m * m)
        return lower, lower + m

    # ---------------------------------------------------------------- shapes

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(F, H, W) pixels -> (F_lat, h, w) latent."""
        return self.latent_frames(num_frames), height // self.spatial, width // self.spatial

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """The latent tensor of `batch` clips, in the transformer's layout (B, F_lat, C, h, w)."""
        frames, h, w = self.latent_size(num_frames, height, width)
        return batch, frames, self.latent_channels, h, w

    def sample_clip(self, transformer_config: Any) -> tuple[int, int, int]:
        """(F, H, W) pixels of the clip a transformer was made for: its config's sample_frames
        (pixel frames, as in CogVideoX) and its latent sample_height x sample_width, times the
        VAE's stride (480x720x41 for the published model)."""
        c = transformer_config
        return (
            config_value(c, "sample_frames"),
            config_value(c, "sample_height") * self.spatial,
            config_value(c, "sample_width") * self.spatial,
        )

    def clip_size(self, latent_frames: int, latent_height: int, latent_width: int) -> tuple[int, int, int]:
        """(F_lat, h, w) latent -> (F, H, W) pixels, what the decoder makes."""
        return self.num_frames(latent_frames), latent_height * self.spatial, latent_width * self.spatial

    def latent_tokens(self, latent_frames: int, latent_height: int, latent_width: int) -> int:
        """Vision tokens of a latent: one per patch of each latent frame."""
        return latent_frames * (latent_height // self.patch) * (latent_width // self.patch)

    def tokens(self, num_frames: int, height: int, width: int) -> int:
        """Vision tokens MADiT sees for a clip of num_frames x height x width pixels."""
        return self.latent_tokens(*self.latent_size(num_frames, height, width))

    # ---------------------------------------------------------------- the check

    def check_clip(self, num_frames: int, height: int, width: int) -> None:
        """Raise KumoInputError, suggesting the nearest valid values, unless the VAE and the
        patchify can make this clip."""
        t, step = self.temporal, self.frame_step
        lower, upper = self.nearest_frames(num_frames)
        nearest = f"use {lower} or {upper}"
        if not self.is_encodable_frames(num_frames):
            raise KumoInputError(f"num_frames={num_frames} is not {t}k+1 (the VAE compresses time {t}x); {nearest}")
        latent_frames = self.latent_frames(num_frames)
        if latent_frames > 1 and latent_frames % 2 == 0:
            raise KumoInputError(
                f"num_frames={num_frames} gives {latent_frames} latent frames, but the 3D causal VAE decodes only an "
                f"odd number of them (num_frames = {step}k+1); {nearest}"
            )
        self.check_sides(height, width, f"VAE {self.spatial}x times patch {self.patch}")

    def check_sides(self, height: int, width: int, why: str) -> None:
        """Raise KumoInputError, suggesting the nearest valid sides, unless both are multiples
        of `side_multiple`; `why` says what makes it that multiple."""
        for name, value in (("height", height), ("width", width)):
            if not self.is_valid_side(value):
                lower, upper = self.nearest_sides(value)
                raise KumoInputError(
                    f"{name}={value} is not a multiple of {self.side_multiple} ({why}); use {lower} or {upper}"
                )


# The published model's VAE and transformer (CogVideoX VAE, patch 2).
DEFAULT_GEOMETRY = ClipGeometry()


# ---------------------------------------------------------------------------------------
# Aspect buckets (Lumina-Video / Lumina-Next's crop-size list): training at any aspect draws
# each batch from one bucket, a (width, height) whose sides are multiples of the patch unit and
# whose area stays within a token budget, so every batch has one shape and a similar cost.
# ---------------------------------------------------------------------------------------

MAX_ASPECT = 2.0  # buckets run from 1:2 (portrait) to 2:1 (landscape)


def aspect_buckets(max_area: int, unit: int, max_ratio: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """(width, height) pairs, sides multiples of `unit` pixels, area <= `max_area` pixels,
    width / height within [1 / max_ratio, max_ratio]: for each width the tallest height
    that fits (Lumina-Next's `generate_crop_size_list`, in pixels). Widest last."""
    if unit < 1 or max_area < unit * unit:
        raise KumoInputError(f"an aspect-bucket budget of {max_area} px² holds no {unit}x{unit} patch unit")
    buckets = []
    for width in range(unit, max_area // unit + 1, unit):
        height = max_area // width // unit * unit
        if height >= unit and 1 / max_ratio <= width / height <= max_ratio:
            buckets.append((width, height))
    return buckets


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect is closest to width x height's (in log ratio), ties to the larger area."""
    if not buckets:
        raise KumoInputError("no aspect buckets to choose from")
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def check_aspect(width: int, height: int, max_ratio: float = MAX_ASPECT, what: str = "") -> None:
    """Raise KumoInputError unless width:height lies within 1:max_ratio .. max_ratio:1; `what`
    names the size in the message (e.g. "frame ")."""
    if not 1 / max_ratio <= width / height <= max_ratio:
        raise KumoInputError(
            f"{what}{width}x{height} is {width / height:.2f}:1, outside the aspect ratios "
            f"1:{max_ratio:g} .. {max_ratio:g}:1; choose a width and height within twice each other"
        )
