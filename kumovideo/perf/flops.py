"""Model FLOPs of one MADiT forward, counted from the architecture.

What is counted: every matrix multiply and the patch-embedding convolution, a
multiply-add being 2 FLOPs (the convention of MFU figures and of
`torch.utils.flop_counter.FlopCounterMode`, which the tests check this against):

* patch embedding: the 2x2 strided conv over every latent frame, and the text projection;
* timestep MLP (`time_embedding.linear_1/2`), once per sample;
* AdaLN linears: `norm1.linear`, `norm2.linear` of every block (timestep -> 6 D) and
  `norm_out.linear` (-> 2 D), once per sample, not per token;
* attention projections: q, k, v and out of the joint self-attention over the L + N
  tokens of [text, vision]; of the vision -> text cross-attention (q and out over N
  tokens, k and v over L); of the text -> vision cross-attention (q and out over L, k and
  v over N);
* attention itself, with the real sequence lengths: QK^T and AV are each
  2 x len_q x len_kv x D (all heads): (L+N)^2 for the joint attention, N x L and L x N
  for the two cross-attentions;
* feed-forward over the L + N joined tokens (D -> 4 D -> D);
* output projection over the N vision tokens (D -> p^2 C).

Not counted: norms, activations, softmax, residual adds, gating (elementwise, well under
1% at any size where the figure matters).

The same counter gives diffusers' `CogVideoXTransformer3DModel` (the `--vs cogvideox`
peer): the same blocks less the two cross-attentions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kumovideo.geometry import ClipGeometry, config_value


@dataclass
class FlopCount:
    """FLOPs of one forward at `batch`, by part; token counts per sample."""

    total: int
    parts: dict[str, int]
    batch: int
    vision_tokens: int
    text_tokens: int
    params: int | None = None
    shape: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Joint sequence length (text + vision) per sample."""
        return self.vision_tokens + self.text_tokens

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = self.tokens
        return d


_SI_SCALES = {"T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3}


def format_si(value: float, unit: str, prefixes: str = "TGM") -> str:
    """`value` with the largest of `prefixes` it reaches, e.g. "214.56 TFLOP", "732.16 kB"."""
    for prefix in prefixes:
        scale = _SI_SCALES[prefix]
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def transformer_flops(
    config: Any,
    latent_frames: int,
    latent_height: int,
    latent_width: int,
    batch: int = 1,
    cross_attention: bool = True,
) -> FlopCount:
    """FLOPs of one forward of a MADiT (`cross_attention=True`) or of a CogVideoX
    transformer (`False`) with this config, on latents (batch, F, C, H, W) (for a clip of
    pixels: `kumovideo.geometry.ClipGeometry.latent_size`)."""
    heads = config_value(config, "num_attention_heads")
    head_dim = config_value(config, "attention_head_dim")
    layers = config_value(config, "num_layers")
    c_in = config_value(config, "in_channels")
    c_out = config_value(config, "out_channels") or c_in
    t_dim = config_value(config, "time_embed_dim")
    text_dim = config_value(config, "text_embed_dim")
    p = config_value(config, "patch_size", 2)
    ff_mult = 4
    if config_value(config, "patch_size_t") not in (None, 1):
        raise ValueError("temporal patching (patch_size_t) is not counted; CogVideoX 1.0 / MADiT use none")
    if latent_height % p or latent_width % p:
        raise ValueError(f"latent {latent_height}x{latent_width} is not divisible by the patch size {p}")

    D = heads * head_dim
    L = config_value(config, "max_text_seq_length")
    N = ClipGeometry(patch=p).latent_tokens(latent_frames, latent_height, latent_width)
    S = L + N

    def mm(m: int, k: int, n: int) -> int:  # (m, k) @ (k, n)
        return 2 * m * k * n

    per_block: dict[str, int] = {}
    per_block["adaln"] = 2 * mm(1, t_dim, 6 * D)  # norm1, norm2: once per sample
    # Joint self-attention over [text, vision].
    per_block["attn_proj"] = mm(S, D, 3 * D) + mm(S, D, D)
    per_block["attn_scores"] = mm(S, D, S)  # QK^T, all heads
    per_block["attn_values"] = mm(S, S, D)  # AV
    if cross_attention:
        # vision -> text: q, out over N; k, v over L.   text -> vision: q, out over L; k, v over N.
        per_block["attn_proj"] += (mm(N, D, D) * 2 + mm(L, D, 2 * D)) + (mm(L, D, D) * 2 + mm(N, D, 2 * D))
        per_block["attn_scores"] += mm(N, D, L) + mm(L, D, N)
        per_block["attn_values"] += mm(N, L, D) + mm(L, N, D)
    per_block["ff"] = mm(S, D, ff_mult * D) + mm(S, ff_mult * D, D)

    parts: dict[str, int] = {k: v * layers for k, v in per_block.items()}
    parts["patch_embed"] = mm(N, c_in * p * p, D) + mm(L, text_dim, D)
    parts["time_embed"] = mm(1, D, t_dim) + mm(1, t_dim, t_dim)
    parts["adaln"] += mm(1, t_dim, 2 * D)  # norm_out
    parts["proj_out"] = mm(N, D, p * p * c_out)

    parts = {k: v * batch for k, v in parts.items()}
    return FlopCount(
        total=sum(parts.values()),
        parts=parts,
        batch=batch,
        vision_tokens=N,
        text_tokens=L,
        shape=dict(latent_frames=latent_frames, latent_height=latent_height, latent_width=latent_width),
    )


def madit_flops(config: Any, latent_frames: int, latent_height: int, latent_width: int, batch: int = 1) -> FlopCount:
    return transformer_flops(config, latent_frames, latent_height, latent_width, batch, cross_attention=True)


def cogvideox_flops(
    config: Any, latent_frames: int, latent_height: int, latent_width: int, batch: int = 1
) -> FlopCount:
    return transformer_flops(config, latent_frames, latent_height, latent_width, batch, cross_attention=False)


def count_model_flops(model, latent_frames: int, latent_height: int, latent_width: int, batch: int = 1) -> FlopCount:
    """FLOPs of `model` (a KumoTransformer3DModel or a CogVideoXTransformer3DModel), with its
    parameter count."""
    from kumovideo.models.transformer_kumo import KumoTransformer3DModel, count_parameters

    cross = isinstance(model, KumoTransformer3DModel)
    if not cross and type(model).__name__ != "CogVideoXTransformer3DModel":
        raise TypeError(f"no FLOP count for {type(model).__name__}")
    count = transformer_flops(model.config, latent_frames, latent_height, latent_width, batch, cross_attention=cross)
    count.params = count_parameters(model)
    return count


def measured_flops(model, *inputs, **kwargs) -> int:
    """FLOPs of one call as torch's FlopCounterMode counts them (matmuls, convs, SDPA);
    a cross-check for the architecture count, not what the benchmark reports."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs, **kwargs)
    return counter.get_total_flops()


# Dense (no sparsity) peak tensor throughput, TFLOP/s, from the vendors' data sheets.
# Matched against torch.cuda.get_device_name(), most specific first.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "fp8": 1670.0, "tf32": 418.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "tf32": 378.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "tf32": 494.7}),  # SXM
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "tf32": 494.7}),
    ("H20", {"bf16": 148.0, "fp16": 148.0, "fp8": 296.0, "tf32": 74.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "fp8": 733.0, "tf32": 183.0}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "fp8": 242.5, "tf32": 60.0}),
]


def gpu_peak_tflops(device_name: str, kind: str = "bf16") -> float | None:
    """The dense peak of a known GPU for `kind` (bf16, fp16, fp8, tf32), else None."""
    for key, peaks in GPU_PEAK_TFLOPS:
        if key in device_name:
            return peaks.get(kind)
    return None
