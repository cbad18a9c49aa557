# The video-to-audio denoiser: a log-mel spectrogram diffusion model conditioned on the
# video, frame by frame.
#
# Kandinsky 4's V2A denoises a spectrogram conditioned on video frames and text; here the
# spectrogram is a sequence over time whose channels are the mel bands, so a 1-D residual
# network over time does the work (cheap on a CPU), and the video enters where it happens:
#   1. each frame is encoded on its own (a small strided CNN, flattened so positions
#      survive: height sets pitch in ShapesWorld, size sets loudness);
#   2. a small transformer over the frame features (frame index as sine-cosine position)
#      lets each frame see the whole clip: a sound can depend on how things changed since
#      the start (ShapesWorld's pitch glides with the height travelled, not the height);
#   3. frame features are interpolated to the spectrogram's time steps (frame i is shown
#      from i / fps on; mel frame j is centred at j * hop / sample_rate), so a sound can
#      follow an event in time;
#   4. every residual block adds a projection of that per-step video feature and is
#      scaled and shifted by the timestep embedding (FiLM).
# The spectrogram settings (sample rate, FFT, hop, mel bands, log range) live in the
# config: the model's channels and its time alignment depend on them.
#
# Shapes: B batch, M mel bands, T mel frames, F video frames, s the conditioning side.

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin


class FrameEncoder(nn.Module):
    """(B*F, 3, s, s) frames in [-1, 1] -> (B*F, width) features; three stride-2 convolutions."""

    def __init__(self, frame_size: int, channels: tuple[int, ...], width: int):
        super().__init__()
        layers, c_in = [], 3
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        side = frame_size // 2 ** len(channels)
        self.proj = nn.Linear(c_in * side * side, width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(frames).flatten(1))


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each time step of a (B, C, T) sequence. Unlike
    GroupNorm it takes no statistics over time, so a sound at one moment depends only on
    the video around it, and a long video's soundtrack does not depend on its length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConditionedResBlock(nn.Module):
    """Norm -> SiLU -> dilated conv, + video feature, FiLM by the timestep, -> conv; residual."""

    def __init__(self, width: int, time_embed_dim: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.norm1 = ChannelNorm(width)
        self.conv1 = nn.Conv1d(width, width, kernel_size, padding=padding, dilation=dilation)
        self.video_proj = nn.Conv1d(width, width, 1)
        self.film = nn.Linear(time_embed_dim, 2 * width)
        self.norm2 = ChannelNorm(width)
        self.conv2 = nn.Conv1d(width, width, kernel_size, padding=padding, dilation=dilation)

    def forward(self, x: torch.Tensor, video: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # x, video: (B, width, T); temb: (B, time_embed_dim)
        h = self.conv1(F.silu(self.norm1(x))) + self.video_proj(video)
        scale, shift = self.film(F.silu(temb))[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class KumoV2AModel(ModelMixin, ConfigMixin):
    """Predicts v for a noisy normalised log-mel spectrogram (B, M, T), given the video
    (B, F, 3, s, s) and the video's frame rate."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16_000,  # spectrogram: audio settings
        n_fft: int = 1024,
        hop_length: int = 250,
        n_mels: int = 96,
        f_min: float = 100.0,
        f_max: float = 2000.0,
        log_mel_range: tuple[float, float] = (-8.0, 3.0),  # log magnitude mapped to [-1, 1]
        frame_size: int = 32,  # video: frames are resized to s x s
        frame_channels: tuple[int, ...] = (32, 64, 128),
        context_layers: int = 2,  # transformer layers over the frame features (0: none)
        context_heads: int = 4,
        width: int = 128,  # trunk
        time_embed_dim: int = 128,
        kernel_size: int = 5,
        dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4),
    ):
        super().__init__()
        if frame_size % 2 ** len(frame_channels):
            raise ValueError(f"frame_size {frame_size} must be divisible by {2 ** len(frame_channels)}")
        self.frame_encoder = FrameEncoder(frame_size, tuple(frame_channels), width)
        self.frame_position = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        layer = nn.TransformerEncoderLayer(
            width, context_heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.frame_context = (
            nn.TransformerEncoder(layer, context_layers, enable_nested_tensor=False) if context_layers else None
        )
        self.video_mix = nn.Conv1d(width, width, 3, padding=1)  # smooths the interpolated frame features
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, time_embed_dim)
        self.proj_in = nn.Conv1d(n_mels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            ConditionedResBlock(width, time_embed_dim, kernel_size, dilation) for dilation in dilations
        )
        self.norm_out = ChannelNorm(width)
        self.proj_out = nn.Conv1d(width, n_mels, 3, padding=1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Zero the output and every block's last conv and FiLM: each block starts as the
        # identity and the model starts by predicting v = 0.
        for block in self.blocks:
            for layer in (block.conv2, block.film):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def frame_positions(self, num_steps: int, num_frames: int, fps: float, device) -> torch.Tensor:
        """(T,) the video frame (fractional) each mel frame hears: its centre time x fps."""
        times = torch.arange(num_steps, device=device, dtype=torch.float32) * self.config.hop_length
        return (times / self.config.sample_rate * fps).clamp(max=num_frames - 1)

    def encode_video(self, video: torch.Tensor, num_steps: int, fps: float) -> torch.Tensor:
        """(B, F, 3, s, s) -> (B, width, T): per-frame features, linearly interpolated in time."""
        b, f = video.shape[:2]
        features = self.frame_encoder(video.flatten(0, 1)).unflatten(0, (b, f))  # (B, F, width)
        if self.frame_context is not None:
            index = torch.arange(f, device=video.device, dtype=torch.float32)
            features = self.frame_context(features + self.frame_position(index).to(features.dtype))
        position = self.frame_positions(num_steps, f, fps, video.device)
        lower = position.floor().long()
        upper = (lower + 1).clamp(max=f - 1)
        weight = (position - lower)[None, :, None].to(features.dtype)  # float32 would promote bf16 features
        features = features[:, lower] * (1 - weight) + features[:, upper] * weight  # (B, T, width)
        return self.video_mix(features.transpose(1, 2))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        video: torch.Tensor | None = None,
        fps: float | None = None,
        video_mask: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample (B, M, T); timestep (B,) or scalar; video (B, F, 3, s, s) at `fps`, or its
        `encode_video` output (B, width, T), which a sampler computes once for all steps;
        video_mask (B,) of 0/1 drops the video per example (the unconditional branch of guidance)."""
        b, _, t = sample.shape
        timestep = timestep.expand(b) if timestep.dim() else timestep.reshape(1).expand(b)
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        if video_features is None:
            video_features = self.encode_video(video.to(sample.dtype), t, fps)
        if video_mask is not None:
            video_features = video_features * video_mask.to(sample.dtype)[:, None, None]
        h = self.proj_in(sample)
        for block in self.blocks:
            h = block(h, video_features, temb)
        return self.proj_out(F.silu(self.norm_out(h)))
