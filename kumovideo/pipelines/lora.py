"""LoRA adapters for MADiT: what a LoRA file or folder must be, checked before any weights load.

The mechanism is diffusers' and peft's: `KumoTransformer3DModel` is a `PeftAdapterMixin`
(`add_adapter`, `load_lora_adapter`, `set_adapters`, ...) and `KumoPipeline` a
`CogVideoXLoraLoaderMixin` (`load_lora_weights`, `fuse_lora`, `unload_lora_weights`,
`save_lora_weights`; the transformer is its one LoRA-loadable module). A LoRA folder as
`kumo train dit` writes it (a config with `lora:`, docs/training.md) holds diffusers'
`pytorch_lora_weights.safetensors`, the captions it trained on and `kumo_lora.json` (the base
it adapts and its rank); a bare `.safetensors` file of the same layout loads too.
"""

from __future__ import annotations

import os
from pathlib import Path

from kumovideo.utils.errors import KumoInputError

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' file name
LORA_INFO_NAME = "kumo_lora.json"  # {"base": ..., "rank": ..., "alpha": ..., "target_modules": [...]}


def require_peft() -> None:
    """diffusers runs LoRA layers through peft; without it, one line saying what to install."""
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise KumoInputError("LoRA needs the peft package: pip install 'kumovideo[lora]' (or pip install peft)")


def lora_weights_file(path: str | os.PathLike) -> Path:
    """The safetensors file of a LoRA folder or file; anything else is one line (pickled
    `.bin` weights are refused: weights load from safetensors only)."""
    path = Path(path)
    if path.is_dir():
        weights = path / LORA_WEIGHT_NAME
        if not weights.is_file():
            raise KumoInputError(f"LoRA folder {path} has no {LORA_WEIGHT_NAME}; pass a folder `kumo train` wrote")
        return weights
    if not path.is_file():
        raise KumoInputError(f"LoRA {path} not found; pass a LoRA folder or its .safetensors file")
    if path.suffix != ".safetensors":
        raise KumoInputError(f"LoRA {path} is not a .safetensors file; weights load from safetensors only")
    return path


def check_lora_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= 2:
        raise KumoInputError(f"LoRA scale {scale!r}: use a number from 0 (the base model) to 2 (1: as trained)")
    return float(scale)


def lora_base(path: str | os.PathLike) -> str | None:
    """The base a LoRA folder records in its `kumo_lora.json` (the `init_from` it was trained
    on, as its config wrote it); None for a bare `.safetensors` file or a folder without one."""
    from kumovideo.pipelines.loading import read_json

    info = Path(path) / LORA_INFO_NAME
    if not info.is_file():
        return None
    recorded = read_json(info)
    base = recorded.get("base") if isinstance(recorded, dict) else None
    return base if isinstance(base, str) and base else None


def pipeline_with_lora(base, path: str | os.PathLike, adapter_name: str):
    """A pipeline sharing `base`'s modules (one copy of the weights) with the LoRA at `path`
    loaded into the shared transformer as `adapter_name`, unfused, so that several LoRAs and the
    base serve from one model; `use_adapter` picks which one a call runs. Its caption vocabulary
    and, if the LoRA brings one, its VAE are its own (`KumoPipeline.load_lora_weights`)."""
    view = type(base)(**base.components)
    view.sampling_defaults = base.sampling_defaults
    view.caption_vocabulary = base.caption_vocabulary
    view.training_captions = base.training_captions
    view.load_lora_weights(path, adapter_name=adapter_name)
    base.disable_lora()  # diffusers made the new adapter active on the shared transformer
    return view


def use_adapter(pipe, adapter_name: str | None, scale: float = 1.0) -> None:
    """Make the next call of `pipe` run its transformer with the LoRA `adapter_name` at `scale`,
    or with none (the base weights exactly: peft's layers pass their base layer's output through).
    A transformer without adapters is left alone."""
    if not getattr(pipe.transformer, "_hf_peft_config_loaded", False):
        if adapter_name is not None:
            raise KumoInputError(f"no LoRA {adapter_name!r} is loaded into this pipeline; load it first")
        return
    if adapter_name is None:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    pipe.set_adapters([adapter_name], adapter_weights=[check_lora_scale(scale)])
