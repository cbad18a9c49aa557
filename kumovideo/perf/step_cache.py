"""A step cache for MADiT: reuse the blocks' work across denoising steps when it barely changes.

In the spirit of FirstBlockCache (ParaAttention) and TeaCache: at each step the first
block always runs. Its output residual (block-0 output minus its input, vision tokens)
is compared with the one of the last step at which all blocks ran:

    change = mean |r0_now - r0_then| / mean |r0_then|

If `change < threshold`, the remaining blocks are skipped and the residual they added at
that step (for both the vision and the text stream) is added again; else they run, and
their residual and r0 are kept for the next steps. Since the comparison is always with
the last computed step, small changes add up until they cross the threshold.

It wraps `KumoTransformer3DModel.run_blocks` on one model instance (the class and every
other instance keep the default path) and is inference-only: with gradients on, or with
gradient checkpointing, the default path runs. It is reset when a new sampling loop starts
(the timestep goes up), when the shapes change, and by `reset()`.

With guidance the two halves of the batch (negative and positive prompt) share one
decision. Not for sequence-parallel runs: each rank would decide on its own shard.
"""

from __future__ import annotations

import types

import torch


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
        if "run_blocks" in vars(transformer):
            raise RuntimeError("the transformer's run_blocks is already wrapped (a step cache is attached?)")
        self.transformer = transformer
        self._default_run_blocks = transformer.run_blocks  # bound method of the class
        transformer.run_blocks = types.MethodType(_cached_run_blocks, transformer)
        transformer._kumo_step_cache = self
        self._handle = transformer.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self.transformer is None:
            return
        del self.transformer.run_blocks  # back to the class's method
        del self.transformer._kumo_step_cache
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


def _cached_run_blocks(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor):
    cache: FirstBlockCache = self._kumo_step_cache
    if torch.is_grad_enabled() or len(self.transformer_blocks) < 2:
        return cache._default_run_blocks(hidden_states, encoder_hidden_states, temb)
    first, rest = self.transformer_blocks[0], self.transformer_blocks[1:]
    vision0, text0 = first(hidden_states, encoder_hidden_states, temb)
    residual = vision0 - hidden_states
    change = cache._relative_change(residual)
    if change is not None:
        cache.changes.append(change)
    if (
        change is not None
        and change < cache.threshold
        and cache._rest_vision is not None
        and cache._rest_vision.shape == vision0.shape
        and cache._rest_text.shape == text0.shape
    ):
        cache.hits += 1
        return vision0 + cache._rest_vision, text0 + cache._rest_text
    vision, text = vision0, text0
    for block in rest:
        vision, text = block(vision, text, temb)
    cache._first_residual = residual
    cache._rest_vision = vision - vision0
    cache._rest_text = text - text0
    cache.misses += 1
    return vision, text
