"""Training MADiT (and the small T5 text encoder with it) the way the KumoVideo report does.

* v-prediction on the DDIM noise schedule (SNR-shifted, zero terminal SNR);
* timesteps uniform in pre-training, cubic `t = (1 - (u/T)^3) T` in fine-tuning (per stage);
* progressive stages: fewer frames / lower resolution first, then the target;
* image-text joint training: a fraction of steps on 1-frame samples. With the causal VAE
  the first latent frame of a clip *is* the latent of its first frame, so image samples
  come from the same latent cache;
* caption dropout (empty prompt) for classifier-free guidance; EMA; gradient clipping;
  bf16 autocast on GPU; optional gradient checkpointing;
* latents from a cache (`kumo train cache-latents` / `kumo data encode`), or encoded on
  the fly by the frozen VAE when a stage names no cache;
* conditioning frames (`conditioning:` task probabilities, docs/conditioning.md): each
  example knows its first frame, every 4th or 2nd frame, or nothing, read as image latents
  from the cache (`--frame-latents`) and placed by `kumovideo.pipelines.conditioning`; the
  condition is dropped with `condition_dropout` for image guidance;
* `fsdp=True` (`kumo train dit --fsdp [--ulysses N]`): the transformer sharded with FSDP2
  (`kumovideo.distributed.fsdp.FullySharded`); a stage's `batch_size` is then the global
  batch, split over the data-parallel ranks (`loop.DataShard`), and the run trains on the
  same data whatever the number of processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kumovideo.data.shapes_world import swapped_caption
from kumovideo.distributed.fsdp import FullySharded
from kumovideo.distributed.ulysses import sequence_parallel_forward
from kumovideo.pipelines.conditioning import TASKS, place_latents, shard_frame_latents, task_frames
from kumovideo.pipelines.pipeline_kumo import KumoPipeline
from kumovideo.training.components import build_components
from kumovideo.training.config import TrainConfig, check_sharding
from kumovideo.training.data_sources import LatentSource, training_captions_file
from kumovideo.training.loop import DataShard, Replicated, TrainState, train
from kumovideo.training.objectives import (
    binding_contrast_loss,
    diffuse,
    sample_timesteps,
    shift_timesteps,
    v_prediction_loss,
)
from kumovideo.training.pipeline_folder import save_trained_pipeline
from kumovideo.training.preflight import check_latent_shapes
from kumovideo.training.runtime import Runtime, autocast_context, step_generator
from kumovideo.training.shapes_batches import is_image_step
from kumovideo.training.text import warn_unreadable_captions
from kumovideo.utils.errors import KumoInputError


def train_dit(
    config: TrainConfig,
    runtime: Runtime,
    resume: bool = False,
    stop_after: int | None = None,
    fsdp: bool = False,
    ulysses: int = 1,
) -> dict:
    """Train (or resume) a DiT run; `fsdp` shards the transformer with FSDP2 (under torchrun,
    or in one process), `ulysses` > 1 adds Ulysses sequence parallelism (with `fsdp` only)."""
    check_sharding("dit", fsdp, ulysses)
    if ulysses > 1:  # what the config says; the built transformer's own config is checked again
        check_ulysses_features(config, config.transformer or {})
    sharding = (
        FullySharded(runtime.device, ulysses=ulysses, mixed_precision=config.mixed_precision) if fsdp else Replicated()
    )
    try:
        return _train_dit(config, runtime, resume, stop_after, sharding)
    finally:
        sharding.close()


def _train_dit(config: TrainConfig, runtime: Runtime, resume: bool, stop_after: int | None, sharding) -> dict:
    shard = DataShard(*sharding.data_split(runtime))
    for stage in config.stages:  # before any model is built: every rank refuses alike, at once
        shard.local_size(stage.batch_size)  # refuses a batch that does not split over the ranks
    if not runtime.is_main:
        runtime.barrier()  # rank 0 learns the tokenizer (if the run has none yet) first
    components = build_components(config)
    if runtime.is_main:
        runtime.barrier()
    tokenizer, text_encoder, vae = components["tokenizer"], components["text_encoder"], components["vae"]
    transformer, scheduler = components["transformer"], components["scheduler"]
    vae.requires_grad_(False).eval().to(runtime.device)
    transformer.to(runtime.device).train()
    text_encoder.to(runtime.device).train(config.train_text_encoder)
    text_encoder.requires_grad_(config.train_text_encoder)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()

    modules = {"transformer": transformer}
    groups = [{"params": [p for p in transformer.parameters() if p.requires_grad]}]
    if config.train_text_encoder:
        modules["text_encoder"] = text_encoder
        groups.append({"params": list(text_encoder.parameters()), "lr": config.text_lr or config.lr})
    state = TrainState(modules=modules, param_groups=groups)
    source = LatentSource(config, vae, runtime, shard)
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
    max_len = transformer.config.max_text_seq_length
    if sharding.ulysses_group is not None:  # a transformer from init_from may bring its own
        check_ulysses_features(config, transformer.config)
    conditioned = bool(config.conditioning)
    if conditioned:  # every cache keeps frame latents, or the run stops here in one line
        scaling = {stage.latents: source.frames_cache(stage.latents).scaling_factor for stage in config.stages}
    mesh = getattr(sharding, "mesh", None)  # FullySharded's: the Ulysses degree
    ulysses = mesh.ulysses if mesh is not None and sharding.ulysses_group is not None else 1
    check_latent_shapes(config, source, transformer.config, vae.config, ulysses)
    if runtime.is_main:
        for path in dict.fromkeys(stage.latents for stage in config.stages if stage.latents):
            cache, usable = source.cache(path)
            captions = [cache.clips[i]["caption"] for i in usable]
            warn_unreadable_captions(tokenizer, captions, max_len, f"latent cache {path}")

    def encode_text(captions: list[str]) -> torch.Tensor:
        """T5 states of `captions`, padded as the pipeline pads them, on the device."""
        ids = tokenizer(captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        return state.wrapped.get("text_encoder", text_encoder)(ids.input_ids.to(runtime.device))[0]

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        g = step_generator(config.seed, step, shard.stream)
        condition = None
        drawn = source.draw(step, stage, g, frames=conditioned)
        latents, captions, size = drawn.latents, drawn.captions, drawn.batch_size
        if is_image_step(config.data_seed, step, stage.image_prob):
            latents = latents[:, :1]  # the first latent frame is the still image's latent
        if conditioned:
            dropped = shard.draw(size, lambda n: torch.rand(n, generator=g)) < config.condition_dropout
            tasks = draw_tasks(config, step, shard, size)
            condition = training_conditions(
                drawn.frame_latents,
                tasks,
                dropped.tolist(),
                latents.shape[1:],
                scaling[stage.latents],
                source.geometry,
            ).to(runtime.device)
        drop = shard.draw(size, lambda n: torch.rand(n, generator=g)) < config.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        shape = latents.shape[1:]
        steps = scheduler.config.num_train_timesteps
        t = shard.draw(size, lambda n: sample_timesteps(n, steps, stage.timestep_sampling, g))
        noise = shard.draw(size, lambda n: torch.randn((n, *shape), generator=g))
        extras, patch_size = step_extras(config, transformer.config, step, shape, drawn.motion_scores)
        if patch_size is not None:  # a coarse patch trains where sampling runs it: noisy steps
            t = shift_timesteps(t, steps, config.multiscale_time_shift)
        latents, noise, t = latents.to(runtime.device), noise.to(runtime.device), t.to(runtime.device)
        extras = {k: v.to(runtime.device) if torch.is_tensor(v) else v for k, v in extras.items()}
        alpha_bar = alphas_cumprod.to(runtime.device)[t]
        x_t, v_target = diffuse(latents, noise, alpha_bar)
        with autocast_context(runtime, config.mixed_precision):
            text = encode_text(captions)
            if sharding.ulysses_group is None:
                v_pred = state.wrapped["transformer"](x_t, text, t, return_dict=False, condition=condition, **extras)[
                    0
                ]
            else:  # this rank's share of the tokens; the output gathered whole (no extras: checked above)
                v_pred = sequence_parallel_forward(state.wrapped["transformer"], x_t, text, t, sharding.ulysses_group)
        loss = v_prediction_loss(v_pred, v_target, alpha_bar, config.snr_gamma)
        metrics = {"frames": int(latents.shape[1]), "tokens": int(shape[2] * shape[3]), "patch": patch_size or 0}
        if config.binding_contrast_weight:
            rng = np.random.default_rng([config.data_seed, step, shard.stream, 29])
            swapped = [swapped_caption(text, rng) for text in captions]  # None for "" (dropped) too
            rows = [i for i, text in enumerate(swapped) if text is not None]
            nan = float("nan")  # the log's columns stay put on a batch with nothing to swap
            metrics.update(bind_loss=nan, bind_acc=nan, bind_gap=nan, bind_n=len(rows))
            if rows:
                picked = torch.tensor(rows, device=runtime.device)
                with autocast_context(runtime, config.mixed_precision):
                    swapped_text = encode_text([swapped[i] for i in rows])
                    v_swapped = state.wrapped["transformer"](
                        x_t[picked],
                        swapped_text,
                        t[picked],
                        return_dict=False,
                        condition=None if condition is None else condition[picked],
                        **{k: v[picked] if torch.is_tensor(v) else v for k, v in extras.items()},
                    )[0]
                contrast, accuracy, gap = binding_contrast_loss(
                    v_pred[picked], v_swapped, v_target[picked], config.binding_contrast_temperature
                )
                loss = loss + config.binding_contrast_weight * contrast
                metrics.update(bind_loss=contrast.item(), bind_acc=accuracy.item(), bind_gap=gap.item())
        return loss, metrics

    metrics = train(config, runtime, state, loss_fn, resume=resume, stop_after=stop_after, sharding=sharding)
    if stop_after is None:
        components = {**components, **sharding.full_modules(state.modules)}  # FSDP: gathered to rank 0
        if runtime.is_main:
            export_pipeline(components, config)
    return metrics


def check_ulysses_features(config: TrainConfig, transformer_config) -> None:
    """One line, before any step, naming every training feature of this run that Ulysses sequence
    parallelism does not carry yet (`sequence_parallel_forward` passes x_t, text and t only)."""
    features = [
        ("binding_contrast_weight", bool(config.binding_contrast_weight)),
        ("conditioning:", bool(config.conditioning)),
        ("multi-scale patches", bool(transformer_config.get("multiscale_patch_sizes")) and config.multiscale_prob > 0),
        ("motion conditioning", bool(transformer_config.get("motion_conditioning"))),
        ("position_shift_prob", config.position_shift_prob > 0),
    ]
    unsupported = [name for name, used in features if used]
    if unsupported:
        verb = "does" if len(unsupported) == 1 else "do"
        raise KumoInputError(f"{', '.join(unsupported)} {verb} not run under --ulysses yet; drop --ulysses")


def step_extras(
    config: TrainConfig, transformer_config, step: int, latent_shape: torch.Size, motion_scores: list
) -> tuple[dict, int | None]:
    """The transformer's extra inputs at `step` (the same on every rank): `patch_size`, a coarse
    scale with probability `multiscale_prob` where the latent sides divide by it (Lumina-Video
    trains its patch sizes jointly, one per step), and `motion_score`, the clips' recorded scores
    unless the step drops them (`motion_dropout`) or a clip has none, and `position_offset`, with
    probability `position_shift_prob` a random (rows, cols) offset of the sine-cosine grid that keeps
    it inside `position_shift_extent` native patches a side. Returns (kwargs, coarse size)."""
    extras: dict = {}
    rng = np.random.default_rng([config.data_seed, step, 23])
    height, width = latent_shape[2], latent_shape[3]
    coarse = [k for k in transformer_config.get("multiscale_patch_sizes") or [] if not height % k and not width % k]
    patch_size = None
    if coarse and rng.random() < config.multiscale_prob:
        patch_size = coarse[int(rng.integers(len(coarse)))]
        extras["patch_size"] = patch_size
    if transformer_config.get("motion_conditioning"):
        keep = rng.random() >= config.motion_dropout
        if keep and motion_scores and all(score is not None for score in motion_scores):
            extras["motion_score"] = torch.tensor(motion_scores, dtype=torch.float32)
    if config.position_shift_prob > 0 and rng.random() < config.position_shift_prob:
        p = transformer_config["patch_size"]
        room = [max(config.position_shift_extent - side // p, 0) for side in (height, width)]
        offset = tuple(int(rng.integers(r + 1)) for r in room)
        if any(offset):
            extras["position_offset"] = offset
    return extras, patch_size


def draw_tasks(config: TrainConfig, step: int, shard: DataShard, batch_size: int) -> list[str]:
    """This process's examples' conditioning tasks at `step`, drawn by `config.conditioning`'s
    probabilities (a function of the step, so a resumed run draws the same)."""
    names = [task for task in TASKS if config.conditioning.get(task, 0) > 0]
    probs = np.array([config.conditioning[task] for task in names])
    rng = np.random.default_rng([config.data_seed, step, shard.stream, 19])
    drawn = [names[i] for i in rng.choice(len(names), size=batch_size, p=probs / probs.sum())]
    first = shard.first(batch_size)
    return drawn[first : first + shard.local_size(batch_size)]


def training_conditions(
    frame_latents: list[torch.Tensor],
    tasks: list[str],
    dropped: list[bool],
    latent_shape: torch.Size,
    scaling_factor: float,
    geometry,
) -> torch.Tensor:
    """The conditions (B, F_lat, 2C + 2, h, w) of a batch: each clip's known frames for its
    task (none where `dropped`), from its cached frame latents (F_even, C, h, w)."""
    latent_frames, c, h, w = latent_shape
    num_frames = geometry.num_frames(latent_frames)  # 1 on an image step: only frame 0 exists
    conditions = []
    for latents, task, drop in zip(frame_latents, tasks, dropped):
        frames = [] if drop else task_frames(task, num_frames)
        known = shard_frame_latents(latents, frames, scaling_factor)
        conditions.append(place_latents(known, latent_frames, (c, h, w), geometry.temporal))
    return torch.stack(conditions)


def export_pipeline(components: dict, config: TrainConfig) -> Path:
    """Save the trained pipeline (EMA weights), listing the captions it was trained on so
    `kumo eval shapes` can judge on captions not seen as-is; a LoRA run saves its adapter
    (output_dir/lora) instead."""
    if config.lora:
        from kumovideo.training.lora import write_lora_folder

        return write_lora_folder(
            components["transformer"], config, Path(config.output_dir) / "lora", training_captions_file(config)
        )
    return save_trained_pipeline(KumoPipeline(**components), config, training_captions_file(config))
