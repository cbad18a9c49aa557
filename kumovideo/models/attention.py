"""Attention processors for MADiT, on diffusers' `Attention` module.

The module owns the weights (`to_q`, `to_k`, `to_v`, `to_out.0`, `norm_q`, `norm_k`, and
after `fuse_projections()` also `to_qkv` / `to_kv`); a processor owns the computation.
One processor serves both kinds of MADiT attention:

* joint self-attention (`attn1`): called with the vision tokens and the text tokens;
  attends over [text, vision] and returns the two parts separately;
* cross-attention (`attn2_1`, `attn2_2`): queries from `hidden_states`, keys and values
  from `encoder_hidden_states`.

`attention_fn` is the place where the attention itself happens (scaled dot-product by
default); sequence-parallel inference swaps it for an all-to-all version.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

# (query, key, value) each (B, heads, N, head_dim) -> (B, heads, N_q, head_dim)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


class MADiTAttnProcessor:
    """Scaled dot-product attention for MADiT's joint self-attention and cross-attentions.

    Uses fused projections (`attn.fuse_projections()`) when the module has them: one matmul
    for q, k, v instead of three, same numbers.
    """

    def __init__(self, attention_fn: AttentionFn = sdpa):
        self.attention_fn = attention_fn

    def _project(self, attn: Attention, queries_from: torch.Tensor, kv_from: torch.Tensor | None):
        if kv_from is None:  # self-attention
            if getattr(attn, "fused_projections", False):
                return attn.to_qkv(queries_from).chunk(3, dim=-1)
            return attn.to_q(queries_from), attn.to_k(queries_from), attn.to_v(queries_from)
        query = attn.to_q(queries_from)
        if getattr(attn, "fused_projections", False):
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
