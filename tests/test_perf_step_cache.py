"""The step cache (kumovideo.perf.step_cache.FirstBlockCache): off is the default path, a
zero threshold changes nothing, a hit reuses exactly the residual of the last computed
step, a new sampling loop starts afresh."""

from __future__ import annotations

import copy

import pytest
import torch

from kumovideo.models.transformer_kumo import KumoTransformer3DModel, madit_from_preset
from kumovideo.perf.order import STEP_CACHE_HOOK
from kumovideo.perf.step_cache import FirstBlockCache, attached_step_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_tiny() -> KumoTransformer3DModel:
    torch.manual_seed(0)
    model = madit_from_preset("kumo-tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


X = torch.randn(2, 3, 4, 6, 8, generator=torch.Generator().manual_seed(1))
E = torch.randn(2, 16, 24, generator=torch.Generator().manual_seed(2))


def run(model, t, x=X):
    with torch.no_grad():
        return model(x, E, torch.tensor([t, t])).sample


def test_zero_threshold_is_the_default_path():
    model = perturbed_tiny()
    cached = copy.deepcopy(model)
    cache = FirstBlockCache(0.0).attach(cached)
    for t in (900, 850, 800):
        torch.testing.assert_close(run(cached, t), run(model, t), atol=0, rtol=0)
    assert cache.hits == 0 and cache.misses == 3


def test_attach_wraps_one_instance_only_and_detach_restores():
    model = perturbed_tiny()
    other = perturbed_tiny()
    cache = FirstBlockCache(1.0).attach(model)
    assert attached_step_cache(model) is cache and attached_step_cache(other) is None
    assert all(block._diffusers_hook.get_hook(STEP_CACHE_HOOK) for block in model.transformer_blocks)
    assert not any(hasattr(block, "_diffusers_hook") for block in other.transformer_blocks)
    assert "run_blocks" not in vars(model)  # the class's run_blocks, unchanged
    with pytest.raises(RuntimeError):
        FirstBlockCache(1.0).attach(model)
    cache.detach()
    assert attached_step_cache(model) is None and not model._forward_pre_hooks
    assert not any(block._diffusers_hook.hooks for block in model.transformer_blocks)


def test_a_hit_reuses_the_residual_of_the_last_computed_step():
    model = perturbed_tiny()
    cached = copy.deepcopy(model)
    cache = FirstBlockCache(10.0).attach(cached)  # everything after the first step is a hit
    run(cached, 900)
    x2 = X + 0.01 * torch.randn_like(X)
    out = run(cached, 899, x2)
    assert (cache.hits, cache.misses) == (1, 1)

    # By hand: block 0 on the new input, plus what blocks 1.. added at the first step.
    with torch.no_grad():
        v, e, temb = model.embed(X, E, torch.tensor([900, 900]))
        v0, e0 = model.transformer_blocks[0](v, e, temb)
        v1, e1 = model.transformer_blocks[1](v0, e0, temb)
        rest_v = v1 - v0
        v, e, temb = model.embed(x2, E, torch.tensor([899, 899]))
        v0, e0 = model.transformer_blocks[0](v, e, temb)
        expected = model.unpatchify(model.head(v0 + rest_v, temb), 3, 6, 8)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    # and it differs from the full computation, by a little
    full = run(model, 899, x2)
    assert not torch.equal(out, full)


def test_threshold_decides_and_change_is_measured_from_the_last_computed_step():
    model = perturbed_tiny()
    cache = FirstBlockCache(0.5).attach(model)
    run(model, 900)
    run(model, 899)  # tiny change of t: a hit
    assert cache.hits == 1 and 0 < cache.changes[-1] < 0.5
    run(model, 899, X * -3.0)  # a very different input: recomputed
    assert cache.misses == 2 and cache.changes[-1] >= 0.5


def test_new_sampling_loop_resets():
    model = perturbed_tiny()
    cache = FirstBlockCache(10.0).attach(model)
    run(model, 500)
    run(model, 400)
    assert cache.hits == 1
    run(model, 999)  # timestep went up: a new loop, computed in full
    assert cache.misses == 2 and cache.hits == 1


def test_with_gradients_the_default_path_runs():
    model = perturbed_tiny()
    cache = FirstBlockCache(10.0).attach(model)
    model(X, E, torch.tensor([5, 5]))
    model(X, E, torch.tensor([4, 4]))
    assert cache.calls == 0


def test_negative_threshold():
    with pytest.raises(ValueError):
        FirstBlockCache(-0.1)
