"""Training the 3D causal VAE (diffusers' AutoencoderKLCogVideoX) on ShapesWorld.

Reconstruction (MSE + L1) + KL, on random spatio-temporal crops: the VAE is fully
convolutional, so small crops (e.g. 32x32x5) teach it the same local job at a fraction of
the cost of whole clips. Held-out PSNR is measured on whole clips from another seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from kumovideo.pipelines.factory import build_vae
from kumovideo.pipelines.loading import load_vae
from kumovideo.training.config import TrainConfig, stage_frames, stage_motion_amounts
from kumovideo.training.loop import TrainState, train
from kumovideo.training.objectives import psnr, vae_loss
from kumovideo.training.runtime import Runtime, autocast_context, step_generator
from kumovideo.training.shapes_batches import is_image_step, random_crop, shapes_batch, shapes_batch_v11
from kumovideo.utils.atomic import atomic_directory

HELD_OUT_SEED_OFFSET = 10_000  # held-out clips come from data_seed + this: never trained on


class AutoencodeStep(nn.Module):
    """One VAE training forward: encode, sample the posterior, decode. As a single module
    forward it goes through the DDP wrapper, so every gradient is averaged across ranks
    (calling `encode`/`decode` on the bare VAE would bypass DDP)."""

    def __init__(self, vae, train_encoder: bool = True):
        super().__init__()
        self.vae = vae
        self.train_encoder = train_encoder

    def forward(self, videos: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            posterior = self.vae.encode(videos).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device)
        reconstruction = self.vae.decode(posterior.mean + posterior.std * noise).sample
        return reconstruction, posterior.kl()


def train_vae(config: TrainConfig, runtime: Runtime, resume: bool = False, stop_after: int | None = None) -> dict:
    torch.manual_seed(config.seed)
    vae = load_vae(config.init_from) if config.init_from else build_vae(config.preset)
    vae.to(runtime.device).train()
    if not config.train_encoder:
        # Decoder-only fine-tuning: latents (and so any DiT trained on them) stay valid.
        for part in (vae.encoder, vae.quant_conv):
            if part is not None:
                part.requires_grad_(False).eval()
    if config.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    state = TrainState(modules={"vae": AutoencodeStep(vae, config.train_encoder)})

    # Each stage's frame sizes and motion range, parsed once (the config was checked on load)
    world = {id(s): (stage_frames(s), stage_motion_amounts(s)) for s in config.stages}

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        frames = 1 if is_image_step(config.data_seed, step, stage.image_prob) else stage.num_frames
        sizes, motion_amounts = world[id(stage)]
        videos, _, _ = shapes_batch_v11(
            config.data_seed,
            step,
            stage.batch_size,
            runtime.rank,
            runtime.world_size,
            stage.size,
            frames,
            sizes[step % len(sizes)] if sizes else None,
            motion_amounts,
            stage.held_back_share,
        )
        g = step_generator(config.seed, step, runtime.rank)
        if frames > 1:  # stills stay whole: they are cheap, and teach the spatial part at full size
            videos = random_crop(videos, stage.crop, stage.crop_frames, g)
        videos = videos.to(runtime.device)
        with autocast_context(runtime, config.mixed_precision):
            reconstruction, kl = state.wrapped["vae"](videos, g)
        loss, parts = vae_loss(reconstruction, videos, kl, config.kl_weight)
        return loss, parts

    metrics = train(config, runtime, state, loss_fn, resume=resume, stop_after=stop_after)
    if stop_after is None and runtime.is_main:
        vae.eval()
        export_vae(vae, config, runtime)
    return metrics


@torch.no_grad()
def latent_scaling_factor(vae, config: TrainConfig, device, num_clips: int = 16) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs."""
    stage = config.stages[-1]
    videos, _ = shapes_batch(config.data_seed + HELD_OUT_SEED_OFFSET, 1, num_clips, 0, 1, stage.size, stage.num_frames)
    z = vae.encode(videos.to(device)).latent_dist.mean
    return float(1.0 / z.float().std())


@torch.no_grad()
def held_out_psnr(vae, seed: int, size: int, num_frames: int, num_clips: int = 16, device="cpu") -> float:
    """Mean PSNR (dB) of whole held-out clips through encode (posterior mean) and decode."""
    values = []
    for i in range(num_clips):
        video, _ = shapes_batch(seed + HELD_OUT_SEED_OFFSET, i, 1, 0, 1, size, num_frames)
        video = video.to(device)
        reconstruction = vae.decode(vae.encode(video).latent_dist.mean).sample
        values.append(psnr(reconstruction, video))
    return sum(values) / len(values)


def export_vae(vae, config: TrainConfig, runtime: Runtime) -> Path:
    """Save the trained VAE (diffusers layout; fp16 weights when `export_fp16`) with its
    scaling factor and held-out PSNR. A decoder-only run keeps the factor it started with:
    its latents, and so the scale every DiT trained on them expects, are unchanged."""
    stage = config.stages[-1]
    if config.export_fp16:  # measure what is saved: the weights rounded to fp16, run in fp32
        vae.to(torch.float16).to(torch.float32)
    if config.train_encoder:
        vae.register_to_config(scaling_factor=latent_scaling_factor(vae, config, runtime.device))
    score = held_out_psnr(vae, config.data_seed, stage.size, stage.num_frames, device=runtime.device)
    target = Path(config.output_dir) / "vae"
    with atomic_directory(target) as tmp:
        vae.to(torch.float16 if config.export_fp16 else torch.float32).save_pretrained(tmp, safe_serialization=True)
        (tmp / "eval.json").write_text(
            json.dumps(
                {"held_out_psnr_db": score, "size": stage.size, "num_frames": stage.num_frames, "clips": 16}, indent=2
            )
        )
    print(
        f"VAE saved to {target}: held-out PSNR {score:.2f} dB ({stage.size}x{stage.size}x{stage.num_frames}, 16 clips)"
    )
    return target
