"""Training configuration: one YAML/JSON file per run, validated on load.

A run is a list of stages (the KumoVideo report's progressive training: lower resolution
and fewer frames first, then the target), each with its own size, frames, batch, steps
and timestep sampling ("uniform" in pre-training, the report's "cubic" in fine-tuning).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumovideo.utils.errors import KumoInputError


@dataclass
class Stage:
    name: str
    steps: int
    size: int = 64  # square side in pixels (ShapesWorld) or the cached latents' size
    num_frames: int = 17  # 8k+1 (4x temporal compression, odd latent count)
    batch_size: int = 16
    image_prob: float = 0.0  # fraction of steps that train on 1-frame images (joint image-text training)
    timestep_sampling: str = "uniform"  # "uniform" | "cubic"
    lr: float | None = None  # overrides the run's learning rate for this stage
    lr_end: float | None = None  # cosine-decay the stage's learning rate to this by its last step
    crop: int | None = None  # VAE: random square crop side (the VAE is convolutional)
    crop_frames: int | None = None  # VAE: random window of 8k+1 frames
    latents: str | None = None  # DiT: latent cache index.json for this stage (else encode on the fly)


@dataclass
class TrainConfig:
    kind: str  # "vae" | "dit" | "turbo"
    output_dir: str
    stages: list[Stage]
    preset: str = "kumo-builtin"
    init_from: str | None = None  # pipeline folder whose weights start the run (DiT: also the VAE)
    seed: int = 0
    data_seed: int = 1000  # ShapesWorld stream; held-out evaluation uses other seeds
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # empty caption this often, for classifier-free guidance
    holdout_captions: bool = False  # DiT, Turbo: never train on ShapesWorld's held-out captions (shapes_world.is_held_out)
    train_text_encoder: bool = True
    text_lr: float | None = None
    kl_weight: float = 1e-6  # VAE
    train_encoder: bool = True  # VAE: False fine-tunes the decoder only (the latent space stays put)
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "no" | "bf16"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    sample_every: int = 0  # write a sample clip every N steps (0: only at the end)
    log_every: int = 10
    sample_prompts: list[str] = field(default_factory=lambda: ["a red circle moves left on a black background"])
    # Turbo (consistency distillation)
    teacher: str | None = None
    distill_guidance: float = 4.0
    distill_loss: str = "huber"  # "huber" | "l2"
    ladd: bool = False
    ladd_weight: float = 0.1
    num_ddim_steps: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> tuple[Stage, int]:
        """The stage that global step `step` (0-based) belongs to, and the step within it."""
        for stage in self.stages:
            if step < stage.steps:
                return stage, step
            step -= stage.steps
        return self.stages[-1], self.stages[-1].steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise KumoInputError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise KumoInputError(f"{where}: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.exists():
        raise KumoInputError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise KumoInputError(f"config file {path} does not parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise KumoInputError(f"config file {path} must hold a mapping of settings")
    data.update(overrides or {})
    stages = data.pop("stages", None)
    if not stages:
        raise KumoInputError(f"config file {path} has no stages; add at least one under 'stages:'")
    data["stages"] = [_build(Stage, s, f"{path} stage {i}") for i, s in enumerate(stages)]
    if "betas" in data:
        data["betas"] = tuple(data["betas"])
    config = _build(TrainConfig, data, str(path))
    validate(config, str(path))
    return config


def validate(config: TrainConfig, where: str) -> None:
    if config.kind not in ("vae", "dit", "turbo"):
        raise KumoInputError(f"{where}: kind={config.kind!r}; use vae, dit or turbo")
    for i, s in enumerate(config.stages):
        if s.steps < 1 or s.batch_size < 1:
            raise KumoInputError(f"{where} stage {i}: steps and batch_size must be positive")
        for key in ("num_frames", "crop_frames"):
            value = getattr(s, key)
            if value is not None and (value - 1) % 8:
                # 4x temporal compression, and the VAE decodes only odd latent counts.
                raise KumoInputError(f"{where} stage {i}: {key}={value} is not 8k+1 (1, 9, 17, ...)")
        if s.size % 16:
            raise KumoInputError(f"{where} stage {i}: size={s.size} is not a multiple of 16")
        if s.timestep_sampling not in ("uniform", "cubic"):
            raise KumoInputError(f"{where} stage {i}: timestep_sampling={s.timestep_sampling!r}; use uniform or cubic")
        if s.lr_end is not None and not 0 <= s.lr_end <= (s.lr or config.lr):
            raise KumoInputError(f"{where} stage {i}: lr_end={s.lr_end} must lie between 0 and the stage's lr")
        if config.holdout_captions and config.kind in ("dit", "turbo") and not s.latents:
            raise KumoInputError(f"{where} stage {i}: holdout_captions filters latent caches; give this stage "
                                 "'latents:' (kumo train cache-latents) or set holdout_captions: false")
    if config.mixed_precision not in ("auto", "no", "bf16"):
        raise KumoInputError(f"{where}: mixed_precision={config.mixed_precision!r}; use auto, no or bf16")
