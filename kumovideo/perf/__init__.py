"""Performance: FLOP counting, fast paths (fused QKV, SDPA backend, compile, bf16/fp16,
FP8, step cache, offload) and the `kumo bench` timing harness."""

from kumovideo.perf.fast_paths import (
    FastPathReport,
    apply_fast_paths,
    apply_memory_mode,
    compile_transformer,
    fuse_qkv,
    set_sdpa_backend,
    set_threads,
    unfuse_qkv,
)
from kumovideo.perf.flops import FlopCount, cogvideox_flops, count_model_flops, madit_flops
from kumovideo.perf.step_cache import FirstBlockCache

__all__ = [
    "FastPathReport",
    "FirstBlockCache",
    "FlopCount",
    "apply_fast_paths",
    "apply_memory_mode",
    "cogvideox_flops",
    "compile_transformer",
    "count_model_flops",
    "fuse_qkv",
    "madit_flops",
    "set_sdpa_backend",
    "set_threads",
    "unfuse_qkv",
]
