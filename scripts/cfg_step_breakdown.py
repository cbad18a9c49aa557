"""Where a guided denoising step of the built-in model goes: one process (2 threads) against
guidance parallel over 2 one-thread processes (gloo), in the same run.

    python scripts/cfg_step_breakdown.py [--rounds 4] [--steps 50]

Two spawned ranks; in each round rank 0 first generates alone with 2 threads (rank 1
waits in a barrier), then both generate with `--parallel cfg=2`. Prints, per round after
the first (warm-up), the median over the steps of: the transformer call (batch 2 on 2
threads, or one rank's batch 1 on 1 thread), the guidance exchange (`all_gather_cat`,
waiting for the other rank included) and the whole step (between two step-end callbacks).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _worker(rank, world, rounds, steps, out):
    import torch.distributed as dist

    import kumovideo.distributed.parallel_pipeline as parallel_pipeline
    from kumovideo.distributed.bench import build, call_kwargs

    pipe, _ = build("kumo-builtin")
    runner = parallel_pipeline.ParallelKumoPipeline(pipe, "cfg=2")
    kwargs = {**call_kwargs(pipe, steps), "output_type": "latent"}
    spans: dict[str, list[float]] = {"transformer call": [], "exchange": [], "step": []}

    def timing(name, fn):
        def timed(*args, **kw):
            start = time.perf_counter()
            result = fn(*args, **kw)
            spans[name].append(time.perf_counter() - start)
            return result

        return timed

    pipe.transformer.forward = timing("transformer call", pipe.transformer.forward)
    parallel_pipeline.all_gather_cat = timing("exchange", parallel_pipeline.all_gather_cat)
    last_end = [None]

    def on_step_end(p, i, t, callback_kwargs):
        now = time.perf_counter()
        if last_end[0] is not None:
            spans["step"].append(now - last_end[0])
        last_end[0] = now
        return {}

    table: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for run in ("1 process, 2 threads", "2 processes x 1 thread, cfg=2"):
            for v in spans.values():
                v.clear()
            last_end[0] = None
            if run.startswith("1 process"):
                if rank == 0:
                    torch.set_num_threads(2)
                    with torch.no_grad():
                        pipe(**kwargs, generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end)
                    torch.set_num_threads(1)
            else:
                runner(**kwargs, generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end)
            dist.barrier()
            if r > 0:
                for name, v in spans.items():
                    if v:
                        table.setdefault((run, name), []).append(1000 * statistics.median(v))
    if rank == 0:
        torch.save(table, out)


def main() -> int:
    from kumovideo.distributed.spawn import run_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "t.pt")
        run_workers(_worker, 2, args.rounds, args.steps, out, threads=1, start_method="spawn")
        table = torch.load(out)
    print(f"kumo-builtin 64x64x17, {args.steps} steps, guidance 6; median ms per step, rounds 2..{args.rounds}")
    print("| run | part | ms per round |")
    print("|---|---|---|")
    for (run, name), values in table.items():
        print(f"| {run} | {name} | {', '.join(f'{v:.2f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
