"""`kumo bench`: time the denoising step and the end-to-end clip of a preset, with and without fast paths.

    kumo bench --preset builtin --fast --vs cogvideox
    kumo bench --preset kumo-2.6b --device cuda --fast --compile --vs cogvideox --steps 20 --runs 3
    kumo bench --preset kumo-2.6b --flops-only
    kumo bench --preset builtin --multiscale
    kumo bench --preset builtin --lora runs/my-lora/lora

Prints a table (or JSON with --json): s/step (guidance on: batch 2) and end-to-end s as
median [min-max] over --runs after warm-up, peak memory, tokens, model FLOPs per step
counted from the architecture, achieved TFLOP/s, MFU on a known GPU, the speed-up over
the plain eager model and over diffusers' CogVideoX transformer of the same size
(--vs cogvideox, scaled by FLOPs), and how far each fast path moves the final latents.
--multiscale adds a row that samples the first steps at a coarser patch size, beside the
single-scale eager loop; --lora a row with that LoRA as an unfused adapter (as `kumo serve
--lora` runs it; fused, as `kumo generate --lora` runs it, it costs what the eager row does).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

from kumovideo.cli.args import (
    add_lora_args,
    add_multiscale_split_arg,
    add_step_cache_arg,
    check_lora_args,
    check_whole_flags,
    resolve_device,
)
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import WORKERS_MAX, check_whole
from kumovideo.utils.paths import check_output_folder


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time the denoising step and the clip, with and without fast paths",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="builtin",
        choices=["builtin", "kumo-2.6b", "kumo-tiny"],
        help="builtin: the built-in base at its 128x128x17 (random weights of the same architecture if this "
        "build has no trained one); kumo-2.6b: the published size at 480x720x41 (GPU)",
    )
    p.add_argument("--height", type=int, default=None, help="clip height in pixels (default: the preset's)")
    p.add_argument("--width", type=int, default=None, help="clip width in pixels (default: the preset's)")
    p.add_argument("--frames", type=int, default=None, help="clip frames, 8k+1 (default: the preset's)")
    p.add_argument(
        "--steps", type=int, default=None, help="denoising steps per timed loop and per timed clip (default 20)"
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs per row (default 5)")
    p.add_argument(
        "--max-time",
        type=float,
        default=90.0,
        metavar="S",
        help="start no new timed run after S seconds of timing (never fewer than 3 runs; 0: no limit; default 90)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed transformer calls per row before timing (default 3)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="dtype of the fast row (default: bf16 with --fast on a GPU or a CPU with native bf16)",
    )
    p.add_argument(
        "--baseline-dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="dtype of the eager row (default: fp32 on CPU, bf16 on GPU)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="the recommended fast paths: fused QKV, SDPA on its fastest backend, bf16 where the hardware has it",
    )
    p.add_argument("--fused-qkv", action="store_true", help="fused QKV projections only (implied by --fast)")
    p.add_argument(
        "--sdpa-backend",
        default=None,
        choices=["auto", "flash", "cudnn", "efficient", "math"],
        help="attention backend of the fast row (default with --fast: auto)",
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="regional",
        default=None,
        choices=["regional", "full"],
        help="torch.compile the repeated block (regional, default) or the whole transformer (full)",
    )
    p.add_argument("--compile-cache", default=None, help="inductor cache folder (default: $KUMO_CACHE/inductor)")
    p.add_argument(
        "--fp8", action="store_true", help="FP8 dynamic quantisation of the block linears (torchao; Ada/Hopper)"
    )
    add_step_cache_arg(p, "reuse the blocks' residual when block 0's output changed by less than T (relative L1)")
    p.add_argument(
        "--threads",
        default=None,
        help="CPU threads of every row: a number or 'auto' (default: auto = the usable cores; 1 thread "
        "for a model under 20 GFLOP per step, such as the built-in one, when the 1-minute load "
        "average already reaches the core count)",
    )
    p.add_argument(
        "--baseline-threads",
        default=None,
        help="CPU threads of the eager row: a number, 'auto' or 'default' (torch's default: all cores); "
        "default: as --threads",
    )
    p.add_argument(
        "--offload",
        default="none",
        choices=["none", "model", "group", "sequential"],
        help="CPU offload of the fast row (CUDA only)",
    )
    p.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (fast row)")
    p.add_argument("--vae-slicing", action="store_true", help="decode one video of the batch at a time (fast row)")
    p.add_argument(
        "--vs",
        default=None,
        choices=["cogvideox"],
        help="also time diffusers' CogVideoXTransformer3DModel of the same width, depth, heads and tokens",
    )
    p.add_argument(
        "--multiscale",
        action="store_true",
        help="also time the eager model sampling its first steps at a coarser patch size (Lumina-Video; a model "
        "without one gets an untrained coarse scale of twice its patch); sides must be multiples of 8 x that patch",
    )
    add_multiscale_split_arg(p)
    add_lora_args(p)
    p.add_argument("--no-baseline", action="store_true", help="skip the eager row")
    p.add_argument("--no-e2e", action="store_true", help="time the step only, not the end-to-end clip")
    p.add_argument(
        "--flops-only",
        action="store_true",
        help="print the counted FLOPs, tokens and parameters (meta-device model, no timing, any machine)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run)


def _threads(value, flag: str, words: tuple[str, ...]):
    if value is None or value in words:
        return value
    try:
        n = int(value)
    except ValueError:
        raise KumoInputError(f"{flag} {value!r}: use a positive number or {' or '.join(map(repr, words))}") from None
    return check_whole(n, flag, high=WORKERS_MAX, too_small="{name} must be positive, got {value}")


def check_args(args) -> tuple:
    """Every flag, even those --flops-only does not use; the two thread settings, parsed."""
    check_whole_flags(args, "--height", "--width", "--frames", "--steps")
    check_whole_flags(args, "--runs", too_small="{name} must be at least 1, got {value}")
    check_whole_flags(args, "--warmup", low=0, too_small="{name} must be 0 or more, got {value}")
    if args.step_cache is not None and not (math.isfinite(args.step_cache) and args.step_cache >= 0):
        raise KumoInputError(f"--step-cache threshold must be >= 0, got {args.step_cache}")
    if not (math.isfinite(args.max_time) and args.max_time >= 0):
        raise KumoInputError(f"--max-time {args.max_time}: give seconds >= 0 (0: no limit)")
    threads = _threads(args.threads, "--threads", ("auto",))
    baseline_threads = _threads(args.baseline_threads, "--baseline-threads", ("auto", "default"))
    resolve_device(args.device)  # a bad --device is named even when --flops-only would not use it
    check_lora_args(args)
    if args.compile_cache is not None:
        check_output_folder(args.compile_cache, "--compile-cache")
    return threads, baseline_threads


def run(args) -> int:
    threads, baseline_threads = check_args(args)
    from kumovideo.perf.bench import BenchSpec, flops_only, format_flops_only, format_table, run_bench

    if args.flops_only:
        info = flops_only(args.preset, args.height, args.width, args.frames)
        print(json.dumps(info, indent=2) if args.json else format_flops_only(info))
        return 0

    # The flags of the same names as BenchSpec's fields, and those spelled otherwise.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchSpec) if hasattr(args, f.name)}
    spec = BenchSpec(
        **{
            **given,
            "threads": threads,
            "baseline_threads": baseline_threads,
            "baseline": not args.no_baseline,
            "e2e": not args.no_e2e,
            "max_time": args.max_time or None,
        }
    )
    log = (lambda s: None) if args.json else (lambda s: print(f"kumo bench: {s}", file=sys.stderr, flush=True))
    result = run_bench(spec, log=log)
    print(json.dumps(result, indent=2, default=float) if args.json else format_table(result))
    return 0
