"""A device name a user gave, checked against this machine before anything is moved."""

from __future__ import annotations

import torch

from kumovideo.utils.errors import KumoInputError


def resolve_device(name: str | torch.device | None, cpu: str = "cpu") -> torch.device:
    """`name` as a torch.device this machine has (None: cuda if there is one, else cpu);
    an unknown name or a GPU that is not here is a one-line KumoInputError whose advice
    spells the CPU choice as `cpu` says (the CLI: "--device cpu")."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise KumoInputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    label = str(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KumoInputError(f"device {label!r} asked for, but no CUDA GPU is available; use {cpu}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise KumoInputError(f"device {label!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KumoInputError(f"device 'mps' asked for, but MPS is not available; use {cpu}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise KumoInputError(f"device {label!r} is not supported; use cpu, cuda, cuda:N or mps")
    return device
