"""Why guidance parallel ties at 64x64 on 2 CPU cores: one MADiT call at batch 1 on 1 thread
(a guidance-parallel rank's work per step) against batch 2 on 2 threads (one process doing
both branches), eager, with fused QKV, and compiled (`--compile`, regional torch.compile).

    python scripts/bench_batch_split.py [--height 64 --width 64]

Prints the median of 40 calls (after 5 warm-up calls) for each; guidance parallel can
only win where batch 1 x 1 thread plus the per-step exchange (~0.5-1 ms with gloo here)
undercuts batch 2 x 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kumovideo.distributed.bench import build
from kumovideo.perf.fast_paths import apply_fast_paths


def call_ms(transformer, batch: int, threads: int, latent: tuple[int, int, int], calls: int = 40) -> float:
    torch.set_num_threads(threads)
    c = transformer.config
    f, h, w = latent
    x = torch.randn(batch, f, c.in_channels, h, w)
    text = torch.randn(batch, c.max_text_seq_length, c.text_embed_dim)
    t = torch.full((batch,), 500)
    times = []
    with torch.no_grad():
        for i in range(calls + 5):
            start = time.perf_counter()
            transformer(x, text, t)
            if i >= 5:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


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
        c = pipe.transformer.config
        latent = ((c.sample_frames - 1) // 4 + 1, args.height // 8, args.width // 8)
        one, two, two_one = (call_ms(pipe.transformer, b, n, latent) for b, n in ((1, 1), (2, 2), (2, 1)))
        print(f"| {path} | {one:.2f} | {two:.2f} | {two_one:.2f} | {one / two:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
