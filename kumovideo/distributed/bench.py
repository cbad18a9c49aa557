"""Wall time of one generation: 1 process vs N processes (guidance / Ulysses parallel), in one run.

    python -m kumovideo.distributed.bench --preset kumo-builtin --parallel cfg=2 --repeat 5

Builds the pipeline of the preset (the trained built-in model when this build ships one,
else random weights with the zero-initialised layers perturbed so the denoiser computes
something that the equality check can see), generates the preset's default clip with
the same seed in one process (1 thread, or as many as asked) and in N processes of 1 thread
each (torch.multiprocessing + gloo, as torchrun would start them), checks that the
frames are equal within fp32 tolerance and prints the timings. Process start-up and
model building are not timed; T5, the denoising loop and the VAE decode are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(preset: str):
    from kumovideo.builtin import BUILTIN_DIRS, is_trained
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.factory import build_pipeline

    if preset == "kumo-builtin" and is_trained():
        pipe, weights = KumoPipeline.from_pretrained(BUILTIN_DIRS[False]), "trained built-in"
    else:
        pipe, weights = build_pipeline(preset, seed=0), "random (perturbed zero-init)"
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in pipe.transformer.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    pipe.set_progress_bar_config(disable=True)
    return pipe, weights


def call_kwargs(pipe, steps: int, height: int | None = None, width: int | None = None) -> dict:
    """The preset's default clip (or height x width), with guidance."""
    clip = pipe.resolve_call_defaults(num_frames=None, height=height, width=width)
    return dict(
        prompt="a red circle moves left on a black background",
        negative_prompt="blurry",
        **clip,
        num_inference_steps=steps,
        guidance_scale=6.0,
        output_type="pt",
    )


def timed(generate, decode, repeat: int, sync=lambda: None):
    """Run generate() (T5 + denoising, to latents) then decode(latents) `repeat` times;
    returns [(total, denoise, decode, this process's CPU seconds)] and the last frames."""
    times, frames = [], None
    with torch.no_grad():  # as inside the pipelines: no autograd bookkeeping in the decode
        for _ in range(repeat):
            sync()
            cpu = time.process_time()
            start = time.perf_counter()
            latents = generate()
            sync()
            mid = time.perf_counter()
            frames = decode(latents)
            sync()
            end = time.perf_counter()
            times.append((end - start, mid - start, end - mid, time.process_time() - cpu))
    return times, frames


def _postprocess(pipe, video):
    return None if video is None else pipe.video_processor.postprocess_video(video, output_type="pt")


def denoiser_inputs(pipe, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (latents, text states, timesteps) of one transformer call for a height x width clip."""
    c = pipe.transformer.config
    x = torch.randn(pipe.geometry.latent_shape(batch, c.sample_frames, height, width))
    text = torch.randn(batch, c.max_text_seq_length, c.text_embed_dim)
    return x, text, torch.full((batch,), 500)


def denoiser_call_ms(pipe, batch: int, height: int, width: int, repeat: int = 20) -> float:
    """Median wall time of one transformer call for a height x width clip, this process's threads."""
    x, text, t = denoiser_inputs(pipe, batch, height, width)
    times = []
    with torch.no_grad():
        for i in range(repeat + 3):
            start = time.perf_counter()
            pipe.transformer(x, text, t)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _worker(rank, world, preset, steps, size, spec, vae_on, repeat, single_threads, outdir):
    """Interleaved, so that every variant sees the same machine load: in each round rank 0
    first generates alone (with each thread count asked for; the other ranks wait in a
    barrier, which blocks on a socket and uses no CPU), then all ranks generate together."""
    import torch.distributed as dist

    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

    pipe, weights = build(preset)
    runner = ParallelKumoPipeline(pipe, spec, vae_on=vae_on)
    kwargs = {**call_kwargs(pipe, steps, *size), "output_type": "latent"}

    def generate(p):
        return p(**kwargs, generator=torch.Generator().manual_seed(0)).frames

    rows: dict[str, list] = {}
    frames = {}
    singles = single_threads
    for _ in range(repeat):
        for threads in singles:
            if rank == 0:
                torch.set_num_threads(threads)
                times, frames["single"] = timed(
                    lambda: generate(pipe), lambda z: _postprocess(pipe, pipe.decode_latents(z)), 1
                )
                rows.setdefault(f"1 process, {threads} thread(s)", []).extend(times)
                torch.set_num_threads(1)
            dist.barrier()
        times, frames["parallel"] = timed(
            lambda: generate(runner), lambda z: _postprocess(pipe, runner.decode(z)), 1, dist.barrier
        )
        rows.setdefault(f"{world} processes x 1 thread, --parallel {spec}, VAE on {vae_on}", []).extend(times)
    if rank == 0:
        calls = {b: denoiser_call_ms(pipe, b, kwargs["height"], kwargs["width"]) for b in (2, 1)}
        torch.save(
            {"calls": calls, "rows": rows, "frames": frames, "weights": weights, "kwargs": kwargs},
            Path(outdir) / "bench.pt",
        )


def main(argv=None) -> int:
    from kumovideo.distributed.mesh import parse_parallel
    from kumovideo.distributed.spawn import run_workers

    ap = argparse.ArgumentParser(prog="python -m kumovideo.distributed.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="kumo-builtin")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--height", type=int, default=None, help="clip height in pixels (default: the preset's)")
    ap.add_argument("--width", type=int, default=None, help="clip width in pixels (default: the preset's)")
    ap.add_argument("--parallel", default="cfg=2")
    ap.add_argument("--vae-on", default="rank0", choices=["rank0", "all", "split"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--single-threads",
        default="1",
        help="comma-separated intra-op thread counts for the 1-process runs (default 1)",
    )
    args = ap.parse_args(argv)
    config = parse_parallel(args.parallel)
    world = config.world_size

    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        threads = [int(x) for x in args.single_threads.split(",")]
        run_workers(
            _worker,
            world,
            args.preset,
            args.steps,
            (args.height, args.width),
            str(config),
            args.vae_on,
            args.repeat,
            threads,
            tmp,
            threads=1,
            start_method="spawn",
        )
        result = torch.load(Path(tmp) / "bench.pt")
    rows, kwargs = result["rows"], result["kwargs"]
    diff = (result["frames"]["parallel"] - result["frames"]["single"]).abs().max().item()

    print(
        f"load average (1, 5, 15 min) before / after: {load_before} / {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{args.preset} ({result['weights']} weights), {kwargs['num_frames']} frames "
        f"{kwargs['height']}x{kwargs['width']}, "
        f"{args.steps} steps, guidance 6, CPU gloo; {args.repeat} interleaved rounds, seconds per generation"
    )
    print(
        "| run | total s (median) | T5 + denoise s | per step ms | VAE decode s | CPU s of rank 0 "
        "| every round, total s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, times in rows.items():
        med = [statistics.median(t[i] for t in times) for i in range(4)]
        print(
            f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {1000 * med[1] / args.steps:.1f} | {med[2]:.2f} | {med[3]:.2f} "
            f"| {', '.join(f'{t[0]:.2f}' for t in times)} |"
        )
    print(f"max |frames difference| vs 1 process: {diff:.2e}")
    calls = result["calls"]
    print(
        f"one transformer call, 1 thread (median of 20): batch 2 {calls[2]:.1f} ms, batch 1 {calls[1]:.1f} ms "
        f"(ratio {calls[1] / calls[2]:.2f}; the FLOP count halves)"
    )
    names = list(rows)
    medians = {name: statistics.median(t[0] for t in rows[name]) for name in names}
    parallel = medians[names[-1]]
    print(f"median generation, {world} processes vs 1 process x 1 thread: {medians[names[0]] / parallel:.2f}x")
    best = min(names[:-1], key=medians.get)
    if best != names[0]:
        print(
            f"median generation, {world} processes vs the fastest 1-process run ({best}): "
            f"{medians[best] / parallel:.2f}x"
        )
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
