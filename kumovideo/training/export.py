"""Writing a trained pipeline folder: what every trainer ends with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kumovideo.training.config import TrainConfig
from kumovideo.utils.atomic import atomic_directory


def save_trained_pipeline(pipe, config: TrainConfig, extra_files: dict[str, str] | None = None,
                          target: str | Path | None = None) -> Path:
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


def load_checkpoint_weights(path: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Each module's weights from checkpoint folder `path`, then its EMA weights over them
    (the EMA covers the trained parameters; buffers and frozen parts keep the module file's)."""
    from safetensors.torch import load_file, load_model

    for name, module in modules.items():
        if (path / f"{name}.safetensors").exists():
            load_model(module, str(path / f"{name}.safetensors"))
    ema = load_file(str(path / "ema.safetensors"))
    for name, module in modules.items():
        params = dict(module.named_parameters())
        for key, value in ema.items():
            if key.startswith(f"{name}.") and key[len(name) + 1:] in params:
                params[key[len(name) + 1:]].data.copy_(value)


def export_checkpoint(config: TrainConfig, checkpoint: str | Path | None, target: str | Path) -> Path:
    """A pipeline folder from a DiT or Turbo run's checkpoint (default: the newest), with
    its EMA weights: look at a run while it trains, or ship an earlier step."""
    from kumovideo.pipelines.pipeline_kumo import KumoPipeline
    from kumovideo.training.checkpointing import list_checkpoints
    from kumovideo.utils.errors import KumoInputError

    if config.kind not in ("dit", "turbo"):
        raise KumoInputError(f"kumo train export takes a dit or turbo config, not {config.kind!r}")
    found = list_checkpoints(config.output_dir)
    path = Path(checkpoint) if checkpoint else (found[-1] if found else None)
    if path is None or not (path / "state.json").exists():
        raise KumoInputError(f"no complete checkpoint at {checkpoint or config.output_dir}")
    if config.kind == "turbo":
        from kumovideo.pipelines.loading import load_pipeline_components
        from kumovideo.training.train_turbo import export_turbo

        components = load_pipeline_components(config.teacher)
        student = components["transformer"].float()
        load_checkpoint_weights(path, {"student": student})
        export_turbo(components, student, config, target)
    else:
        from kumovideo.training.train_dit import build_components, training_captions_file

        components = build_components(config)
        load_checkpoint_weights(path, {"transformer": components["transformer"],
                                       "text_encoder": components["text_encoder"]})
        pipe = KumoPipeline(**components).to("cpu")
        # The caption list too, so that `kumo eval shapes` judges an early export on unseen captions.
        write_pipeline_folder(pipe, config, Path(target), training_captions_file(config))
    print(f"{path.name} exported to {target}")
    return Path(target)
