"""Fast paths (kumovideo.perf.fast_paths): each one against the eager fp32 model, within a
stated tolerance; fused checkpoints keep the original names; the parity fixtures still
pass at fp32 with the fast paths on."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from diffusers.models.attention_processor import Attention

from kumovideo.models.attention import MADiTAttention, MADiTAttnProcessor
from kumovideo.models.transformer_kumo import KumoTransformer3DModel, madit_from_preset
from kumovideo.perf import apply_fast_paths, apply_memory_mode, fuse_qkv, set_sdpa_backend, unfuse_qkv
from kumovideo.perf.fast_paths import SDPAttention, quantize_fp8, recommended_threads, set_threads
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread")


# Tolerances, relative to the eager fp32 output's largest magnitude.
EXACT = 1e-6  # fused QKV, SDPA backends, compile (same maths, another summation order at most)
BF16 = 3e-2  # bf16 weights and activations


def perturbed_tiny(seed: int = 0) -> KumoTransformer3DModel:
    """kumo-tiny with every weight perturbed (a fresh MADiT is the identity: zero gates)."""
    torch.manual_seed(seed)
    model = madit_from_preset("kumo-tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 4, 6, 8, generator=g), torch.randn(2, 16, 24, generator=g), torch.tensor([500, 500])


def forward(model, inputs, dtype=torch.float32):
    x, e, t = inputs
    with torch.no_grad():
        return model(x.to(dtype), e.to(dtype), t).sample.float()


def assert_close_rel(out, ref, tol):
    err = (out - ref).abs().max().item() / ref.abs().max().item()
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


# ------------------------------------------------------------------------ attention module


def test_madit_attention_calls_its_processor_as_diffusers_attention_does(inputs):
    """MADiTAttention skips Attention.forward's per-call signature lookup: same outputs as
    diffusers' forward for the joint and the cross attention; stray keyword arguments are a
    TypeError, not a warning."""
    model = perturbed_tiny()
    block = model.transformer_blocks[0]
    assert all(type(a) is MADiTAttention for a in model.attention_modules())
    g = torch.Generator().manual_seed(3)
    vision, text = torch.randn(2, 12, 32, generator=g), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        for attn in (block.attn1, block.attn2_1):
            ours = attn(vision, encoder_hidden_states=text)
            theirs = Attention.forward(attn, vision, encoder_hidden_states=text)
            for a, b in zip(
                ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)
            ):
                assert torch.equal(a, b)
    with pytest.raises(TypeError, match="no extra arguments"):
        block.attn2_1(vision, encoder_hidden_states=text, scale=0.5)


# ------------------------------------------------------------------------ fused QKV


def test_fused_qkv_same_output_and_no_extra_memory(inputs):
    model = perturbed_tiny()
    ref = forward(model, inputs)
    fused = copy.deepcopy(model)
    assert fuse_qkv(fused) == 6  # 2 blocks x (attn1 q/k/v, attn2_1 k/v, attn2_2 k/v)
    assert fuse_qkv(fused) == 0  # idempotent
    attn = fused.transformer_blocks[0].attn1
    assert attn.fused_projections and hasattr(attn, "to_qkv") and not hasattr(attn, "to_q")
    cross = fused.transformer_blocks[0].attn2_1
    assert hasattr(cross, "to_kv") and hasattr(cross, "to_q") and not hasattr(cross, "to_k")
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())
    assert_close_rel(forward(fused, inputs), ref, EXACT)


def test_fused_model_keeps_the_original_checkpoint_names(inputs, tmp_path):
    model = perturbed_tiny()
    ref = forward(model, inputs)
    fused = copy.deepcopy(model)
    fuse_qkv(fused)
    # state_dict under the original names, equal values
    state = fused.state_dict()
    assert set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    # save_pretrained from a fused model writes an original-layout checkpoint ...
    fused.save_pretrained(tmp_path / "t")
    reloaded = KumoTransformer3DModel.from_pretrained(tmp_path / "t").eval()
    assert_close_rel(forward(reloaded, inputs), ref, 0)
    # ... and an original state dict loads into a fused model (strict)
    target = madit_from_preset("kumo-tiny").eval()
    fuse_qkv(target)
    target.load_state_dict(model.state_dict(), strict=True)
    assert_close_rel(forward(target, inputs), ref, EXACT)
    # unfuse gives the separate modules back
    assert unfuse_qkv(target) == 6
    assert (
        hasattr(target.transformer_blocks[1].attn1, "to_q")
        and not target.transformer_blocks[1].attn1.fused_projections
    )
    assert_close_rel(forward(target, inputs), ref, EXACT)


def test_fusion_of_a_loaded_original_checkpoint(fixtures_dir):
    model = KumoTransformer3DModel.from_pretrained(fixtures_dir / "transformer")
    assert fuse_qkv(model) == 3 * model.config.num_layers


# ------------------------------------------------------------------------ attention backend


@pytest.mark.parametrize("backend", ["auto", "math", "flash"])
def test_sdpa_backends_match_eager(inputs, backend):
    model = perturbed_tiny()
    ref = forward(model, inputs)
    fast = copy.deepcopy(model)
    assert set_sdpa_backend(fast, backend) == 6
    assert_close_rel(forward(fast, inputs), ref, EXACT)


def test_sdpa_backend_composes_with_a_wrapping_attention_fn(inputs):
    """A sequence-parallel wrapper installs a processor whose `attention_fn` calls the old one."""
    model = perturbed_tiny()
    ref = forward(model, inputs)
    set_sdpa_backend(model, "math")
    calls = []
    for block in model.transformer_blocks:
        inner = block.attn1.processor.attention_fn
        assert isinstance(inner, SDPAttention)

        def wrapped(q, k, v, inner=inner):
            calls.append(q.shape)
            return inner(q, k, v)

        block.attn1.set_processor(MADiTAttnProcessor(wrapped))
    assert_close_rel(forward(model, inputs), ref, EXACT)
    assert len(calls) == 2


def test_unknown_backend():
    with pytest.raises(KumoInputError, match="SDPA backend"):
        SDPAttention("fastest-please")


# ------------------------------------------------------------------------ dtype


def test_bf16_within_tolerance(inputs):
    model = perturbed_tiny()
    ref = forward(model, inputs)
    fast = copy.deepcopy(model)
    report = apply_fast_paths(fast, fused_qkv=True, dtype="bf16", sdpa_backend="auto")
    assert fast.dtype == torch.bfloat16 and report.applied["dtype"] == "bf16"
    assert_close_rel(forward(fast, inputs, torch.bfloat16), ref, BF16)


def test_pipeline_cast_keeps_t5_out_of_fp16():
    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny")
    apply_fast_paths(pipe, fused_qkv=False, dtype=torch.float16)
    assert pipe.transformer.dtype == pipe.vae.dtype == torch.float16
    assert pipe.text_encoder.dtype == torch.float32


# ------------------------------------------------------------------------ compile


def _have_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _have_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_regional_compile_matches_eager(inputs, tmp_path):
    model = perturbed_tiny()
    ref = forward(model, inputs)
    fast = copy.deepcopy(model)
    report = apply_fast_paths(fast, fused_qkv=True, compile=True, compile_cache=tmp_path / "inductor")
    assert report.applied["compile"] == "regional"
    assert (tmp_path / "inductor").is_dir()
    assert_close_rel(forward(fast, inputs), ref, EXACT)
    assert any(p.is_file() for p in (tmp_path / "inductor").rglob("*"))  # the cache was written


# ------------------------------------------------------------------------ FP8, threads, memory


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_fp8_needs_a_gpu():
    with pytest.raises(KumoInputError, match="FP8 needs"):
        quantize_fp8(perturbed_tiny())


def test_threads(monkeypatch):
    import kumovideo.perf.fast_paths as fast_paths

    cores = fast_paths.usable_cores()
    monkeypatch.setattr(fast_paths.os, "getloadavg", lambda: (cores + 3.0, 1.0, 1.0))
    assert recommended_threads(1e9) == 1  # the built-in model's step on cores already busy
    assert recommended_threads(1e14) == cores  # big ops split well even then
    monkeypatch.setattr(fast_paths.os, "getloadavg", lambda: (cores - 0.5, 1.0, 1.0))
    assert recommended_threads(1e9) == cores  # idle cores: every one of them
    assert recommended_threads() == cores
    before = torch.get_num_threads()
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_threads(None) == 1
    torch.set_num_threads(before)
    with pytest.raises(KumoInputError):
        set_threads(0)


def test_memory_modes():
    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny")
    apply_memory_mode(pipe, "none", vae_tiling=True, vae_slicing=True)
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    for mode in ("model", "group", "sequential"):
        with pytest.raises(KumoInputError, match="CUDA"):
            apply_memory_mode(pipe, mode, device="cpu")
    with pytest.raises(KumoInputError):
        apply_memory_mode(pipe, "everything")


# ------------------------------------------------------------------------ parity with the fast paths on


@pytest.mark.parametrize("case", ["a", "b"])
def test_transformer_parity_with_fast_paths(fixtures_dir, case):
    from safetensors.torch import load_file

    model = KumoTransformer3DModel.from_pretrained(fixtures_dir / "transformer").eval()
    apply_fast_paths(model, fused_qkv=True, sdpa_backend="auto", step_cache=0.0)
    io = load_file(fixtures_dir / "transformer_io.safetensors")
    with torch.no_grad():
        out = model(io[f"{case}.hidden_states"], io[f"{case}.encoder_hidden_states"], io[f"{case}.timestep"]).sample
    torch.testing.assert_close(out, io[f"{case}.output"], atol=1e-4, rtol=1e-4)


def test_pipeline_parity_with_fast_paths(fixtures_dir):
    from safetensors.torch import load_file

    from kumovideo import KumoDDIMScheduler, KumoPipeline

    spec = json.loads((fixtures_dir / "pipeline_cases.json").read_text())["ddim_cfg"]
    io = load_file(fixtures_dir / "pipeline_io.safetensors")
    pipe = KumoPipeline.from_pretrained(fixtures_dir / "pipeline")
    pipe.scheduler = KumoDDIMScheduler.from_pretrained(fixtures_dir / "pipeline" / "scheduler")
    report = apply_fast_paths(pipe, fused_qkv=True, sdpa_backend="auto", step_cache=0.0)
    kwargs = {
        k: spec[k]
        for k in (
            "prompt",
            "negative_prompt",
            "guidance_scale",
            "num_inference_steps",
            "height",
            "width",
            "num_frames",
            "max_sequence_length",
        )
    }
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(spec["seed"]), output_type="latent").frames
    torch.testing.assert_close(latents, io["ddim_cfg.latents"], atol=1e-4, rtol=1e-4)
    assert report.step_cache.hits == 0 and report.step_cache.misses == spec["num_inference_steps"]
