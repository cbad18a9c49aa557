"""Fast paths as hooks and processors, and the order they go on in (kumovideo.perf.order):
each step after a later one, or after offloading, is refused in one line; Ulysses comes
and goes as installed processors; the oneDNN convolution hook follows a deepcopy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from kumovideo.distributed import ulysses
from kumovideo.models.attention import MADiTAttnProcessor
from kumovideo.models.transformer_kumo import madit_from_preset
from kumovideo.perf import FirstBlockCache, compile_transformer, fuse_qkv, set_sdpa_backend
from kumovideo.perf.fast_paths import cast_dtype
from kumovideo.perf.order import is_compiled
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny():
    torch.manual_seed(0)
    return madit_from_preset("kumo-tiny").eval()


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("step", ["fuse", "cast", "sdpa"])
def test_after_compile_is_refused(step, tmp_path):
    model = tiny()
    compile_transformer(model, cache_dir=tmp_path)  # hooks only: nothing compiles before a call
    assert is_compiled(model)
    apply = {
        "fuse": lambda: fuse_qkv(model),
        "cast": lambda: cast_dtype(model, torch.bfloat16),
        "sdpa": lambda: set_sdpa_backend(model, "math"),
    }[step]
    with pytest.raises(KumoInputError, match="after compile") as excinfo:
        apply()
    assert "dtype, fused QKV, SDPA backend, FP8, compile, step cache" in one_line(excinfo)


def test_compile_after_the_step_cache_is_refused(tmp_path):
    model = tiny()
    FirstBlockCache(0.1).attach(model)
    with pytest.raises(KumoInputError, match="compile after the step cache"):
        compile_transformer(model, cache_dir=tmp_path)


def test_fusion_after_quantisation_is_refused():
    """FP8 swaps the Linears' weights for tensor subclasses, which fusion cannot concatenate."""

    class Quantised(torch.Tensor):
        pass

    model = tiny()
    linear = model.transformer_blocks[0].ff.net[2]
    linear.weight = nn.Parameter(linear.weight.detach().as_subclass(Quantised), requires_grad=False)
    with pytest.raises(KumoInputError, match="fused QKV after FP8"):
        fuse_qkv(model)


def test_fast_paths_after_offload_hooks_are_refused():
    from accelerate.hooks import ModelHook, add_hook_to_module

    model = tiny()
    add_hook_to_module(model, ModelHook())  # what enable_model_cpu_offload leaves on the model
    for apply in (lambda: fuse_qkv(model), lambda: set_sdpa_backend(model)):
        with pytest.raises(KumoInputError, match="after offloading") as excinfo:
            apply()
        one_line(excinfo)
    with pytest.raises(KumoInputError, match="after offloading"):
        FirstBlockCache(0.1).attach(model)


def test_a_second_step_cache_is_refused():
    model = tiny()
    FirstBlockCache(0.1).attach(model)
    with pytest.raises(RuntimeError, match="already has a step cache"):
        FirstBlockCache(0.1).attach(model)


# ------------------------------------------------------------------------ Ulysses as processors


@pytest.fixture
def fake_group(monkeypatch):
    """A 2-rank group stand-in: enough to install the processors (no collective runs)."""
    monkeypatch.setattr(ulysses, "group_size", lambda group: 2)
    return object()


def test_ulysses_installs_processors_and_gives_the_old_ones_back(fake_group):
    model = tiny()
    set_sdpa_backend(model, "math")
    before = dict(model.attn_processors)
    ulysses.enable_ulysses(model, fake_group)
    assert ulysses.ulysses_group_of(model) is fake_group
    joint = model.transformer_blocks[0].attn1.processor
    assert isinstance(joint, ulysses.UlyssesAttnProcessor) and joint.sequence_parallel_group is fake_group
    assert joint.attention_fn.attention_fn is before["transformer_blocks.0.attn1.processor"].attention_fn  # wraps SDPA
    assert model.transformer_blocks[0].attn2_1.processor is before["transformer_blocks.0.attn2_1.processor"]
    ulysses.disable_ulysses(model)
    assert ulysses.ulysses_group_of(model) is None
    assert dict(model.attn_processors) == before


def test_step_cache_and_ulysses_do_not_mix(fake_group):
    model = tiny()
    ulysses.enable_ulysses(model, fake_group)
    with pytest.raises(KumoInputError, match="without Ulysses") as excinfo:
        FirstBlockCache(0.1).attach(model)
    one_line(excinfo)
    with pytest.raises(KumoInputError, match="SDPA backend after Ulysses"):
        set_sdpa_backend(model, "math")
    ulysses.disable_ulysses(model)

    FirstBlockCache(0.1).attach(model)
    with pytest.raises(KumoInputError, match="step cache attached"):
        ulysses.enable_ulysses(model, fake_group)
    with pytest.raises(KumoInputError, match="step cache attached"), ulysses.ulysses_attention(model, fake_group):
        pass
    assert ulysses.ulysses_group_of(model) is None


def test_sequence_parallel_marker_is_on_the_processor():
    model = tiny()
    attn = model.transformer_blocks[0].attn1
    attn.set_processor(MADiTAttnProcessor(sequence_parallel_group=object()))
    with pytest.raises(KumoInputError, match="without Ulysses"):
        FirstBlockCache(0.1).attach(model)


# ------------------------------------------------------------------------ forward arguments


# attention_kwargs carries a LoRA "scale" only (diffusers' convention; tests/test_lora.py)
@pytest.mark.parametrize("kwargs", [{"timestep_cond": torch.zeros(2, 4)}, {"attention_kwargs": {"bogus": 1.0}}])
def test_forward_refuses_what_madit_does_not_take(kwargs):
    model = tiny()
    x, e, t = torch.zeros(2, 3, 4, 6, 8), torch.zeros(2, 16, 24), torch.tensor([1, 1])
    with pytest.raises(KumoInputError, match=next(iter(kwargs))) as excinfo:
        model(x, e, t, **kwargs)
    one_line(excinfo)
    with torch.no_grad():
        assert model(x, e, t, timestep_cond=None, attention_kwargs=None).sample.shape == x.shape


# ------------------------------------------------------------------------ the oneDNN hook


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_a_deepcopy_of_a_routed_conv_computes_with_its_own_weights():
    from kumovideo.models.cpu_conv import is_routed, route_conv3d_to_onednn

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1))
    assert route_conv3d_to_onednn(conv) == 1
    twin = copy.deepcopy(conv)
    with torch.no_grad():
        twin[0].weight.mul_(2.0)
        twin[0].bias.mul_(2.0)
    x = torch.randn(1, 4, 3, 6, 6)
    with torch.no_grad():
        assert is_routed(twin[0])
        torch.testing.assert_close(twin(x), 2 * conv(x), rtol=1e-5, atol=1e-5)
        twin[0].weight.requires_grad_(False)
    out = twin(x.requires_grad_())  # a call with autograd: the module's own forward, on the copy
    torch.testing.assert_close(out.detach(), 2 * conv(x).detach(), rtol=1e-5, atol=1e-5)
