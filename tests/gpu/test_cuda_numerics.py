"""bf16 / fp16, each SDPA backend and FP8 on CUDA, within the bounds of gpu_helpers (docs/gpu.md)."""

import copy

import pytest
import torch
from gpu_helpers import (
    DTYPE_BOUND,
    FP8_BOUND,
    SDPA_FP32_BOUND,
    forward,
    need_cuda,
    rel,
    tiny_transformer,
    transformer_inputs,
)

from kumovideo.perf import apply_fast_paths, set_sdpa_backend

HEAD_DIM = 64  # the published model's, so each backend meets the constraints it meets at full size


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_within_bound(device, fp32_exact, dtype, record_property):
    if dtype == torch.float16:
        need_cuda("fp16")
    model = tiny_transformer(device, attention_head_dim=HEAD_DIM)
    inputs = transformer_inputs(model, device)
    ref = forward(model, inputs)
    half = copy.deepcopy(model)
    apply_fast_paths(half, fused_qkv=False, dtype=dtype)
    diff = rel(forward(half, inputs, dtype), ref)
    record_property("rel_l2", diff)
    assert diff < DTYPE_BOUND, diff


@pytest.mark.parametrize("backend", ["flash", "cudnn", "efficient", "math"])
def test_sdpa_backend(device, fp32_exact, backend, record_property):
    if backend in ("cudnn", "efficient"):
        need_cuda(f"the {backend} SDPA backend")
    model = tiny_transformer(device, attention_head_dim=HEAD_DIM)
    inputs = transformer_inputs(model, device)
    ref = forward(model, inputs)  # the default attention, fp32
    if backend in ("efficient", "math"):  # these take fp32 too
        fp32 = copy.deepcopy(model)
        set_sdpa_backend(fp32, backend)
        diff32 = rel(forward(fp32, inputs), ref)
        record_property("rel_l2_fp32", diff32)
        assert diff32 < SDPA_FP32_BOUND, diff32
    half = copy.deepcopy(model)
    apply_fast_paths(half, fused_qkv=True, sdpa_backend=backend, dtype=torch.bfloat16)
    diff = rel(forward(half, inputs, torch.bfloat16), ref)
    record_property("rel_l2_bf16", diff)
    assert diff < DTYPE_BOUND, diff


def test_fp8_runs_within_bound(device, record_property):
    need_cuda("FP8")
    from kumovideo.perf.fast_paths import fp8_supported

    ok, why = fp8_supported(device)
    if not ok:
        pytest.skip(why)
    model = tiny_transformer(device, attention_head_dim=HEAD_DIM)
    apply_fast_paths(model, fused_qkv=True, sdpa_backend="auto", dtype=torch.bfloat16)
    inputs = transformer_inputs(model, device)
    ref = forward(model, inputs, torch.bfloat16)
    fp8 = copy.deepcopy(model)
    report = apply_fast_paths(fp8, fused_qkv=False, fp8=True)
    assert report.applied.get("fp8_linears", 0) > 0
    diff = rel(forward(fp8, inputs, torch.bfloat16), ref)
    record_property("rel_l2_vs_bf16", diff)
    record_property("fp8_linears", report.applied["fp8_linears"])
    assert diff < FP8_BOUND, diff
