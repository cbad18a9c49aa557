"""Cost of one guidance exchange between two 1-thread CPU processes: blocking vs polling.

    python scripts/bench_gloo_wait.py [--rounds 6] [--steps 300] [--compute-ms 10]

Two processes (gloo, as `kumo generate --parallel cfg=2` on CPU) each run a loop that
stands in for guided denoising: about --compute-ms of 1-thread matmuls (one denoiser
call of the built-in model at 64x64 takes ~10 ms), then `all_gather_cat` of a
guidance-sized latent, the exchange the pipeline makes once per step. Rounds alternate
KUMO_SPIN_WAIT=0 (block in work.wait()) and =1 (poll, yielding the core), so both see
the same machine load. Prints, per mode, the median over rounds of the mean time per
step above the compute alone (what each exchange costs a generation, waiting for the
other rank included) and of the 90th percentile of rank 0's time in the exchange.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _worker(rank, world, rounds, steps, compute_ms, out):
    import torch.distributed as dist

    from kumovideo.distributed.ulysses import all_gather_cat

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    start = time.perf_counter()  # calibrate: matmuls per compute_ms
    for _ in range(50):
        a @ b
    per = (time.perf_counter() - start) / 50
    count = torch.tensor([max(1, round(compute_ms / 1000 / per))])
    dist.broadcast(count, src=0)  # the same work on both ranks
    x = torch.randn(1, 5, 16, 8, 8)  # one latent of the built-in model's default clip
    results = {"0": [], "1": []}
    tails = {"0": [], "1": []}
    for r in range(rounds):
        mode = "01"[r % 2]
        os.environ["KUMO_SPIN_WAIT"] = mode
        dist.barrier()
        compute, total, exchange = [], [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            for _ in range(int(count)):
                a @ b
            t1 = time.perf_counter()
            all_gather_cat(x, 0, None)
            t2 = time.perf_counter()
            compute.append(t1 - t0)
            total.append(t2 - t0)
            exchange.append(t2 - t1)
        results[mode].append(1000 * (statistics.fmean(total[20:]) - statistics.median(compute[20:])))
        tails[mode].append(1000 * statistics.quantiles(exchange[20:], n=10)[-1])
    if rank == 0:
        torch.save({"results": results, "tails": tails}, out)


def main() -> int:
    from kumovideo.distributed.spawn import run_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--compute-ms", type=float, default=10.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "r.pt")
        run_workers(_worker, 2, args.rounds, args.steps, args.compute_ms, out, threads=1)
        saved = torch.load(out)
    results, tails = saved["results"], saved["tails"]
    print(
        f"2 processes x 1 thread, gloo; {args.steps} steps of ~{args.compute_ms:g} ms compute + one exchange; "
        f"{args.rounds} alternating rounds"
    )
    for mode, name in (("0", "block (KUMO_SPIN_WAIT=0)"), ("1", "poll  (KUMO_SPIN_WAIT=1)")):
        per_round = ", ".join(f"{v:.2f}" for v in results[mode])
        print(
            f"{name}: {statistics.median(results[mode]):.2f} ms per step above compute (rounds: {per_round}); "
            f"rank 0's slowest 10% of exchanges over {statistics.median(tails[mode]):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
