"""Writing a trained pipeline folder: what the DiT and Turbo trainers end with, and what
`kumo train export` writes from a checkpoint."""

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
    `export_fp16`, the sampling defaults (`kumo_defaults.json`) and any extra text files
    (e.g. `training_captions.txt`)."""
    pipe = pipe.to("cpu")
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    if config.export_fp16:
        for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
            module.to(torch.float16)
    target = write_pipeline_folder(pipe, config, Path(target or Path(config.output_dir) / "pipeline"), extra_files)
    print(f"pipeline saved to {target}")
    return target


def write_pipeline_folder(pipe, config: TrainConfig, target: Path, extra_files: dict[str, str] | None = None) -> Path:
    """`pipe` saved to `target` atomically, with the run's sampling defaults (`kumo_defaults.json`)
    and any extra text files."""
    defaults = exported_sampling_defaults(config)
    with atomic_directory(target) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if defaults:
            (tmp / "kumo_defaults.json").write_text(json.dumps(defaults, indent=2))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return target


def exported_sampling_defaults(config: TrainConfig) -> dict:
    """The exported folder's `kumo_defaults.json`: a DiT fine-tune keeps what its `init_from`
    recommends (steps, guidance, fps, prompt lowercasing, recorded ranges), the config's
    `sampling_defaults` overriding key by key; other runs write the config's alone (a Turbo
    student's sampling is not its teacher's 50 steps)."""
    from kumovideo.pipelines.loading import read_sampling_defaults

    inherited = read_sampling_defaults(config.init_from) if config.kind == "dit" and config.init_from else {}
    return {**inherited, **config.sampling_defaults}
