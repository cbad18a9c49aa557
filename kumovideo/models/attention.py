"""Attention processors for MADiT, on diffusers' `Attention` module, and MADiT's fused
projection layout.

The module owns the weights (`to_q`, `to_k`, `to_v`, `to_out.0`, `norm_q`, `norm_k`; fused:
`to_qkv` / `to_kv`, see below); a processor owns the computation. One processor serves
both kinds of MADiT attention:

* joint self-attention (`attn1`): called with the vision tokens and the text tokens;
  attends over [text, vision] and returns the two parts separately;
* cross-attention (`attn2_1`, `attn2_2`): queries from `hidden_states`, keys and values
  from `encoder_hidden_states`.

`attention_fn` is the place where the attention itself happens (scaled dot-product by
default). Other attention functions (an SDPA backend, sequence-parallel exchanges) come
in as new processors installed with `Attention.set_processor`; a processor is not changed
once installed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

# (query, key, value) each (B, heads, N, head_dim) -> (B, heads, N_q, head_dim)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


class MADiTAttention(Attention):
    """diffusers' `Attention` (same modules, names and processors) with a forward that calls
    the processor directly. `Attention.forward` reads the processor's signature with
    `inspect` on every call to filter extra keyword arguments; MADiT passes none. At the
    built-in model's size the lookup cost 0.2 ms of a 10.7 ms coarse multi-scale step on 2
    CPU cores (24 attention calls), where small steps count most."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"MADiT attention takes no extra arguments, got {', '.join(sorted(kwargs))}")
        return self.processor(
            self, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask
        )


class MADiTAttnProcessor:
    """Scaled dot-product attention for MADiT's joint self-attention and cross-attentions.

    Uses the fused projections when the module has them (`fuse_projections`): one matmul
    for q, k, v instead of three, same numbers. `sequence_parallel_group` is the process
    group the vision tokens are sharded over when `attention_fn` exchanges them between
    ranks (Ulysses), else None; it is how other code tells a sequence-parallel model.
    """

    def __init__(self, attention_fn: AttentionFn = sdpa, sequence_parallel_group=None):
        self.attention_fn = attention_fn
        self.sequence_parallel_group = sequence_parallel_group

    def _project(self, attn: Attention, queries_from: torch.Tensor, kv_from: torch.Tensor | None):
        if kv_from is None:  # self-attention
            if attn.fused_projections:
                return attn.to_qkv(queries_from).chunk(3, dim=-1)
            return attn.to_q(queries_from), attn.to_k(queries_from), attn.to_v(queries_from)
        query = attn.to_q(queries_from)
        if attn.fused_projections:
            key, value = attn.to_kv(kv_from).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(kv_from), attn.to_v(kv_from)
        return query, key, value

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,  # (B, N, D): vision (joint) or queries (cross)
        encoder_hidden_states: torch.Tensor | None = None,  # (B, L, D): text (joint) or keys (cross)
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        if attention_mask is not None:
            raise ValueError("MADiT attention takes no mask: the text is always padded to max_text_seq_length")
        joint = not attn.is_cross_attention
        if joint:
            text_len = encoder_hidden_states.shape[1]
            tokens = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # (B, L + N, D)
            query, key, value = self._project(attn, tokens, None)
        else:
            query, key, value = self._project(attn, hidden_states, encoder_hidden_states)

        batch = query.shape[0]
        head_dim = query.shape[-1] // attn.heads
        # (B, N, heads*hd) -> (B, heads, N, hd)
        query = query.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2)
        key = key.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2)
        value = value.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = self.attention_fn(query, key, value)  # (B, heads, N_q, hd)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))

        if joint:
            return out[:, text_len:], out[:, :text_len]  # vision, text
        return out


# ---------------------------------------------------------------------------------------
# Fused projections. A fused self-attention has one `to_qkv` Linear (D -> 3 inner) in place
# of to_q, to_k, to_v; a fused cross-attention keeps `to_q` and has one `to_kv` (D -> 2
# inner) in place of to_k, to_v; `attn.fused_projections` says which layout a module has.
# The fused weights are the separate ones concatenated (rows q, k, v), and the separate
# modules are dropped, so there is no second copy in memory. Checkpoints keep the original
# layout: `fused_state_dict_hook` splits the fused weights back into to_q/to_k/to_v when a
# state dict is taken, and `fused_load_pre_hook` concatenates original weights on loading.
# ---------------------------------------------------------------------------------------


def fused_layout(attn: Attention) -> tuple[str, tuple[str, ...]]:
    """(fused module name, the separate names it replaces) for this kind of attention."""
    if attn.is_cross_attention:
        return "to_kv", ("to_k", "to_v")
    return "to_qkv", ("to_q", "to_k", "to_v")


def _plain_linear(m) -> bool:
    # Not quantised (torchao swaps in tensor subclasses), not sharded, not wrapped.
    return type(m) is nn.Linear and type(m.weight.data) is torch.Tensor


def can_fuse(attn: Attention) -> bool:
    """Whether the separate projections are plain Linears of one input width, dtype, device
    and bias presence (the weights allow fusing)."""
    linears = [getattr(attn, n, None) for n in fused_layout(attn)[1]]
    if not all(_plain_linear(m) for m in linears):
        return False
    return len({(m.in_features, m.weight.dtype, m.weight.device, m.bias is None) for m in linears}) == 1


def _linear_with(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A Linear holding these tensors (no fresh init), trainable where `like` is."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, like.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias, like.bias.requires_grad)
    return linear


def fuse_projections(attn: Attention) -> bool:
    """Switch `attn` to the fused layout; False when it is fused already or cannot be."""
    if attn.fused_projections or not can_fuse(attn):
        return False
    fused_name, names = fused_layout(attn)
    linears = [getattr(attn, n) for n in names]
    with torch.no_grad():
        weight = torch.cat([m.weight for m in linears])  # (sum of outs, D)
        bias = torch.cat([m.bias for m in linears]) if linears[0].bias is not None else None
    for n in names:
        delattr(attn, n)
    attn.add_module(fused_name, _linear_with(weight, bias, like=linears[0]))
    attn.fused_projections = True
    return True


def unfuse_projections(attn: Attention) -> bool:
    """Back to separate projections; False when `attn` is not fused."""
    if not attn.fused_projections:
        return False
    fused_name, names = fused_layout(attn)
    fused = getattr(attn, fused_name)
    delattr(attn, fused_name)
    weights = fused.weight.detach().chunk(len(names))
    biases = fused.bias.detach().chunk(len(names)) if fused.bias is not None else [None] * len(names)
    for name, w, b in zip(names, weights, biases):
        attn.add_module(name, _linear_with(w.clone(), None if b is None else b.clone(), like=fused))
    attn.fused_projections = False
    return True


def fused_state_dict_hook(attn: Attention, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: a fused module's weights under the original names."""
    if not attn.fused_projections:
        return
    fused_name, names = fused_layout(attn)
    for kind in ("weight", "bias"):
        key = f"{prefix}{fused_name}.{kind}"
        if key in state_dict:
            for name, part in zip(names, state_dict.pop(key).chunk(len(names))):
                state_dict[f"{prefix}{name}.{kind}"] = part.detach().clone()


def fused_load_pre_hook(attn: Attention, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: original (separate) weights into a fused module."""
    if not attn.fused_projections:
        return
    fused_name, names = fused_layout(attn)
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in names]
        if all(k in state_dict for k in keys):
            state_dict[f"{prefix}{fused_name}.{kind}"] = torch.cat([state_dict.pop(k) for k in keys])


def keep_original_checkpoint_names(attn: Attention) -> None:
    """Register the two hooks above on `attn` (done once, when MADiT is built; they do
    nothing while the module is not fused)."""
    attn.register_state_dict_post_hook(fused_state_dict_hook)
    attn.register_load_state_dict_pre_hook(fused_load_pre_hook)
