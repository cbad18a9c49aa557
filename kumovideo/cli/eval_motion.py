"""`kumo eval motion`: does the requested motion score change the motion?

For a motion-conditioned model (transformer config `motion_conditioning: true`, docs/lumina.md):
draws N one-object captions that move or change size (not "stays still"; seeded, captions the
model was trained on as-is skipped, as `kumo eval shapes` draws them), generates each caption
at five motion scores spread evenly over the model's `motion_score_range` (kumo_defaults.json;
`--scores` overrides) with the same seed, so only the score differs, and once with no score
(the unconditioned default). The judge measures the motion amount m each clip shows (spec
v1.1: a move's travel / 0.40 of its side, grows / shrinks from the radius ratio). Reported:
the Spearman correlation of score and measured m over all judged clips, its mean over
captions, and per score the match rate and the mean measured m.

`--reference render` judges ShapesWorld renders instead, each at the motion amount its score
stands for (the built-in ShapesWorld models are conditioned on score = 20 m at 17 frames and
8 fps, `shapes_world.motion_score_of`; clipped to m in [0.5, 1.5]; no score: m = 1): the
judge's own m-measurement, whose Spearman should be near 1.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from kumovideo.cli import args as flags
from kumovideo.cli.eval_common import add_output_args, generate_clips
from kumovideo.cli.generate import add_negative_motion_args
from kumovideo.cli.reports import percent, write_results
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_folder

MAX_CAPTIONS = 1000  # each caption is generated len(scores) + 1 times
MAX_SCORES = 16
NUM_SCORES = 5  # spread over the model's motion_score_range
SHEET_CAPTIONS = 3  # captions shown on the contact sheet, one row per score


def register(esub) -> None:
    q = esub.add_parser("motion", help="motion conditioning: does the motion score set how much objects move")
    q.add_argument("--model", help="motion-conditioned pipeline folder (default: the built-in kumo-shapes-lumina)")
    q.add_argument("--n", type=int, default=16, help="number of one-object moving captions (default 16)")
    q.add_argument("--seed", type=int, default=2024, help="caption and noise seed (default 2024)")
    q.add_argument(
        "--scores",
        default=None,
        metavar="A,B,...",
        help="motion scores to generate at (default: five spread over the model's motion_score_range)",
    )
    flags.add_steps_arg(q, help="denoising steps (default: the model's)")
    flags.add_guidance_args(q)
    # motion guidance at every score (not the no-score clips)
    add_negative_motion_args(q, score="each score", needs="guidance > 1")
    add_output_args(q, "outputs/eval-motion")
    q.add_argument(
        "--reference",
        choices=["render"],
        default=None,
        help="judge ShapesWorld renders at the motion amount each score stands for (m = score / 20 at "
        "17 frames and 8 fps) instead of generated clips: the judge's own check",
    )
    q.set_defaults(func=run, turbo=False, lumina="kumo eval motion")


# ------------------------------------------------------------------------------ checks
def parse_scores(text: str) -> list[float]:
    """--scores "a,b,c": at least two distinct finite numbers >= 0."""
    try:
        scores = [float(part) for part in text.split(",")]
    except ValueError:
        raise KumoInputError(
            f"--scores {text!r} is not a comma-separated list of numbers; e.g. 10,15,20,25,30"
        ) from None
    if not all(math.isfinite(s) and s >= 0 for s in scores):
        raise KumoInputError(f"--scores {text!r}: each score must be a number >= 0")
    if len(set(scores)) < 2 or len(scores) > MAX_SCORES:
        raise KumoInputError(f"--scores {text!r}: pass 2 to {MAX_SCORES} scores, at least two of them different")
    return scores


def score_range(folder: Path, defaults: dict) -> tuple[float, float] | None:
    """The model's motion_score_range [low, high] (kumo_defaults.json, whose form
    `read_sampling_defaults` has checked), spread over only when low < high; None if absent."""
    value = defaults.get("motion_score_range")
    if value is None:
        return None
    if not 0 <= value[0] < value[1]:
        raise KumoInputError(
            f"{folder / 'kumo_defaults.json'}: motion_score_range is {value!r}, but must be [low, high] with "
            "0 <= low < high; fix it or pass --scores"
        )
    return float(value[0]), float(value[1])


def score_unit(num_frames: int, fps: float) -> float:
    """The score of motion amount m = 1 for a clip of this length (20 at 17 frames, 8 fps)."""
    from kumovideo.data.shapes_world import motion_score_of

    return motion_score_of(1.0, num_frames, fps)


def motion_amount_for(score: float | None, unit: float) -> float:
    """The ShapesWorld motion amount a score stands for (no score: the default m = 1)."""
    from kumovideo.data.shapes_world import MOTION_AMOUNT_RANGE

    if score is None:
        return 1.0
    low, high = MOTION_AMOUNT_RANGE
    return min(max(score / unit, low), high)


def check_args(args) -> dict:
    """Every flag and the model's configs (no weights), before anything loads or is written."""
    import numpy as np

    from kumovideo.cli.eval_common import check_motion_conditioning, resolve_model
    from kumovideo.cli.generate import planned_guidance
    from kumovideo.data.shapes_world import DEFAULT_FPS
    from kumovideo.pipelines import checks
    from kumovideo.pipelines.checks import folder_clip
    from kumovideo.pipelines.loading import read_sampling_defaults

    positive = "--n and --batch-size must be positive"
    flags.check_whole_flags(args, "--n", high=MAX_CAPTIONS, too_small=positive)
    flags.check_whole_flags(args, "--batch-size", too_small=positive)
    flags.check_seed_flag(args, clips=args.n)  # caption i is generated with --seed + i at every score
    flags.check_whole_flags(args, "--steps", too_small="{name} {value}: pass 1 or more denoising steps")
    flags.check_guidance(args)
    flags.resolve_device(args.device)
    scores = parse_scores(args.scores) if args.scores is not None else None
    out_dir = check_output_folder(args.out, "--out")

    folder = resolve_model(args)
    if not args.reference:
        check_motion_conditioning(folder, "kumo eval motion")
    _, (num_frames, height, width) = folder_clip(folder)
    defaults = read_sampling_defaults(folder)
    guided = args.negative_motion_score is not None or args.negative_motion_end is not None
    if guided and args.reference:
        raise KumoInputError("--negative-motion-score: for generated clips only; leave it out with --reference")
    guidance = {}
    if guided:  # every score is a motion_score the negative goes with
        checks.check_negative_motion(
            1.0, args.negative_motion_score, args.negative_motion_end, planned_guidance(args, defaults)
        )
        negative = checks.clamp_motion_score(  # once here, not a warning a batch
            args.negative_motion_score, checks.recorded_range(defaults, "motion_score_range"), "negative motion score"
        )
        guidance = {"negative_motion_score": negative, "negative_motion_end": args.negative_motion_end}
    fps = float(defaults.get("fps", DEFAULT_FPS))
    unit = score_unit(num_frames, fps)
    source = "--scores"
    if scores is None:
        spread = score_range(folder, defaults)
        source = "model"
        if spread is None and args.reference:
            spread, source = (0.5 * unit, 1.5 * unit), "shapes_world"  # the world's m in [0.5, 1.5]
        if spread is None:
            raise KumoInputError(
                f"the model {folder} names no motion_score_range in its kumo_defaults.json; pass --scores a,b,c,d,e"
            )
        scores = [round(float(s), 6) for s in np.linspace(*spread, NUM_SCORES)]
    else:  # a score outside what the clips can be made at would be reported as asked, made at the edge
        made_at = (0.5 * unit, 1.5 * unit) if args.reference else score_range(folder, defaults)
        outside = [s for s in scores if made_at is not None and not made_at[0] <= s <= made_at[1]]
        if outside:
            span = f"{made_at[0]:g} to {made_at[1]:g}"
            what = (
                f"the scores ShapesWorld renders ({span}, m 0.5 to 1.5)"
                if args.reference
                else (f"the range this model was trained on ({span})")
            )
            raise KumoInputError(
                f"--scores {outside[0]:g} is outside {what}: its clips "
                "would be made at the edge and reported at the score asked; pass scores within the range"
            )
    return {
        "out_dir": out_dir,
        "folder": folder,
        "scores": scores,
        "source": source,
        "frame": (num_frames, height, width),
        "unit": unit,
        "motion_guidance": guidance,  # the pipeline arguments of every scored clip (none: off)
    }


# ------------------------------------------------------------------------------ statistics
def _ranks(values) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> tuple[float | None, float | None]:
    """Spearman's rank correlation of x and y and its p-value (scipy.stats.spearmanr when scipy
    is there; else the Pearson correlation of numpy ranks, no p-value). None, None when
    undefined (fewer than 3 pairs, or either side constant)."""
    import numpy as np

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    try:
        from scipy.stats import spearmanr
    except ImportError:
        rx, ry = _ranks(x), _ranks(y)
        rho = float(np.corrcoef(rx, ry)[0, 1])
        return (rho if math.isfinite(rho) else None), None
    rho, p = spearmanr(x, y)
    return (float(rho) if math.isfinite(rho) else None), (float(p) if math.isfinite(p) else None)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def condition_summary(score: float | None, unit: float, records: list[dict]) -> dict:
    """One score's (or no score's) clips: match rate and the measured motion amount."""
    measured = [r["motion_amount"] for r in records if r["motion_amount"] is not None]
    return {
        "score": score,
        "motion_amount_of_score": motion_amount_for(score, unit),
        "n": len(records),
        "match_rate": _mean([float(r["match"]) for r in records]),
        "measured": len(measured),
        "motion_amount_mean": _mean(measured),
        "motion_amount_std": _std(measured),
    }


def summarise_motion(records: list[dict], scores: list[float], unit: float) -> dict:
    """Spearman of score vs measured m (pooled over every scored clip, and per caption), and
    per score (and with no score) the match rate and mean measured m."""
    scored = [r for r in records if r["score"] is not None and r["motion_amount"] is not None]
    rho, p = spearman([r["score"] for r in scored], [r["motion_amount"] for r in scored])
    per_caption = []
    for index in sorted({r["caption_index"] for r in scored}):
        mine = [r for r in scored if r["caption_index"] == index]
        value, _ = spearman([r["score"] for r in mine], [r["motion_amount"] for r in mine])
        if value is not None:
            per_caption.append(value)
    return {
        "spearman": rho,
        "spearman_p": p,
        "spearman_clips": len(scored),
        "per_caption_spearman_mean": _mean(per_caption),
        "per_caption_spearman_n": len(per_caption),
        "match_rate": _mean([float(r["match"]) for r in records]),
        "per_score": [condition_summary(s, unit, [r for r in records if r["score"] == s]) for s in scores],
        "no_score": condition_summary(None, unit, [r for r in records if r["score"] is None]),
    }


# ------------------------------------------------------------------------------ the command
def run(args) -> int:
    checked = check_args(args)
    out_dir, folder, scores, unit = checked["out_dir"], checked["folder"], checked["scores"], checked["unit"]
    num_frames, height, width = checked["frame"]
    size = min(width, height)

    import torch
    from tqdm.auto import tqdm

    from kumovideo.cli.eval_common import eval_captions, reference_clips, seen_captions
    from kumovideo.data.shapes_world import parse_caption
    from kumovideo.evaluation.shapes_judge import contact_sheet, judge_clip
    from kumovideo.pipelines import frames_to_uint8

    def moving(text: str) -> bool:
        return parse_caption(text)["objects"][0]["motion"] != "stays still"

    exclude = seen_captions(folder)
    captions = eval_captions(args.n, args.seed, size, num_frames, exclude, width, height, one_object=True, keep=moving)

    pipe, steps, guidance, guidance_rescale = None, None, None, None
    if not args.reference:
        from kumovideo.cli.generate import sampling_settings
        from kumovideo.pipelines import KumoPipeline

        pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)  # shipped fp16; CPU math in fp32
        pipe.to(flags.resolve_device(args.device))  # noise is drawn on the CPU: the same clips on any device
        pipe.set_progress_bar_config(disable=True)
        _, steps, guidance, guidance_rescale, _ = sampling_settings(pipe, args)

    conditions: list[float | None] = [*scores, None]
    batches = [(c, i) for c in conditions for i in range(0, len(captions), args.batch_size)]
    records, sheet = [], {}
    start = time.perf_counter()
    for score, i in tqdm(batches, desc="eval motion", unit="batch"):
        batch = captions[i : i + args.batch_size]
        if args.reference:
            m = motion_amount_for(score, unit)
            out = reference_clips(None, batch, size, num_frames, args.seed + i, False, width, height, m)
        else:
            # Caption i has seed --seed + i at every score: only the score differs.
            out = generate_clips(
                pipe,
                batch,
                args.seed + i,
                num_frames,
                height,
                width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_rescale=guidance_rescale,
                **({} if score is None else {"motion_score": score, **checked["motion_guidance"]}),
            )
        for j, (text, video) in enumerate(zip(batch, out)):
            frames = frames_to_uint8(video)
            result = judge_clip(frames, text)
            record = {
                "caption": text,
                "caption_index": i + j,
                "seed": args.seed + i + j,
                "score": score,
                "motion_amount_of_score": motion_amount_for(score, unit),
                "match": result.match,
                "motion_amount": result.objects[0].motion_amount,
                "judgement": result.to_dict(),
            }
            records.append(record)
            if i + j < SHEET_CAPTIONS:
                sheet[(i + j, conditions.index(score))] = (frames, record)
    elapsed = time.perf_counter() - start

    summary = summarise_motion(records, scores, unit)
    summary.update(
        {
            "n": len(captions),
            "clips": len(records),
            "scores": scores,
            "scores_from": checked["source"],
            "score_of_motion_amount_1": unit,
            "model": str(folder),
            "reference": args.reference,
            "steps": steps,
            "guidance": guidance,
            "guidance_rescale": guidance_rescale,
            "negative_motion_score": checked["motion_guidance"].get("negative_motion_score"),  # None: off
            "negative_motion_end": args.negative_motion_end,
            "seed": args.seed,
            "width": width,
            "height": height,
            "num_frames": num_frames,
            "seconds": elapsed,
            "seconds_per_clip": elapsed / len(records),
            "excluded_training_captions": len(exclude),
        }
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [sheet[key] for key in sorted(sheet)]
    labels = [f"{_name(r['score'])} (measured m {_number(r['motion_amount'])}): {r['caption']}" for _, r in rows]
    sheet_path = contact_sheet([frames for frames, _ in rows], labels, out_dir / "contact_sheet.png")
    write_results(out_dir, summary, records)

    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    what = (
        f"reference renders (m = score / {unit:g})"
        if args.reference
        else f"{steps} steps, guidance {guidance} (rescale {guidance_rescale})"
    )
    if checked["motion_guidance"]:
        share = "the model's share" if args.negative_motion_end is None else f"{args.negative_motion_end:g}"
        negative = checked["motion_guidance"]["negative_motion_score"]
        what += f", negative motion score {negative:g} for {share} of the steps"
    print(
        f"kumo eval motion: {len(captions)} captions x {len(scores)} scores + no score at {width}x{height}, "
        f"{what}, {elapsed:.0f} s ({summary['seconds_per_clip']:.2f} s/clip)"
    )
    print("     score   match  measured m    (sd)    n")
    for row in [*summary["per_score"], summary["no_score"]]:
        name = "none" if row["score"] is None else f"{row['score']:g}"
        mean, std = _number(row["motion_amount_mean"]), _number(row["motion_amount_std"])
        print(f"  {name:>8}  {percent(row['match_rate'])}      {mean:>6}  {std:>6}  {row['n']:>3}")
    print(
        f"  Spearman(score, measured m): {_number(summary['spearman'], 3)} over {summary['spearman_clips']} clips; "
        f"per caption mean {_number(summary['per_caption_spearman_mean'], 3)} (n={summary['per_caption_spearman_n']})"
    )
    print(f"contact sheet: {sheet_path}; per-clip results: {out_dir / 'results.json'}")
    return 0


def _name(score: float | None) -> str:
    return "no score" if score is None else f"score {score:g}"


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
