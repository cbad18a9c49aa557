"""`kumo train export`: a pipeline folder from a DiT, Turbo or V2A run's checkpoint, with its
EMA weights, to look at a run while it trains or to ship an earlier step.

The top of the training package: it builds the run's models the way the trainers do
(`components`, `train_turbo`) and writes them with `pipeline_folder`; nothing imports it
back but the command line."""

from __future__ import annotations

from pathlib import Path

import torch

from kumovideo.training.checkpointing import checkpoint_kind, list_checkpoints, load_module_weights, not_this_run
from kumovideo.training.config import TrainConfig
from kumovideo.training.preflight import check_export_target, check_latent_caches, check_model_folders
from kumovideo.utils.errors import KumoInputError

# What a checkpoint that does not fit the export's config should be exported with.
_EXPORT_ADVICE = "export it with the config of the run that wrote it"


def load_checkpoint_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Each module's weights from checkpoint folder `path`, then its EMA weights over them
    (the EMA covers the trained parameters; buffers and frozen parts keep the module file's)."""
    from safetensors.torch import load_file

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


def check_export(
    config: TrainConfig, checkpoint: str | Path | None, target: str | Path, overwrite: bool = False
) -> tuple[Path, Path]:
    """Every check of an export, before anything is loaded or written: (the checkpoint
    folder, the target folder). An existing non-empty `target` is refused unless `overwrite`."""
    if config.kind not in ("dit", "turbo", "v2a"):
        raise KumoInputError(f"kumo train export takes a dit, turbo or v2a config, not {config.kind!r}")
    target = check_export_target(target, overwrite)
    found = list_checkpoints(config.output_dir)
    path = Path(checkpoint) if checkpoint else (found[-1] if found else None)
    if path is None or not (path / "state.json").exists():
        raise KumoInputError(f"no complete checkpoint at {checkpoint or config.output_dir}")
    kind = checkpoint_kind(path)
    if kind and kind != config.kind:
        raise not_this_run(path, f"a {kind} run, and this is a {config.kind} config", _EXPORT_ADVICE)
    check_latent_caches(config)  # the exported folder lists the captions of the run's caches
    if config.kind == "dit" and not config.init_from:
        # The run's own tokenizer: one learned anew here would not match the trained text encoder.
        tokenizer = Path(config.output_dir) / "tokenizer"
        if not (tokenizer / "spiece.model").exists():
            raise KumoInputError(
                f"the run's tokenizer {tokenizer} is missing; {_EXPORT_ADVICE} (whose output_dir holds the tokenizer)"
            )
    check_model_folders(config)
    return path, target


def write_export(config: TrainConfig, path: Path, target: Path) -> Path:
    """The pipeline folder `target` from checkpoint `path` (both as `check_export` returned them)."""
    if config.kind == "v2a":
        from kumovideo.training.train_v2a import build_denoiser, export_v2a

        denoiser = build_denoiser(config)
        load_checkpoint_weights(path, {"denoiser": denoiser})
        export_v2a(denoiser.eval(), config, Path(target))
    elif config.kind == "turbo":
        from kumovideo.pipelines.loading import load_pipeline_components
        from kumovideo.training.train_turbo import export_turbo

        components = load_pipeline_components(config.teacher)
        student = components["transformer"].float()
        load_checkpoint_weights(path, {"student": student})
        export_turbo(components, student, config, target)
    else:
        from kumovideo.pipelines.pipeline_kumo import KumoPipeline
        from kumovideo.training.components import build_components
        from kumovideo.training.data_sources import training_captions_file
        from kumovideo.training.pipeline_folder import write_pipeline_folder

        components = build_components(config)
        load_checkpoint_weights(
            path, {"transformer": components["transformer"], "text_encoder": components["text_encoder"]}
        )
        if config.lora:  # a LoRA run's checkpoint: the adapter, as the run ends with
            from kumovideo.training.lora import write_lora_folder

            write_lora_folder(components["transformer"], config, Path(target), training_captions_file(config))
        else:
            pipe = KumoPipeline(**components).to("cpu")
            # The caption list too, so that `kumo eval shapes` judges an early export on unseen captions.
            write_pipeline_folder(pipe, config, Path(target), training_captions_file(config))
    print(f"{path.name} exported to {target}")
    return Path(target)


def export_checkpoint(
    config: TrainConfig, checkpoint: str | Path | None, target: str | Path, overwrite: bool = False
) -> Path:
    """A pipeline folder from a DiT or Turbo run's checkpoint (default: the newest), with
    its EMA weights. An existing non-empty `target` folder is replaced only when `overwrite`."""
    path, target = check_export(config, checkpoint, target, overwrite)
    return write_export(config, path, target)
