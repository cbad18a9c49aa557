"""The order the fast paths go on in, checked where each one is applied.

    dtype -> fused QKV -> SDPA backend -> FP8 -> compile -> step cache -> offload

Each step changes what the next ones see: fusion needs plain Linears (FP8 swaps their
weights for quantised tensors), compile captures the modules as they are, the step cache's
hooks must sit outside the compiled blocks, and offload hooks move the weights the others
work on. `apply_fast_paths` goes in this order; calling a step after a later one (or after
offloading) is refused with one line naming the order. What has been applied is read off
the model itself, not from flags kept beside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kumovideo.utils.errors import KumoInputError

ORDER = ("dtype", "fused_qkv", "sdpa", "fp8", "compile", "step_cache")
NAMES = {
    "dtype": "a dtype cast",
    "fused_qkv": "fused QKV",
    "sdpa": "the SDPA backend",
    "fp8": "FP8 quantisation",
    "compile": "compile",
    "step_cache": "the step cache",
}
ORDER_TEXT = "dtype, fused QKV, SDPA backend, FP8, compile, step cache, then offload"

COMPILE_HOOK = "kumo_compile"  # regional compile's diffusers hooks, on the transformer's blocks
STEP_CACHE_HOOK = "kumo_step_cache"  # the step cache's diffusers hooks, on the transformer's blocks
GROUP_OFFLOAD_HOOK = "group_offloading"  # diffusers' group offloading hook name


def is_quantised(transformer: nn.Module) -> bool:
    """A block Linear whose weight is a tensor subclass (torchao's FP8 tensors)."""
    return any(isinstance(m, nn.Linear) and type(m.weight.data) is not torch.Tensor for m in transformer.modules())


def has_block_hook(transformer: nn.Module, name: str) -> bool:
    """Block 0 of the transformer has the diffusers hook `name`."""
    blocks = getattr(transformer, "transformer_blocks", None)
    registry = getattr(blocks[0], "_diffusers_hook", None) if blocks else None
    return registry is not None and registry.get_hook(name) is not None


def is_compiled(transformer: nn.Module) -> bool:
    """Regional compile (hooks on the blocks) or `nn.Module.compile` on any part."""
    return has_block_hook(transformer, COMPILE_HOOK) or any(
        getattr(m, "_compiled_call_impl", None) is not None for m in transformer.modules()
    )


def has_step_cache(transformer: nn.Module) -> bool:
    return has_block_hook(transformer, STEP_CACHE_HOOK)


def is_offloaded(module: nn.Module) -> bool:
    """accelerate's offload hooks (model / sequential CPU offload) or diffusers' group offloading."""
    for m in module.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if hasattr(m, "_hf_hook") or (registry is not None and registry.get_hook(GROUP_OFFLOAD_HOOK) is not None):
            return True
    return False


def is_sequence_parallel(transformer: nn.Module) -> bool:
    """An attention processor exchanges tokens between ranks (Ulysses is enabled)."""
    return any(
        getattr(getattr(m, "processor", None), "sequence_parallel_group", None) is not None
        for m in transformer.modules()
    )


APPLIED = {"fp8": is_quantised, "compile": is_compiled, "step_cache": has_step_cache}


def check_order(transformer: nn.Module, step: str) -> None:
    """Refuse `step` on a transformer that is offloaded or already has a later step applied."""
    if is_offloaded(transformer):
        raise KumoInputError(f"{NAMES[step]} after offloading: apply fast paths first (order: {ORDER_TEXT})")
    for later in ORDER[ORDER.index(step) + 1 :]:
        if later in APPLIED and APPLIED[later](transformer):
            raise KumoInputError(f"{NAMES[step]} after {NAMES[later]}: apply them in the order {ORDER_TEXT}")
