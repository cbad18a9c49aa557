"""A step cache for MADiT: reuse the blocks' work across denoising steps when it barely changes.

In the spirit of FirstBlockCache (ParaAttention) and TeaCache: at each step the first
block always runs. Its output residual (block-0 output minus its input, vision tokens)
is compared with the one of the last step at which all blocks ran:

    change = mean |r0_now - r0_then| / mean |r0_then|

If `change < threshold`, the remaining blocks are skipped and the residual they added at
that step (for both the vision and the text stream) is added again; else they run, and
their residual and r0 are kept for the next steps. Since the comparison is always with
the last computed step, small changes add up until they cross the threshold.

It works through diffusers hooks (`diffusers.hooks.HookRegistry`), laid out as diffusers'
own `first_block_cache`: `HeadBlockHook` on block 0 measures the change and decides,
`RestBlockHook` on each later block runs it or passes its input through, and the last one
keeps the residual. A forward pre-hook on the transformer watches the timestep. Only the
instance it is attached to changes; `detach()` removes the hooks. It is inference-only:
with gradients on (so with gradient checkpointing too) every block runs as usual. It is
reset when a new sampling loop starts (the timestep goes up), when the shapes change, and
by `reset()`.

With guidance the two halves of the batch (negative and positive prompt) share one
decision. Not for sequence-parallel runs (each rank would decide on its own shard): a
transformer under Ulysses is refused. The hooks are bound to the modules they are
registered on: attach to a copy after copying, not before.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

from kumovideo.perf.order import STEP_CACHE_HOOK, has_step_cache, is_offloaded, is_sequence_parallel
from kumovideo.utils.errors import KumoInputError


class FirstBlockCache:
    def __init__(self, threshold: float = 0.05):
        if threshold < 0:
            raise ValueError(f"step cache threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.transformer = None
        self.hits = 0
        self.misses = 0
        self.changes: list[float] = []
        self._handle = None
        self.reset()

    def reset(self) -> None:
        self._first_residual = None  # r0 at the last computed step
        self._rest_vision = None  # residual of blocks 1.. at the last computed step
        self._rest_text = None
        self._last_timestep = None
        self._skip = False  # this call reuses the residual: blocks 1.. pass their input through
        self._computing = None  # (vision0, text0, r0) of this call while blocks 1.. run

    @property
    def calls(self) -> int:
        return self.hits + self.misses

    def stats(self) -> dict:
        return {
            "threshold": self.threshold,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / self.calls if self.calls else 0.0,
        }

    # ---------------------------------------------------------------- attach / detach

    def attach(self, transformer) -> FirstBlockCache:
        if self.transformer is not None:
            raise RuntimeError("this step cache is already attached to a transformer")
        if has_step_cache(transformer):
            raise RuntimeError("the transformer already has a step cache attached; detach it first")
        if is_sequence_parallel(transformer):
            raise KumoInputError(
                "a step cache decides on each rank's token shard: attach it to a transformer without Ulysses"
            )
        if is_offloaded(transformer):
            raise KumoInputError("the step cache after offloading: attach it first, then offload")
        self.transformer = transformer
        blocks = list(transformer.transformer_blocks)
        HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(
            HeadBlockHook(self, has_rest=len(blocks) > 1), STEP_CACHE_HOOK
        )
        for i, block in enumerate(blocks[1:], start=1):
            hook = RestBlockHook(self, is_last=i == len(blocks) - 1)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, STEP_CACHE_HOOK)
        self._handle = transformer.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self.transformer is None:
            return
        for block in self.transformer.transformer_blocks:
            block._diffusers_hook.remove_hook(STEP_CACHE_HOOK, recurse=False)
        self._handle.remove()
        self.transformer = None
        self.reset()

    def _on_forward(self, module, args, kwargs):
        timestep = kwargs.get("timestep", args[2] if len(args) > 2 else None)
        if timestep is None:
            return None
        t = float(timestep.max()) if torch.is_tensor(timestep) else float(timestep)
        if self._last_timestep is not None and t > self._last_timestep:
            self.reset()  # a new sampling loop started
        self._last_timestep = t
        return None

    # ---------------------------------------------------------------- the decision

    def _relative_change(self, residual: torch.Tensor) -> float | None:
        prev = self._first_residual
        if prev is None or prev.shape != residual.shape or prev.dtype != residual.dtype:
            return None
        denom = prev.float().abs().mean()
        change = (residual.float() - prev.float()).abs().mean() / denom.clamp_min(1e-12)
        return float(change)

    def _first_block_done(self, hidden_states, vision0, text0) -> tuple[torch.Tensor, torch.Tensor]:
        """After block 0: the hit (block 0's output plus the kept residual of blocks 1..) or
        block 0's output for blocks 1.. to compute on."""
        residual = vision0 - hidden_states  # (B, N, D)
        change = self._relative_change(residual)
        if change is not None:
            self.changes.append(change)
        self._skip = (
            change is not None
            and change < self.threshold
            and self._rest_vision is not None
            and self._rest_vision.shape == vision0.shape
            and self._rest_text.shape == text0.shape
        )
        if self._skip:
            self.hits += 1
            return vision0 + self._rest_vision, text0 + self._rest_text
        self._computing = (vision0, text0, residual)
        return vision0, text0

    def _last_block_done(self, vision, text) -> None:
        """After the last block of a computed step: keep r0 and the residual of blocks 1.."""
        vision0, text0, residual = self._computing
        self._first_residual = residual
        self._rest_vision = vision - vision0
        self._rest_text = text - text0
        self._computing = None
        self.misses += 1


class HeadBlockHook(ModelHook):
    """On block 0: runs it, then lets the cache decide whether blocks 1.. run."""

    def __init__(self, cache: FirstBlockCache, has_rest: bool):
        super().__init__()
        self.cache = cache
        self.has_rest = has_rest

    def new_forward(self, block, hidden_states, encoder_hidden_states, temb):
        vision0, text0 = self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb)
        if torch.is_grad_enabled() or not self.has_rest:
            return vision0, text0
        return self.cache._first_block_done(hidden_states, vision0, text0)


class RestBlockHook(ModelHook):
    """On blocks 1..: passes the input through on a hit, else runs the block (the last one
    then hands its output to the cache)."""

    def __init__(self, cache: FirstBlockCache, is_last: bool):
        super().__init__()
        self.cache = cache
        self.is_last = is_last

    def new_forward(self, block, hidden_states, encoder_hidden_states, temb):
        if torch.is_grad_enabled():
            return self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb)
        if self.cache._skip:
            return hidden_states, encoder_hidden_states
        vision, text = self.fn_ref.original_forward(hidden_states, encoder_hidden_states, temb)
        if self.is_last:
            self.cache._last_block_done(vision, text)
        return vision, text


def attached_step_cache(transformer) -> FirstBlockCache | None:
    """The step cache attached to `transformer`, or None."""
    if not has_step_cache(transformer):
        return None
    return transformer.transformer_blocks[0]._diffusers_hook.get_hook(STEP_CACHE_HOOK).cache
