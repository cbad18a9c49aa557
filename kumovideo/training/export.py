"""Writing a trained pipeline folder: what every trainer ends with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kumovideo.training.config import TrainConfig
from kumovideo.utils.atomic import atomic_directory


def save_trained_pipeline(
    pipe, config: TrainConfig, extra_files: dict[str, str] | None = None, target: str | Path | None = None
) -> Path:
    """Save `pipe` to `target` (default `output_dir/pipeline`) atomically: fp16 weights when
    `extra.export_fp16`, the sampling defaults (`kumo_defaults.json`) and any extra text
    files (e.g. `training_captions.txt`)."""
    pipe = pipe.to("cpu")
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    if config.extra.get("export_fp16", False):
        for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
            module.to(torch.float16)
    target = write_pipeline_folder(pipe, config, Path(target or Path(config.output_dir) / "pipeline"), extra_files)
    print(f"pipeline saved to {target}")
    return target


def write_pipeline_folder(pipe, config: TrainConfig, target: Path, extra_files: dict[str, str] | None = None) -> Path:
    """`pipe` saved to `target` atomically, with the run's sampling defaults (`kumo_defaults.json`)
    and any extra text files."""
    with atomic_directory(target) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        defaults = config.extra.get("sampling_defaults")
        if defaults:
            (tmp / "kumo_defaults.json").write_text(json.dumps(defaults, indent=2))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return target


# What a checkpoint that does not fit the export's config should be exported with.
_EXPORT_ADVICE = "export it with the config of the run that wrote it"


def load_checkpoint_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Each module's weights from checkpoint folder `path`, then its EMA weights over them
    (the EMA covers the trained parameters; buffers and frozen parts keep the module file's)."""
    from safetensors.torch import load_file

    from kumovideo.training.checkpointing import load_module_weights, not_this_run

    for name, module in modules.items():
        if (path / f"{name}.safetensors").exists():  # a frozen module (text encoder) is not checkpointed
            load_module_weights(path, name, module, _EXPORT_ADVICE)
    ema = load_file(str(path / "ema.safetensors"))
    copied = 0
    for name, module in modules.items():
        params = dict(module.named_parameters())
        for key, value in ema.items():
            if key.startswith(f"{name}.") and key[len(name) + 1 :] in params:
                target = params[key[len(name) + 1 :]]
                if target.shape != value.shape:
                    raise not_this_run(path, f"first mismatch: {key}", _EXPORT_ADVICE)
                target.data.copy_(value)
                copied += 1
    if not copied:  # the export would be the untrained model
        raise not_this_run(path, f"its EMA weights hold none of {', '.join(modules)}", _EXPORT_ADVICE)


def export_checkpoint(
    config: TrainConfig, checkpoint: str | Path | None, target: str | Path, overwrite: bool = False
) -> Path:
    """A pipeline folder from a DiT or Turbo run's checkpoint (default: the newest), with
    its EMA weights: look at a run while it trains, or ship an earlier step. An existing
    non-empty `target` folder is replaced only when `overwrite`."""
    from kumovideo.pipelines.pipeline_kumo import KumoPipeline
    from kumovideo.training.checkpointing import checkpoint_kind, list_checkpoints, not_this_run
    from kumovideo.training.preflight import (
        check_export_target,
        check_latent_caches,
        check_pipeline_folder,
        check_vae_folder,
    )
    from kumovideo.utils.errors import KumoInputError

    if config.kind not in ("dit", "turbo"):
        raise KumoInputError(f"kumo train export takes a dit or turbo config, not {config.kind!r}")
    target = check_export_target(target, overwrite)
    found = list_checkpoints(config.output_dir)
    path = Path(checkpoint) if checkpoint else (found[-1] if found else None)
    if path is None or not (path / "state.json").exists():
        raise KumoInputError(f"no complete checkpoint at {checkpoint or config.output_dir}")
    kind = checkpoint_kind(path)
    if kind and kind != config.kind:
        raise not_this_run(path, f"a {kind} run, and this is a {config.kind} config", _EXPORT_ADVICE)
    check_latent_caches(config)  # the exported folder lists the captions of the run's caches
    if config.kind == "turbo":
        from kumovideo.pipelines.loading import load_pipeline_components
        from kumovideo.training.train_turbo import export_turbo

        check_pipeline_folder(config, "teacher")
        components = load_pipeline_components(config.teacher)
        student = components["transformer"].float()
        load_checkpoint_weights(path, {"student": student})
        export_turbo(components, student, config, target)
    else:
        from kumovideo.training.train_dit import build_components, training_captions_file

        if config.init_from:
            check_pipeline_folder(config, "init_from")
        else:
            # The run's own tokenizer: one learned anew here would not match the trained text encoder.
            tokenizer = Path(config.output_dir) / "tokenizer"
            if not (tokenizer / "spiece.model").exists():
                raise KumoInputError(
                    f"the run's tokenizer {tokenizer} is missing; {_EXPORT_ADVICE} "
                    "(whose output_dir holds the tokenizer)"
                )
            if config.extra.get("vae"):
                check_vae_folder(config.extra["vae"], "extra.vae")
        components = build_components(config)
        load_checkpoint_weights(
            path, {"transformer": components["transformer"], "text_encoder": components["text_encoder"]}
        )
        pipe = KumoPipeline(**components).to("cpu")
        # The caption list too, so that `kumo eval shapes` judges an early export on unseen captions.
        write_pipeline_folder(pipe, config, Path(target), training_captions_file(config))
    print(f"{path.name} exported to {target}")
    return Path(target)
