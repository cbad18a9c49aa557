"""Pool several `kumo eval shapes` runs and compare two models clip by clip.

    python scripts/pooled_eval.py --a outputs/fresh/base-*/results.json --b outputs/fresh/turbo4-*/results.json

Each side is a list of results.json files from runs with the same --n and --seed values
(so clip i of run k is the same caption and noise seed on both sides). Prints each side's
pooled match rate (overall, one-object, two-object) and the paired difference B - A with a
95% bootstrap interval over captions (10,000 resamples, seed 0): a comparison between two
models on the same clips, with the noise of one 64-caption draw made visible.

With --unpaired the two sides may be different captions (models of different clip sizes draw
different unseen captions from the same seed): each side is resampled on its own, and the
interval is for the difference of the two pooled rates (wider than a paired one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(paths: list[str]) -> dict[tuple[int, int], tuple[str, bool]]:
    """(seed, clip index) -> (caption, matched)."""
    clips = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        seed = data["summary"]["seed"]
        for i, clip in enumerate(data["clips"]):
            clips[(seed, i)] = (clip["caption"], bool(clip["match"]))
    return clips


def rates(clips: dict[tuple[int, int], tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(matched as 0/1, is two-object) arrays in key order."""
    keys = sorted(clips)
    return (
        np.array([clips[k][1] for k in keys], dtype=float),
        np.array([" and " in clips[k][0] for k in keys]),
    )


def compare_unpaired(a, b) -> int:
    rng = np.random.default_rng(0)
    print("| | clips | match | one object | two objects |")
    print("|---|---|---|---|---|")
    sides = {}
    for name, clips in (("A", a), ("B", b)):
        m, two = rates(clips)
        sides[name] = (m, two)
        print(
            f"| {name} | {len(m)} | {100 * m.mean():.1f}% | {100 * m[~two].mean():.1f}% | {100 * m[two].mean():.1f}% |"
        )
    for label, pick in (("match", None), ("one object", False), ("two objects", True)):
        (ma, ta), (mb, tb) = sides["A"], sides["B"]
        xa = ma if pick is None else ma[ta == pick]
        xb = mb if pick is None else mb[tb == pick]
        boot = np.array(
            [
                xb[rng.integers(0, len(xb), len(xb))].mean() - xa[rng.integers(0, len(xa), len(xa))].mean()
                for _ in range(10_000)
            ]
        )
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(
            f"B - A, {label}: {100 * (xb.mean() - xa.mean()):+.1f} points "
            f"(95% bootstrap interval {100 * lo:+.1f} .. {100 * hi:+.1f})"
        )
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", nargs="+", required=True, help="results.json files of side A")
    ap.add_argument("--b", nargs="+", required=True, help="results.json files of side B, same seeds")
    ap.add_argument(
        "--unpaired", action="store_true", help="the sides are different captions: compare the pooled rates only"
    )
    args = ap.parse_args(argv)
    a, b = load(args.a), load(args.b)
    if args.unpaired:
        return compare_unpaired(a, b)
    keys = sorted(a)
    if sorted(b) != keys or any(a[k][0] != b[k][0] for k in keys):
        ap.error("the two sides are not the same captions and seeds (use --unpaired)")
    (ma, two), (mb, _) = rates(a), rates(b)  # the same keys in the same order
    seeds = sorted({k[0] for k in keys})
    print(f"{len(keys)} clips ({(~two).sum()} one-object, {two.sum()} two-object), seeds {seeds[0]}..{seeds[-1]}")
    print("| | match | one object | two objects |")
    print("|---|---|---|---|")
    for name, m in (("A", ma), ("B", mb)):
        print(f"| {name} | {100 * m.mean():.1f}% | {100 * m[~two].mean():.1f}% | {100 * m[two].mean():.1f}% |")
    rng = np.random.default_rng(0)
    diff = mb - ma
    boot = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(10_000)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(
        f"B - A: {100 * diff.mean():+.1f} points (95% bootstrap interval {100 * lo:+.1f} .. {100 * hi:+.1f}); "
        f"clips where only A matched: {int((diff < 0).sum())}, only B: {int((diff > 0).sum())}"
    )
    per_seed = [100 * (mb[[k[0] == s for k in keys]].mean() - ma[[k[0] == s for k in keys]].mean()) for s in seeds]
    print("B - A per seed (64-caption draws): " + ", ".join(f"{d:+.1f}" for d in per_seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
