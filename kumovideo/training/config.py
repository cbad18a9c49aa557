"""Training configuration: one YAML/JSON file per run, validated on load.

A run is a list of stages (the KumoVideo report's progressive training: lower resolution
and fewer frames first, then the target), each with its own size, frames, batch, steps
and timestep sampling ("uniform" in pre-training, the report's "cubic" in fine-tuning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumovideo.geometry import DEFAULT_GEOMETRY
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import NumberRange, check_seed

logger = logging.getLogger(__name__)


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
    # VAE on ShapesWorld v1.1: batch k renders at the k-th frame size in turn ("128x128,224x128"
    # as `kumo train cache-latents --buckets`, or a list), each clip at a motion amount m drawn
    # from LO,HI ("0.5,1.5" or [0.5, 1.5])
    buckets: str | list[str] | None = None
    motion_range: str | list[float] | None = None
    # ...and this share of them with the held-back colour cyan (never for a base model's DiT: a
    # VAE or decoder that must reproduce the colour a LoRA will teach)
    held_back_share: float = 0.0
    # DiT on ShapesWorld: this share of the clips with two objects, the rest with one (None: the
    # stream's even mix, or a latent cache's own); from a cache, each batch draws it by caption
    two_object_share: float | None = None


@dataclass
class TrainConfig:
    kind: str  # "vae" | "dit" | "turbo" | "v2a"
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
    # DiT loss weighting: None, the plain v-prediction MSE; a number, Min-SNR-gamma (Hang et al.
    # 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"): v-loss weight
    # min(SNR, gamma) / (SNR + 1), which lowers the weight of the nearly clean timesteps
    snr_gamma: float | None = None
    # DiT, Turbo: never train on ShapesWorld's held-out captions (shapes_world.is_held_out)
    holdout_captions: bool = False
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
    ladd_layers: list[int] | None = None  # teacher blocks the LADD discriminator reads (default: first, middle, last)
    target_decay: float = 0.95  # EMA decay of the consistency target network
    # DiT from scratch: the trained VAE folder, and MADiT settings over the preset's
    vae: str | None = None
    transformer: dict[str, Any] = field(default_factory=dict)
    # The exported pipeline folder
    export_fp16: bool = False  # fp16 weights (half the size on disk)
    sampling_defaults: dict[str, Any] = field(default_factory=dict)  # written as its kumo_defaults.json
    # Video-to-audio: KumoV2AModel settings, video dropout (guidance), and the user's clips
    # with audio (a folder; null trains on ShapesWorld with its v1.1 sound)
    v2a: dict[str, Any] = field(default_factory=dict)
    video_dropout: float = 0.1
    clips: str | None = None
    # DiT with conditioning frames (docs/conditioning.md; needs transformer: {frame_conditioning: true}
    # and latent shards with frame latents): task probabilities per example, from
    # kumovideo.pipelines.conditioning.TASKS, and how often the condition is dropped (image guidance)
    conditioning: dict[str, float] = field(default_factory=dict)
    condition_dropout: float = 0.1
    # Lumina-Video's multi-scale patching (needs transformer: {multiscale_patch_sizes: [...]}): this
    # share of steps trains a coarse scale (the sizes taken alike), its timesteps shifted toward noise
    # by this factor (u -> s u / (1 + (s - 1) u), u = t / T), since sampling runs it on the noisy steps
    multiscale_prob: float = 0.5
    multiscale_time_shift: float = 3.0
    # Motion conditioning (transformer: {motion_conditioning: true}): the clips' motion_score, dropped
    # (no score: the unconditioned default) this often
    motion_dropout: float = 0.1
    # Position shift (any aspect): this share of steps moves the clip's sine-cosine grid to a random
    # offset, so positions a wide or tall frame reaches (up to position_shift_extent native patches a
    # side) are also trained on the other buckets' clips, the square ones most of all. 0: off
    position_shift_prob: float = 0.0
    position_shift_extent: int = 0
    # Attribute-swap contrast (DiT on ShapesWorld captions; objectives.binding_contrast_loss): on
    # two-object clips, the v-loss under the caption must beat the loss under the caption with the
    # objects' shapes or motions swapped, by this weight beside the v-loss, at this temperature (in
    # units of the per-example MSE). 0: off
    binding_contrast_weight: float = 0.0
    binding_contrast_temperature: float = 0.003
    # LoRA (DiT runs with init_from; kumovideo.training.lora): rank, alpha, dropout, target_modules. Only
    # the adapter trains and the run ends with a LoRA folder (output_dir/lora) instead of a pipeline
    lora: dict[str, Any] = field(default_factory=dict)

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


def refuse_unknown_keys(given, known, what: str) -> None:
    """One line naming the keys of mapping `given` outside `known` (`what`: "where: section")."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise KumoInputError(f"{what} unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")


def _build(cls, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    refuse_unknown_keys(data, sorted(names), f"{where}:")
    try:
        return cls(**data)
    except TypeError as exc:
        raise KumoInputError(f"{where}: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A training config from a YAML or JSON file, validated. `extends: OTHER.yaml` (a path
    relative to the file) starts from another config: each key this file sets replaces that
    key's value whole (stages included), so a trial names only what it changes."""
    path = Path(path)
    data = _read_extended(path, [])
    data.update(overrides or {})
    adopt_extra(data, str(path))
    stages = data.pop("stages", None)
    if not stages:
        raise KumoInputError(f"config file {path} has no stages; add at least one under 'stages:'")
    if not isinstance(stages, list):
        raise KumoInputError(f"{path}: stages={stages!r} must be a list of stages, each a mapping of settings")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise KumoInputError(f"{path} stage {i}: {stage!r} must be a mapping of settings (name, steps, ...)")
    data["stages"] = [_build(Stage, s, f"{path} stage {i}") for i, s in enumerate(stages)]
    config = _build(TrainConfig, data, str(path))
    validate(config, str(path))
    return config


def _read_mapping(path: Path) -> dict:
    """The settings of one config file, unmerged."""
    if not path.exists():
        raise KumoInputError(f"config file {path} does not exist")
    if path.is_dir():
        raise KumoInputError(f"config {path} is a folder; pass a YAML or JSON config file (see configs/)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KumoInputError(
            f"config file {path} cannot be read as text ({exc}); pass a YAML or JSON config file"
        ) from None
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
    return data


def _read_extended(path: Path, chain: list[Path]) -> dict:
    """`path`'s settings over those of the config it `extends` (recursively; `chain` holds the
    files that extend this one, to refuse a cycle)."""
    data = _read_mapping(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise KumoInputError(f"{path}: extends={parent!r} must be the path of another config file")
    parent_path = (path.parent / parent).resolve()
    if parent_path in chain or parent_path == path.resolve():
        raise KumoInputError(f"{path}: extends {parent} makes a cycle; a config cannot extend itself")
    if not parent_path.exists():
        raise KumoInputError(f"{path}: extends {parent}, which does not exist (paths are relative to {path.parent})")
    return {**_read_extended(parent_path, [*chain, path.resolve()]), **data}


# The settings configs kept under `extra:` before they had keys of their own.
EXTRA_KEYS = ("vae", "transformer", "export_fp16", "sampling_defaults", "ladd_layers", "target_decay")


def adopt_extra(data: dict, where: str) -> None:
    """An older config's `extra:` settings moved to their own keys in `data`, with a warning
    that names the new keys."""
    if "extra" not in data:
        return
    extra = data.pop("extra")
    if extra is None:  # `extra:` with nothing under it
        return
    if not isinstance(extra, dict):
        raise KumoInputError(f"{where}: extra={extra!r} must be a mapping of settings")
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise KumoInputError(
            f"{where}: unknown key(s) {', '.join(f'extra.{k}' for k in unknown)}; "
            f"extra holds only {', '.join(EXTRA_KEYS)} (now top-level keys)"
        )
    if extra:
        moves = ", ".join(f"extra.{k} -> {k}" for k in extra)
        logger.warning("%s: `extra:` is deprecated; its settings are top-level keys now (%s)", where, moves)
    data.update({k: v for k, v in extra.items() if k not in data})  # a top-level key (or --set) wins


# Every numeric setting of a run, and of a stage, with the values it may take.
RUN_NUMBERS = {
    "seed": NumberRange(integer=True, low=0),
    "data_seed": NumberRange(integer=True, low=0),
    "lr": NumberRange(low=0, above_low=True),
    "text_lr": NumberRange(low=0, above_low=True, optional=True),
    "snr_gamma": NumberRange(low=0, above_low=True, optional=True),
    "weight_decay": NumberRange(low=0),
    "warmup_steps": NumberRange(integer=True, low=0),
    "grad_clip": NumberRange(low=0, above_low=True),
    "ema_decay": NumberRange(low=0, high=1),
    "caption_dropout": NumberRange(low=0, high=1),
    "video_dropout": NumberRange(low=0, high=1),
    "condition_dropout": NumberRange(low=0, high=1),
    "multiscale_prob": NumberRange(low=0, high=1),
    "multiscale_time_shift": NumberRange(low=0, above_low=True),
    "motion_dropout": NumberRange(low=0, high=1),
    "position_shift_prob": NumberRange(low=0, high=1),
    "position_shift_extent": NumberRange(integer=True, low=0),
    "binding_contrast_weight": NumberRange(low=0),
    "binding_contrast_temperature": NumberRange(low=0, above_low=True),
    "kl_weight": NumberRange(low=0),
    "checkpoint_every": NumberRange(integer=True, low=1),
    "keep_checkpoints": NumberRange(integer=True, low=1),
    "sample_every": NumberRange(integer=True, low=0),
    "log_every": NumberRange(integer=True, low=1),
    "distill_guidance": NumberRange(low=0),
    "ladd_weight": NumberRange(low=0),
    # The teacher's DDIM grid splits the 1000 training timesteps into this many steps.
    "num_ddim_steps": NumberRange(integer=True, low=1, high=1000),
    "target_decay": NumberRange(low=0, high=1),
}
STAGE_NUMBERS = {
    "steps": NumberRange(integer=True, low=1),
    "size": NumberRange(integer=True, low=32),  # ShapesWorld renders frames of 32 pixels and more
    "num_frames": NumberRange(integer=True, low=1),
    "batch_size": NumberRange(integer=True, low=1),
    "image_prob": NumberRange(low=0, high=1),
    "lr": NumberRange(low=0, above_low=True, optional=True),
    "lr_end": NumberRange(low=0, optional=True),
    "crop": NumberRange(integer=True, low=8, optional=True),
    "crop_frames": NumberRange(integer=True, low=1, optional=True),
    "held_back_share": NumberRange(low=0, high=1),
    "two_object_share": NumberRange(low=0, high=1, optional=True),
}
RUN_CHOICES = {
    "kind": ("vae", "dit", "turbo", "v2a"),
    "mixed_precision": ("auto", "no", "bf16"),
    "distill_loss": ("huber", "l2"),
}
STAGE_CHOICES = {"timestep_sampling": ("uniform", "cubic")}
RUN_FLAGS = (
    "holdout_captions",
    "train_text_encoder",
    "train_encoder",
    "gradient_checkpointing",
    "ladd",
    "export_fp16",
)
RUN_PATHS = {
    "output_dir": False,
    "init_from": True,
    "teacher": True,
    "vae": True,
    "clips": True,
}  # name -> may be null
STAGE_PATHS = {"latents": True}


def _checked_number(where: str, key: str, value: Any, allowed: NumberRange) -> Any:
    """`value` if `allowed` admits it (a float setting as a float), else one line naming the key."""
    if value is None and allowed.optional:
        return None
    if isinstance(value, str) and not allowed.integer:
        # PyYAML reads an exponent without a dot (`lr: 1e-3`) as text: take the number it spells.
        try:
            value = float(value)
        except ValueError:
            pass
    if not allowed.admits(value):
        raise KumoInputError(f"{where}: {key}={value!r} must be {allowed.describe()}")
    return value if allowed.integer else float(value)


def _check_settings(obj, where: str, numbers: dict, choices: dict, paths: dict, flags: tuple = ()) -> None:
    """Type and range of every setting of `obj` (a TrainConfig or a Stage) named in the tables;
    numbers are normalized in place (a float setting holds a float)."""
    for key, allowed in numbers.items():
        setattr(obj, key, _checked_number(where, key, getattr(obj, key), allowed))
    for key, options in choices.items():
        value = getattr(obj, key)
        if value not in options:
            raise KumoInputError(f"{where}: {key}={value!r}; use {', '.join(options[:-1])} or {options[-1]}")
    for key in flags:
        value = getattr(obj, key)
        if not isinstance(value, bool):
            raise KumoInputError(f"{where}: {key}={value!r} must be true or false")
    for key, optional in paths.items():
        value = getattr(obj, key)
        if not ((optional and value is None) or (isinstance(value, str) and value)):
            raise KumoInputError(f"{where}: {key}={value!r} must be a path" + (" (or null)" if optional else ""))


def _check_preset(config: TrainConfig, where: str) -> None:
    """A run from scratch builds its models from `preset` (a fine-tune's come from init_from)."""
    if config.init_from or config.kind in ("turbo", "v2a"):
        return
    from kumovideo.pipelines.factory import MADIT_PRESETS, TEXT_PRESETS, VAE_PRESETS

    known = sorted(VAE_PRESETS) if config.kind == "vae" else sorted(set(MADIT_PRESETS) & set(TEXT_PRESETS))
    if config.preset not in known:
        raise KumoInputError(
            f"{where}: preset={config.preset!r} is not a {config.kind} preset; use {' or '.join(known)}"
        )


def _madit_settings() -> dict:
    import inspect

    from kumovideo.models.transformer_kumo import KumoTransformer3DModel

    return dict(inspect.signature(KumoTransformer3DModel.__init__).parameters)


def _v2a_settings() -> dict:
    import inspect

    from kumovideo.models.v2a_kumo import KumoV2AModel

    return dict(inspect.signature(KumoV2AModel.__init__).parameters)


def _sampling_settings() -> dict:
    from kumovideo.pipelines.loading import SAMPLING_DEFAULT_KEYS

    return SAMPLING_DEFAULT_KEYS


# Settings that are mappings: name -> what their keys may be (read only when one is given).
RUN_MAPPINGS = {"transformer": _madit_settings, "v2a": _v2a_settings, "sampling_defaults": _sampling_settings}


def _check_mappings(config: TrainConfig, where: str) -> None:
    """`transformer:` holds MADiT constructor settings (over the preset's), `sampling_defaults:`
    what an exported folder's kumo_defaults.json may hold."""
    for key, settings in RUN_MAPPINGS.items():
        value = getattr(config, key)
        if not isinstance(value, dict):
            raise KumoInputError(f"{where}: {key}={value!r} must be a mapping of settings")
        known = sorted(settings().keys() - {"self"}) if value else []
        refuse_unknown_keys(value, known, f"{where}: {key} has")
    for key, value in config.sampling_defaults.items():
        what, admits = _sampling_settings()[key]
        if not admits(value):
            raise KumoInputError(f"{where}: sampling_defaults.{key}={value!r} must be {what}")
    from kumovideo.models.transformer_kumo import check_position_grid

    try:  # an init_from model may bring the grid a stretch needs: that is checked when it loads
        grid = config.transformer.get("position_grid")
        check_position_grid(grid, config.transformer.get("stretch_conditioning") and not config.init_from)
    except ValueError as exc:
        raise KumoInputError(f"{where}: transformer {exc}") from None


def _check_conditioning(config: TrainConfig, where: str) -> None:
    """`conditioning:` task probabilities (summing to 1), for a DiT whose transformer takes
    conditioning frames, trained from latent shards (which hold the frames' latents)."""
    from kumovideo.pipelines.conditioning import TASKS

    tasks = config.conditioning
    if not isinstance(tasks, dict):
        raise KumoInputError(f"{where}: conditioning={tasks!r} must be a mapping of task -> probability")
    if not tasks:
        return
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise KumoInputError(f"{where}: conditioning has unknown task(s) {', '.join(unknown)}; use {', '.join(TASKS)}")
    for task, p in tasks.items():
        config.conditioning[task] = _checked_number(where, f"conditioning.{task}", p, NumberRange(low=0, high=1))
    if abs(sum(config.conditioning.values()) - 1.0) > 1e-6:
        raise KumoInputError(f"{where}: conditioning probabilities sum to {sum(tasks.values()):g}; make them sum to 1")
    if config.kind != "dit":
        raise KumoInputError(f"{where}: conditioning applies to dit runs only, not {config.kind!r}")
    if config.transformer.get("frame_conditioning") is not True:
        raise KumoInputError(
            f"{where}: conditioning needs a transformer that takes conditioning frames; "
            "add `transformer: {frame_conditioning: true}`"
        )
    for i, stage in enumerate(config.stages):
        if not stage.latents:
            raise KumoInputError(
                f"{where} stage {i}: conditioning trains from latent shards with frame latents; give it 'latents:' "
                "(kumo train cache-latents --frame-latents)"
            )


# `lora:` (kumovideo.training.lora): its numbers, and the layers it adapts by default: the
# attention projections, which all three attentions of a MADiT block share (diffusers' usual targets).
LORA_NUMBERS = {
    "rank": NumberRange(integer=True, low=1),
    "alpha": NumberRange(low=0, above_low=True),  # the update is scaled by alpha / rank
    "dropout": NumberRange(low=0, high=1),
}
LORA_KEYS = (*LORA_NUMBERS, "target_modules", "vae")
LORA_DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_settings(raw: Any, where: str) -> dict:
    """The `lora:` mapping checked and completed (rank 8, alpha = rank, no dropout, the
    attention projections, no VAE); one line naming the key otherwise."""
    if not isinstance(raw, dict):
        raise KumoInputError(f"{where}: lora={raw!r} must be a mapping ({', '.join(LORA_KEYS)})")
    refuse_unknown_keys(raw, LORA_KEYS, f"{where}: lora has")
    settings = {"rank": 8, "dropout": 0.0, "target_modules": list(LORA_DEFAULT_TARGETS), "vae": None, **raw}
    settings.setdefault("alpha", settings["rank"])
    for key, allowed in LORA_NUMBERS.items():
        settings[key] = _checked_number(where, f"lora.{key}", settings[key], allowed)
    targets = settings["target_modules"]
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise KumoInputError(f"{where}: lora.target_modules={targets!r} must be a list of layer names, e.g. [to_q]")
    vae = settings["vae"]
    if vae is not None and not (isinstance(vae, str) and (Path(vae) / "config.json").is_file()):
        raise KumoInputError(f"{where}: lora.vae={vae!r} must be a VAE folder (with config.json), or left out")
    return settings


def _check_lora(config: TrainConfig, where: str) -> None:
    """`lora:` adapts a trained DiT (init_from) with its text encoder frozen."""
    if config.lora == {}:
        return
    config.lora = lora_settings(config.lora, where)
    if config.kind != "dit":
        raise KumoInputError(f"{where}: lora applies to dit runs only, not {config.kind!r}")
    if not config.init_from:
        raise KumoInputError(f"{where}: a LoRA adapts a trained model; set init_from: to its pipeline folder")
    if config.train_text_encoder:
        raise KumoInputError(f"{where}: a LoRA run trains the adapter only; set train_text_encoder: false")


def validate(config: TrainConfig, where: str) -> None:
    """Refuse, in one line naming the key, any setting a run could not train with; numbers
    are normalized in place (a float setting holds a float)."""
    _check_settings(config, where, RUN_NUMBERS, RUN_CHOICES, RUN_PATHS, RUN_FLAGS)
    betas = config.betas
    if not (
        isinstance(betas, (list, tuple))
        and len(betas) == 2
        and all(NumberRange(low=0, high=1).admits(b) and b < 1 for b in betas)
    ):
        raise KumoInputError(f"{where}: betas={betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    config.betas = (float(betas[0]), float(betas[1]))
    for key in ("seed", "data_seed"):  # their upper bound: what every generator takes
        check_seed(getattr(config, key), f"{where}: {key}")
    _check_mappings(config, where)
    _check_conditioning(config, where)
    _check_lora(config, where)
    layers = config.ladd_layers
    if layers is not None and not (
        isinstance(layers, list) and layers and all(NumberRange(integer=True, low=0).admits(i) for i in layers)
    ):
        raise KumoInputError(f"{where}: ladd_layers={layers!r} must be a list of block indices (0 or more), or null")
    prompts = config.sample_prompts
    if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        raise KumoInputError(f"{where}: sample_prompts={prompts!r} must be a list of texts")
    if config.snr_gamma is not None and config.kind != "dit":
        raise KumoInputError(f"{where}: snr_gamma weights the DiT loss; leave it out of {config.kind} runs")
    if config.binding_contrast_weight and config.kind != "dit":
        raise KumoInputError(
            f"{where}: binding_contrast_weight adds to the DiT loss; leave it out of {config.kind} runs"
        )
    if config.kind == "turbo" and not config.teacher:
        raise KumoInputError(f"{where}: a turbo config needs `teacher:` (the trained base pipeline folder)")
    _check_preset(config, where)
    # No VAE is at hand when a config loads: the published model's compression.
    geometry = DEFAULT_GEOMETRY
    step = geometry.frame_step
    frames_rule = f"{step}k+1 (1, {step + 1}, {2 * step + 1}, ...)"
    for i, s in enumerate(config.stages):
        at = f"{where} stage {i}"
        _check_settings(s, at, STAGE_NUMBERS, STAGE_CHOICES, STAGE_PATHS)
        for key in ("num_frames", "crop_frames"):
            value = getattr(s, key)
            if value is not None and not geometry.is_valid_frames(value):
                raise KumoInputError(f"{at}: {key}={value} is not {frames_rule}")
        if s.size % geometry.side_multiple:
            raise KumoInputError(f"{at}: size={s.size} is not a multiple of {geometry.side_multiple}")
        _check_world_settings(config, s, at)  # before the crop, which is checked against its frames
        if s.two_object_share is not None and config.kind != "dit":
            raise KumoInputError(
                f"{at}: two_object_share mixes a DiT stage's clips; leave it out of {config.kind} runs"
            )
        # A crop is a window of the clip, in whole latents.
        if s.crop is not None:
            smallest = min(stage_sides(s))
            if s.crop % geometry.spatial or s.crop > smallest:
                raise KumoInputError(
                    f"{at}: crop={s.crop} must be a multiple of {geometry.spatial} no larger than the stage's "
                    f"smallest side ({smallest})"
                )
        if s.crop_frames is not None and s.crop_frames > s.num_frames:
            raise KumoInputError(f"{at}: crop_frames={s.crop_frames} must not exceed num_frames={s.num_frames}")
        if s.lr_end is not None and not 0 <= s.lr_end <= (s.lr or config.lr):
            raise KumoInputError(f"{at}: lr_end={s.lr_end} must lie between 0 and the stage's lr")
        if config.holdout_captions and config.kind in ("dit", "turbo") and not s.latents:
            raise KumoInputError(
                f"{at}: holdout_captions filters latent caches; give this stage "
                "'latents:' (kumo train cache-latents) or set holdout_captions: false"
            )


def stage_frames(stage: Stage) -> list[tuple[int, int]] | None:
    """The stage's (W, H) frame sizes from `buckets`, in turn by batch (None: size x size)."""
    from kumovideo.data.shapes_world import parse_frame_sizes

    return parse_frame_sizes(_comma_joined(stage.buckets), "buckets")


def _comma_joined(value):
    """A YAML list (["128x128", "224x128"], [0.5, 1.5]) reads as its comma-separated string."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def stage_motion_amounts(stage: Stage) -> tuple[float, float] | None:
    """The stage's motion amounts (LO, HI) from `motion_range` (None: m = 1)."""
    from kumovideo.data.shapes_world import parse_motion_range

    return parse_motion_range(_comma_joined(stage.motion_range), "motion_range")


def stage_frame_at(stage: Stage, step: int) -> tuple[int, int] | None:
    """The (W, H) frame a stage renders at global step `step`: its buckets in turn (None: size x size)."""
    frames = stage_frames(stage)
    return frames[step % len(frames)] if frames else None


def stage_sides(stage: Stage) -> list[int]:
    """Every frame side a stage renders (its buckets' widths and heights, else its size)."""
    return [side for frame in stage_frames(stage) or [(stage.size, stage.size)] for side in frame]


def _check_world_settings(config: TrainConfig, stage: Stage, at: str) -> None:
    """`buckets`, `motion_range` and `held_back_share` shape the clips a stage renders: a VAE
    stage, or a DiT stage that encodes its clips on the fly (the GPU kit's recipe); a stage with
    `latents:` reads its clips' sizes, motion and colours from the cache instead."""
    for key in ("buckets", "motion_range", "held_back_share"):
        value = getattr(stage, key)
        if not value:
            continue
        if config.kind == "turbo" or stage.latents:
            raise KumoInputError(
                f"{at}: {key} is for stages that render their clips (VAE, or DiT without latents:); this stage "
                "takes its clips from its latent cache (kumo train cache-latents --buckets ... --motion-range ... "
                "--held-back-share ...)"
            )
    try:
        stage_frames(stage)
        stage_motion_amounts(stage)
    except KumoInputError as exc:
        raise KumoInputError(f"{at}: {exc}") from None


def check_sharding(kind: str, fsdp: bool, ulysses: int) -> None:
    """`--fsdp` and `--ulysses N` (`train_dit(fsdp=, ulysses=)`): FSDP for DiT runs only,
    Ulysses sequence parallelism only under FSDP."""
    if fsdp and kind != "dit":
        raise KumoInputError("--fsdp applies to `kumo train dit` only")
    if ulysses != 1 and not (fsdp and kind == "dit"):
        raise KumoInputError("--ulysses applies to `kumo train dit --fsdp` only")
    if ulysses < 1:
        raise KumoInputError(f"--ulysses must be at least 1, got {ulysses}")
