"""Tuning harness behind docs/layout.md's recipe: the built-in model's clips of the ablation
draw (`kumo eval shapes --n 128 --seed 9501`: caption k, its noise seeded 9501 + k, batches of
8, judged like `kumo eval shapes`), with the layout's constants set from the command line.
`--draw-seed 9511` takes a second ablation draw for more clips. Never a draw a recipe is
reported on (those are fresh: docs/builtin-model.md).

    python scripts/layout_tune.py --objects 2                          # 64 two-object clips
    python scripts/layout_tune.py --objects 2 --fill 0.5               # FILL_STEPS
    python scripts/layout_tune.py --objects 1 --n 32 --one-object-boxes

--one-object-boxes lays out one-object captions too (the planner leaves them alone): one box,
placed by ShapesWorld's rules as the planner places each of two objects, passed as `regions=`.
With it the layout's machinery is measured where the model alone is right (32 of 32): what it
costs a clip beyond binding. The previous recipe (the roll at every step) is this script run
with `git checkout f8462c6 -- kumovideo/pipelines/layout.py`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import kumovideo.pipelines.layout as layout
import kumovideo.pipelines.pipeline_kumo as pipeline_kumo
from kumovideo.builtin import builtin_model_dir
from kumovideo.cli.eval_common import eval_captions, seen_captions
from kumovideo.data.shapes_world import parse_caption, placed_boxes
from kumovideo.evaluation.shapes_judge import judge_clip
from kumovideo.pipelines import KumoPipeline, frames_to_uint8

DRAW_SEED = 9501
DRAW_SIZE = 128  # captions of the 128-caption draw


def one_object_regions(text: str, seed: int, width: int, height: int, num_frames: int) -> list[dict]:
    """One box track for a one-object caption, placed as the planner places each of two."""
    obj = parse_caption(text)["objects"][0]
    rng = np.random.default_rng([seed, 4242])
    ((_, boxes),) = placed_boxes([dict(obj, size=obj["size"] or "large")], rng, width, height, num_frames)
    # centre and radius are linear in time, so the box is too: its first and last frames say it all
    return [{"prompt": text, "box": boxes[0].tolist(), "end_box": boxes[-1].tolist()}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a model folder (default: the built-in base)")
    parser.add_argument("--objects", type=int, choices=(1, 2), default=2)
    parser.add_argument("--n", type=int, default=64, help="clips (of the draw's 64 of that kind)")
    parser.add_argument("--fill", type=float, default=layout.FILL_STEPS)
    parser.add_argument("--margin", type=float, default=layout.BOX_MARGIN_PX)
    parser.add_argument("--one-object-boxes", action="store_true")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--draw-seed", type=int, default=DRAW_SEED, help="another ablation draw (not a reported one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout.FILL_STEPS = pipeline_kumo.FILL_STEPS = args.fill
    layout.BOX_MARGIN_PX = args.margin

    folder = args.model or str(builtin_model_dir())
    pipe = KumoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    frames = 17
    captions = eval_captions(DRAW_SIZE, args.draw_seed, 128, frames, seen_captions(folder), args.width, args.height)
    picked = [k for k, text in enumerate(captions) if len(parse_caption(text)["objects"]) == args.objects][: args.n]
    matched, per_object, start = 0, np.zeros(3), time.perf_counter()
    for first in range(0, len(picked), 8):
        ks = picked[first : first + 8]
        texts = [captions[k] for k in ks]
        seeds = [args.draw_seed + k for k in ks]
        regions = None
        if args.one_object_boxes and args.objects == 1:
            regions = [one_object_regions(t, s, args.width, args.height, frames) for t, s in zip(texts, seeds)]
        clips = pipe(
            texts,
            width=args.width,
            height=args.height,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            regions=regions,
            num_inference_steps=args.steps,
            output_type="pt",
        ).frames
        for k, text, clip in zip(ks, texts, clips):
            judged = judge_clip(frames_to_uint8(clip), text)
            matched += judged.match
            for o in judged.objects:
                per_object += [o.colour_ok, o.shape_ok, o.motion_ok]
            if not judged.match:
                print(f"  miss {k}: {text} -> {[(o.measured_shape, o.measured_motion) for o in judged.objects]}")
        print(f"{first + len(ks)} clips, {matched} matched ({time.perf_counter() - start:.0f} s)", flush=True)
    objects = args.objects * len(picked)
    colour, shape, motion = (100 * per_object / objects).round(1)
    print(f"matched {matched} of {len(picked)}; per object colour {colour}% shape {shape}% motion {motion}%")


if __name__ == "__main__":
    main()
