"""Built-in VAE decode / encode on the CPU, with PyTorch's own 3D-convolution kernel choice
against the oneDNN routing of kumovideo.models.cpu_conv (docs/benchmarks.md).

    python scripts/bench_cpu_conv.py [--vae kumovideo/builtin/kumo-shapes/vae] [--runs 7]
    python scripts/bench_cpu_conv.py --size 128 --batch 4   # a batch decoded whole vs clip by clip

With --batch N it times only the routed VAE decoding N clips as one batch against one clip
at a time (what `KumoPipeline.decode_latents` does on the CPU).
"""

import argparse
import copy
import statistics
import time

import torch

from kumovideo.models.cpu_conv import restore_pytorch_conv3d
from kumovideo.pipelines.loading import load_vae


def median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", default="kumovideo/builtin/kumo-shapes/vae")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1, help="> 1: batch-whole against clip-by-clip decode")
    args = parser.parse_args()
    if args.batch > 1:
        return batch_against_clips(args)

    routed = load_vae(args.vae).float().eval()
    plain = copy.deepcopy(routed)
    restore_pytorch_conv3d(plain)  # PyTorch's own kernel choice back in place
    torch.manual_seed(0)
    video = torch.rand(1, 3, args.frames, args.size, args.size) * 2 - 1
    with torch.no_grad():
        z = routed.encode(video).latent_dist.mean
        diff = (routed.decode(z).sample - plain.decode(z).sample).abs().max().item()
        print(
            f"{args.frames}x{args.size}x{args.size} clip, latents {tuple(z.shape[2:])}; "
            f"max |decode difference| {diff:.1e}"
        )
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row = {
                name: median_seconds(fn, args.runs)
                for name, fn in (
                    ("decode pytorch", lambda: plain.decode(z)),
                    ("decode onednn", lambda: routed.decode(z)),
                    ("encode pytorch", lambda: plain.encode(video)),
                    ("encode onednn", lambda: routed.encode(video)),
                )
            }
            print(
                f"{threads} thread(s): decode {row['decode pytorch']:.3f} -> {row['decode onednn']:.3f} s "
                f"({row['decode pytorch'] / row['decode onednn']:.1f}x), encode {row['encode pytorch']:.3f} -> "
                f"{row['encode onednn']:.3f} s ({row['encode pytorch'] / row['encode onednn']:.1f}x)"
            )


def batch_against_clips(args) -> None:
    vae = load_vae(args.vae).float().eval()
    torch.manual_seed(0)
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1
    with torch.no_grad():
        z = torch.cat([vae.encode(clip[None]).latent_dist.mean for clip in video])
        whole = lambda: vae.decode(z).sample  # noqa: E731
        clips = lambda: torch.cat([vae.decode(one[None]).sample for one in z])  # noqa: E731
        diff = (whole() - clips()).abs().max().item()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a, b = median_seconds(whole, args.runs), median_seconds(clips, args.runs)
            print(
                f"{args.batch} x {args.frames}x{args.size}x{args.size}, {threads} thread(s): one batch {a:.3f} s, "
                f"clip by clip {b:.3f} s ({a / b:.1f}x); max |difference| {diff:.1e}"
            )


if __name__ == "__main__":
    main()
