"""Why guidance parallel ties at 64x64 on 2 CPU cores: one MADiT call at batch 1 on 1 thread
(a guidance-parallel rank's work per step) against batch 2 on 2 threads (one process doing
both branches), eager, with fused QKV, and compiled (`--compile`, regional torch.compile).

    python scripts/bench_batch_split.py [--height 64 --width 64]

Prints the median of 40 calls (after 3 warm-up calls) for each; guidance parallel can
only win where batch 1 x 1 thread plus the per-step exchange (~0.5-1 ms with gloo here)
undercuts batch 2 x 2 threads.
"""

from __future__ import annotations

import argparse

import torch

from kumovideo.distributed.bench import build, denoiser_call_ms
from kumovideo.perf.fast_paths import apply_fast_paths


def call_ms(pipe, batch: int, threads: int, height: int, width: int) -> float:
    torch.set_num_threads(threads)
    return denoiser_call_ms(pipe, batch, height, width, repeat=40)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    args = ap.parse_args()
    print("| path | batch 1, 1 thread ms | batch 2, 2 threads ms | batch 2, 1 thread ms | ratio 1x1 / 2x2 |")
    print("|---|---|---|---|---|")
    for path in ("eager", "fused QKV", "compiled"):
        pipe, _ = build("kumo-builtin")
        if path != "eager":
            apply_fast_paths(pipe, fused_qkv=True, compile=path == "compiled", step_cache=None, threads=None)
        one, two, two_one = (call_ms(pipe, b, n, args.height, args.width) for b, n in ((1, 1), (2, 2), (2, 1)))
        print(f"| {path} | {one:.2f} | {two:.2f} | {two_one:.2f} | {one / two:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
