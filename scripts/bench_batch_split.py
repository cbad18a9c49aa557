"""Why guidance parallel ties at 64x64 on 2 CPU cores: one MADiT call at batch 1 on 1 thread
(a guidance-parallel rank's work per step) against batch 2 on 2 threads (one process doing
both branches), eager, with fused QKV, and compiled (`--compile`, regional torch.compile).

    python scripts/bench_batch_split.py [--height 64 --width 64] [--ops]

Prints the median of 40 calls (after 3 warm-up calls) for each; guidance parallel can
only win where batch 1 x 1 thread plus the per-step exchange (~0.5-1 ms with gloo here)
undercuts batch 2 x 2 threads. `--ops` also profiles 20 eager calls of each and prints the
mean time per call of the heaviest operators: where two intra-op threads split a batch-2
call as well as two processes would, the operator takes the same time in both columns.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from kumovideo.distributed.bench import build, denoiser_call_ms, denoiser_inputs
from kumovideo.perf.fast_paths import apply_fast_paths


def call_ms(pipe, batch: int, threads: int, height: int, width: int) -> float:
    torch.set_num_threads(threads)
    return denoiser_call_ms(pipe, batch, height, width, repeat=40)


def operator_us(
    pipe, batch: int, threads: int, height: int, width: int, calls: int = 20
) -> dict[str, tuple[float, int]]:
    """Operator -> (mean microseconds of one occurrence, occurrences per call), self time."""
    torch.set_num_threads(threads)
    x, text, t = denoiser_inputs(pipe, batch, height, width)
    with torch.no_grad():
        for _ in range(3):
            pipe.transformer(x, text, t)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                pipe.transformer(x, text, t)
    return {e.key: (e.self_cpu_time_total / e.count, e.count // calls) for e in prof.key_averages()}


def print_operators(pipe, height: int, width: int, top: int = 8) -> None:
    one = operator_us(pipe, 1, 1, height, width)
    two = operator_us(pipe, 2, 2, height, width)
    heaviest = sorted(one, key=lambda k: one[k][0] * one[k][1], reverse=True)[:top]
    print("\n| operator (eager) | per call | batch 1, 1 thread us each | batch 2, 2 threads us each | ratio |")
    print("|---|---|---|---|---|")
    for name in heaviest:
        (a, n), (b, _) = one[name], two.get(name, (float("nan"), 0))
        print(f"| {name} | {n} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--ops", action="store_true", help="also profile the eager operators of both settings")
    args = ap.parse_args()
    print("| path | batch 1, 1 thread ms | batch 2, 2 threads ms | batch 2, 1 thread ms | ratio 1x1 / 2x2 |")
    print("|---|---|---|---|---|")
    for path in ("eager", "fused QKV", "compiled"):
        pipe, _ = build("kumo-builtin")
        if path != "eager":
            apply_fast_paths(pipe, fused_qkv=True, compile=path == "compiled", step_cache=None, threads=None)
        one, two, two_one = (call_ms(pipe, b, n, args.height, args.width) for b, n in ((1, 1), (2, 2), (2, 1)))
        print(f"| {path} | {one:.2f} | {two:.2f} | {two_one:.2f} | {one / two:.2f} |")
    if args.ops:
        print_operators(build("kumo-builtin")[0], args.height, args.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
