"""Small helpers shared by tests/gpu (tiny models with seeded, device-independent weights)."""

from __future__ import annotations

import pytest
import torch

# Documented bounds (docs/gpu.md): relative L2 against the fp32 result on the same device.
DTYPE_BOUND = 3e-2  # bf16 / fp16 weights and activations (docs/benchmarks.md: 3e-2 rel.)
FP8_BOUND = 1e-1  # FP8 e4m3 dynamic per-row (torchao) against the bf16 model
COMPILE_BOUND = 1e-4  # inductor against eager, fp32 without TF32
SDPA_FP32_BOUND = 1e-5  # an SDPA backend against the default attention, fp32 without TF32
TILING_BOUND = 0.3  # tiled vs whole decode, random tiny VAE at 480x720 (0.213 measured on a CPU, 2026-12-04)


def need_cuda(what: str) -> None:
    """Skip a test that needs CUDA itself (in a CPU rehearsal)."""
    if not torch.cuda.is_available():
        pytest.skip(f"{what} needs CUDA")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    assert torch.isfinite(a).all(), "non-finite values"
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def perturb(model: torch.nn.Module, seed: int = 1, scale: float = 0.02) -> torch.nn.Module:
    """Random-weight MADiTs start as the identity (zero-initialised gates and head): move every
    weight by seeded noise drawn on the CPU, so the result is the same on every device."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_((torch.randn(p.shape, generator=g) * scale).to(device=p.device, dtype=p.dtype))
    return model


def tiny_pipe(device, seed: int = 0):
    """The tiny preset's whole pipeline, transformer perturbed, on `device` (fp32)."""
    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny", seed=seed)
    perturb(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def tiny_transformer(device, **overrides):
    from kumovideo.models import madit_from_preset

    torch.manual_seed(0)
    return perturb(madit_from_preset("kumo-tiny", **overrides)).to(device).eval()


def transformer_inputs(model, device, batch: int = 2, frames: int = 3, height: int = 6, width: int = 8):
    c = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, c.in_channels, height, width, generator=g)
    e = torch.randn(batch, c.max_text_seq_length, c.text_embed_dim, generator=g)
    t = torch.tensor([500] * batch)
    return x.to(device), e.to(device), t.to(device)


def forward(model, inputs, dtype=None):
    x, e, t = inputs
    if dtype is not None:
        x, e = x.to(dtype), e.to(dtype)
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=e, timestep=t, return_dict=False)[0].float()


CALL = dict(
    prompt="a red circle",
    negative_prompt="blurry",
    height=48,
    width=64,
    num_frames=9,
    num_inference_steps=2,
    guidance_scale=4.0,
)


def latents_of(pipe, **overrides) -> torch.Tensor:
    kwargs = {**CALL, **overrides}
    return pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="latent").frames
