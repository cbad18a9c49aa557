"""Ulysses sequence parallelism for MADiT, on torch.distributed collectives.

Each rank of the Ulysses group holds a contiguous 1/U of the vision tokens and a full
copy of the (short) text tokens. Everything per-token (AdaLN, LayerNorms, projections,
feed-forward, output head) runs on the local shard; only the three attentions need the
other ranks, and each gets the cheapest exchange for its shape:

* joint self-attention over [text, vision] (`attn1`): one all-to-all turns the local
  vision q/k/v (all heads, 1/U of the tokens) into (1/U of the heads, all tokens); the
  text q/k/v are already complete on every rank, so each rank slices its own heads out of
  them locally. Attention runs on [text, vision] for the local heads; a second all-to-all
  returns the vision outputs to sequence shards and an all-gather over heads completes
  the (replicated) text outputs.
* cross-attention vision -> text (`attn2_1`): queries are local vision tokens, keys and
  values the replicated text: no communication at all.
* cross-attention text -> vision (`attn2_2`): every text query needs every vision key.
  Each rank attends over its own vision shard, keeping the log-sum-exp of the scores, and
  the partial results are merged exactly (the flash-attention / ring-attention softmax
  merge) by one small all-reduce of (L x D + L x heads) numbers, which is far less than
  gathering the vision keys and values (2 x N x D).

All collectives are torch's functional collectives (`torch.distributed._functional_collectives`,
the autograd-aware ones), so the same code trains: gradients flow back through the
all-to-alls, all-gathers and all-reduces.

`CommCounter` records the bytes each rank sends per collective, with the standard
per-rank traffic of each algorithm (all-to-all: (U-1)/U of the input; ring all-gather:
(U-1) x the local piece; ring all-reduce: 2 (U-1)/U of the buffer), so the scaling model
in `kumovideo.distributed.scaling` can be checked against a real run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

from kumovideo.distributed.mesh import node_threads
from kumovideo.models.attention import MADiTAttnProcessor, sdpa
from kumovideo.perf.fast_paths import usable_cores
from kumovideo.perf.step_cache import attached_step_cache
from kumovideo.utils.errors import KumoInputError

# ------------------------------------------------------------------------- byte counting


class CommCounter:
    """Bytes sent by this rank, per kind of collective, while active."""

    def __init__(self):
        self.bytes: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, kind: str, nbytes: float) -> None:
        self.bytes[kind] += int(round(nbytes))
        self.calls[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


_COUNTERS: list[CommCounter] = []


@contextlib.contextmanager
def count_comm() -> Iterator[CommCounter]:
    counter = CommCounter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


def _record(kind: str, nbytes: float) -> None:
    for counter in _COUNTERS:
        counter.add(kind, nbytes)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ------------------------------------------------------------------------- collectives


def group_size(group) -> int:
    return dist.get_world_size(group)


def group_rank(group) -> int:
    return dist.get_rank(group)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


# ------------------------------------------------------------------------- waiting

# A CPU (gloo) collective completes through a chain of thread wake-ups: gloo's socket
# loop thread, its worker thread, then the caller. Blocking in work.wait() leaves each
# wake-up to the scheduler; on the 2-core CI machine that cost 1.95 ms per exchange
# between two 1-thread processes, against 1.08 ms when the caller polls and yields its
# core in between (`python scripts/bench_gloo_wait.py --rounds 10`). Inference on CPU makes one
# such exchange per denoising step (guidance parallel) or several per block (Ulysses),
# so the caller polls, for at most SPIN_SECONDS, then blocks as usual.
SPIN_SECONDS = 0.05
_yield = getattr(os, "sched_yield", lambda: None)


def spin_wait_enabled(x: torch.Tensor) -> bool:
    """Poll CPU collectives (KUMO_SPIN_WAIT=auto, the default) unless this node's ranks
    already use every core (polling would then take time from the rank being waited
    for); KUMO_SPIN_WAIT=1 always polls, 0 never."""
    mode = os.environ.get("KUMO_SPIN_WAIT", "auto")
    if mode not in ("auto", "0", "1"):
        raise KumoInputError(f"KUMO_SPIN_WAIT={mode!r}; use auto, 0 or 1")
    if mode != "auto":
        return mode == "1"
    if x.device.type != "cpu":
        return False
    return node_threads() <= usable_cores()


def wait_for(work, x: torch.Tensor) -> None:
    """Wait for an async collective on `x` (see SPIN_SECONDS); raises what the collective raised."""
    if spin_wait_enabled(x):
        deadline = time.perf_counter() + SPIN_SECONDS
        while not work.is_completed() and time.perf_counter() < deadline:
            _yield()
    work.wait()


# With autograd: torch's functional collectives (differentiable). Without (inference):
# the plain in-place collectives, which have less overhead per call.


def all_to_all(x: torch.Tensor, group, kind: str = "all_to_all") -> torch.Tensor:
    """Exchange dim 0 (size U): piece i goes to rank i; piece i of the result came from rank i."""
    u = group_size(group)
    x = x.contiguous()
    _record(kind, _nbytes(x) * (u - 1) / u)
    if _needs_grad(x):
        return funcol.wait_tensor(funcol.all_to_all_single_autograd(x, None, None, group))
    out = torch.empty_like(x)
    wait_for(dist.all_to_all_single(out, x, group=group, async_op=True), x)
    return out


_all_gather_autograd = getattr(funcol, "all_gather_single_autograd", None) or funcol.all_gather_tensor_autograd
# torch 2.13 renamed all_gather_into_tensor (deprecated there) to all_gather_single.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_gather_cat(x: torch.Tensor, dim: int, group, kind: str = "all_gather") -> torch.Tensor:
    """Concatenate every rank's `x` along `dim` (rank order); differentiable."""
    u = group_size(group)
    _record(kind, _nbytes(x) * (u - 1))
    x = x.movedim(dim, 0).contiguous()  # gather along dim 0, the layout the collective writes
    if _needs_grad(x):
        return funcol.wait_tensor(_all_gather_autograd(x, 0, group)).movedim(0, dim)
    # Gathered straight into one tensor: no list of parts, no torch.cat afterwards.
    out = x.new_empty((u * x.shape[0], *x.shape[1:]))
    wait_for(_all_gather_single(out, x, group=group, async_op=True), x)
    return out.movedim(0, dim)


def all_reduce_sum(x: torch.Tensor, group, kind: str = "all_reduce") -> torch.Tensor:
    u = group_size(group)
    _record(kind, 2 * _nbytes(x) * (u - 1) / u)
    if _needs_grad(x):
        return funcol.wait_tensor(funcol.all_reduce(x.contiguous(), "sum", group))
    x = x.clone(memory_format=torch.contiguous_format)
    wait_for(dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group, async_op=True), x)
    return x


def all_reduce_max(x: torch.Tensor, group, kind: str = "all_reduce") -> torch.Tensor:
    """Max over ranks, no gradient (used only for a softmax shift that cancels out)."""
    u = group_size(group)
    _record(kind, 2 * _nbytes(x) * (u - 1) / u)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(x, op=dist.ReduceOp.MAX, group=group)
    return x


# ------------------------------------------------------------------------- layouts


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """(*lead, H, n, hd) with n = N/U local tokens -> (*lead, H/U, N, hd), all tokens of
    this rank's heads."""
    u = group_size(group)
    *lead, h, n, hd = x.shape
    x = x.reshape(*lead, u, h // u, n, hd).movedim(len(lead), 0)  # (U, *lead, H/U, n, hd)
    x = all_to_all(x, group)  # dim 0 now: the source rank = sequence chunk
    x = x.movedim(0, len(lead) + 1)  # (*lead, H/U, U, n, hd)
    return x.reshape(*lead, h // u, u * n, hd)


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """(*lead, H/U, N, hd) -> (*lead, H, N/U, hd): back to this rank's token shard."""
    u = group_size(group)
    *lead, hu, n_all, hd = x.shape
    x = x.reshape(*lead, hu, u, n_all // u, hd).movedim(len(lead) + 1, 0)  # (U, *lead, H/U, n, hd)
    x = all_to_all(x, group)  # dim 0 now: the source rank = head group
    x = x.movedim(0, len(lead))  # (*lead, U, H/U, n, hd)
    return x.reshape(*lead, u * hu, n_all // u, hd)


def shard_tokens(x: torch.Tensor, group, dim: int = 1) -> torch.Tensor:
    """This rank's contiguous 1/U of `x` along `dim` (U must divide the length)."""
    u, r = group_size(group), group_rank(group)
    n = x.shape[dim]
    if n % u:
        raise ValueError(f"sequence length {n} is not divisible by the Ulysses degree {u}")
    return x.narrow(dim, r * (n // u), n // u)


def gather_tokens(x: torch.Tensor, group, dim: int = 1) -> torch.Tensor:
    return all_gather_cat(x, dim, group, kind="all_gather_tokens")


# ------------------------------------------------------------------------- attention functions


def attention_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """Softmax attention that also returns the log-sum-exp of the scores (B, H, Lq).
    Scores, log-sum-exp and output are float32 whatever the input dtype (they are merged
    across ranks next)."""
    scale = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)).to(value.dtype), value).float()
    return out, lse


class UlyssesJointAttention:
    """`attention_fn` for the joint [text, vision] self-attention: text replicated (first
    `text_len` tokens, all heads), vision sharded by sequence."""

    def __init__(self, group, text_len: int, attention_fn=sdpa):
        self.group = group
        self.text_len = text_len
        self.attention_fn = attention_fn

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        u, r = group_size(self.group), group_rank(self.group)
        L = self.text_len
        heads = query.shape[1]
        hu = heads // u
        qkv = torch.stack([query, key, value])  # (3, B, H, L + n, hd)
        text = qkv[:, :, r * hu : (r + 1) * hu, :L]  # this rank's heads of the text
        vision = seq_to_heads(qkv[:, :, :, L:], self.group)  # (3, B, H/U, N, hd)
        q, k, v = torch.cat([text, vision], dim=3).unbind(0)
        out = self.attention_fn(q, k, v)  # (B, H/U, L + N, hd)
        out_text = all_gather_cat(out[:, :, :L], 1, self.group, kind="all_gather_text")  # (B, H, L, hd)
        out_vision = heads_to_seq(out[:, :, L:], self.group)  # (B, H, n, hd)
        return torch.cat([out_text, out_vision], dim=2)


class ShardedKeysAttention:
    """`attention_fn` for replicated queries over sequence-sharded keys/values (text ->
    vision cross-attention): local attention plus an exact log-sum-exp merge."""

    def __init__(self, group):
        self.group = group

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        out, lse = attention_with_lse(query, key, value)  # (B, H, Lq, hd), (B, H, Lq)
        shift = all_reduce_max(lse, self.group, kind="all_reduce_lse_max")
        weight = torch.exp(lse - shift).unsqueeze(-1)  # (B, H, Lq, 1)
        packed = all_reduce_sum(torch.cat([out * weight, weight], dim=-1), self.group, kind="all_reduce_cross")
        return (packed[..., :-1] / packed[..., -1:]).to(query.dtype)


# ------------------------------------------------------------------------- installing it


class UlyssesAttnProcessor(MADiTAttnProcessor):
    """MADiT attention whose `attention_fn` exchanges tokens over `group`. It keeps the
    processor it replaced: `disable_ulysses` (or the end of `ulysses_attention`) puts it back."""

    def __init__(self, attention_fn, group, replaced: MADiTAttnProcessor):
        super().__init__(attention_fn, sequence_parallel_group=group)
        self.replaced = replaced


def _attention_modules(transformer):
    for block in transformer.transformer_blocks:
        yield block.attn1, "joint"
        yield block.attn2_1, "vision_to_text"
        yield block.attn2_2, "text_to_vision"


def _install(transformer, group) -> None:
    text_len = transformer.config.max_text_seq_length
    for module, kind in _attention_modules(transformer):
        processor = module.processor
        if kind == "joint":  # wraps the attention function it finds (an SDPA backend, say)
            fn = UlyssesJointAttention(group, text_len, processor.attention_fn)
        elif kind == "text_to_vision":
            fn = ShardedKeysAttention(group)
        else:  # vision_to_text: local vision queries over replicated text keys, unchanged
            continue
        module.set_processor(UlyssesAttnProcessor(fn, group, processor))


def _restore(transformer) -> None:
    for module, _ in _attention_modules(transformer):
        if isinstance(module.processor, UlyssesAttnProcessor):
            module.set_processor(module.processor.replaced)


def ulysses_group_of(transformer):
    """The group the transformer's attention processors run Ulysses over, or None."""
    for module, kind in _attention_modules(transformer):
        if kind == "joint":
            return getattr(module.processor, "sequence_parallel_group", None)
    return None


def _refuse_step_cache(transformer) -> None:
    if attached_step_cache(transformer) is not None:
        raise KumoInputError(
            "Ulysses with a step cache attached: each rank would decide on its own token shard; detach it"
        )


@contextlib.contextmanager
def ulysses_attention(transformer, group) -> Iterator[None]:
    """Within the block, the transformer's attentions run Ulysses over `group` (expects
    the vision tokens sharded with `shard_tokens`, the text replicated)."""
    if group is None or group_size(group) == 1 or ulysses_group_of(transformer) is group:
        yield
        return
    _refuse_step_cache(transformer)
    _install(transformer, group)
    try:
        yield
    finally:
        _restore(transformer)


def enable_ulysses(transformer, group) -> None:
    """Install the Ulysses attention processors for good (training: gradient checkpointing
    recomputes the blocks during backward, outside any `with`). From then on call the
    model through `sequence_parallel_forward` only; `disable_ulysses` undoes it."""
    if ulysses_group_of(transformer) is not None:
        disable_ulysses(transformer)
    if group is None or group_size(group) == 1:
        return
    _refuse_step_cache(transformer)
    _install(transformer, group)


def disable_ulysses(transformer) -> None:
    _restore(transformer)


def sequence_parallel_forward(
    transformer,
    hidden_states: torch.Tensor,  # (B, F, C, H, W), identical on every rank of the group
    encoder_hidden_states: torch.Tensor,  # (B, L, D_text), identical on every rank
    timestep: torch.Tensor,
    group,
    gather: bool = True,
) -> torch.Tensor:
    """MADiT forward with the vision tokens split over `group`.

    embed (positions for the whole sequence) -> this rank's token shard -> blocks with
    Ulysses attention -> head on the shard -> all-gather of the patch tokens ->
    unpatchify. With `gather=False` returns this rank's patch tokens (B, N/U, p*p*C).

    For training: give every rank of the group the same batch; with the loss computed
    on the gathered output on every rank, data-parallel gradient averaging over all
    ranks (FSDP over the whole world) gives exactly the single-process gradient.
    """
    _, num_frames, _, height, width = hidden_states.shape
    if group is None or group_size(group) == 1:
        return transformer(hidden_states, encoder_hidden_states, timestep, return_dict=False)[0]
    if (
        torch.is_grad_enabled()
        and getattr(transformer, "gradient_checkpointing", False)
        and ulysses_group_of(transformer) is not group
    ):
        raise ValueError(
            "gradient checkpointing recomputes the blocks during backward: call "
            "kumovideo.distributed.ulysses.enable_ulysses(model, group) once before training"
        )
    vision, text, temb = transformer.embed(hidden_states, encoder_hidden_states, timestep)
    vision = shard_tokens(vision, group)
    with ulysses_attention(transformer, group):
        vision, text = transformer.run_blocks(vision, text, temb)
    patches = transformer.head(vision, temb)  # (B, N/U, p*p*C)
    if not gather:
        return patches
    patches = gather_tokens(patches, group)
    return transformer.unpatchify(patches, num_frames, height, width)
