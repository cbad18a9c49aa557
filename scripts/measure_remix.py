"""Measure video-to-video (SDEdit, `kumo generate --video`, the Videos API's remix) on
ShapesWorld with the built-in base: does a remix take the new prompt, and does it keep the
source's layout better than simply generating the new prompt?

For each of --n one-object captions never trained on (`kumo eval shapes`' draw for --seed),
the source clip is generated at the model's defaults (seed: --seed + i). Its edit swaps one
of --kinds in turn (colour: another base colour; shape: another shape; motion: another
motion), nothing else. The edit is then made four ways, all at the model's defaults:
  * remix at each --strengths (same seed as the source);
  * text-to-video of the edit, same seed as the source (what "change the prompt, keep the
    seed" gives), and another seed (--seed + i + 100000: an unrelated layout).
Each is judged against the edited caption (`judge_clip`: colour, shape, motion), and its
object's mask (pixels nearest a palette colour other than the background, per frame) is
compared with the source's (IoU, mean over frames): how much of the source's layout it keeps.

    python scripts/measure_remix.py --n 64 --seed 9501 --out outputs/remix
    python scripts/measure_remix.py --n 64 --seed 9501 --strengths 0.1,0.2,0.3 --no-baselines --out outputs/remix-low
    python scripts/measure_remix.py --n 32 --seed 9511 --kinds motion --out outputs/remix-motion
    python scripts/measure_remix.py --turbo --n 48 --seed 9521 --kinds colour,shape,motion --strengths 0.6,0.8 \
        --out outputs/remix-turbo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli.eval_common import eval_captions, seen_captions
from kumovideo.data.shapes_world import COLOURS, MOTIONS, SHAPES, parse_caption
from kumovideo.evaluation import shapes_judge as judge
from kumovideo.pipelines import KumoPipeline, frames_to_uint8


def edited(text: str, kind: str, rng: np.random.Generator) -> str:
    """The caption with its object's colour, shape or motion replaced by another one (the
    words "colour shape motion on" stand together once in a one-object caption)."""
    obj = parse_caption(text)["objects"][0]
    colour, shape, motion = obj["colour"], obj["shape"], obj["motion"]
    if kind == "colour":
        colour = str(rng.choice([c for c in COLOURS if c != colour]))
    elif kind == "shape":
        shape = str(rng.choice([s for s in SHAPES if s != shape]))
    else:
        motion = str(rng.choice([m for m in MOTIONS if m != motion]))
    old = f" {obj['colour']} {obj['shape']} {obj['motion']} on "
    edit = text.replace(old, f" {colour} {shape} {motion} on ")
    parse_caption(edit)  # still in the grammar
    return edit


def object_masks(frames: np.ndarray) -> np.ndarray:
    """(F, H, W) bool: pixels nearest a palette colour other than the clip's background."""
    labels, _ = judge.nearest_palette(frames)
    border = np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel()])
    background = int(np.bincount(border, minlength=len(judge.PALETTE_NAMES)).argmax())
    return labels != background


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=9501)
    p.add_argument("--strengths", default="0.4,0.6,0.8")
    p.add_argument("--out", default="outputs/remix")
    p.add_argument("--turbo", action="store_true", help="the built-in Turbo model (its 4 steps) instead of the base")
    p.add_argument("--kinds", default="colour,shape", help="the edits, taken in turn: colour, shape, motion")
    p.add_argument("--no-baselines", action="store_true", help="the remix arms only (no text-to-video of the edits)")
    args = p.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]
    kinds = args.kinds.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    folder = builtin_model_dir(turbo=args.turbo)
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    clip = pipe.default_clip()
    size, frames = min(clip["width"], clip["height"]), clip["num_frames"]
    captions = eval_captions(args.n, args.seed, size, frames, seen_captions(folder), one_object=True)
    rng = np.random.default_rng([args.seed, 7])

    def make(prompt: str, seed: int, **kwargs) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return frames_to_uint8(pipe(prompt, generator=generator, output_type="pt", **kwargs).frames[0])

    baselines = [] if args.no_baselines else ["text-to-video, same seed", "text-to-video, other seed"]
    arms = [f"remix {s:g}" for s in strengths] + baselines
    rows = []
    start = time.perf_counter()
    for i, text in enumerate(captions):
        kind = kinds[i % len(kinds)]
        edit = edited(text, kind, rng)
        seed = args.seed + i
        source = make(text, seed)
        made = {f"remix {s:g}": make(edit, seed, video=source, strength=s) for s in strengths}
        if baselines:
            made["text-to-video, same seed"] = make(edit, seed)
            made["text-to-video, other seed"] = make(edit, seed + 100000)
        masks = object_masks(source)
        row = {"caption": text, "edit": edit, "kind": kind, "source_match": judge.judge_clip(source, text).match}
        for arm, video in made.items():
            row[arm] = {"match": judge.judge_clip(video, edit).match, "iou": iou(masks, object_masks(video))}
        rows.append(row)
        print(f"{i + 1}/{len(captions)} {time.perf_counter() - start:.0f} s  {kind}: {edit}", flush=True)

    summary = {"n": len(rows), "seed": args.seed, "model": str(folder), "seconds": time.perf_counter() - start}
    summary["source_match"] = float(np.mean([r["source_match"] for r in rows]))
    for kind in (*kinds, "all"):
        chosen = [r for r in rows if kind in ("all", r["kind"])]
        summary[kind] = {
            arm: {
                "match": float(np.mean([r[arm]["match"] for r in chosen])),
                "iou": float(np.median([r[arm]["iou"] for r in chosen])),
            }
            for arm in arms
        }
    (out / "remix.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
