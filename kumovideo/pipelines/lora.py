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
