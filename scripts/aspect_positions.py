"""Where in a non-square frame does a model lose the prompt? One-object clips at W x H, each
judged by the spec's rules and placed by where its object starts: inside the first SIDE
pixels of the long side (the positions a square SIDE x SIDE model was trained on) or beyond.

    python scripts/aspect_positions.py --width 128 --height 224 --n 32 --out outputs/where-128x224.json
    python scripts/aspect_positions.py --model runs/my-lumina/pipeline --width 224 --height 128

The object's start is the centroid, in the first frame, of the pixels that differ from the
background (the frame's median colour) by more than 60 in summed RGB. Captions and seeds are
`kumo eval shapes`'s one-object draw (`eval_captions(..., one_object=True)`, seed --seed + i),
so a run is repeatable and two models see the same captions and noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def object_start(frame: np.ndarray) -> tuple[float, float] | None:
    """(x, y) centroid of the non-background pixels of an (H, W, 3) uint8 frame, or None."""
    background = np.median(frame.reshape(-1, 3), axis=0)
    mask = np.abs(frame.astype(int) - background).sum(-1) > 60
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def main() -> None:
    from kumovideo.builtin import LUMINA_DIR
    from kumovideo.cli.eval_common import eval_captions, generate_clips, seen_captions
    from kumovideo.evaluation.shapes_judge import judge_clip
    from kumovideo.pipelines import KumoPipeline, frames_to_uint8

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(LUMINA_DIR), help="pipeline folder (default: kumo-shapes-lumina)")
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--side", type=int, default=128, help="the square size the base was trained at")
    parser.add_argument("--n", type=int, default=32, help="one-object captions (default 32)")
    parser.add_argument("--seed", type=int, default=9401)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default=None, help="per-clip JSON (default: not written)")
    args = parser.parse_args()

    folder = Path(args.model)
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    size = min(args.width, args.height)
    captions = eval_captions(
        args.n, args.seed, size, 17, seen_captions(folder), args.width, args.height, one_object=True
    )
    long_axis = 0 if args.width > args.height else 1  # x for wide frames, y for tall ones
    rows = []
    for i in range(0, len(captions), args.batch_size):
        batch = captions[i : i + args.batch_size]
        for j, video in enumerate(generate_clips(pipe, batch, args.seed + i, 17, args.height, args.width)):
            frames = frames_to_uint8(video)
            result = judge_clip(frames, batch[j])
            start = object_start(frames[0])
            rows.append(
                {
                    "caption": batch[j],
                    "seed": args.seed + i + j,
                    "match": result.match,
                    "shape_ok": result.objects[0].shape_ok,
                    "start": start,
                    "beyond": None if start is None else start[long_axis] >= args.side,
                }
            )
    print(f"{folder} at {args.width}x{args.height}, {len(rows)} one-object clips (seed {args.seed}):")
    for beyond, name in ((False, f"starts inside the first {args.side} px"), (True, f"starts beyond {args.side} px")):
        part = [r for r in rows if r["beyond"] is beyond]
        matched, shaped = sum(r["match"] for r in part), sum(r["shape_ok"] for r in part)
        print(f"  {name}: match {matched}/{len(part)}, shape right {shaped}/{len(part)}")
    print(f"  all: match {sum(r['match'] for r in rows)}/{len(rows)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
