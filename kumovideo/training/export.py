"""Writing a trained pipeline folder: what every trainer ends with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kumovideo.training.config import TrainConfig
from kumovideo.utils.atomic import atomic_directory


def save_trained_pipeline(pipe, config: TrainConfig, extra_files: dict[str, str] | None = None) -> Path:
    """Save `pipe` to `output_dir/pipeline` atomically: fp16 weights when
    `extra.export_fp16`, the sampling defaults (`kumo_defaults.json`) and any extra text
    files (e.g. `training_captions.txt`)."""
    pipe = pipe.to("cpu")
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    if config.extra.get("export_fp16", False):
        for module in (pipe.transformer, pipe.text_encoder, pipe.vae):
            module.to(torch.float16)
    target = Path(config.output_dir) / "pipeline"
    with atomic_directory(target) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        defaults = config.extra.get("sampling_defaults")
        if defaults:
            (tmp / "kumo_defaults.json").write_text(json.dumps(defaults, indent=2))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    print(f"pipeline saved to {target}")
    return target
