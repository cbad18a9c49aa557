# MADiT: the mixed-attention diffusion transformer of KumoVideo.
#
# A block sees two streams, text tokens (from T5) and vision tokens (2x2 patches of the
# VAE latent, frame by frame, row by row), and mixes them three ways:
#   1. full self-attention over the joined [text, vision] sequence;
#   2. two cross-attentions: vision queries -> text keys (attn2_1), text queries -> vision
#      keys (attn2_2);
#   3. one feed-forward over the joined sequence.
# Each stream has its own timestep-conditioned AdaLN shift/scale/gate (one LayerNorm is
# shared). Parameter names and config keys follow the original implementation, so an
# original `transformer/` folder loads with `from_pretrained` and no conversion.
#
# Building blocks that diffusers already provides (attention module, timestep embedding,
# sine-cosine patch embedding, AdaLN-zero, feed-forward) are used as they are.

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNorm, CogVideoXLayerNormZero

from kumovideo.models.attention import MADiTAttnProcessor


def cross_attention(dim: int, heads: int, head_dim: int, bias: bool) -> Attention:
    """Queries from one stream, keys and values from the other (no q/k norm)."""
    return Attention(
        query_dim=dim,
        cross_attention_dim=dim,
        dim_head=head_dim,
        heads=heads,
        bias=bias,
        out_bias=bias,
        processor=MADiTAttnProcessor(),
    )


class MADiTBlock(nn.Module):
    """One MADiT block: joint self-attention, two cross-attentions, joint feed-forward."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        time_embed_dim: int,
        dropout: float = 0.0,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()

        # 1. Joint self-attention over [text, vision], with per-head LayerNorm on q and k.
        self.norm1 = CogVideoXLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps, bias=True)
        self.attn1 = Attention(
            query_dim=dim,
            dim_head=attention_head_dim,
            heads=num_attention_heads,
            qk_norm="layer_norm",
            eps=1e-6,
            bias=attention_bias,
            out_bias=attention_bias,
            processor=MADiTAttnProcessor(),
        )

        # 2. Cross-attentions on the normed streams: vision -> text and text -> vision.
        self.norm2 = CogVideoXLayerNormZero(time_embed_dim, dim, norm_elementwise_affine, norm_eps, bias=True)
        self.attn2_1 = cross_attention(dim, num_attention_heads, attention_head_dim, attention_bias)
        self.attn2_2 = cross_attention(dim, num_attention_heads, attention_head_dim, attention_bias)

        # 3. Feed-forward over the joined normed sequence.
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn, bias=True)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, N_vision, D)
        encoder_hidden_states: torch.Tensor,  # (B, N_text, D)
        temb: torch.Tensor,  # (B, time_embed_dim)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_len = encoder_hidden_states.size(1)

        # 1. Joint self-attention; gated residual per stream.
        norm_h, norm_e, gate_h, gate_e = self.norm1(hidden_states, encoder_hidden_states, temb)
        attn_h, attn_e = self.attn1(hidden_states=norm_h, encoder_hidden_states=norm_e)
        hidden_states = hidden_states + gate_h * attn_h
        encoder_hidden_states = encoder_hidden_states + gate_e * attn_e

        # 2. Cross-attentions. Both read the normed states before either is updated, and
        # each result is added to its *normed* stream, which then feeds the FF.
        norm_h, norm_e, gate_h, gate_e = self.norm2(hidden_states, encoder_hidden_states, temb)
        cross_h = self.attn2_1(norm_h, encoder_hidden_states=norm_e)  # vision queries text
        cross_e = self.attn2_2(norm_e, encoder_hidden_states=norm_h)  # text queries vision
        norm_h = norm_h + cross_h
        norm_e = norm_e + cross_e

        # 3. Joint feed-forward; gated residual per stream.
        ff_out = self.ff(torch.cat([norm_e, norm_h], dim=1))  # (B, N_text + N_vision, D)
        hidden_states = hidden_states + gate_h * ff_out[:, text_len:]
        encoder_hidden_states = encoder_hidden_states + gate_e * ff_out[:, :text_len]
        return hidden_states, encoder_hidden_states


class KumoTransformer3DModel(ModelMixin, ConfigMixin):
    """MADiT denoiser. Input latents (B, F, C, H, W), text states (B, L, text_embed_dim),
    timesteps (B,); output has the shape of the input latents (v-prediction).

    The config keys match the original `transformer/config.json`.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["MADiTBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 30,
        attention_head_dim: int = 64,
        in_channels: int = 16,
        out_channels: int | None = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        text_embed_dim: int = 4096,
        num_layers: int = 30,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 41,
        patch_size: int = 2,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels

        # Patchify (2x2 strided conv per frame) + text projection + fixed 3D sine-cosine
        # table on the vision tokens; the text length must equal max_text_seq_length.
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            text_embed_dim=text_embed_dim,
            bias=True,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_positional_embeddings=True,
            use_learned_positional_embeddings=False,
        )
        self.embedding_dropout = nn.Dropout(dropout)

        # Timestep: sinusoid of width inner_dim (cos first, shift 0) -> 2-layer MLP.
        self.time_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)

        self.transformer_blocks = nn.ModuleList(
            [
                MADiTBlock(
                    dim=inner_dim,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    time_embed_dim=time_embed_dim,
                    dropout=dropout,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_final = nn.LayerNorm(inner_dim, norm_eps, norm_elementwise_affine)

        # Output: AdaLN (shift, scale from the timestep embedding), linear to patch pixels.
        self.norm_out = AdaLayerNorm(
            embedding_dim=time_embed_dim,
            output_dim=2 * inner_dim,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            chunk_dim=1,
        )
        self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * out_channels)

        self.gradient_checkpointing = False
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT-style init: Xavier linears, zeroed AdaLN modulation and output projection, so
        a fresh model starts as the identity on each residual stream and predicts zeros."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.time_embedding.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embedding.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            for norm in (block.norm1, block.norm2):
                nn.init.zeros_(norm.linear.weight)
                nn.init.zeros_(norm.linear.bias)
        nn.init.zeros_(self.norm_out.linear.weight)
        nn.init.zeros_(self.norm_out.linear.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    # ------------------------------------------------------------------ forward pieces
    # The forward is split into embed / blocks / unpatchify so that sequence-parallel
    # inference can shard the token sequence between them.

    def embed(
        self,
        hidden_states: torch.Tensor,  # (B, F, C, H, W)
        encoder_hidden_states: torch.Tensor,  # (B, L, text_embed_dim)
        timestep: torch.Tensor | float | int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = hidden_states.shape[0]
        if encoder_hidden_states.shape[1] != self.config.max_text_seq_length:
            raise ValueError(
                f"text length {encoder_hidden_states.shape[1]} must equal max_text_seq_length="
                f"{self.config.max_text_seq_length}; pad or truncate the prompt embeddings to it"
            )
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=hidden_states.device)
        timestep = timestep.reshape(-1).expand(batch)

        t_emb = self.time_proj(timestep).to(dtype=hidden_states.dtype)  # (B, D)
        temb = self.time_embedding(t_emb)  # (B, time_embed_dim)

        tokens = self.patch_embed(encoder_hidden_states, hidden_states)  # (B, L + N, D)
        tokens = self.embedding_dropout(tokens)
        text_len = encoder_hidden_states.shape[1]
        return tokens[:, text_len:], tokens[:, :text_len], temb

    def run_blocks(
        self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, temb
                )
            else:
                hidden_states, encoder_hidden_states = block(hidden_states, encoder_hidden_states, temb)
        return hidden_states, encoder_hidden_states

    def head(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Final norm, AdaLN and projection to patch pixels: (B, N, D) -> (B, N, p*p*C)."""
        hidden_states = self.norm_final(hidden_states)
        hidden_states = self.norm_out(hidden_states, temb=temb)
        return self.proj_out(hidden_states)

    def unpatchify(self, patches: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """(B, F*(H/p)*(W/p), p*p*C) -> (B, F, C, H, W)."""
        p = self.config.patch_size
        batch = patches.shape[0]
        x = patches.reshape(batch, num_frames, height // p, width // p, -1, p, p)
        return x.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, F, C, H, W)
        encoder_hidden_states: torch.Tensor,  # (B, L, text_embed_dim)
        timestep: torch.Tensor | float | int,  # (B,) or scalar
        timestep_cond: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ):
        _, num_frames, _, height, width = hidden_states.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"latent height/width {height}x{width} must be divisible by the patch size {p}")

        vision, text, temb = self.embed(hidden_states, encoder_hidden_states, timestep)
        vision, text = self.run_blocks(vision, text, temb)
        patches = self.head(vision, temb)  # (B, N, p*p*C)
        output = self.unpatchify(patches, num_frames, height, width)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    # ------------------------------------------------------------------ conveniences

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def num_vision_tokens(self, latent_frames: int, latent_height: int, latent_width: int) -> int:
        p = self.config.patch_size
        return latent_frames * (latent_height // p) * (latent_width // p)


# ---------------------------------------------------------------------------------------
# Size presets. `kumo-2.6b` is the published KumoVideo model: 30 layers, 30 heads x 64,
# T5-XXL (4096-d) text, trained at 480x720 and 41 frames (latent 60x90x11).
# ---------------------------------------------------------------------------------------

MADIT_PRESETS: dict[str, dict[str, Any]] = {
    "kumo-2.6b": dict(
        num_attention_heads=30,
        attention_head_dim=64,
        num_layers=30,
        in_channels=16,
        out_channels=16,
        time_embed_dim=512,
        text_embed_dim=4096,
        max_text_seq_length=226,
        sample_height=60,
        sample_width=90,
        sample_frames=41,
    ),
    # The built-in ShapesWorld model (see kumovideo/builtin).
    "kumo-builtin": dict(
        num_attention_heads=4,
        attention_head_dim=32,
        num_layers=6,
        in_channels=8,
        out_channels=8,
        time_embed_dim=128,
        text_embed_dim=128,
        max_text_seq_length=24,
        sample_height=8,
        sample_width=8,
        sample_frames=17,
    ),
    # Tiny: unit tests.
    "kumo-tiny": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=24,
        max_text_seq_length=16,
        sample_height=6,
        sample_width=8,
        sample_frames=9,
    ),
}


def madit_from_preset(name: str, **overrides: Any) -> KumoTransformer3DModel:
    """Build a MADiT of a named size with random weights. Under `torch.device("meta")` it
    allocates nothing, for counting parameters and FLOPs of the full-size model."""
    if name not in MADIT_PRESETS:
        raise ValueError(f"unknown MADiT preset {name!r}; choose one of {sorted(MADIT_PRESETS)}")
    return KumoTransformer3DModel(**{**MADIT_PRESETS[name], **overrides})


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
