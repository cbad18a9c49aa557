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
* `fsdp=True` (`kumo train dit --fsdp [--ulysses N]`): the transformer sharded with FSDP2
  (`loop.FullySharded`); a stage's `batch_size` is then the global batch, split over the
  data-parallel ranks (`loop.DataShard`), and the run trains on the same data whatever
  the number of processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kumovideo.data.shapes_world import is_held_out
from kumovideo.distributed.ulysses import sequence_parallel_forward
from kumovideo.models.transformer_kumo import MADIT_PRESETS, KumoTransformer3DModel
from kumovideo.pipelines.factory import build_text_encoder
from kumovideo.pipelines.loading import load_pipeline_components, load_vae
from kumovideo.pipelines.pipeline_kumo import KumoPipeline
from kumovideo.schedulers import KumoDDIMScheduler
from kumovideo.training.config import TrainConfig
from kumovideo.training.export import save_trained_pipeline
from kumovideo.training.loop import DataShard, FullySharded, Replicated, TrainState, train
from kumovideo.training.objectives import diffuse, sample_timesteps, v_prediction_loss
from kumovideo.training.runtime import Runtime, autocast_context, step_generator
from kumovideo.training.shapes_batches import is_image_step, shapes_batch
from kumovideo.training.text import shapes_caption_corpus, train_t5_tokenizer
from kumovideo.utils.errors import KumoInputError


def build_components(config: TrainConfig) -> dict:
    """Components to train from: a pipeline folder (`init_from`, fine-tuning), or fresh
    text encoder + MADiT of `config.preset` around a trained VAE (`extra.vae`)."""
    if config.init_from:  # in fp32 whatever the folder stores: shipped pipelines are fp16
        return load_pipeline_components(config.init_from, torch_dtype=torch.float32)
    vae_path = config.extra.get("vae")
    if not vae_path:
        raise KumoInputError(
            "a DiT run from scratch needs a trained VAE: set extra.vae (or init_from a pipeline folder)"
        )
    vae = load_vae(vae_path)
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
    transformer = KumoTransformer3DModel(
        **{
            **MADIT_PRESETS[config.preset],
            "text_embed_dim": text_encoder.config.d_model,
            "in_channels": vae.config.latent_channels,
            "out_channels": vae.config.latent_channels,
            **config.extra.get("transformer", {}),
        }
    )
    return dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=KumoDDIMScheduler()
    )


class LatentSource:
    """Training latents (B, F, C, h, w), already scaled, for a step of a stage."""

    def __init__(self, config: TrainConfig, vae, runtime: Runtime, shard: DataShard | None = None):
        self.config, self.vae, self.runtime = config, vae, runtime
        self.shard = shard or DataShard(runtime.rank, runtime.world_size)
        self._caches = {}

    def _cache(self, path: str):
        """The cache at `path` and the indices of its clips this run may train on."""
        if path not in self._caches:
            from kumovideo.data.pipeline.encode import LatentShardDataset

            cache = LatentShardDataset(path)
            usable = [i for i, clip in enumerate(cache.clips) if trains_on(self.config, clip["caption"])]
            if not usable:
                raise KumoInputError(f"latent cache {path} holds no clip outside the held-out captions")
            self._caches[path] = (cache, usable)
        return self._caches[path]

    def batch(self, step: int, stage, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        shard, size = self.shard, stage.batch_size
        first, local = shard.first(size), shard.local_size(size)
        if stage.latents:
            cache, usable = self._cache(stage.latents)
            rng = np.random.default_rng([self.config.seed, step, shard.stream])
            latents, captions = [], []
            for k, j in enumerate(rng.integers(0, len(usable), size)):
                i = usable[int(j)]
                if first <= k < first + local:
                    item = cache[int(i)]
                    latents.append(cache.sample_latent(item, generator))  # (C, F, h, w)
                    captions.append(item["caption"])
                else:  # another rank's clip: draw its noise as one process would, unread
                    torch.randn(cache.clips[int(i)]["shape"], generator=generator, dtype=cache.dtype)
            latents = torch.stack(latents)  # (B, C, F, h, w)
        else:
            videos, captions = shapes_batch(
                self.config.data_seed,
                step,
                local,
                shard.rank,
                shard.size,
                stage.size,
                stage.num_frames,
            )
            with torch.no_grad():
                posterior = self.vae.encode(videos.to(self.runtime.device)).latent_dist
                shape = posterior.mean.shape[1:]
                noise = shard.draw(size, lambda n: torch.randn((n, *shape), generator=generator)).to(posterior.mean)
                latents = (posterior.mean + posterior.std * noise) * self.vae.config.scaling_factor
        latents = latents.permute(0, 2, 1, 3, 4)  # (B, F, C, h, w): the transformer's layout
        frames = (stage.num_frames - 1) // 4 + 1
        if latents.shape[1] < frames:
            raise KumoInputError(
                f"stage {stage.name!r} asks for {stage.num_frames} frames ({frames} latent frames), but the latent "
                f"cache {stage.latents} holds {latents.shape[1]}; lower num_frames or re-encode longer clips"
            )
        return latents[:, :frames].contiguous(), captions


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
    if ulysses != 1 and not fsdp:
        raise KumoInputError("--ulysses needs --fsdp")
    sharding = FullySharded(runtime, ulysses=ulysses, mixed_precision=config.mixed_precision) if fsdp else Replicated()
    try:
        return _train_dit(config, runtime, resume, stop_after, sharding)
    finally:
        sharding.close()


def _train_dit(config: TrainConfig, runtime: Runtime, resume: bool, stop_after: int | None, sharding) -> dict:
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
    shard = sharding.data_shard(runtime)
    for stage in config.stages:
        shard.local_size(stage.batch_size)  # refuses a batch that does not split over the ranks
    source = LatentSource(config, vae, runtime, shard)
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32)
    max_len = transformer.config.max_text_seq_length

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        g = step_generator(config.seed, step, shard.stream)
        latents, captions = source.batch(step, stage, g)
        if is_image_step(config.data_seed, step, stage.image_prob):
            latents = latents[:, :1]  # the first latent frame is the still image's latent
        drop = shard.draw(stage.batch_size, lambda n: torch.rand(n, generator=g)) < config.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        ids = tokenizer(
            captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids
        size, shape = stage.batch_size, latents.shape[1:]
        steps = scheduler.config.num_train_timesteps
        t = shard.draw(size, lambda n: sample_timesteps(n, steps, stage.timestep_sampling, g))
        noise = shard.draw(size, lambda n: torch.randn((n, *shape), generator=g))
        latents, noise, t = latents.to(runtime.device), noise.to(runtime.device), t.to(runtime.device)
        x_t, v_target = diffuse(latents, noise, alphas_cumprod.to(runtime.device)[t])
        with autocast_context(runtime, config.mixed_precision):
            text = state.wrapped.get("text_encoder", text_encoder)(ids.to(runtime.device))[0]
            if sharding.ulysses_group is None:
                v_pred = state.wrapped["transformer"](x_t, text, t, return_dict=False)[0]
            else:  # this rank's share of the tokens; the output gathered whole
                v_pred = sequence_parallel_forward(state.wrapped["transformer"], x_t, text, t, sharding.ulysses_group)
        loss = v_prediction_loss(v_pred, v_target)
        return loss, {"frames": int(latents.shape[1])}

    metrics = train(config, runtime, state, loss_fn, resume=resume, stop_after=stop_after, sharding=sharding)
    if stop_after is None:
        components = {**components, **sharding.full_modules(state.modules)}  # FSDP: gathered to rank 0
        if runtime.is_main:
            export_pipeline(components, config)
    return metrics


def trains_on(config: TrainConfig, caption: str) -> bool:
    """Whether the run may train on a clip with this caption (`holdout_captions` skips the held-out split)."""
    return not (config.holdout_captions and is_held_out(caption))


def training_captions(config: TrainConfig) -> set[str]:
    """Captions of every cached clip the run trained on (on-the-fly stages draw from an
    unbounded stream and are not listed)."""
    seen: set[str] = set()
    for stage in config.stages:
        if stage.latents:
            index = json.loads(Path(stage.latents).read_text())
            seen.update(clip["caption"] for clip in index["clips"] if trains_on(config, clip["caption"]))
    if config.init_from:  # a fine-tune has also seen what its starting model was trained on
        earlier = Path(config.init_from) / "training_captions.txt"
        if earlier.exists():
            seen.update(line for line in earlier.read_text().splitlines() if line)
    return seen


def export_pipeline(components: dict, config: TrainConfig) -> Path:
    """Save the trained pipeline (EMA weights), listing the captions it was trained on so
    `kumo eval shapes` can judge on captions not seen as-is."""
    return save_trained_pipeline(KumoPipeline(**components), config, training_captions_file(config))


def training_captions_file(config: TrainConfig) -> dict[str, str]:
    """`training_captions.txt` for an exported folder ({} when the run drew from an unbounded stream)."""
    seen = training_captions(config)
    return {"training_captions.txt": "\n".join(sorted(seen)) + "\n"} if seen else {}
