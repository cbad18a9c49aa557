"""Measure `kumo extend` on ShapesWorld: does the added segment go on from where the clip
ends, with the same object doing the same thing?

For each of --n one-object captions never trained on (`kumo eval shapes`' draw for --seed;
the base's training captions excluded), the source clip is the built-in base's at its
defaults (seed --seed + i), and it is extended by --seconds with the same caption by the
built-in conditioned model (`extend_frames`, its defaults). The object is the pixels
nearest the named colour (ShapesWorld's palette, `shapes_judge.nearest_palette`). Per clip:
  * kept: the named colour is visible in the first 8 added frames (the object may leave the
    frame later: a move goes on past the edge, as it should);
  * shape: the judge's shape of the first 8 added frames (the source's last frame and the
    next 8, judged as a clip of their own with a "stays still" caption's shape rule) is the
    caption's;
  * goes on: for a move, the centroid's velocity over the 8 added frames points the same
    way as over the source's last 8 (cosine > 0.5); for "stays still", it moves under 1% of
    the frame a frame; grows / shrinks: the area keeps growing / shrinking;
  * seam: the centroid's step from the last source frame to the first added one, over the
    source's median step (1: as smooth as the clip itself).

    python scripts/measure_extend.py --n 48 --seed 9601 --out outputs/extend-context
    python scripts/measure_extend.py --n 48 --seed 9601 --context 1 --out outputs/extend
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kumovideo.builtin import builtin_frames_dir, builtin_model_dir
from kumovideo.cli.eval_common import eval_captions, seen_captions
from kumovideo.data.shapes_world import parse_caption
from kumovideo.evaluation import shapes_judge as judge
from kumovideo.pipelines import KumoPipeline, frames_to_uint8
from kumovideo.pipelines.extension import extend_frames

LOOK = 8  # added frames judged (the object may have left the frame after them)


def track(frames: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the named colour's centroid (x, y) as fractions of the frame (NaN where it
    is not visible) and its area in pixels."""
    labels, _ = judge.nearest_palette(frames)
    mask = labels == judge.PALETTE_NAMES.index(colour)
    h, w = mask.shape[1:]
    area = mask.sum(axis=(1, 2)).astype(float)
    ys, xs = np.mgrid[0:h, 0:w]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / area / w
        cy = (mask * ys).sum(axis=(1, 2)) / area / h
    visible = area >= 20
    centre = np.stack([np.where(visible, cx, np.nan), np.where(visible, cy, np.nan)], axis=1)
    return centre, area


def goes_on(motion: str, source: tuple, added: tuple) -> bool:
    (c0, _), (c1, a1) = source, added
    v0 = np.nanmean(np.diff(c0[-LOOK:], axis=0), axis=0)
    v1 = np.nanmean(np.diff(c1, axis=0), axis=0)
    if motion == "stays still":
        return bool(np.nanmax(np.abs(np.diff(c1, axis=0))) < 0.01)
    if motion in ("grows", "shrinks"):
        trend = np.nanmean(np.diff(a1))
        return bool(trend > 0 if motion == "grows" else trend < 0)
    cosine = float(v0 @ v1 / (np.linalg.norm(v0) * np.linalg.norm(v1) + 1e-12))
    return cosine > 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=9601)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--context", type=int, default=5, help="the clip's last frames each segment starts from")
    p.add_argument("--out", default="outputs/extend")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = KumoPipeline.from_pretrained(builtin_model_dir(), torch_dtype=torch.float32)
    frames_model = KumoPipeline.from_pretrained(builtin_frames_dir(), torch_dtype=torch.float32)
    for pipe in (base, frames_model):
        pipe.set_progress_bar_config(disable=True)
    clip = base.default_clip()
    fps = int(base.sampling_defaults.get("fps", 8))
    added_count = round(args.seconds * fps)
    exclude = seen_captions(builtin_model_dir()) | seen_captions(builtin_frames_dir())
    captions = eval_captions(
        args.n, args.seed, min(clip["width"], clip["height"]), clip["num_frames"], exclude, one_object=True
    )
    rows, start = [], time.perf_counter()
    for i, text in enumerate(captions):
        obj = parse_caption(text)["objects"][0]
        generator = torch.Generator().manual_seed(args.seed + i)
        source = frames_to_uint8(base(text, generator=generator, output_type="pt").frames[0])
        generator = torch.Generator().manual_seed(args.seed + i)
        longer = extend_frames(frames_model, source, added_count, text, generator, context=args.context)
        added = longer[len(source) : len(source) + LOOK]
        c_src, a_src = track(source, obj["colour"])
        c_add, a_add = track(added, obj["colour"])
        kept = bool(np.isfinite(c_add[:, 0]).all())
        still = text.replace(obj["motion"], "stays still")
        shape = judge.judge_clip(np.concatenate([source[-1:], added]), still).objects[0]
        steps = np.linalg.norm(np.diff(c_src, axis=0), axis=1)
        seam_step = float(np.linalg.norm(c_add[0] - c_src[-1]))
        row = {
            "caption": text,
            "motion": obj["motion"],
            "kept": kept,
            "shape_ok": bool(shape.shape_ok),
            "goes_on": kept and goes_on(obj["motion"], (c_src, a_src), (c_add, a_add)),
            "seam_ratio": seam_step / max(float(np.nanmedian(steps)), 1e-3) if kept else None,
            "source_match": judge.judge_clip(source, text).match,
        }
        rows.append(row)
        print(f"{i + 1}/{len(captions)} {time.perf_counter() - start:.0f} s  {row}", flush=True)
    moving = [r for r in rows if r["motion"].startswith("moves")]
    seams = [r["seam_ratio"] for r in moving if r["seam_ratio"] is not None]
    summary = {
        "n": len(rows),
        "seed": args.seed,
        "seconds_added": args.seconds,
        "source_match": float(np.mean([r["source_match"] for r in rows])),
        "kept": float(np.mean([r["kept"] for r in rows])),
        "shape_ok": float(np.mean([r["shape_ok"] for r in rows])),
        "goes_on": float(np.mean([r["goes_on"] for r in rows])),
        "goes_on_by_motion": {
            m: float(np.mean([r["goes_on"] for r in rows if r["motion"] == m]))
            for m in sorted({r["motion"] for r in rows})
        },
        "seam_ratio_median_moves": float(np.median(seams)) if seams else None,
        "seconds": time.perf_counter() - start,
    }
    (out / "extend.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
