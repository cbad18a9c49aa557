"""Regional and full torch.compile (inductor) on CUDA against eager, fp32 without TF32."""

import copy

import pytest
from gpu_helpers import COMPILE_BOUND, forward, rel, tiny_transformer, transformer_inputs

from kumovideo.perf import compile_transformer


@pytest.mark.parametrize("mode", ["regional", "full"])
def test_compile_matches_eager(device, fp32_exact, mode, tmp_path, record_property):
    model = tiny_transformer(device)
    inputs = transformer_inputs(model, device)
    ref = forward(model, inputs)
    compiled = copy.deepcopy(model)
    compile_transformer(compiled, mode, cache_dir=tmp_path / "inductor")
    first = forward(compiled, inputs)
    again = forward(compiled, inputs)
    diff = rel(again, ref)
    record_property("rel_l2", diff)
    assert rel(first, again) == 0.0
    assert diff < COMPILE_BOUND, diff
