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
#
# Two of Lumina-Video's ideas are optional config keys (off in original checkpoints, whose
# parameters and outputs stay exactly as they were):
#   * multi-scale patching (`multiscale_patch_sizes`): coarser spatial patch sizes, each with
#     its own patch embedding and output head on the shared trunk; a coarse scale has
#     (k/p)^2 times fewer vision tokens, and sampling runs it on the first, noisiest steps;
#   * motion conditioning (`motion_conditioning`): the clip's motion score, embedded like a
#     timestep and added to the timestep embedding (Lumina-Video's motion score, SVD's
#     motion bucket id).
#
# One more optional key is this project's own, `text_positions`: a position table on the text
# tokens. Without it the blocks see the text tokens as a set (only the vision tokens carry
# positions), so a text encoder that does not bind words to their neighbours (the built-in
# model's 2-layer T5 does not: docs/builtin-model.md) leaves "a red triangle and a green
# circle" and "a red circle and a green triangle" indistinguishable.

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import (
    CogVideoXPatchEmbed,
    TimestepEmbedding,
    Timesteps,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed_from_grid,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNorm, CogVideoXLayerNormZero
from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

from kumovideo.geometry import ClipGeometry
from kumovideo.models.attention import (
    MADiTAttention,
    MADiTAttnProcessor,
    fuse_projections,
    keep_original_checkpoint_names,
    unfuse_projections,
)
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_int


def condition_channels(latent_channels: int) -> int:
    """Channels of the frame condition per latent frame: an "end" and a "mid" image latent
    (C each) and their two masks (kumovideo.pipelines.conditioning)."""
    return 2 * latent_channels + 2


def check_multiscale_patch_sizes(patch_size: int, sizes: list[int] | None) -> list[int]:
    """The coarse patch sizes of a config: whole multiples of the native `patch_size`,
    larger than it, each once. ValueError otherwise (a config mistake, not a user input)."""
    sizes = list(sizes or [])
    for k in sizes:
        if not is_int(k) or k <= patch_size or k % patch_size:
            raise ValueError(
                f"multiscale_patch_sizes={sizes}: each must be a whole multiple of patch_size={patch_size} "
                f"larger than it (e.g. [{2 * patch_size}])"
            )
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"multiscale_patch_sizes={sizes} names a size twice; give each once")
    return sizes


@functools.lru_cache(maxsize=32)  # one per grid a sampling loop meets; callers never write into it
def multiscale_sincos_table(
    embed_dim: int,
    frames: int,
    rows: int,
    cols: int,
    ratio: int,
    spatial_interpolation_scale: float,
    temporal_interpolation_scale: float,
    device: torch.device | None = None,
    offset: tuple[int, int] = (0, 0),
    stretch: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """The fixed 3D sine-cosine positions (frames * rows * cols, D) of a grid of coarse
    tokens, each covering ratio x ratio native patches, frame by frame, row by row.

    The layout is that of diffusers' `get_3d_sincos_pos_embed` (which `CogVideoXPatchEmbed`
    adds to the native tokens): D/4 channels for the latent frame, 3D/4 for the position in
    the frame (half for the column, half for the row). Positions are counted in *native*
    patches, so the trunk sees one coordinate system at every scale: coarse token i sits at
    the centre of the native patches it covers, i * ratio + (ratio - 1) / 2. With ratio 1
    this is the native table exactly. `offset` (rows, columns), in native patches, moves the
    grid's first token from (0, 0) there (training's position shift); `stretch` (rows,
    columns) multiplies the positions (below 1: a side interpolated into fewer positions,
    `position_grid`)."""
    centre = (ratio - 1) / 2
    row_offset, col_offset = offset
    row_stretch, col_stretch = stretch
    cols_at = torch.arange(cols, device=device, dtype=torch.float32) * ratio + centre + col_offset  # native columns
    rows_at = torch.arange(rows, device=device, dtype=torch.float32) * ratio + centre + row_offset
    cols_at, rows_at = cols_at * col_stretch, rows_at * row_stretch
    grid = torch.stack(torch.meshgrid(cols_at, rows_at, indexing="xy"))  # (2, rows, cols): column, row
    grid = grid / spatial_interpolation_scale
    # (rows*cols, 3D/4): the column's channels, then the row's
    spatial = get_2d_sincos_pos_embed_from_grid(3 * embed_dim // 4, grid.reshape(2, 1, rows, cols))
    t = torch.arange(frames, device=device, dtype=torch.float32) / temporal_interpolation_scale
    temporal = get_1d_sincos_pos_embed_from_grid(embed_dim // 4, t)  # (frames, D/4)
    table = torch.cat(
        [
            temporal[:, None, :].expand(frames, rows * cols, -1),
            spatial[None, :, :].expand(frames, rows * cols, -1),
        ],
        dim=-1,
    )  # (frames, rows*cols, D)
    return table.flatten(0, 1)


def check_position_grid(position_grid, stretch_conditioning) -> None:
    """The rule for `position_grid` and `stretch_conditioning` (the constructor's, and a training
    config's before any work): a grid is a positive whole number of patches; a stretch needs one."""
    if position_grid is not None and not (isinstance(position_grid, int) and position_grid > 0):
        raise ValueError(f"position_grid={position_grid!r} must be a positive whole number of patches (e.g. 8)")
    if stretch_conditioning and position_grid is None:
        raise ValueError("stretch_conditioning needs a position_grid (the stretch it embeds)")


def text_position_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim): the 1D sine-cosine positions of the text tokens (diffusers' helper,
    as the vision tokens' temporal part), the start of a `text_positions` model's table."""
    positions = torch.arange(length, dtype=torch.float32)
    return get_1d_sincos_pos_embed_from_grid(dim, positions)[None].float()  # (the helper gives float64)


def cross_attention(dim: int, heads: int, head_dim: int, bias: bool) -> MADiTAttention:
    """Queries from one stream, keys and values from the other (no q/k norm)."""
    return MADiTAttention(
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
        self.attn1 = MADiTAttention(
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


@contextlib.contextmanager
def lora_scaled(model: nn.Module, scale: float):
    """peft's LoRA layers in `model` scaled by `scale` for one call (diffusers' `scale` in
    attention_kwargs), restored after it whatever happens."""
    if not USE_PEFT_BACKEND or scale == 1.0:
        yield
        return
    scale_lora_layers(model, scale)
    try:
        yield
    finally:
        unscale_lora_layers(model, scale)


class KumoTransformer3DModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    """MADiT denoiser. Input latents (B, F, C, H, W), text states (B, L, text_embed_dim),
    timesteps (B,); output has the shape of the input latents (v-prediction).

    The config keys match the original `transformer/config.json`. Attention processors are
    swapped with `set_attn_processor` (AttentionMixin); `fuse_qkv_projections` switches the
    attentions to the fused layout of `kumovideo.models.attention`. LoRA adapters come through
    peft (PeftAdapterMixin: `add_adapter`, `load_lora_adapter`); `attention_kwargs={"scale": s}`
    scales them for one call, as diffusers' transformers do.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["MADiTBlock", "CogVideoXPatchEmbed"]
    _skip_layerwise_casting_patterns = ["patch_embed", "scale_embeds", "norm"]

    # A few settings a line, in the original config.json's order (its names and defaults).
    # fmt: off
    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 30, attention_head_dim: int = 64,  # width D = heads x head_dim
        in_channels: int = 16, out_channels: int | None = 16,  # the VAE's latent channels
        flip_sin_to_cos: bool = True, freq_shift: int = 0, time_embed_dim: int = 512,  # timestep sinusoid -> MLP
        text_embed_dim: int = 4096, num_layers: int = 30, dropout: float = 0.0, attention_bias: bool = True,
        # The clip it was trained on (latent sides, pixel frames), which sizes the sine-cosine table.
        sample_width: int = 90, sample_height: int = 60, sample_frames: int = 41,
        patch_size: int = 2, temporal_compression_ratio: int = 4, max_text_seq_length: int = 226,  # text window
        activation_fn: str = "gelu-approximate", timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True, norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875, temporal_interpolation_scale: float = 1.0,
        # Conditioning frames (image-to-video, interpolation; kumovideo.pipelines.conditioning): the patch
        # embedding also takes a (2C + 2)-channel condition per latent frame. Original checkpoints lack it.
        frame_conditioning: bool = False,
        # Lumina-Video: coarser spatial patch sizes beside patch_size (multiples of it, e.g. [4]), each with
        # its own patch embedding and head; and a motion score added to the timestep embedding.
        multiscale_patch_sizes: list[int] | None = None, motion_conditioning: bool = False,
        # A learned position table (max_text_seq_length, D) added to the projected text tokens,
        # initialised to a 1D sine-cosine table times text_position_scale. Original checkpoints lack it.
        text_positions: bool = False, text_position_scale: float = 1.0,
        # Native patches a side the positions stay within: a longer side's positions are interpolated
        # into it (Position Interpolation, Chen et al. 2023, per spatial axis), so a frame wider than the
        # grid the model was trained on reuses trained positions. None (original checkpoints): extrapolated.
        position_grid: int | None = None,
        # With position_grid: the (rows, columns) stretch of the positions, embedded like a timestep
        # and added to the timestep embedding, so the blocks know how densely each side is packed.
        stretch_conditioning: bool = False,
    ):
        # fmt: on
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        # in_channels stays the latent's C (what the VAE makes, what geometry and samplers read);
        # only the patch embedding is wider: [noisy latent C, condition 2C + 2] on channels.
        embed_channels = in_channels + (condition_channels(in_channels) if frame_conditioning else 0)
        coarse_sizes = check_multiscale_patch_sizes(patch_size, multiscale_patch_sizes)

        # Patchify (2x2 strided conv per frame) + text projection + fixed 3D sine-cosine
        # table on the vision tokens; the text length must equal max_text_seq_length.
        self.patch_embed = CogVideoXPatchEmbed(
            patch_size=patch_size,
            in_channels=embed_channels,
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

        # Coarse scales: a k x k strided conv per frame (same input channels as patch_embed.proj);
        # the text projection and the sine-cosine positions (multiscale_sincos_table) are shared.
        # Empty lists without multiscale_patch_sizes: no parameters, original state dicts.
        self.scale_embeds = nn.ModuleList(
            [nn.Conv2d(embed_channels, inner_dim, kernel_size=k, stride=k, bias=True) for k in coarse_sizes]
        )

        # Position grid: no parameters, a factor on the positions of longer sides (position_stretch).
        check_position_grid(position_grid, stretch_conditioning)

        # Text positions: (1, L, D), added to the text tokens after the projection.
        if not (isinstance(text_position_scale, (int, float)) and 0 < text_position_scale < math.inf):
            raise ValueError(f"text_position_scale={text_position_scale!r} must be a positive number (e.g. 1.0)")
        if text_positions:
            self.text_pos_embed = nn.Parameter(torch.zeros(1, max_text_seq_length, inner_dim))

        if stretch_conditioning:  # both sides' 1000 (1 - stretch) as sinusoids, side by side -> 2-layer MLP
            self.stretch_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
            self.stretch_embedding = TimestepEmbedding(2 * inner_dim, time_embed_dim, timestep_activation_fn)

        # Motion score: sinusoid -> 2-layer MLP, as the timestep; added to its embedding.
        if motion_conditioning:
            self.motion_proj = Timesteps(inner_dim, flip_sin_to_cos, freq_shift)
            self.motion_embedding = TimestepEmbedding(inner_dim, time_embed_dim, timestep_activation_fn)

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
        # One head per coarse scale, after the shared norm_final / norm_out: (B, N, D) -> (B, N, k*k*C).
        self.scale_heads = nn.ModuleList([nn.Linear(inner_dim, k * k * out_channels) for k in coarse_sizes])

        self.gradient_checkpointing = False
        self.initialize_weights()
        # Fused or not, state dicts use the original names (to_q/to_k/to_v).
        for attn in self.attention_modules():
            keep_original_checkpoint_names(attn)

    def initialize_weights(self) -> None:
        """DiT-style init: Xavier linears, zeroed AdaLN modulation and output projections, so
        a fresh model starts as the identity on each residual stream and predicts zeros at
        every scale; the motion embedding's last layer is zero, so the score changes nothing
        until training moves it."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        for conv in [self.patch_embed.proj, *self.scale_embeds]:  # as a linear over the flattened patch
            w = conv.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.time_embedding.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embedding.linear_2.weight, std=0.02)
        for block in self.transformer_blocks:
            for norm in (block.norm1, block.norm2):
                nn.init.zeros_(norm.linear.weight)
                nn.init.zeros_(norm.linear.bias)
        nn.init.zeros_(self.norm_out.linear.weight)
        nn.init.zeros_(self.norm_out.linear.bias)
        for head in [self.proj_out, *self.scale_heads]:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        if self.config.text_positions:
            _, length, width = self.text_pos_embed.shape
            with torch.no_grad():
                self.text_pos_embed.copy_(text_position_table(length, width) * self.config.text_position_scale)
        if self.config.motion_conditioning:  # (registered before __init__ runs)
            nn.init.normal_(self.motion_embedding.linear_1.weight, std=0.02)
            nn.init.zeros_(self.motion_embedding.linear_2.weight)
            nn.init.zeros_(self.motion_embedding.linear_2.bias)
        if self.config.get("stretch_conditioning"):  # zero last layer: starts as the model without it
            nn.init.normal_(self.stretch_embedding.linear_1.weight, std=0.02)
            nn.init.zeros_(self.stretch_embedding.linear_2.weight)
            nn.init.zeros_(self.stretch_embedding.linear_2.bias)

    def attention_modules(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]

    def fuse_qkv_projections(self) -> int:
        """One matmul for q, k, v of each joint self-attention and for k, v of each
        cross-attention, where the weights allow (plain Linears: before FP8 quantisation);
        returns how many attentions were fused. Same numbers up to summation order."""
        return sum(fuse_projections(attn) for attn in self.attention_modules())

    def unfuse_qkv_projections(self) -> int:
        """Separate to_q/to_k/to_v again; returns how many attentions were unfused."""
        return sum(unfuse_projections(attn) for attn in self.attention_modules())

    # ------------------------------------------------------------------ forward pieces
    # The forward is split into embed / blocks / head / unpatchify so that sequence-parallel
    # inference can shard the token sequence between them. `patch_size` picks the scale
    # (None or the config's patch_size: the native one); embed, head and unpatchify of one
    # call must be given the same.

    def embed(
        self,
        hidden_states: torch.Tensor,  # (B, F, C, H, W)
        encoder_hidden_states: torch.Tensor,  # (B, L, text_embed_dim)
        timestep: torch.Tensor | float | int,
        condition: torch.Tensor | None = None,  # (B, F, 2C + 2, H, W), frame_conditioning models only
        patch_size: int | None = None,  # a coarse scale of multiscale_patch_sizes, or None: native
        motion_score: torch.Tensor | float | None = None,  # (B,) or one number; motion_conditioning models only
        position_offset: tuple[int, int] | None = None,  # (rows, cols) in native patches; training only
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = hidden_states.shape[0]
        scale = self.scale_index(patch_size)
        hidden_states = self.with_condition(hidden_states, condition)
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
        if motion_score is not None:
            temb = temb + self.embed_motion(motion_score, batch, hidden_states)  # (B, time_embed_dim)

        text_len = encoder_hidden_states.shape[1]
        stretch = self.position_stretch(hidden_states.shape[-2], hidden_states.shape[-1])
        if self.config.get("stretch_conditioning"):
            packed = torch.tensor([1000 * (1 - v) for v in stretch], device=hidden_states.device)  # (2,)
            s_emb = self.stretch_proj(packed).to(dtype=hidden_states.dtype).reshape(1, -1)  # (1, 2D)
            temb = temb + self.stretch_embedding(s_emb)  # one frame size per call: the same for every row
        if scale is None and not any(position_offset or ()) and stretch == (1.0, 1.0):
            tokens = self.patch_embed(encoder_hidden_states, hidden_states)  # (B, L + N, D): diffusers' table
        else:
            tokens = self.embed_on_grid(encoder_hidden_states, hidden_states, scale, position_offset or (0, 0))
        tokens = self.embedding_dropout(tokens)
        text = tokens[:, :text_len]
        if self.config.text_positions:
            text = text + self.text_pos_embed.to(dtype=text.dtype)
        return tokens[:, text_len:], text, temb

    def position_stretch(self, height: int, width: int) -> tuple[float, float]:
        """(rows, columns) factors on the positions of a latent of `height` x `width`: with
        `position_grid` g, a side of n > g native patches is interpolated into g (g / n); else 1."""
        grid, p = self.config.get("position_grid"), self.config.patch_size
        if grid is None:
            return (1.0, 1.0)
        return tuple(grid / n if n > grid else 1.0 for n in (height // p, width // p))

    def embed_on_grid(
        self,
        encoder_hidden_states: torch.Tensor,  # (B, L, text_embed_dim)
        hidden_states: torch.Tensor,  # (B, F, C_embed, H, W): the patch embedding's input
        scale: int | None,  # index into multiscale_patch_sizes; None: the native patch size
        offset: tuple[int, int] = (0, 0),  # the grid's first token, (rows, cols) in native patches
    ) -> torch.Tensor:
        """[text, vision] tokens at patch size k (a coarse scale, or the native one with a
        position shift): the shared text projection, the scale's k x k conv per frame and the
        sine-cosine table of the grid (positions in native patches, `multiscale_sincos_table`;
        at the native size and no offset, the table `patch_embed` adds). (B, L + F*(H/k)*(W/k), D)."""
        c = self.config
        k = c.patch_size if scale is None else c.multiscale_patch_sizes[scale]
        conv = self.patch_embed.proj if scale is None else self.scale_embeds[scale]
        b, f, channels, h, w = hidden_states.shape
        text = self.patch_embed.text_proj(encoder_hidden_states)  # (B, L, D)
        vision = conv(hidden_states.reshape(b * f, channels, h, w))  # (B*F, D, H/k, W/k)
        vision = vision.flatten(2).transpose(1, 2).reshape(b, -1, vision.shape[1])  # (B, F*(H/k)*(W/k), D)
        table = multiscale_sincos_table(
            vision.shape[-1],
            f,
            h // k,
            w // k,
            k // c.patch_size,
            c.spatial_interpolation_scale,
            c.temporal_interpolation_scale,
            device=vision.device,
            offset=offset,
            stretch=self.position_stretch(h, w),
        )  # (F*(H/k)*(W/k), D)
        vision = vision + table.to(dtype=vision.dtype)
        return torch.cat([text, vision], dim=1).contiguous()

    def embed_motion(self, motion_score: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The motion score's embedding (B, time_embed_dim). The score is the data pipeline's
        dynamic score (kumovideo.data.pipeline.motion: percent of the frame width moved per
        second, about 0 for a still shot, 20 for a pan across the frame in 5 s), fed to the
        sinusoid as it is, like a timestep (whose range, 0-999, it lies well inside)."""
        if not self.config.motion_conditioning:
            raise KumoInputError(
                "this transformer was not trained with a motion score (no motion_conditioning in its config); "
                "pass no motion_score, or use a model trained with one"
            )
        score = torch.as_tensor(motion_score, dtype=torch.float32, device=like.device).reshape(-1)
        if score.numel() == 1:
            score = score.expand(batch)
        if score.shape != (batch,):
            raise KumoInputError(
                f"motion_score has {score.numel()} values for a batch of {batch}; pass one number or one per clip"
            )
        s_emb = self.motion_proj(score).to(dtype=like.dtype)  # (B, D)
        return self.motion_embedding(s_emb)  # (B, time_embed_dim)

    def with_condition(self, hidden_states: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """The patch embedding's input: the latents, with the frame condition concatenated on
        channels for a frame_conditioning model (zeros when None: plain text-to-video)."""
        if not self.config.frame_conditioning:
            if condition is not None:
                raise KumoInputError(
                    "this transformer was not trained with conditioning frames (no frame_conditioning in its config); "
                    "use a model fine-tuned for image-to-video / interpolation, or pass no condition"
                )
            return hidden_states
        b, f, c, h, w = hidden_states.shape
        expected = (b, f, condition_channels(c), h, w)
        if condition is None:
            condition = hidden_states.new_zeros(expected)
        if tuple(condition.shape) != expected:
            raise KumoInputError(f"condition has shape {tuple(condition.shape)}, expected {expected}")
        return torch.cat([hidden_states, condition.to(hidden_states.dtype)], dim=2)  # (B, F, 3C + 2, H, W)

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

    def head(self, hidden_states: torch.Tensor, temb: torch.Tensor, patch_size: int | None = None) -> torch.Tensor:
        """Final norm, AdaLN and projection to patch pixels: (B, N, D) -> (B, N, k*k*C), with
        the projection of scale k (the native proj_out for None)."""
        scale = self.scale_index(patch_size)
        hidden_states = self.norm_final(hidden_states)
        hidden_states = self.norm_out(hidden_states, temb=temb)
        return self.proj_out(hidden_states) if scale is None else self.scale_heads[scale](hidden_states)

    def unpatchify(
        self, patches: torch.Tensor, num_frames: int, height: int, width: int, patch_size: int | None = None
    ) -> torch.Tensor:
        """(B, F*(H/k)*(W/k), k*k*C) -> (B, F, C, H, W), k the patch size (None: the native one)."""
        p = patch_size or self.config.patch_size
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
        condition: torch.Tensor | None = None,  # (B, F, 2C + 2, H, W): conditioning frames, or None
        patch_size: int | None = None,  # a size of multiscale_patch_sizes, or None: the native scale
        motion_score: torch.Tensor | float | None = None,  # (B,) or one number; None: unconditioned
        position_offset: tuple[int, int] | None = None,  # training's position shift: (rows, cols) native patches
    ):
        # Named as in diffusers' CogVideoX so its pipelines can call MADiT; MADiT has neither.
        if timestep_cond is not None:
            raise KumoInputError("MADiT takes no timestep_cond (no guidance embedding); pass None")
        attention_kwargs = dict(attention_kwargs or {})
        lora_scale = attention_kwargs.pop("scale", 1.0)
        if attention_kwargs:
            raise KumoInputError(
                f"MADiT takes only a LoRA 'scale' in attention_kwargs, not {', '.join(sorted(attention_kwargs))}"
            )
        _, num_frames, _, height, width = hidden_states.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"latent height/width {height}x{width} must be divisible by the patch size {p}")
        if self.scale_index(patch_size) is not None and (height % patch_size or width % patch_size):
            raise KumoInputError(
                f"latent height/width {height}x{width} do not divide by the patch size {patch_size}; "
                f"use a clip whose latent sides are multiples of {patch_size}, or the native patch size {p}"
            )

        with lora_scaled(self, lora_scale):
            vision, text, temb = self.embed(
                hidden_states, encoder_hidden_states, timestep, condition, patch_size, motion_score, position_offset
            )
            vision, text = self.run_blocks(vision, text, temb)
            patches = self.head(vision, temb, patch_size)  # (B, N, k*k*C)
        output = self.unpatchify(patches, num_frames, height, width, patch_size)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    # ------------------------------------------------------------------ conveniences

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def patch_sizes(self) -> list[int]:
        """Every scale this model runs: the native patch size, then multiscale_patch_sizes."""
        return [self.config.patch_size, *(self.config.multiscale_patch_sizes or [])]

    def scale_index(self, patch_size: int | None) -> int | None:
        """Where a coarse patch size's modules sit in scale_embeds / scale_heads; None for the
        native scale (patch_size None or the config's). A size this model lacks: one line."""
        if patch_size is None or (is_int(patch_size) and patch_size == self.config.patch_size):
            return None
        coarse = list(self.config.multiscale_patch_sizes or [])
        if not is_int(patch_size) or patch_size not in coarse:
            raise KumoInputError(
                f"patch_size={patch_size!r}, but this transformer has the patch sizes {self.patch_sizes}; "
                "pass one of them (None: the native one)"
            )
        return coarse.index(patch_size)

    def num_vision_tokens(
        self, latent_frames: int, latent_height: int, latent_width: int, patch_size: int | None = None
    ) -> int:
        patch = patch_size or self.config.patch_size
        return ClipGeometry(patch=patch).latent_tokens(latent_frames, latent_height, latent_width)


# ---------------------------------------------------------------------------------------
# Size presets. `kumo-2.6b` is the published KumoVideo model: 30 layers, 30 heads x 64,
# T5-XXL (4096-d) text, trained at 480x720 and 41 frames (latent 60x90x11).
# ---------------------------------------------------------------------------------------

# fmt: off
_PRESET_KEYS = ("num_attention_heads", "attention_head_dim", "num_layers", "in_channels", "out_channels",
                "time_embed_dim", "text_embed_dim", "max_text_seq_length", "sample_height", "sample_width",
                "sample_frames")
_PRESET_TABLE = {
    #               heads  hd  layers  in  out  temb  text  L    h   w   frames
    "kumo-2.6b":    (30,   64, 30,     16, 16,  512,  4096, 226, 60, 90, 41),
    "kumo-builtin": (4,    32, 6,      8,  8,   128,  128,  24,  8,  8,  17),  # the built-in ShapesWorld model
    "kumo-tiny":    (2,    16, 2,      4,  4,   32,   24,   16,  6,  8,  9),   # unit tests
}
# fmt: on
MADIT_PRESETS: dict[str, dict[str, Any]] = {name: dict(zip(_PRESET_KEYS, row)) for name, row in _PRESET_TABLE.items()}


def madit_from_preset(name: str, **overrides: Any) -> KumoTransformer3DModel:
    """Build a MADiT of a named size with random weights. Under `torch.device("meta")` it
    allocates nothing, for counting parameters and FLOPs of the full-size model."""
    if name not in MADIT_PRESETS:
        raise ValueError(f"unknown MADiT preset {name!r}; choose one of {sorted(MADIT_PRESETS)}")
    return KumoTransformer3DModel(**{**MADIT_PRESETS[name], **overrides})


@torch.no_grad()
def _rebuilt_with(model: KumoTransformer3DModel, **changes: Any) -> KumoTransformer3DModel:
    """A freshly initialised MADiT of `model`'s config with `changes` over it (the expand_for_*
    functions then load `model`'s weights into it)."""
    settings = {k: v for k, v in model.config.items() if not k.startswith("_")}
    return KumoTransformer3DModel(**{**settings, **changes})


def _placed_like(expanded: KumoTransformer3DModel, ref: torch.Tensor) -> KumoTransformer3DModel:
    """`expanded` (built in float32) on `ref`'s device and, unless float32, in its dtype."""
    return expanded.to(ref.device) if ref.dtype == torch.float32 else expanded.to(ref.device, ref.dtype)


def expand_for_frame_conditioning(model: KumoTransformer3DModel) -> KumoTransformer3DModel:
    """A frame_conditioning copy of a text-to-video MADiT: the same weights, the patch
    embedding widened with zero weights for the condition's channels, so it starts out
    predicting exactly what the T2V model does (CogVideoX-I2V's fine-tuning start)."""
    if model.config.frame_conditioning:
        return model
    expanded = _rebuilt_with(model, frame_conditioning=True)
    state = model.state_dict()
    old = state["patch_embed.proj.weight"]  # (D, C, p, p)
    weight = old.new_zeros(expanded.patch_embed.proj.weight.shape)  # (D, 3C + 2, p, p)
    weight[:, : old.shape[1]] = old
    state["patch_embed.proj.weight"] = weight
    expanded.load_state_dict(state)
    return _placed_like(expanded, old)


@torch.no_grad()
def expand_for_multiscale(
    model: KumoTransformer3DModel, patch_sizes: list[int] | None = None, motion_conditioning: bool = False
) -> KumoTransformer3DModel:
    """A copy of a trained MADiT with Lumina-Video's modules added (Lumina-Video fine-tunes a
    single-scale model this way), initialised so that it starts out as the model it came from:

    * coarse scale k = r p: its conv is the native one tiled over the r x r native patches it
      covers and divided by r^2, so a coarse token is the mean of the native patch
      embeddings under it; its head is the native head repeated for each of the r x r
      sub-patches, so each sub-patch gets the p x p pattern the native head would give the
      coarse token (a blocky prediction);
    * motion embedding: last layer zero, so a score changes nothing yet.

    Native outputs are those of `model` exactly. Scales and motion conditioning the model
    already has keep their weights; frame_conditioning and every other setting carry over.
    Returns `model` itself when nothing is added."""
    config = model.config
    p = config.patch_size
    had = list(config.get("multiscale_patch_sizes") or [])
    scales = had + [k for k in check_multiscale_patch_sizes(p, patch_sizes) if k not in had]
    motion = bool(config.get("motion_conditioning")) or bool(motion_conditioning)
    if scales == had and motion == bool(config.get("motion_conditioning")):
        return model
    expanded = _rebuilt_with(model, multiscale_patch_sizes=scales or None, motion_conditioning=motion)
    state = expanded.state_dict()  # fresh modules (motion embedding: last layer zero) ...
    old = model.state_dict()
    state.update(old)  # ... and every trained weight the model has, its own coarse scales included
    embed_w = old["patch_embed.proj.weight"].float()  # (D, C_in, p, p)
    head_w = old["proj_out.weight"].float()  # (p*p*C, D): rows ordered (C, p, p), as unpatchify reads them
    head_b = old["proj_out.bias"].float()  # (p*p*C,)
    channels = head_w.shape[0] // (p * p)
    for i, k in enumerate(scales[len(had) :], start=len(had)):
        r = k // p
        state[f"scale_embeds.{i}.weight"] = embed_w.repeat(1, 1, r, r) / r**2  # (D, C_in, k, k)
        state[f"scale_embeds.{i}.bias"] = old["patch_embed.proj.bias"].float().clone()
        tiled = head_w.reshape(channels, p, p, -1).repeat(1, r, r, 1)  # (C, k, k, D): pixel (u, v) <- (u % p, v % p)
        state[f"scale_heads.{i}.weight"] = tiled.reshape(channels * k * k, -1)
        state[f"scale_heads.{i}.bias"] = head_b.reshape(channels, p, p).repeat(1, r, r).reshape(-1)
    expanded.load_state_dict(state)
    return _placed_like(expanded, old["patch_embed.proj.weight"])


def expand_for_text_positions(model: KumoTransformer3DModel, scale: float | None = None) -> KumoTransformer3DModel:
    """A copy of a trained MADiT with a text position table (`text_positions`) added, every
    trained weight kept; the table starts as the sine-cosine one times `scale` (None: the
    constructor's `text_position_scale`), so the copy's
    outputs move by that much until fine-tuning teaches the blocks to read it. Returns `model`
    itself when it has the table already."""
    if model.config.get("text_positions"):
        return model
    amplitude = {} if scale is None else {"text_position_scale": scale}
    expanded = _rebuilt_with(model, text_positions=True, **amplitude)
    state = expanded.state_dict()
    state.update(model.state_dict())
    expanded.load_state_dict(state)
    return _placed_like(expanded, model.patch_embed.proj.weight)


def with_position_grid(
    model: KumoTransformer3DModel, grid: int, stretch_conditioning: bool = False
) -> KumoTransformer3DModel:
    """A copy of a trained MADiT whose positions stay within `grid` native patches a side
    (`position_grid`): the same weights (the key adds none), the same outputs at sizes within
    the grid; longer sides read interpolated positions, which fine-tuning teaches. With
    `stretch_conditioning` it also gains the stretch embedding, its last layer zero, so the
    copy's outputs are still the grid's alone until training moves it. Returns `model`
    itself when it has both already."""
    stretch = bool(stretch_conditioning) or bool(model.config.get("stretch_conditioning"))
    if model.config.get("position_grid") == grid and stretch == bool(model.config.get("stretch_conditioning")):
        return model
    rebuilt = _rebuilt_with(model, position_grid=grid, stretch_conditioning=stretch)
    state = rebuilt.state_dict()  # a new stretch embedding starts with its last layer zero
    state.update(model.state_dict())
    rebuilt.load_state_dict(state)
    return _placed_like(rebuilt, model.patch_embed.proj.weight)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
