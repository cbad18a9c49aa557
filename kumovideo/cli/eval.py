"""`kumo eval shapes`: does the model do what the prompt says? (`kumo eval sound`: cli/eval_sound.py)

Draws N captions from the ShapesWorld grammar (seeded; half one-object, half two-object;
captions the model was trained on as-is are skipped when the model lists them in
`training_captions.txt`), generates a clip for each, and judges it against its caption
by the spec's "what counts as matching". Prints match rates overall, by number of
objects and per attribute; writes a contact sheet PNG and the per-clip results.

`--reference render|vae` judges rendered clips of the same captions instead (straight, or
encoded and decoded by the model's VAE): the judge's own check, and the ceiling any
denoiser can reach with that VAE.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kumovideo.cli import args as flags
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
    flags.add_sampler_arg(
        q, "'renoise': Kandinsky-4-Flash-style few-step re-noising sampler (default 4 steps, guidance 1)"
    )
    q.add_argument("--n", type=int, default=64, help="number of captions (default 64)")
    q.add_argument("--seed", type=int, default=2024, help="caption and noise seed (default 2024: the test captions)")
    flags.add_steps_arg(q)
    flags.add_guidance_args(q)
    q.add_argument("--batch-size", type=int, default=8, help="clips generated per pipeline call")
    q.add_argument("--out", default="outputs/eval-shapes", help="folder for contact_sheet.png and results.json")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    q.add_argument(
        "--reference",
        choices=["render", "vae"],
        default=None,
        help="judge ShapesWorld renders of the captions (render), or the renders through the "
        "model's VAE (vae: the ceiling for this VAE), instead of generated clips",
    )
    flags.add_fast_path_args(q)
    q.set_defaults(func=run)
    from kumovideo.cli import eval_frames, eval_sound

    eval_sound.register(esub)
    eval_frames.register(esub)


def eval_captions(n: int, seed: int, size: int, num_frames: int, exclude: set[str]) -> list[str]:
    """n captions, alternating one- and two-object, none of them in `exclude`."""
    import numpy as np

    from kumovideo.data.shapes_world import caption, sample_clip_spec

    rng = np.random.default_rng([seed, 4242])
    captions: list[str] = []
    tries = 0
    while len(captions) < n:
        tries += 1
        if tries > 100 * n:
            raise KumoInputError("could not draw enough captions unseen in training; lower --n")
        text = caption(sample_clip_spec(rng, size=size, num_frames=num_frames, num_objects=1 + len(captions) % 2))
        if text not in exclude and text not in captions:
            captions.append(text)
    return captions


def reference_clips(pipe, captions: list[str], size: int, num_frames: int, seed: int, through_vae: bool):
    """Rendered clips of `captions` as video in [0, 1], (B, F, 3, H, W): straight, or
    encoded (posterior mode) and decoded by the pipeline's VAE."""
    import numpy as np
    import torch

    from kumovideo.data.shapes_world import clip_spec_from_caption, frames_to_tensor, render_clip

    rng = np.random.default_rng([seed, 77])
    video = torch.stack(
        [frames_to_tensor(render_clip(clip_spec_from_caption(c, rng, size, num_frames))) for c in captions]
    )
    if through_vae:  # (B, F, 3, H, W) -> the VAE's (B, 3, F, H, W) and back
        vae = pipe.vae
        with torch.no_grad():
            z = vae.encode(video.permute(0, 2, 1, 3, 4).to(vae.device, vae.dtype)).latent_dist.mode()
            video = vae.decode(z).sample.permute(0, 2, 1, 3, 4).float().cpu()
    return ((video + 1) / 2).clamp(0, 1)


def check_args(args) -> Path:
    """Every flag, before the model loads; the output folder (checked, not yet created)."""
    positive = "--n and --batch-size must be positive"
    flags.check_whole_flags(args, "--n", high=MAX_CAPTIONS, too_small=positive)
    flags.check_whole_flags(args, "--batch-size", too_small=positive)
    flags.check_seed_flag(args, clips=args.n)  # clip i is generated with --seed + i
    flags.check_whole_flags(args, "--steps", too_small="{name} {value}: pass 1 or more denoising steps")
    flags.check_guidance(args)
    flags.check_fast_path_args(args)
    flags.resolve_device(args.device)
    return check_output_folder(args.out, "--out")  # before the evaluation, not after it


def run(args) -> int:
    out_dir = check_args(args)

    import torch

    from kumovideo.builtin import builtin_model_dir
    from kumovideo.cli.generate import sampling_settings
    from kumovideo.evaluation.shapes_judge import contact_sheet, judge_clip, summarise
    from kumovideo.pipelines import KumoPipeline, frames_to_uint8

    folder = Path(args.model) if args.model else builtin_model_dir(turbo=args.turbo)
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)  # shipped fp16; CPU math in fp32
    pipe.to(flags.resolve_device(args.device))  # noise is drawn on the CPU: the same clips on any device
    pipe.set_progress_bar_config(disable=True)
    flags.apply_cli_fast_paths(pipe, args)
    turbo, steps, guidance, guidance_rescale, _ = sampling_settings(pipe, args)
    clip = pipe.default_clip()
    size, frames = clip["height"], clip["num_frames"]  # ShapesWorld clips are square
    seen_file = folder / "training_captions.txt"
    exclude = set(seen_file.read_text().splitlines()) if seen_file.exists() else set()
    captions = eval_captions(args.n, args.seed, size, frames, exclude)

    from tqdm.auto import tqdm

    clips, results = [], []
    start = time.perf_counter()
    for i in tqdm(range(0, len(captions), args.batch_size), desc="eval shapes", unit="batch"):
        batch = captions[i : i + args.batch_size]
        generators = [torch.Generator().manual_seed(args.seed + i + j) for j in range(len(batch))]
        if args.reference:
            out = reference_clips(pipe, batch, size, frames, args.seed + i, through_vae=args.reference == "vae")
        else:
            out = pipe(
                batch,
                num_frames=frames,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_rescale=guidance_rescale,
                generator=generators,
                output_type="pt",
                sampler="scheduler" if args.sampler == "default" else "renoise",
            ).frames
        for text, video in zip(batch, out):
            frames_u8 = frames_to_uint8(video)
            clips.append(frames_u8)
            results.append(judge_clip(frames_u8, text))
    elapsed = time.perf_counter() - start
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
    )
    print(f"kumo eval shapes: {summary['n']} captions, {what}, {elapsed:.0f} s ({elapsed / len(captions):.2f} s/clip)")
    print(f"  match rate        {percent(summary['match_rate'])}")
    print(f"  one object        {percent(summary['one_object']['match_rate'])}  (n={summary['one_object']['n']})")
    print(f"  two objects       {percent(summary['two_objects']['match_rate'])}  (n={summary['two_objects']['n']})")
    for name, value in summary["attributes"].items():
        print(f"  {name:<17} {percent(value)}")
    print(f"contact sheet: {sheet}; per-clip results: {out_dir / 'results.json'}")
    return 0
