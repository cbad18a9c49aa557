"""Fast paths for MADiT inference, each a switch, none on by default.

    from kumovideo.perf import apply_fast_paths
    report = apply_fast_paths(pipe, fused_qkv=True, compile=True, dtype=torch.bfloat16)

* `fused_qkv`: one matmul for q, k, v of the joint self-attention and one for k, v of each
  cross-attention. Fusion happens after loading: an original checkpoint loads as it is,
  then the model's `fuse_qkv_projections` switches to the fused layout of
  `kumovideo.models.attention` (weights concatenated, the separate ones dropped: no
  duplicate copy in memory). `state_dict()` of a fused model still uses the original
  names (`to_q/to_k/to_v`), and loading an original state dict into a fused model works,
  so `save_pretrained` writes checkpoints the original reads. Same numbers up to matmul
  summation order (exactly equal on CPU fp32 in the tests).
* `sdpa_backend`: attention through `scaled_dot_product_attention` on a chosen backend
  ("auto": PyTorch's choice, flash attention on a recent GPU at bf16/fp16; "flash",
  "cudnn", "efficient", "math"). Installed as new MADiT processors whose `attention_fn` it
  is, so Ulysses, whose processors wrap the `attention_fn` they replace, composes with it.
* `compile`: `torch.compile` of the repeated block ("regional": one compiled graph reused
  by all blocks, compile time of one block) or of the whole transformer ("full"), with
  the inductor cache in a fixed folder (`$KUMO_CACHE/inductor`) so a second process
  starts warm.
* `dtype`: cast the transformer (and with a pipeline the VAE; the text encoder too for
  bf16) to bf16/fp16. The parity tests stay at fp32.
* `fp8`: FP8 dynamic quantisation (per-row scales) of the block linears through torchao,
  on GPUs with FP8 tensor cores (compute capability >= 8.9: Ada, Hopper).
* `step_cache`: reuse the blocks' residual across steps when the first block's output
  barely changes (`kumovideo.perf.step_cache`); changes the output, off by default.
* `threads`: CPU threads for intra-op parallelism ("auto": the usable cores; one thread
  for a model whose ops are small when other work already keeps the cores busy).

The order matters (`kumovideo.perf.order`): dtype, fusion, attention backend, FP8,
compile, step cache, then offload. `apply_fast_paths` keeps it; each function called on
its own refuses, in one line, to run after a later step.

`apply_memory_mode` holds the memory switches (model / group / sequential CPU offload,
VAE tiling and slicing).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook

from kumovideo.perf.order import COMPILE_HOOK, check_order
from kumovideo.perf.step_cache import FirstBlockCache
from kumovideo.utils.dtypes import DTYPE_NAMES, resolve_dtype
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.extras import missing_extra_message, require


def _transformer_of(target: Any) -> nn.Module:
    return target.transformer if hasattr(target, "transformer") else target


# ------------------------------------------------------------------------ fused QKV


def fuse_qkv(target: Any) -> int:
    """Fuse the q/k/v (self-attention) and k/v (cross-attention) projections of every
    attention of the transformer (`KumoTransformer3DModel.fuse_qkv_projections`); returns
    how many modules were fused."""
    transformer = _transformer_of(target)
    check_order(transformer, "fused_qkv")
    return transformer.fuse_qkv_projections()


def unfuse_qkv(target: Any) -> int:
    """Undo `fuse_qkv` (separate to_q/to_k/to_v modules again); returns how many."""
    return _transformer_of(target).unfuse_qkv_projections()


# ------------------------------------------------------------------------ SDPA backend

SDPA_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")


class SDPAttention:
    """`attention_fn` running scaled_dot_product_attention on the given backends (in
    priority order); "auto" leaves the choice to PyTorch."""

    def __init__(self, backend: str = "auto"):
        if backend not in SDPA_BACKENDS:
            raise KumoInputError(f"unknown SDPA backend {backend!r}; use one of {', '.join(SDPA_BACKENDS)}")
        self.backend = backend
        if backend != "auto":
            from torch.nn.attention import SDPBackend

            self._backends = [
                {
                    "flash": SDPBackend.FLASH_ATTENTION,
                    "cudnn": SDPBackend.CUDNN_ATTENTION,
                    "efficient": SDPBackend.EFFICIENT_ATTENTION,
                    "math": SDPBackend.MATH,
                }[backend]
            ]

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if self.backend == "auto":
            return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(self._backends):
            return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)

    def __repr__(self) -> str:
        return f"SDPAttention({self.backend!r})"


def set_sdpa_backend(target: Any, backend: str = "auto") -> int:
    """Install MADiT processors running SDPA on `backend` in every MADiT attention; returns
    the module count. Before Ulysses: its processors wrap the attention function they find."""
    from kumovideo.models.attention import MADiTAttnProcessor

    processor = MADiTAttnProcessor(SDPAttention(backend))
    transformer = _transformer_of(target)
    check_order(transformer, "sdpa")
    attentions = [m for m in transformer.modules() if isinstance(getattr(m, "processor", None), MADiTAttnProcessor)]
    if any(attn.processor.sequence_parallel_group is not None for attn in attentions):
        raise KumoInputError(
            "the SDPA backend after Ulysses: set it first, then enable_ulysses (it wraps the backend)"
        )
    for attn in attentions:
        attn.set_processor(processor)
    return len(attentions)


# ------------------------------------------------------------------------ compile


def compile_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Point inductor's on-disk cache (FX graph and autotuning caches) at a fixed folder:
    `path`, else $TORCHINDUCTOR_CACHE_DIR, else $KUMO_CACHE/inductor. A later process
    with the same model, shapes and torch version then compiles from the cache."""
    from kumovideo.builtin import cache_dir

    user_dir = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:  # importing some diffusers models makes inductor set the variable to its /tmp default
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        if user_dir and os.path.abspath(user_dir) == os.path.abspath(default_cache_dir()):
            user_dir = None
    except ImportError:
        pass
    folder = Path(path or user_dir or cache_dir() / "inductor")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return folder


class CompiledForwardHook(ModelHook):
    """Runs a block's forward through torch.compile. A hook rather than `nn.Module.compile`
    (which compiles the whole call, later hooks included), so that hooks registered after
    it, the step cache's, run outside the compiled code. The blocks share one code object
    and so one compiled graph."""

    def __init__(self, **compile_options):
        super().__init__()
        self.compile_options = compile_options
        self.compiled = None

    def new_forward(self, module: nn.Module, *args, **kwargs):
        if self.compiled is None:
            self.compiled = torch.compile(self.fn_ref.original_forward, **self.compile_options)
        return self.compiled(*args, **kwargs)


def compile_transformer(
    target: Any, mode: str = "regional", cache_dir: str | os.PathLike | None = None, compile_mode: str | None = None
) -> Path:
    """torch.compile the transformer: "regional" compiles the block (one graph, reused by
    every block: compile time of one block), "full" the whole forward. Returns the cache
    folder. Compilation itself happens at the first call."""
    if mode not in ("regional", "full"):
        raise KumoInputError(f"compile mode {mode!r}; use 'regional' or 'full'")
    folder = compile_cache_dir(cache_dir)
    transformer = _transformer_of(target)
    check_order(transformer, "compile")
    if mode == "regional":
        for block in transformer.transformer_blocks:
            hook = CompiledForwardHook(fullgraph=True, dynamic=False, mode=compile_mode)
            HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, COMPILE_HOOK)
    else:
        transformer.compile(dynamic=False, mode=compile_mode)
    return folder


# ------------------------------------------------------------------------ dtype


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 is faster
    than fp32; elsewhere oneDNN emulates it and it is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cast_dtype(target: Any, dtype: torch.dtype) -> None:
    """Cast the transformer, and with a pipeline the VAE (and the text encoder for bf16;
    T5 overflows in fp16, so it keeps its dtype then), to `dtype`."""
    modules = [_transformer_of(target)]
    check_order(modules[0], "dtype")
    if hasattr(target, "vae"):
        modules.append(target.vae)
        if dtype != torch.float16 and getattr(target, "text_encoder", None) is not None:
            modules.append(target.text_encoder)
    for m in modules:
        nn.Module.to(m, dtype=dtype)  # diffusers' ModelMixin.to warns about a plain cast


# ------------------------------------------------------------------------ FP8


def fp8_supported(device: torch.device | None = None) -> tuple[bool, str]:
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return False, "FP8 needs a CUDA GPU with FP8 tensor cores (Ada or Hopper); this run is not on one"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return False, f"FP8 needs compute capability >= 8.9 (Ada, Hopper); this GPU is {major}.{minor}"
    try:
        require("torchao", "--fp8")
    except KumoInputError:
        return False, missing_extra_message("torchao", "--fp8")
    return True, ""


def _fp8_filter(module: nn.Module, fqn: str) -> bool:
    # The block linears that see tokens: attention projections and feed-forward. The AdaLN
    # linears see one row per sample (nothing to gain, scales get noisy), and the patch
    # embedding / output head are small and precision-sensitive.
    if not isinstance(module, nn.Linear) or not fqn.startswith("transformer_blocks."):
        return False
    if fqn.endswith("norm1.linear") or fqn.endswith("norm2.linear"):
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def quantize_fp8(target: Any) -> int:
    """FP8 (e4m3) dynamic activation + weight quantisation, per-row scales, of the block
    linears; returns how many linears were quantised."""
    transformer = _transformer_of(target)
    ok, why = fp8_supported(next(transformer.parameters()).device)
    if not ok:
        raise KumoInputError(why)
    check_order(transformer, "fp8")
    from torchao.quantization import quantize_

    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    except ImportError:  # torchao < 0.9
        from torchao.quantization import PerRow, float8_dynamic_activation_float8_weight

        config = float8_dynamic_activation_float8_weight(granularity=PerRow())
    count = sum(_fp8_filter(m, n) for n, m in transformer.named_modules())
    quantize_(transformer, config, filter_fn=_fp8_filter)
    return count


# ------------------------------------------------------------------------ threads


@functools.lru_cache(maxsize=1)
def usable_cores() -> int:
    """Physical cores this process may run on. Counted once per process: psutil's count
    costs ~0.1 ms, as much as a CPU collective that asks on every call."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:
        logical = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(logical, physical))


# Below this many FLOPs per transformer call the ops are small (the built-in model: ~1
# GFLOP per guided step, its matmuls ~100x128 by 128x512): every op is an OpenMP
# fork/join of ~0.1 ms. On cores of their own two threads still win (idle 2-core machine,
# docs/benchmarks.md: 0.0099-0.0108 against 0.0119-0.0131 s/step), but on cores other
# processes are using each fork/join waits for a descheduled thread and one thread is
# many times faster (load 2.5-7 on 2 cores: 0.29 against 0.018 s/step).
SMALL_MODEL_FLOPS = 20e9


def cores_are_busy(cores: int) -> bool:
    """True when other work already keeps every usable core busy (1-minute load average)."""
    try:
        return os.getloadavg()[0] >= cores
    except (AttributeError, OSError):  # no load average on this platform
        return False


def recommended_threads(flops_per_call: float | None = None) -> int:
    """The usable cores; one thread for a small model on a machine that is already busy."""
    cores = usable_cores()
    if flops_per_call is not None and flops_per_call < SMALL_MODEL_FLOPS and cores_are_busy(cores):
        return 1
    return cores


def set_threads(threads: int | str | None, flops_per_call: float | None = None) -> int:
    """Set torch's intra-op CPU threads ("auto": `recommended_threads`); returns the number."""
    if threads is None:
        return torch.get_num_threads()
    n = recommended_threads(flops_per_call) if threads == "auto" else int(threads)
    if n < 1:
        raise KumoInputError(f"threads={threads}; use a positive number or 'auto'")
    torch.set_num_threads(n)
    return n


# ------------------------------------------------------------------------ all together


@dataclass
class FastPathReport:
    applied: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    step_cache: Any = None

    def describe(self) -> str:
        parts = []
        for k, v in self.applied.items():
            parts.append(k if v is True else f"{k}={v}")
        return ", ".join(parts) or "none"


def apply_fast_paths(
    target: Any,
    fused_qkv: bool = True,
    compile: bool | str = False,
    dtype: torch.dtype | str | None = None,
    fp8: bool = False,
    step_cache: float | None = None,
    sdpa_backend: str | None = None,
    threads: int | str | None = None,
    compile_cache: str | os.PathLike | None = None,
) -> FastPathReport:
    """Apply the chosen fast paths to a KumoPipeline or a KumoTransformer3DModel, in the
    order they must happen: dtype, fusion, attention backend, FP8, compile, step cache.
    Call after the model is on its device (and before any offload hooks: refused after)."""
    report = FastPathReport()
    transformer = _transformer_of(target)
    dtype = resolve_dtype(dtype)
    if dtype is not None and dtype != transformer.dtype:
        cast_dtype(target, dtype)
        report.applied["dtype"] = DTYPE_NAMES[dtype]
    if fused_qkv:
        report.applied["fused_qkv"] = fuse_qkv(transformer)
    if sdpa_backend is not None:
        set_sdpa_backend(transformer, sdpa_backend)
        report.applied["sdpa"] = sdpa_backend
    if fp8:
        report.applied["fp8_linears"] = quantize_fp8(transformer)
    if compile:
        mode = compile if isinstance(compile, str) else "regional"
        report.applied["compile"] = mode
        report.notes.append(f"inductor cache: {compile_transformer(transformer, mode, compile_cache)}")
    if step_cache is not None:
        report.step_cache = FirstBlockCache(step_cache).attach(transformer)
        report.applied["step_cache"] = step_cache
    if threads is not None:
        report.applied["threads"] = set_threads(threads)
    return report


# ------------------------------------------------------------------------ memory

OFFLOAD_MODES = ("none", "model", "group", "sequential")


def apply_memory_mode(
    pipe,
    offload: str = "none",
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    device: torch.device | str | None = None,
) -> None:
    """Memory switches for a KumoPipeline.

    * offload "model": each model (T5, transformer, VAE) on the GPU only while it runs;
    * "group": the transformer's blocks stream to the GPU one group at a time, overlapped
      with compute on a side CUDA stream; T5 and the VAE layer by layer (small GPUs);
    * "sequential": every layer moved on use (the least memory, the slowest);
    * VAE tiling (spatial tiles) and slicing (one video of the batch at a time).
    """
    if offload not in OFFLOAD_MODES:
        raise KumoInputError(f"offload {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    device = torch.device(device) if device is not None else None
    if offload != "none":
        if device is None or device.type != "cuda":
            raise KumoInputError(
                f"--offload {offload} moves models between a CUDA GPU and the CPU; it needs --device cuda"
            )
        pipe.to("cpu")  # the hooks bring each part to the GPU when it runs
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.transformer.enable_group_offload(
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
            )
            from diffusers.hooks import apply_group_offloading

            for module in (pipe.text_encoder, pipe.vae):
                apply_group_offloading(
                    module,
                    onload_device=device,
                    offload_device=torch.device("cpu"),
                    offload_type="leaf_level",
                    use_stream=True,
                )
    if vae_tiling:
        pipe.enable_vae_tiling()
    if vae_slicing:
        pipe.enable_vae_slicing()
