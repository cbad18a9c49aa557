"""`kumo eval shapes`: does the model do what the prompt says? (`kumo eval sound`: cli/eval_sound.py;
`kumo eval motion`: cli/eval_motion.py)

Draws N captions from the ShapesWorld grammar (seeded; half one-object, half two-object;
captions the model was trained on as-is are skipped when the model lists them in
`training_captions.txt`), generates a clip for each, and judges it against its caption
by the spec's "what counts as matching". Prints match rates overall, by number of
objects and per attribute; writes a contact sheet PNG and the per-clip results.

`--reference render|vae` judges rendered clips of the same captions instead (straight, or
encoded and decoded by the model's VAE): the judge's own check, and the ceiling any
denoiser can reach with that VAE.

`--held-back` draws only captions that name ShapesWorld's held-back colour (cyan, never in a
base model's training clips): how well a fine-tune (LoRA or full) learnt the new colour.

`--width W --height H` evaluate at any aspect (spec v1.1: captions drawn and references
rendered at W x H, left/right judged against W and up/down against H); `--multiscale`,
`--multiscale-split F`, `--multiscale-handoff H` and `--motion-score X` go to the pipeline
call as `kumo generate` passes them, only when given (a model with multi-scale patching /
motion conditioning).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kumovideo.cli import args as flags
from kumovideo.cli.eval_common import (  # noqa: F401 (eval_captions: imported from here by tests)
    add_output_args,
    check_motion_conditioning,
    eval_captions,
    generate_clips,
    reference_clips,
    resolve_model,
    seen_captions,
)
from kumovideo.cli.reports import percent, write_results
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_folder

# Captions per evaluation: the grammar has a few thousand distinct ones (5000 cannot be
# drawn), and `eval_captions` tries 100 draws per caption before it says so.
MAX_CAPTIONS = 10_000


def register(sub) -> None:
    p = sub.add_parser("eval", help="measure how well a model follows prompts", description=__doc__)
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT")
    esub.required = True
    q = esub.add_parser("shapes", help="ShapesWorld prompt-following match rate")
    q.add_argument("--model", help="pipeline folder (default: the built-in model)")
    q.add_argument("--turbo", action="store_true", help="the Turbo model / consistency sampling")
    flags.add_lora_args(q)
    flags.add_sampler_arg(
        q, "'renoise': Kandinsky-4-Flash-style few-step re-noising sampler (default 4 steps, guidance 1)"
    )
    q.add_argument("--n", type=int, default=64, help="number of captions (default 64)")
    q.add_argument("--seed", type=int, default=2024, help="caption and noise seed (default 2024: the test captions)")
    flags.add_steps_arg(q)
    flags.add_guidance_args(q)
    add_output_args(q, "outputs/eval-shapes")
    q.add_argument(
        "--reference",
        choices=["render", "vae"],
        default=None,
        help="judge ShapesWorld renders of the captions (render), or the renders through the "
        "model's VAE (vae: the ceiling for this VAE), instead of generated clips",
    )
    q.add_argument(
        "--held-back",
        action="store_true",
        help="draw only captions with the held-back colour cyan (never in base training): measures a "
        "fine-tune that taught it",
    )
    add_frame_args(q)
    add_layout_arg(q)
    from kumovideo.cli.generate import add_lumina_args

    add_lumina_args(q)  # --multiscale, --multiscale-split/-handoff, --motion-score: as `kumo generate` has them
    flags.add_fast_path_args(q)
    q.set_defaults(func=run, parallel=False)  # (check_lumina_flags asks; eval runs in one process)
    from kumovideo.cli import eval_frames, eval_motion, eval_sound

    eval_sound.register(esub)
    eval_frames.register(esub)
    eval_motion.register(esub)


def add_frame_args(q) -> None:
    """--width / --height: the clip size (spec v1.1 any aspect), default the model's."""
    q.add_argument("--width", type=int, default=None, help="clip width in pixels (default: the model's)")
    q.add_argument("--height", type=int, default=None, help="clip height in pixels (default: the model's)")


def add_layout_arg(q) -> None:
    """--no-layout: the model alone, without its layout planner (kumovideo.pipelines.layout)."""
    q.add_argument(
        "--no-layout",
        action="store_true",
        help="judge the model alone: no layout from its planner (the built-in model plans two-object captions)",
    )


def check_frame_flags(args, folder: Path) -> tuple[int, int] | None:
    """(W, H) of --width / --height (one given: the other is the model's), checked against
    ShapesWorld's sides (multiples of 16, 32..MAX_SIZE), its aspects (1:2 .. 2:1) and the
    model's VAE and patch size; None when neither flag is given (the model's own clip)."""
    from kumovideo.data.shapes_world import MAX_SIZE
    from kumovideo.geometry import check_aspect
    from kumovideo.pipelines.checks import folder_clip

    if args.width is None and args.height is None:
        return None
    flags.check_whole_flags(args, "--width", "--height", high=MAX_SIZE)
    geometry, (frames, model_height, model_width) = folder_clip(folder)
    width, height = args.width or model_width, args.height or model_height
    for flag, value in (("--width", width), ("--height", height)):
        if value < 32 or value % 16:
            raise KumoInputError(
                f"{flag} {value} is not a ShapesWorld frame side; use a multiple of 16 from 32 to {MAX_SIZE}"
            )
    check_aspect(width, height)
    geometry.check_clip(frames, height, width)
    return width, height


def check_lumina(args, folder: Path) -> dict:
    """--multiscale, --multiscale-split, --multiscale-handoff, --motion-score and motion guidance, checked as
    `kumo generate` checks them (values, then the model's configs, no weights): the
    pipeline-call arguments they become (none given: none)."""
    from kumovideo.cli.generate import check_lumina_flags, check_lumina_model
    from kumovideo.pipelines.loading import read_sampling_defaults

    check_lumina_flags(args)
    sampling = (("--steps", args.steps), ("--guidance", args.guidance))
    given = [
        flag
        for flag, on in (("--multiscale", args.multiscale), ("--motion-score", args.motion_score is not None))
        if on
    ] + [flag for flag, value in sampling if value is not None]
    if given and args.reference:
        raise KumoInputError(f"{' and '.join(given)}: for generated clips only; leave out with --reference")
    if args.no_layout and args.reference:
        raise KumoInputError("--no-layout: for generated clips only; leave it out with --reference")
    extras = check_lumina_model(args, folder, read_sampling_defaults(folder))
    return {**extras, "layout": False} if args.no_layout else extras


def check_args(args) -> Path:
    """Every flag, before the model loads; the output folder (checked, not yet created)."""
    positive = "--n and --batch-size must be positive"
    flags.check_whole_flags(args, "--n", high=MAX_CAPTIONS, too_small=positive)
    flags.check_whole_flags(args, "--batch-size", too_small=positive)
    flags.check_seed_flag(args, clips=args.n)  # clip i is generated with --seed + i
    flags.check_whole_flags(args, "--steps", too_small="{name} {value}: pass 1 or more denoising steps")
    flags.check_guidance(args)
    flags.check_fast_path_args(args)
    flags.check_lora_args(args)
    flags.resolve_device(args.device)
    return check_output_folder(args.out, "--out")  # before the evaluation, not after it


def run(args) -> int:
    out_dir = check_args(args)
    folder = resolve_model(args)
    frame = check_frame_flags(args, folder)  # the model's configs, no weights
    extras = check_lumina(args, folder)

    import torch

    from kumovideo.cli.generate import sampling_settings
    from kumovideo.data.shapes_world import HELD_BACK
    from kumovideo.evaluation.shapes_judge import contact_sheet, judge_clip, summarise
    from kumovideo.pipelines import KumoPipeline, frames_to_uint8

    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)  # shipped fp16; CPU math in fp32
    flags.apply_cli_lora(pipe, args)
    pipe.to(flags.resolve_device(args.device))  # noise is drawn on the CPU: the same clips on any device
    pipe.set_progress_bar_config(disable=True)
    flags.apply_cli_fast_paths(pipe, args)
    turbo, steps, guidance, guidance_rescale, _ = sampling_settings(pipe, args)
    clip = pipe.default_clip()
    width, height = frame or (clip["width"], clip["height"])
    size, frames = min(width, height), clip["num_frames"]  # S: ShapesWorld sizes are relative to it
    exclude = seen_captions(folder) | (seen_captions(Path(args.lora)) if args.lora else set())  # both trained on
    include = HELD_BACK if args.held_back else None
    captions = eval_captions(args.n, args.seed, size, frames, exclude, width, height, include=include)

    from tqdm.auto import tqdm

    sampler = "scheduler" if args.sampler == "default" else "renoise"
    clips, results = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(captions), args.batch_size), desc="eval shapes", unit="batch"):
        batch = captions[i : i + args.batch_size]
        if args.reference:
            out = reference_clips(pipe, batch, size, frames, args.seed + i, args.reference == "vae", width, height)
        else:
            out = generate_clips(
                pipe,
                batch,
                args.seed + i,
                frames,
                height,
                width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_rescale=guidance_rescale,
                sampler=sampler,
                **extras,
            )
        for text, video in zip(batch, out):
            frames_u8 = frames_to_uint8(video)
            clips.append(frames_u8)
            results.append(judge_clip(frames_u8, text))
    elapsed = time.perf_counter() - start
    handoff = pipe.resolve_multiscale_handoff(args.multiscale, extras.get("multiscale_handoff"), sampler)
    summary = summarise(results)
    summary.update(
        {
            "model": str(folder),
            "steps": steps,
            "step_cache": args.step_cache,
            "fast": args.fast,
            "guidance": guidance,
            "guidance_rescale": guidance_rescale,
            "sampler": args.sampler,
            "turbo": turbo,
            "seed": args.seed,
            "reference": args.reference,
            "lora": args.lora,
            "lora_scale": args.lora_scale,
            "held_back": include,  # the held-back colour every caption names, or None (the base draw)
            "width": width,
            "height": height,
            "num_frames": frames,
            "multiscale": args.multiscale,
            "multiscale_split": extras.get("multiscale_split"),  # resolved: the flag, else the model's
            "multiscale_handoff": handoff,  # resolved: the flag, else the model's (None: evenly spaced steps)
            "motion_score": extras.get("motion_score"),  # as sampled: clamped to the model's range
            # the layout planner the clips were sampled with (None: the model alone)
            "layout": None if args.no_layout or args.reference else pipe.sampling_defaults.get("layout"),
            "negative_motion_score": extras.get("negative_motion_score"),  # motion guidance, likewise
            "negative_motion_end": extras.get("negative_motion_end"),  # as given (None: the model's, else 1)
            "seconds": elapsed,
            "seconds_per_clip": elapsed / len(captions),
            "excluded_training_captions": len(exclude),
        }
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(clips[:16], captions[:16], out_dir / "contact_sheet.png")
    write_results(out_dir, summary, [r.to_dict() for r in results])

    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    what = (
        f"reference clips ({args.reference})"
        if args.reference
        else f"{steps} steps, guidance {guidance} (rescale {guidance_rescale}), "
        f"sampler {args.sampler}{' (turbo)' if turbo else ''}"
        + "".join(f", {key.replace('_', ' ')} {value}" for key, value in extras.items())
    )
    drawn = f" (each with the held-back colour {include})" if include else ""
    print(
        f"kumo eval shapes: {summary['n']} captions{drawn} at {width}x{height}, {what}, {elapsed:.0f} s "
        f"({elapsed / len(captions):.2f} s/clip), model {summary['model']}"
    )
    print(f"  match rate        {percent(summary['match_rate'])}")
    print(f"  one object        {percent(summary['one_object']['match_rate'])}  (n={summary['one_object']['n']})")
    print(f"  two objects       {percent(summary['two_objects']['match_rate'])}  (n={summary['two_objects']['n']})")
    for name, value in summary["attributes"].items():
        print(f"  {name:<17} {percent(value)}")
    print(f"contact sheet: {sheet}; per-clip results: {out_dir / 'results.json'}")
    return 0
