"""Floating-point dtypes by the names users type (fp32, bf16, fp16, or torch's own)."""

from __future__ import annotations

from collections.abc import Collection

import torch

from kumovideo.utils.errors import KumoInputError

DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
SHORT_NAMES = tuple(DTYPE_NAMES.values())  # the names a command-line flag takes


def resolve_dtype(dtype: torch.dtype | str | None, names: Collection[str] = DTYPES) -> torch.dtype | None:
    """A torch.dtype for `dtype` (a torch.dtype, one of `names` (default: all of DTYPES'),
    or None for None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in names or dtype not in DTYPES:
        raise KumoInputError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    return DTYPES[dtype]
