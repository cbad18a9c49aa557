"""Building a complete KumoVideo pipeline from size presets, with fresh weights.

Used to start training from scratch, to build the small random-weight checkpoint that
stands in when no trained model is installed, and by tests. The full-size model's text
encoder is T5-XXL (loaded from a checkpoint, never built here); small presets use a small
T5 encoder with the byte-level ByT5 tokenizer, which needs no vocabulary file.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

from kumovideo.models.cpu_conv import route_conv3d_to_onednn
from kumovideo.models.transformer_kumo import MADIT_PRESETS, KumoTransformer3DModel
from kumovideo.schedulers import KumoDDIMScheduler

# The VAE presets' settings, a row each in this order. All are 8x spatial (3 downsamples)
# and 4x temporal (the first two blocks compress time).
_VAE_KEYS = "block_out_channels latent_channels layers_per_block norm_num_groups sample_height sample_width".split()
VAE_PRESETS: dict[str, dict[str, Any]] = {
    name: dict(zip(_VAE_KEYS, row))
    for name, row in {
        "kumo-builtin": ((16, 32, 64, 64), 8, 1, 8, 64, 64),
        "kumo-tiny": ((8, 8, 16, 16), 4, 1, 4, 48, 64),
    }.items()
}

TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "kumo-builtin": dict(d_model=128, d_kv=32, num_heads=4, d_ff=256, num_layers=2),
    "kumo-tiny": dict(d_model=24, d_kv=8, num_heads=3, d_ff=32, num_layers=2),
}


def build_vae(preset: str = "kumo-builtin", **overrides: Any) -> AutoencoderKLCogVideoX:
    cfg = {**VAE_PRESETS[preset], **overrides}
    blocks = len(cfg["block_out_channels"])
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * blocks,
        up_block_types=("CogVideoXUpBlock3D",) * blocks,
        temporal_compression_ratio=4,
        **cfg,
    )
    route_conv3d_to_onednn(vae)  # inference calls on the CPU; training keeps PyTorch's kernels
    return vae


def build_text_encoder(preset: str = "kumo-builtin", **overrides: Any) -> tuple[ByT5Tokenizer, T5EncoderModel]:
    """A small T5 encoder and the byte-level ByT5 tokenizer (pass `vocab_size` to size the
    embedding for another tokenizer; its ids must keep T5's pad 0 / eos 1)."""
    tokenizer = ByT5Tokenizer()
    settings = {"vocab_size": len(tokenizer), **TEXT_PRESETS[preset], **overrides}
    config = T5Config(
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        is_encoder_decoder=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **settings,
    )
    return tokenizer, T5EncoderModel(config)


def build_transformer(preset: str, text_encoder, vae, **overrides: Any) -> KumoTransformer3DModel:
    """A MADiT of the named size with fresh weights, fitted to a text encoder's width and a
    VAE's latent channels (`overrides` last: any config key)."""
    channels = vae.config.latent_channels
    fitted = {"text_embed_dim": text_encoder.config.d_model, "in_channels": channels, "out_channels": channels}
    return KumoTransformer3DModel(**{**MADIT_PRESETS[preset], **fitted, **overrides})


def build_pipeline(preset: str = "kumo-builtin", seed: int = 0):
    """A KumoPipeline of the named size with fresh (random) weights."""
    from kumovideo.pipelines.pipeline_kumo import KumoPipeline

    torch.manual_seed(seed)
    tokenizer, text_encoder = build_text_encoder(preset)
    vae = build_vae(preset)
    transformer = build_transformer(preset, text_encoder, vae)
    return KumoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=KumoDDIMScheduler()
    )
