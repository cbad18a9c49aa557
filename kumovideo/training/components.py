"""The models a DiT run trains: from a pipeline folder (fine-tuning), or fresh around a
trained VAE. `kumo train dit` and `kumo train export` build them alike, so an export
loads a checkpoint into the very modules the run trained."""

from __future__ import annotations

from pathlib import Path

import torch

from kumovideo.models.transformer_kumo import (
    expand_for_frame_conditioning,
    expand_for_multiscale,
    expand_for_text_positions,
    with_position_grid,
)
from kumovideo.pipelines.factory import build_text_encoder, build_transformer
from kumovideo.pipelines.loading import load_pipeline_components, load_vae
from kumovideo.schedulers import KumoDDIMScheduler
from kumovideo.training.config import TrainConfig
from kumovideo.training.text import shapes_caption_corpus, train_t5_tokenizer
from kumovideo.utils.errors import KumoInputError


def build_components(config: TrainConfig) -> dict:
    """Components to train from: a pipeline folder (`init_from`, fine-tuning; with
    `transformer: {frame_conditioning: true}` its MADiT widened for conditioning frames; with
    `multiscale_patch_sizes` / `motion_conditioning` given coarse scales / a motion embedding), or
    fresh text encoder + MADiT of `config.preset` around a trained VAE (`vae`)."""
    if config.init_from:  # in fp32 whatever the folder stores: shipped pipelines are fp16
        components = load_pipeline_components(config.init_from, torch_dtype=torch.float32)
        # What is added below starts from random weights (a LoRA's A, fresh coarse patch
        # embedders): seeded, so a run is the same run every time, as one from scratch is.
        torch.manual_seed(config.seed)
        if config.transformer.get("frame_conditioning"):  # a T2V start: zero weights for the condition
            components["transformer"] = expand_for_frame_conditioning(components["transformer"])
        scales, motion = (
            config.transformer.get("multiscale_patch_sizes"),
            config.transformer.get("motion_conditioning"),
        )
        if scales or motion:  # Lumina-Video's additions on a trained MADiT, starting out as it
            components["transformer"] = expand_for_multiscale(components["transformer"], scales, bool(motion))
        if config.transformer.get("text_positions"):  # a position table on the text tokens
            scale = config.transformer.get("text_position_scale")  # None: the model's default
            components["transformer"] = expand_for_text_positions(components["transformer"], scale)
        grid = config.transformer.get("position_grid")  # longer sides' positions interpolated into it
        stretch = bool(config.transformer.get("stretch_conditioning"))  # the packing told to the blocks
        if grid is not None or stretch:  # a bad value (0, no grid for the stretch) is refused, not skipped
            model = components["transformer"]
            grid = model.config.get("position_grid") if grid is None else grid  # the grid it has already
            components["transformer"] = with_position_grid(model, grid, stretch)
        if config.lora:  # the transformer frozen, a trainable adapter in it
            from kumovideo.training.lora import add_lora_adapter

            add_lora_adapter(components["transformer"], config.lora)
        return components
    if not config.vae:
        raise KumoInputError(
            "a DiT run from scratch needs a trained VAE: set `vae:` in the config (or init_from a pipeline folder)"
        )
    vae = load_vae(config.vae)
    tokenizer_dir = Path(config.output_dir) / "tokenizer"
    if (tokenizer_dir / "spiece.model").exists():
        from transformers import T5Tokenizer

        tokenizer = T5Tokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_t5_tokenizer(shapes_caption_corpus(20000, seed=config.data_seed), tokenizer_dir)
    # Seeded here too: otherwise the text encoder's init depends on the process's RNG state
    # (a second run in the same process, or one after other work, starts from other weights).
    torch.manual_seed(config.seed + 1)
    _, text_encoder = build_text_encoder(config.preset, vocab_size=len(tokenizer))
    torch.manual_seed(config.seed)
    transformer = build_transformer(config.preset, text_encoder, vae, **config.transformer)
    return dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=KumoDDIMScheduler()
    )
