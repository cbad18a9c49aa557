"""The kit's own measuring parts, one per process: `python scripts/gpu/parts.py NAME [--dry-run]`.

    env      machine, packages, and the two ceilings (bf16 matmul TFLOP/s, copy GB/s)
    clips    2.6B (random weights), bf16 + fused QKV + SDPA + regional compile: one 50-step
             guided DDIM clip and one 4-step Turbo (consistency scheduler, guidance 2)
             clip end to end, peak memory of the whole clip without offload, and the VAE
             decode of the clip's latents (41 frames at 480x720)
    offload  the same clip with model CPU offload + VAE tiling: peak CUDA memory
    profile  torch.profiler's top kernels of two guided steps (run when a target is missed)

Each writes its JSON to $KIT_PART_JSON (rewritten after every measurement, so a part
killed at its time budget keeps what it measured) and uses only public APIs:
`kumovideo.perf.bench.build_subject` (the model `kumo bench` times), `apply_fast_paths`,
`apply_memory_mode`, `KumoPipeline.__call__` / `decode_latents`. With --dry-run every
size is the tiny preset's on the CPU, and the figures are labelled as a CPU dry run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROMPT = "a red circle moves left"
NEGATIVE = "blurry"

FULL = dict(preset="kumo-2.6b", height=480, width=720, frames=41, steps=50, turbo_steps=4, offload_steps=10)
TOY = dict(preset="kumo-tiny", height=48, width=64, frames=9, steps=2, turbo_steps=4, offload_steps=2)


class Report:
    """The part's JSON, rewritten to $KIT_PART_JSON after every update."""

    def __init__(self, part: str, dry_run: bool):
        self.path = Path(os.environ["KIT_PART_JSON"]) if os.environ.get("KIT_PART_JSON") else None
        self.data: dict = {"part": part, "dry_run": dry_run}
        if dry_run:
            self.data["label"] = "CPU dry run at toy sizes: not a measurement of the GPU path"

    def __setitem__(self, key, value):
        self.data[key] = value
        self.flush()

    def flush(self) -> None:
        text = json.dumps(self.data, indent=2, default=str)
        if self.path is None:
            print(text)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


def _device(dry_run: bool):
    import torch

    if dry_run:
        torch.set_num_threads(1)
        return torch.device("cpu"), torch.float32
    if not torch.cuda.is_available():
        raise SystemExit("this part needs a CUDA GPU (or --dry-run)")
    return torch.device("cuda"), torch.bfloat16


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> dict:
    import resource

    import torch

    if device.type == "cuda":
        return {
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "peak_memory_kind": "cuda_max_allocated",
        }
    return {
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "process_peak_rss (CPU dry run)",
    }


def _timed(fn, device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _build(sizes: dict, device, dtype, compile_: bool):
    """The pipeline `kumo bench` times, with the recommended fast paths."""
    from kumovideo.perf import apply_fast_paths
    from kumovideo.perf.bench import build_subject

    pipe, weights, _ = build_subject(sizes["preset"], device, dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    report = apply_fast_paths(pipe, fused_qkv=True, sdpa_backend="auto", compile="regional" if compile_ else False)
    return pipe, weights, report.describe()


def _clip(pipe, sizes: dict, steps: int, guidance: float, output_type: str = "pt"):
    import torch

    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        height=sizes["height"],
        width=sizes["width"],
        num_frames=sizes["frames"],
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
    ).frames


# ------------------------------------------------------------------------------ parts


def part_env(rep: Report, dry_run: bool) -> None:
    import importlib.metadata as md
    import subprocess

    import torch

    packages = {}
    for name in ("torch", "diffusers", "torchao", "transformers", "accelerate", "peft", "av", "huggingface_hub"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    rep["python"] = platform.python_version()
    rep["platform"] = platform.platform()
    rep["packages"] = packages
    rep["cuda_available"] = torch.cuda.is_available()
    rep["torch_cuda"] = torch.version.cuda
    if dry_run or not torch.cuda.is_available():
        rep["ceilings"] = "not measured (CPU dry run)" if dry_run else "not measured (no CUDA)"
        return
    props = torch.cuda.get_device_properties(0)
    rep["gpu"] = {
        "name": props.name,
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
    }
    try:
        rep["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        rep["nvidia_smi"] = f"unavailable: {e}"
    # The two ceilings (METHOD.md): a large bf16 matmul on random data and a device-to-device copy.
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    matmul = 2 * n**3 / statistics.median(times) / 1e12
    del a, b
    x = torch.randn(2**28, device="cuda", dtype=torch.bfloat16)  # 512 MiB, copied into another 512 MiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    ctimes = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        e.synchronize()
        ctimes.append(s.elapsed_time(e) / 1e3)
    copy_gbs = 2 * x.numel() * x.element_size() / statistics.median(ctimes) / 1e9
    rep["ceilings"] = {
        "bf16_matmul_8192_tflops": round(matmul, 1),
        "copy_gb_per_s_read_plus_write": round(copy_gbs, 1),
        "how": "median of 10 after 3 warm-ups, CUDA events, random data",
    }


def part_clips(rep: Report, dry_run: bool) -> None:
    import torch

    from kumovideo.schedulers import KumoLCMScheduler

    sizes = TOY if dry_run else FULL
    device, dtype = _device(dry_run)
    rep["sizes"] = sizes
    t_build, (pipe, weights, fast) = _timed(lambda: _build(sizes, device, dtype, compile_=not dry_run), device)
    rep["weights"] = weights
    rep["fast_paths"] = fast + ("" if not dry_run else " (no compile in the CPU dry run)")
    rep["build_s"] = round(t_build, 2)
    t_warm, _ = _timed(lambda: _clip(pipe, sizes, 1, 6.0), device)  # compiles, autotunes the VAE's convolutions
    rep["warmup_1step_clip_s"] = round(t_warm, 2)
    _reset_peak(device)
    t50, _ = _timed(lambda: _clip(pipe, sizes, sizes["steps"], 6.0), device)
    rep["clip"] = {
        "steps": sizes["steps"],
        "guidance": 6.0,
        "scheduler": type(pipe.scheduler).__name__,
        "wall_s": round(t50, 3),
        "what": "KumoPipeline.__call__ end to end (prompt states, the guided loop, VAE decode, frames); "
        "T5-XXL replaced by fixed random prompt states as in kumo bench",
        **_peak(device),
    }
    base_scheduler = pipe.scheduler
    pipe.scheduler = KumoLCMScheduler()
    turbo = []
    for _ in range(2):
        t, _ = _timed(lambda: _clip(pipe, sizes, sizes["turbo_steps"], 2.0), device)
        turbo.append(t)
        rep["turbo_clip"] = {
            "steps": sizes["turbo_steps"],
            "guidance": 2.0,
            "scheduler": "KumoLCMScheduler",
            "runs_s": [round(x, 3) for x in turbo],
            "median_s": round(statistics.median(turbo), 3),
        }
    pipe.scheduler = base_scheduler
    latents = _clip(pipe, sizes, 1, 6.0, output_type="latent")
    decode = []
    with torch.no_grad():
        for _ in range(2):
            t, video = _timed(lambda: pipe.decode_latents(latents), device)
            decode.append(t)
            rep["vae_decode"] = {
                "latents": list(latents.shape),
                "frames": int(video.shape[2]),
                "height": int(video.shape[3]),
                "width": int(video.shape[4]),
                "dtype": str(pipe.vae.dtype).replace("torch.", ""),
                "runs_s": [round(x, 3) for x in decode],
                "median_s": round(statistics.median(decode), 3),
            }


def part_offload(rep: Report, dry_run: bool) -> None:
    from kumovideo.perf import apply_memory_mode

    sizes = TOY if dry_run else FULL
    device, dtype = _device(dry_run)
    pipe, weights, fast = _build(sizes, device, dtype, compile_=False)
    mode = "none" if dry_run else "model"
    apply_memory_mode(pipe, mode, vae_tiling=True, device=device)
    rep["weights"] = weights
    rep["memory_mode"] = {"offload": mode, "vae_tiling": True}
    if dry_run:
        rep["note"] = "model CPU offload is CUDA only: the CPU dry run measures the clip with VAE tiling alone"
    rep["fast_paths"] = fast
    _reset_peak(device)
    t, _ = _timed(lambda: _clip(pipe, sizes, sizes["offload_steps"], 6.0), device)
    rep["clip"] = {"steps": sizes["offload_steps"], "guidance": 6.0, "wall_s": round(t, 3), "first_call": True}
    rep.data.update(_peak(device))
    rep.data["note_steps"] = "peak memory of a clip does not depend on its step count; fewer steps keep the part short"
    rep.flush()


def part_profile(rep: Report, dry_run: bool) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    sizes = TOY if dry_run else FULL
    device, dtype = _device(dry_run)
    pipe, weights, fast = _build(sizes, device, dtype, compile_=not dry_run)
    rep["weights"] = weights
    rep["fast_paths"] = fast
    shape = _clip(pipe, sizes, 1, 6.0, output_type="latent").shape  # (1, F, C, h, w): the clip's latent
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype).repeat(2, 1, 1, 1, 1)
    with torch.no_grad():
        emb = torch.cat([pipe.encode_prompt(NEGATIVE, device=device), pipe.encode_prompt(PROMPT, device=device)])
    emb = emb.to(device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)

    def step():
        with torch.no_grad():
            pipe.transformer(hidden_states=x, encoder_hidden_states=emb, timestep=t, return_dict=False)

    for _ in range(2):
        step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        _sync(device)
    events = prof.key_averages()

    def self_time(e) -> float:  # microseconds
        if device.type == "cuda":
            return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0))
        return float(e.self_cpu_time_total)

    total = sum(self_time(e) for e in events) or 1.0
    top = sorted(events, key=self_time, reverse=True)[:20]
    rep["profiled"] = "2 guided transformer calls (batch 2) after 2 warm-ups"
    rep["time_kind"] = "self CUDA time" if device.type == "cuda" else "self CPU time (CPU dry run)"
    rep["total_ms"] = round(total / 1e3, 3)
    rep["top"] = [
        {
            "name": e.key[:120],
            "ms": round(self_time(e) / 1e3, 3),
            "calls": e.count,
            "pct": round(100 * self_time(e) / total, 1),
        }
        for e in top
    ]


PARTS = {"env": part_env, "clips": part_clips, "offload": part_offload, "profile": part_profile}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    rep = Report(args.part, args.dry_run)
    rep["command"] = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    PARTS[args.part](rep, args.dry_run)
    rep["done"] = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
