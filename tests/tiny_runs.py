"""Config files for the CI-sized training runs that several test modules start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def tiny_dit_settings(
    fixtures_dir: Path, stage_steps: int = 8, warmup_steps: int = 2, checkpoint_every: int = 4
) -> dict:
    """A kumo-tiny DiT run around the fixture VAE: an image stage, then a video stage with
    30% stills and cubic timesteps, `stage_steps` each at batch 2 (one clip per rank of 2
    under --fsdp, where batch_size is the global batch)."""
    return {
        "kind": "dit",
        "preset": "kumo-tiny",
        "lr": 1e-3,
        "warmup_steps": warmup_steps,
        "log_every": 1,
        "checkpoint_every": checkpoint_every,
        "vae": str(fixtures_dir / "vae"),
        "transformer": {"max_text_seq_length": 24},
        "stages": [
            {"name": "images", "steps": stage_steps, "size": 32, "num_frames": 1, "batch_size": 2},
            {
                "name": "video",
                "steps": stage_steps,
                "size": 32,
                "num_frames": 9,
                "batch_size": 2,
                "image_prob": 0.3,
                "timestep_sampling": "cubic",
            },
        ],
    }


def dit_config_file(tmp: Path, name: str, settings: dict, tokenizer_dir: Path) -> tuple[Path, Path]:
    """(config file, output dir), the output dir already holding the shared tokenizer."""
    out = tmp / name
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    return write_config(tmp / f"{name}.json", {**settings, "output_dir": str(out)}), out


# A video-to-audio model small enough to train and sample in a second.
TINY_V2A = dict(n_mels=32, frame_size=16, frame_channels=[8, 8], width=16, time_embed_dim=16, dilations=[1, 2])


def save_tiny_v2a(folder: Path, steps: int = 2) -> Path:
    """A random-weight V2A pipeline folder sampling `steps` steps by default."""
    import torch

    from kumovideo.models.v2a_kumo import KumoV2AModel
    from kumovideo.pipelines.pipeline_kumo_v2a import KumoV2APipeline
    from kumovideo.training.train_v2a import build_v2a_scheduler

    torch.manual_seed(0)
    pipe = KumoV2APipeline(KumoV2AModel(**TINY_V2A), build_v2a_scheduler())
    pipe.sampling_defaults = {"num_inference_steps": steps, "guidance_scale": 1.0}
    pipe.save_pretrained(folder)
    return folder


class CallKwargs:
    """The keyword argument `name` of each call of `module`, as a list (a forward pre-hook):
    `with CallKwargs(pipe.transformer, "patch_size") as sizes: pipe(...)`. Tensors become lists."""

    def __init__(self, module, name: str):
        self.module, self.name, self.values = module, name, []

    def __enter__(self) -> list:
        def hook(module, args, kwargs):
            value = kwargs.get(self.name)
            self.values.append(value.tolist() if hasattr(value, "tolist") else value)

        self.handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        return self.values

    def __exit__(self, *exc):
        self.handle.remove()


def perturbed(model, seed: int = 0):
    """`model` with every weight set to N(0, 0.05²) from `seed`, in eval mode: non-trivial
    outputs (a fresh MADiT predicts zeros: zero AdaLN gates and heads)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny_pipeline_pair(change):
    """(a tiny pipeline with perturbed weights, the same pipeline whose transformer is
    `change(that transformer)`), progress bars off: a model and its expanded twin."""
    from kumovideo.pipelines.factory import build_pipeline

    plain = build_pipeline("kumo-tiny", seed=0)
    perturbed(plain.transformer)
    other = build_pipeline("kumo-tiny", seed=0)
    other.transformer = change(plain.transformer).eval()
    for pipe in (plain, other):
        pipe.set_progress_bar_config(disable=True)
    return plain, other
