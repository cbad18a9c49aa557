"""The timing harness behind `kumo bench`.

For a preset and a clip shape it builds the model, then times, after warm-up and over
several runs (median and spread):

* the denoising step: a run is a whole sampling loop of `steps` steps (classifier-free
  guidance: the transformer at batch 2, the guidance combination, the scheduler step),
  divided by the number of steps, so a step cache is timed over a real schedule;
* the end-to-end clip: `KumoPipeline.__call__` (T5, the loop, the VAE decode);

and reports peak memory (CUDA max allocated, else the process's peak RSS), the token
count, model FLOPs per step counted from the architecture (`kumovideo.perf.flops`),
achieved TFLOP/s and, on a GPU with a known peak, MFU against the dense bf16 peak.

Rows, all measured in the same process:
* `eager`: the model as loaded, no fast path (the baseline), at `baseline_threads`;
* `fast`: the same weights with the chosen fast paths (when any is chosen);
* `cogvideox`: with `vs="cogvideox"`, diffusers' CogVideoXTransformer3DModel of the same
  width, depth, heads and token count, eager, at the dtype and threads of the last row;
* `multiscale`: with `multiscale`, the eager model sampling its first steps at its coarsest
  patch size (Lumina-Video; `KumoPipeline(..., multiscale=True)`), at the eager row's dtype
  and threads. A model without coarse scales gets one (twice its patch) from
  `expand_for_multiscale`: untrained, so only its times mean anything.

On a CPU the rows' runs are interleaved (eager, fast, peer, eager, ...) so that load from
other processes falls on all rows alike; on a GPU each row runs in one block with only its
models on the GPU, so its peak memory is its own.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn

from kumovideo.geometry import DEFAULT_GEOMETRY
from kumovideo.perf.fast_paths import apply_fast_paths, apply_memory_mode, cpu_supports_bf16
from kumovideo.perf.flops import FlopCount, format_si, gpu_peak_tflops, transformer_flops
from kumovideo.utils.dtypes import DTYPE_NAMES, resolve_dtype
from kumovideo.utils.errors import KumoInputError

PRESETS = ("builtin", "kumo-2.6b", "kumo-tiny")
PROMPT = "a red circle moves left"  # fits the built-in model's 24-byte text window
NEGATIVE = "blurry"
GUIDANCE = 6.0
# Steps per timed loop and per timed clip. Fewer than a real clip's 50, so that a CPU run
# stays short; s/step does not depend on it (the step cache's hit rate does a little).
DEFAULT_STEPS = 20
MIN_RUNS = 3  # a time budget never cuts the timed runs below this


@dataclass
class BenchSpec:
    preset: str = "builtin"
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None
    runs: int = 5
    warmup: int = 3
    device: str | None = None
    dtype: str | None = None  # dtype of the fast row
    baseline_dtype: str | None = None  # default: fp32 on CPU, bf16 on CUDA
    fast: bool = False
    fused_qkv: bool = False
    sdpa_backend: str | None = None
    compile: str | None = None  # "regional" | "full"
    fp8: bool = False
    step_cache: float | None = None
    threads: str | int | None = None  # CPU threads of every row (None: "auto" on CPU)
    baseline_threads: str | int | None = None  # of the eager row (None: as `threads`; "default": torch's)
    offload: str = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    vs: str | None = None
    baseline: bool = True
    e2e: bool = True
    compile_cache: str | None = None
    max_time: float | None = 90.0  # seconds of timed runs after which no new run starts (at least MIN_RUNS)
    multiscale: bool = False  # add the `multiscale` row
    multiscale_split: float | None = None  # its share of coarse steps (None: the model's default)
    lora: str | None = None  # add the `lora` row: this LoRA, unfused, as `kumo serve --lora` runs it
    lora_scale: float | None = None


# ---------------------------------------------------------------------------- building


class RandomTextEncoder(nn.Module):
    """Stands in for T5-XXL (4.7B parameters, run once per clip, not part of the step) in the
    full-size benchmark: prompt states of the right shape, fixed per prompt."""

    def __init__(self, dim: int):
        super().__init__()
        self.config = SimpleNamespace(d_model=dim)
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives .device / .dtype

    @property
    def dtype(self) -> torch.dtype:  # what DiffusionPipeline.to asks of every module
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, input_ids: torch.Tensor):
        g = torch.Generator().manual_seed(int(input_ids.long().sum()) % (2**31))
        states = torch.randn(*input_ids.shape, self.config.d_model, generator=g)
        return (states.to(device=self.anchor.device, dtype=self.anchor.dtype),)


def _perturb(model: nn.Module, seed: int = 1, scale: float = 0.02) -> None:
    """Random-weight MADiTs start as the identity (zero-initialised AdaLN gates and head):
    perturb every weight so the blocks compute something a comparison can see."""
    with torch.no_grad():
        for p in model.parameters():
            g = torch.Generator(device=p.device).manual_seed(seed)
            p.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * scale)
            seed += 1


def build_subject(preset: str, device: torch.device, dtype: torch.dtype):
    """(pipeline, description of the weights, sampling defaults) for a preset."""
    from kumovideo.pipelines import KumoPipeline

    if preset == "builtin":
        from kumovideo.builtin import BUILTIN_DIRS, is_trained

        if is_trained():
            folder = BUILTIN_DIRS[False]
            pipe = KumoPipeline.from_pretrained(folder)
            return pipe, f"trained built-in model ({folder.name})", pipe.sampling_defaults
        from kumovideo.pipelines.factory import build_pipeline

        pipe = build_pipeline("kumo-builtin", seed=0)
        _perturb(pipe.transformer)
        return pipe, "random weights, same architecture (no trained built-in model in this build)", {}
    if preset == "kumo-tiny":
        from kumovideo.pipelines.factory import build_pipeline

        pipe = build_pipeline("kumo-tiny", seed=0)
        _perturb(pipe.transformer)
        return pipe, "random weights", {}
    if preset == "kumo-2.6b":
        from diffusers import AutoencoderKLCogVideoX
        from transformers import ByT5Tokenizer

        from kumovideo.models.transformer_kumo import madit_from_preset
        from kumovideo.schedulers import KumoDDIMScheduler

        torch.manual_seed(0)
        with torch.device(device):
            transformer = madit_from_preset("kumo-2.6b")
            nn.Module.to(transformer, dtype=dtype)
            _perturb(transformer)
            vae = AutoencoderKLCogVideoX()  # the CogVideoX VAE: 16 latent channels, 8x / 4x
        nn.Module.to(vae, dtype=dtype)
        text = RandomTextEncoder(transformer.config.text_embed_dim).to(device)
        pipe = KumoPipeline(
            tokenizer=ByT5Tokenizer(),
            text_encoder=text,
            vae=vae,
            transformer=transformer,
            scheduler=KumoDDIMScheduler(),
        )
        return pipe, "random weights; T5-XXL replaced by fixed random prompt states (not timed in the step)", {}
    raise KumoInputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")


def build_peer(config: Any, frames: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """diffusers' CogVideoXTransformer3DModel with MADiT's width, depth, heads and tokens."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    with torch.device(device):
        peer = CogVideoXTransformer3DModel(
            num_attention_heads=config.num_attention_heads,
            attention_head_dim=config.attention_head_dim,
            num_layers=config.num_layers,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            time_embed_dim=config.time_embed_dim,
            text_embed_dim=config.text_embed_dim,
            max_text_seq_length=config.max_text_seq_length,
            sample_height=config.sample_height,
            sample_width=config.sample_width,
            sample_frames=frames,
            patch_size=config.patch_size,
            temporal_compression_ratio=config.temporal_compression_ratio,
            attention_bias=True,
        )
    nn.Module.to(peer, dtype=dtype)
    return peer.eval()


def flops_only(
    preset: str, height: int | None = None, width: int | None = None, frames: int | None = None, guidance: bool = True
) -> dict:
    """FLOPs, tokens and parameters of a preset from a meta-device model (allocates nothing);
    `builtin` is the shipped model's own config where this build has it (as the timed bench
    loads it: 128x128, where the `kumo-builtin` preset's default is the first model's 64x64)."""
    from kumovideo.builtin import BUILTIN_DIRS, is_trained
    from kumovideo.models.transformer_kumo import KumoTransformer3DModel, madit_from_preset

    with torch.device("meta"):
        if preset == "builtin" and is_trained():
            config = KumoTransformer3DModel.load_config(BUILTIN_DIRS[False] / "transformer")
            model = KumoTransformer3DModel.from_config(config)
        else:
            model = madit_from_preset("kumo-builtin" if preset == "builtin" else preset)
    c = model.config
    # No VAE here: the published one's spatial stride, the transformer's own time compression and patch.
    geometry = replace(DEFAULT_GEOMETRY, temporal=c.temporal_compression_ratio, patch=c.patch_size)
    sample_frames, sample_height, sample_width = geometry.sample_clip(c)
    height = height or sample_height
    width = width or sample_width
    frames = frames or sample_frames
    geometry.check_clip(frames, height, width)  # as generation would
    f, h, w = geometry.latent_size(frames, height, width)
    batch = 2 if guidance else 1
    count = transformer_flops(c, f, h, w, batch, cross_attention=True)
    peer = transformer_flops(c, f, h, w, batch, cross_attention=False)
    from kumovideo.models.transformer_kumo import count_parameters

    return {
        "preset": preset,
        "height": height,
        "width": width,
        "frames": frames,
        "latent": [f, h, w],
        "batch": batch,
        "params": count_parameters(model),
        "flops_per_step": count.total,
        "flops_parts": count.parts,
        "vision_tokens": count.vision_tokens,
        "text_tokens": count.text_tokens,
        "tokens": count.tokens,
        "peer_cogvideox_flops_per_step": peer.total,
    }


# ---------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss() -> int:
    """High-water mark of this process's resident set size, in bytes (no sampling thread,
    which would itself take CPU from the timed work)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def summarise(samples: list[float]) -> dict:
    if not samples:
        return {}
    med = statistics.median(samples)
    return {
        "median": med,
        "min": min(samples),
        "max": max(samples),
        "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "spread_pct": 100 * (max(samples) - min(samples)) / med if med else 0.0,
        "samples": samples,
    }


@dataclass
class Row:
    name: str
    model: nn.Module
    dtype: torch.dtype
    threads: int
    pipe: Any = None  # KumoPipeline for MADiT rows
    flops: FlopCount | None = None
    fast: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    step_cache: Any = None
    offloaded: bool = False  # offload hooks manage the devices
    step_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    first_call_s: float | None = None
    final_latents: torch.Tensor | None = None
    cache_stats: dict | None = None
    coarse_patch: int | None = None  # the multiscale row's coarse patch size ...
    coarse_steps: int = 0  # ... for this many of the first steps of a loop


def _denoise_loop(
    row: Row, latents: torch.Tensor, embeds: torch.Tensor, scheduler, steps: int, device
) -> torch.Tensor:
    """One sampling loop of `steps` guided steps on the row's transformer (no T5, no VAE)."""
    scheduler.set_timesteps(steps, device=device)
    x = latents.to(device=device, dtype=row.dtype)
    embeds = embeds.to(device=device, dtype=row.dtype)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
            scale = {"patch_size": row.coarse_patch} if i < row.coarse_steps else {}
            v = row.model(
                hidden_states=model_input,
                encoder_hidden_states=embeds,
                timestep=t.expand(2),
                return_dict=False,
                **scale,
            )[0].float()
            v_uncond, v_text = v.chunk(2)
            v = v_uncond + GUIDANCE * (v_text - v_uncond)
            x = scheduler.step(v, t, x, return_dict=False)[0].to(row.dtype)
    return x


def multiscale_subject(pipe) -> tuple[Any, str]:
    """A copy of `pipe` for the multiscale row and a note on its weights: the same weights,
    with a coarse scale of twice the patch size added when the model has none."""
    from kumovideo.models.transformer_kumo import expand_for_multiscale

    ms_pipe = copy.deepcopy(pipe)
    if ms_pipe.transformer.config.get("multiscale_patch_sizes"):
        return ms_pipe, "the model's own coarse scales"
    p = ms_pipe.transformer.config.patch_size
    ms_pipe.transformer = expand_for_multiscale(ms_pipe.transformer, [2 * p])
    return ms_pipe, f"coarse patch {2 * p} added by expand_for_multiscale (untrained: times only)"


def multiscale_row(
    ms_pipe, note: str, base: Row | None, steps: int, latent: tuple[int, int, int], split: float
) -> Row:
    """The `multiscale` row: eager, the first `coarse_steps` steps of a loop at the coarsest
    patch size (`split` of them); FLOPs per step averaged over the loop."""
    from kumovideo.models.transformer_kumo import count_parameters
    from kumovideo.pipelines.checks import coarse_steps

    config = ms_pipe.transformer.config
    coarse = max(config.multiscale_patch_sizes)
    n = coarse_steps(steps, split)
    native = transformer_flops(config, *latent, batch=2, cross_attention=True)
    coarse_count = transformer_flops({**config, "patch_size": coarse}, *latent, batch=2, cross_attention=True)
    flops = FlopCount(
        total=round((n * coarse_count.total + (steps - n) * native.total) / steps),
        parts={k: round((n * coarse_count.parts[k] + (steps - n) * v) / steps) for k, v in native.parts.items()},
        batch=2,
        vision_tokens=native.vision_tokens,
        text_tokens=native.text_tokens,
        shape=native.shape,
    )
    flops.params = count_parameters(ms_pipe.transformer)
    notes = [
        f"the first {n} of {steps} steps at patch {coarse} ({coarse_count.vision_tokens} vision tokens), "
        f"the rest at {config.patch_size}; {note}; FLOPs averaged over the loop"
    ]
    dtype = base.dtype if base is not None else ms_pipe.transformer.dtype
    ms_pipe.transformer.to(dtype)
    return Row(
        "multiscale",
        ms_pipe.transformer.eval(),
        dtype,
        1,
        pipe=ms_pipe,
        flops=flops,
        notes=notes,
        coarse_patch=coarse,
        coarse_steps=n,
    )


def lora_row(lora_pipe, path: str, scale: float | None, base: Row | None, flops: FlopCount) -> Row:
    """The `lora` row: `lora_pipe` (a copy of the subject's) with the LoRA at `path` loaded as
    an unfused peft adapter (what `kumo serve --lora` runs; `kumo generate --lora` fuses it and
    costs what the eager row does). The adapter's own FLOPs are not counted."""
    from kumovideo.pipelines.lora import use_adapter

    lora_pipe.load_lora_weights(path, adapter_name="bench")
    use_adapter(lora_pipe, "bench", 1.0 if scale is None else scale)
    dtype = base.dtype if base is not None else lora_pipe.transformer.dtype
    lora_pipe.transformer.to(dtype)
    note = f"{path} as an unfused peft adapter (kumo serve --lora); its own FLOPs not counted"
    return Row("lora", lora_pipe.transformer.eval(), dtype, 1, pipe=lora_pipe, flops=flops, notes=[note])


def _warm_up(row: Row, latents, embeds, scheduler, warmup: int, device) -> None:
    if warmup < 1:
        return
    scheduler.set_timesteps(max(warmup, 1), device=device)
    x = latents.to(device=device, dtype=row.dtype)
    emb = embeds.to(device=device, dtype=row.dtype)
    scales = [{}] if row.coarse_patch is None else [{"patch_size": row.coarse_patch}, {}]  # both, in turn
    with torch.no_grad():
        for i in range(warmup):
            t = scheduler.timesteps[min(i, len(scheduler.timesteps) - 1)]
            _sync(device)
            start = time.perf_counter()
            row.model(
                hidden_states=torch.cat([x, x]),
                encoder_hidden_states=emb,
                timestep=t.expand(2),
                return_dict=False,
                **scales[i % len(scales)],
            )
            _sync(device)
            if row.first_call_s is None:
                row.first_call_s = time.perf_counter() - start
    if row.step_cache is not None:
        row.step_cache.reset()
        row.step_cache.hits = row.step_cache.misses = 0
        row.step_cache.changes.clear()


def _move(row: Row, device: torch.device) -> None:
    # Offload hooks manage their own devices; torchao's FP8 weights stay where they were made.
    if row.offloaded or "fp8_linears" in row.fast:
        return
    if row.pipe is not None:
        row.pipe.to(device)
    else:
        row.model.to(device)


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from kumovideo.perf.fast_paths import usable_cores

    info["cpu"] = cpu
    info["cpu_cores"] = usable_cores()
    info["cpu_bf16"] = cpu_supports_bf16()
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["gpu_peak_bf16_tflops"] = gpu_peak_tflops(info["gpu"], "bf16")
    return info


def _rel_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# A guided step over this many FLOPs takes tens of seconds on a laptop CPU (50-100 GFLOP/s),
# and a bench times hundreds of them: refused on a CPU, with the count and what to do.
CPU_STEP_FLOP_LIMIT = 1e12


def check_cpu_step_flops(preset: str, height: int | None, width: int | None, frames: int | None) -> None:
    """Refuse a CPU bench whose guided step is counted (meta device, nothing allocated) over
    `CPU_STEP_FLOP_LIMIT`; the size is checked on the way, as generation would."""
    info = flops_only(preset, height, width, frames)
    if info["flops_per_step"] > CPU_STEP_FLOP_LIMIT:
        size = f"{info['width']}x{info['height']}x{info['frames']}"
        raise KumoInputError(
            f"{size} counts {info['flops_per_step'] / 1e12:.1f} TFLOP a guided step ({info['tokens']} tokens), "
            f"tens of seconds each on a CPU and hundreds of them timed: use a smaller --height/--width/--frames, "
            "--device cuda, or --flops-only for the counts alone"
        )


def run_bench(spec: BenchSpec, log: Callable[[str], None] = lambda s: None) -> dict:
    """Build, warm up and time the rows of `spec`; returns the results as a dict."""
    from kumovideo.utils.devices import resolve_device

    if spec.preset not in PRESETS:
        raise KumoInputError(f"unknown preset {spec.preset!r}; use one of {', '.join(PRESETS)}")
    if spec.runs < 1 or spec.warmup < 0:
        raise KumoInputError("--runs must be >= 1 and --warmup >= 0")
    if spec.vs not in (None, "cogvideox"):
        raise KumoInputError(f"--vs {spec.vs!r}: the only peer is 'cogvideox'")
    device = resolve_device(spec.device, cpu="--device cpu")
    if spec.preset == "kumo-2.6b" and device.type != "cuda":
        raise KumoInputError(
            "--preset kumo-2.6b runs 2.6B-parameter steps (~215 TFLOP each with guidance), minutes each on a CPU: "
            "run it on a CUDA GPU (--device cuda), or add --flops-only for the counted FLOPs, tokens and parameters"
        )
    if device.type == "cpu":
        check_cpu_step_flops(spec.preset, spec.height, spec.width, spec.frames)
    base_dtype = resolve_dtype(spec.baseline_dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if spec.fast:
        spec.fused_qkv = True
        spec.sdpa_backend = spec.sdpa_backend or "auto"
    threads_spec = spec.threads if spec.threads is not None else ("auto" if device.type == "cpu" else "default")
    base_threads_spec = spec.baseline_threads if spec.baseline_threads is not None else threads_spec
    fast_dtype = resolve_dtype(spec.dtype)
    if fast_dtype is None and spec.fast:
        fast_dtype = torch.bfloat16 if (device.type == "cuda" or cpu_supports_bf16()) else base_dtype
    fast_dtype = fast_dtype or base_dtype
    if fast_dtype == torch.float16 and device.type == "cpu":
        raise KumoInputError("fp16 on a CPU is emulated and slow; use --dtype bf16 (or fp32)")
    want_fast = any(
        [
            spec.fused_qkv,
            spec.sdpa_backend,
            spec.compile,
            spec.fp8,
            spec.step_cache is not None,
            base_threads_spec != threads_spec,
            spec.offload != "none",
            spec.vae_tiling,
            spec.vae_slicing,
            fast_dtype != base_dtype,
        ]
    )
    if spec.fp8:
        from kumovideo.perf.fast_paths import fp8_supported

        ok, why = fp8_supported(device)
        if not ok:
            raise KumoInputError(why)
    from kumovideo.pipelines.checks import check_multiscale_split_flag

    check_multiscale_split_flag(spec.multiscale, spec.multiscale_split)
    if not spec.baseline and not want_fast and not spec.multiscale and not spec.lora:
        raise KumoInputError("--no-baseline with no fast path, --multiscale or --lora leaves nothing to time")

    if spec.offload != "none" and device.type != "cuda":
        raise KumoInputError(
            f"--offload {spec.offload} moves models between a CUDA GPU and the CPU; it needs --device cuda"
        )
    default_threads = torch.get_num_threads()
    # (No progress line before the inputs are checked: a bad input gives one line only.)
    pipe, weights, defaults = build_subject(spec.preset, device, base_dtype)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.transformer.config
    clip = pipe.default_clip()
    height = spec.height or clip["height"]
    width = spec.width or clip["width"]
    frames = spec.frames or clip["num_frames"]
    steps = spec.steps or DEFAULT_STEPS
    lora_pipe = copy.deepcopy(pipe) if spec.lora else None  # before any fast path changes `pipe`
    ms_pipe, ms_note = None, None
    if spec.multiscale:  # before any fast path changes `pipe`
        ms_pipe, ms_note = multiscale_subject(pipe)
        split = ms_pipe.multiscale_split if spec.multiscale_split is None else spec.multiscale_split
        args = (PROMPT, NEGATIVE, height, width, frames, steps, pipe.max_sequence_length, GUIDANCE)
        ms_pipe.check_inputs(*args, multiscale=True, multiscale_split=split)
    pipe.check_inputs(PROMPT, NEGATIVE, height, width, frames, steps, pipe.max_sequence_length, GUIDANCE)
    lf, lh, lw = pipe.geometry.latent_size(frames, height, width)

    # Inputs shared by every row: the initial noise and [negative; positive] prompt states.
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((1, lf, cfg.in_channels, lh, lw), generator=gen) * pipe.scheduler.init_noise_sigma
    pipe.to(device)
    with torch.no_grad():
        embeds = torch.cat([pipe.encode_prompt(NEGATIVE, device=device), pipe.encode_prompt(PROMPT, device=device)])
    embeds = embeds.float().cpu()

    rows: list[Row] = []
    madit_flops = transformer_flops(cfg, lf, lh, lw, batch=2, cross_attention=True)
    from kumovideo.models.transformer_kumo import count_parameters

    madit_flops.params = count_parameters(pipe.transformer)
    from kumovideo.perf.fast_paths import recommended_threads

    def resolve_threads(value) -> int:
        if value == "default":
            return default_threads
        if value == "auto":
            return recommended_threads(madit_flops.total)
        return int(value)

    if spec.baseline:
        base_pipe = copy.deepcopy(pipe) if want_fast else pipe
        rows.append(
            Row(
                "eager",
                base_pipe.transformer.eval(),
                base_pipe.transformer.dtype,
                resolve_threads(base_threads_spec),
                pipe=base_pipe,
                flops=madit_flops,
            )
        )
    if want_fast:
        fpipe = pipe
        report = apply_fast_paths(
            fpipe,
            fused_qkv=spec.fused_qkv,
            compile=spec.compile or False,
            dtype=fast_dtype,
            fp8=spec.fp8,
            step_cache=spec.step_cache,
            sdpa_backend=spec.sdpa_backend,
            threads=None,
            compile_cache=spec.compile_cache,
        )
        threads = resolve_threads(threads_spec)
        if base_threads_spec != threads_spec:
            report.applied["threads"] = threads
        offloaded = spec.offload != "none"
        apply_memory_mode(fpipe, spec.offload, spec.vae_tiling, spec.vae_slicing, device)
        for key, on in (
            ("offload", spec.offload if offloaded else None),
            ("vae_tiling", spec.vae_tiling),
            ("vae_slicing", spec.vae_slicing),
        ):
            if on:
                report.applied[key] = on
        row = Row(
            "fast",
            fpipe.transformer.eval(),
            fast_dtype,
            threads,
            pipe=fpipe,
            flops=madit_flops,
            fast=dict(report.applied),
            notes=list(report.notes),
            step_cache=report.step_cache,
            offloaded=offloaded,
        )
        rows.append(row)
    if spec.vs == "cogvideox":
        last = rows[-1]
        peer = build_peer(cfg, frames, device, last.dtype)
        pf = transformer_flops(peer.config, lf, lh, lw, batch=2, cross_attention=False)
        pf.params = count_parameters(peer)
        rows.append(
            Row(
                "cogvideox",
                peer,
                last.dtype,
                last.threads,
                flops=pf,
                notes=["diffusers CogVideoXTransformer3DModel, eager, same width/depth/heads/tokens"],
            )
        )

    if ms_pipe is not None:
        base_row = rows[0] if spec.baseline else None
        rows.append(multiscale_row(ms_pipe, ms_note, base_row, steps, (lf, lh, lw), split))
        rows[-1].threads = resolve_threads(base_threads_spec)

    if lora_pipe is not None:
        rows.append(lora_row(lora_pipe, spec.lora, spec.lora_scale, rows[0] if spec.baseline else None, madit_flops))
        rows[-1].threads = resolve_threads(base_threads_spec)

    info = machine_info(device)  # before timing: the load average is the other processes'
    interleave = device.type == "cpu"
    for row in rows:
        if device.type == "cuda" and len(rows) > 1:
            _move(row, torch.device("cpu"))
    schedulers = {id(r): copy.deepcopy(pipe.scheduler) for r in rows}

    def step_run(row: Row) -> None:
        torch.set_num_threads(row.threads)
        cache = row.step_cache
        if cache is not None:
            cache.reset()
            cache.hits = cache.misses = 0
        _sync(device)
        start = time.perf_counter()
        row.final_latents = _denoise_loop(row, latents, embeds, schedulers[id(row)], steps, device)
        _sync(device)
        row.step_s.append((time.perf_counter() - start) / steps)
        if cache is not None:
            row.cache_stats = cache.stats()

    def e2e_run(row: Row, n_steps: int, record: bool = True) -> None:
        torch.set_num_threads(row.threads)
        _sync(device)
        start = time.perf_counter()
        scales = {"multiscale": True, "multiscale_split": split} if row.coarse_patch is not None else {}
        row.pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=n_steps,
            guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            **scales,
        )
        _sync(device)
        if record:
            row.e2e_s.append(time.perf_counter() - start)

    def prepare(row: Row) -> None:
        if device.type == "cuda" and len(rows) > 1:
            _move(row, device)
        torch.set_num_threads(row.threads)
        log(f"warming up {row.name} ...")
        _warm_up(row, latents, embeds, schedulers[id(row)], spec.warmup, device)
        if spec.e2e and row.pipe is not None and spec.warmup > 0:
            e2e_run(row, 1, record=False)
            if row.step_cache is not None:
                row.step_cache.reset()

    def finish(row: Row) -> None:
        if device.type == "cuda" and len(rows) > 1:
            _move(row, torch.device("cpu"))
            torch.cuda.empty_cache()

    if interleave:
        for row in rows:
            prepare(row)
        log(f"timing {len(rows)} row(s), {spec.runs} runs each, interleaved ...")
        start = time.perf_counter()
        for i in range(spec.runs):
            if i >= MIN_RUNS and spec.max_time and time.perf_counter() - start > spec.max_time:
                log(f"time budget of {spec.max_time:.0f} s spent: stopping after {i} runs")
                break
            for row in rows:
                step_run(row)
                if spec.e2e and row.pipe is not None:
                    e2e_run(row, steps)
                row.peak_bytes = _peak_rss()
    else:
        for row in rows:
            prepare(row)
            torch.cuda.reset_peak_memory_stats(device)
            log(f"timing {row.name}, {spec.runs} runs ...")
            start = time.perf_counter()
            for i in range(spec.runs):
                if i >= MIN_RUNS and spec.max_time and time.perf_counter() - start > spec.max_time / len(rows):
                    break
                step_run(row)
                if spec.e2e and row.pipe is not None:
                    e2e_run(row, steps)
            row.peak_bytes = torch.cuda.max_memory_allocated(device)
            finish(row)
    torch.set_num_threads(default_threads)
    try:
        info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    peak_tflops = info.get("gpu_peak_bf16_tflops")
    base = rows[0] if spec.baseline else None
    peer = next((r for r in rows if r.name == "cogvideox"), None)
    results = []
    for row in rows:
        st = summarise(row.step_s)
        achieved = row.flops.total / st["median"] / 1e12
        peer_tflops = peer.flops.total / statistics.median(peer.step_s) / 1e12 if peer is not None else None
        entry = {
            "row": row.name,
            "dtype": DTYPE_NAMES.get(row.dtype, str(row.dtype)),
            "threads": row.threads,
            "fast_paths": row.fast,
            "step_s": st,
            "e2e_s": summarise(row.e2e_s) if row.e2e_s else None,
            "peak_memory_bytes": row.peak_bytes,
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
            "flops_per_step": row.flops.total,
            "params": row.flops.params,
            "achieved_tflops": achieved,
            "mfu_bf16_peak": achieved / peak_tflops if peak_tflops else None,
            "speedup_vs_eager": (statistics.median(base.step_s) / st["median"]) if base is not None else None,
            "speedup_vs_peer_flop_scaled": achieved / peer_tflops if peer_tflops and row is not peer else None,
            "first_call_s": row.first_call_s,
            "final_latents_rel_diff_vs_eager": _rel_diff(row.final_latents, base.final_latents)
            if base is not None and row is not base and row.name != "cogvideox"
            else None,
            "multiscale": {"patch_size": row.coarse_patch, "coarse_steps": row.coarse_steps}
            if row.coarse_patch is not None
            else None,
            "notes": row.notes,
        }
        if row.cache_stats is not None:
            entry["step_cache"] = row.cache_stats
        results.append(entry)
    return {
        "preset": spec.preset,
        "weights": weights,
        "device": str(device),
        "machine": info,
        "shape": {"height": height, "width": width, "frames": frames, "latent": [lf, lh, lw]},
        "tokens": {
            "vision": madit_flops.vision_tokens,
            "text": madit_flops.text_tokens,
            "joint": madit_flops.tokens,
            "batch": 2,
        },
        "steps": steps,
        "runs": min(len(r.step_s) for r in rows),
        "runs_asked": spec.runs,
        "warmup": spec.warmup,
        "guidance_scale": GUIDANCE,
        "flops_per_step": madit_flops.total,
        "flops_parts": madit_flops.parts,
        "params": madit_flops.params,
        "interleaved": interleave,
        "rows": results,
    }


# ---------------------------------------------------------------------------- printing


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _fmt_time(stats: dict | None) -> str:
    if not stats:
        return "n/a"
    m = stats["median"]
    digits = 4 if m < 0.1 else 3 if m < 10 else 1
    return f"{m:.{digits}f} [{stats['min']:.{digits}f}-{stats['max']:.{digits}f}]"


def format_table(result: dict) -> str:
    m = result["machine"]
    sh, tok = result["shape"], result["tokens"]
    lines = [
        f"kumo bench: {result['preset']} ({result['weights']})",
        f"clip {sh['height']}x{sh['width']}x{sh['frames']} (latent {'x'.join(map(str, sh['latent']))} F x H x W), "
        f"{tok['vision']} vision + {tok['text']} text = {tok['joint']} tokens per sample, batch 2 (guidance "
        f"{result['guidance_scale']}), {result['steps']} steps",
        f"model FLOPs per step (counted): {format_si(result['flops_per_step'], 'FLOP')}; "
        f"parameters {result['params'] / 1e6:.1f} M",
    ]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_cores']} cores"
    load = f", load average {m['load_average'][0]}" if "load_average" in m else ""
    lines.append(
        f"device {result['device']} ({where}{load}); torch {m['torch']}; {m['date']}; "
        f"{result['runs']} runs after {result['warmup']} warm-up steps, median [min-max]"
        + (f" (of {result['runs_asked']} asked: time budget)" if result["runs"] < result["runs_asked"] else "")
        + ("; rows interleaved" if result["interleaved"] else "")
    )
    header = (
        f"{'row':<12}{'dtype':<6}{'thr':>4}  {'s/step':<26}{'end-to-end s':<22}{'peak mem':>10}"
        f"{'TFLOP/s':>9}{'MFU':>7}{'vs eager':>9}{'vs peer':>9}{'Δ latents':>11}"
    )
    if "load_average" in m and m["load_average"][0] > m["cpu_cores"]:
        lines.append(
            f"warning: this machine is loaded (load average {m['load_average'][0]} on {m['cpu_cores']} cores): "
            "other processes share the cores, multi-threaded rows suffer most"
        )
    lines += [header, "-" * len(header)]
    for r in result["rows"]:
        mfu = f"{100 * r['mfu_bf16_peak']:.1f}%" if r["mfu_bf16_peak"] is not None else "-"
        vs_e = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] is not None else "-"
        vs_p = f"{r['speedup_vs_peer_flop_scaled']:.2f}x" if r["speedup_vs_peer_flop_scaled"] is not None else "-"
        diff = r["final_latents_rel_diff_vs_eager"]
        diff = f"{diff:.1e}" if diff is not None else "-"
        lines.append(
            f"{r['row']:<12}{r['dtype']:<6}{r['threads']:>4}  {_fmt_time(r['step_s']):<26}{_fmt_time(r['e2e_s']):<22}"
            f"{_fmt_bytes(r['peak_memory_bytes']):>10}{r['achieved_tflops']:>9.3f}{mfu:>7}{vs_e:>9}{vs_p:>9}{diff:>11}"
        )
    for r in result["rows"]:
        extra = []
        if r["fast_paths"]:
            extra.append(
                "fast paths: " + ", ".join(k if v is True else f"{k}={v}" for k, v in r["fast_paths"].items())
            )
        if r["first_call_s"] is not None and "compile" in r["fast_paths"]:
            extra.append(f"first call (compile) {r['first_call_s']:.1f} s")
        if "step_cache" in r:
            sc = r["step_cache"]
            extra.append(f"step cache: {sc['hits']} of {sc['hits'] + sc['misses']} steps reused in a sampling loop")
        extra += r["notes"]
        if extra:
            lines.append(f"  {r['row']}: " + "; ".join(extra))
    mem = (
        "CUDA max allocated"
        if result["device"].startswith("cuda")
        else "process peak RSS up to that row's last run (all rows' models resident)"
    )
    notes = [f"peak mem: {mem}", "TFLOP/s: counted FLOPs / median s/step"]
    if any(r["mfu_bf16_peak"] is not None for r in result["rows"]):
        notes.append(f"MFU against the dense bf16 peak, {m.get('gpu_peak_bf16_tflops')} TFLOP/s")
    notes.append("vs peer: achieved TFLOP/s over the cogvideox row's (its step time scaled by FLOPs)")
    notes.append("Δ latents: relative L2 difference of the final latents from the eager row's, same noise")
    lines.append("(" + "; ".join(notes) + ")")
    return "\n".join(lines)


def format_flops_only(info: dict) -> str:
    lines = [
        f"kumo bench --flops-only: {info['preset']} at {info['height']}x{info['width']}x{info['frames']} "
        f"(latent {'x'.join(map(str, info['latent']))})",
        f"parameters        {info['params'] / 1e9:.3f} B"
        if info["params"] >= 1e9
        else f"parameters        {info['params'] / 1e6:.2f} M",
        f"tokens per sample {info['vision_tokens']} vision + {info['text_tokens']} text = {info['tokens']}",
        f"FLOPs per step    {format_si(info['flops_per_step'], 'FLOP')} (batch {info['batch']}: guidance)",
    ]
    for k, v in info["flops_parts"].items():
        lines.append(f"  {k:<15} {format_si(v, 'FLOP'):>14}  {100 * v / info['flops_per_step']:5.1f}%")
    lines.append(
        f"CogVideoX peer    {format_si(info['peer_cogvideox_flops_per_step'], 'FLOP')} per step (no cross-attentions)"
    )
    return "\n".join(lines)
