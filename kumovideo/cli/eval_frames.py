"""`kumo eval i2v` and `kumo eval interpolate`: how well a model conditioned on frames
keeps them (docs/conditioning.md has the figures and the commands).

`i2v`: for N captions unseen in training (half one-object, half two-object), render a
ShapesWorld clip, give the model its first frame and the caption, and measure the first
generated frame's PSNR against the image (beside the VAE round trip's, the ceiling), how
far each object starts from where the image has it (in units of the frame side S, by the
judge's measurement) and whether the clip matches its caption (the `kumo eval shapes` judge).

`interpolate`: render N clips of moving objects (17 frames), keep every 4th frame (5
keyframes, 2 fps), interpolate x4 back to 17 and compare with the render: PSNR of the
in-between frames, against a linear blend of the neighbouring keyframes (which ghosts), and
of the model's own keyframes (before the input keyframes are pasted back).
`--keyframes generate` instead makes the keyframes with the base text-to-video model from
the captions (`kumo generate --interpolate 4`) and judges both clips against their captions.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from kumovideo.cli import args as flags
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_folder

MAX_CAPTIONS = 10_000


def register(esub) -> None:
    q = esub.add_parser("i2v", help="image-to-video: first-frame PSNR, object start error, caption match")
    _common_args(q, "outputs/eval-i2v", n=64)
    q.add_argument("--batch-size", type=int, default=8, help="clips generated per pipeline call")
    flags.add_guidance_args(q)
    flags.add_image_guidance_arg(q, "image guidance scale (> 1: one more guidance branch)")
    q.set_defaults(func=run_i2v)

    r = esub.add_parser("interpolate", help="x4 interpolation of rendered clips vs the render and a linear blend")
    _common_args(r, "outputs/eval-interpolate", n=32)
    r.add_argument("--factor", type=int, default=4, help="2 or 4 (default 4: keep every 4th frame)")
    r.add_argument(
        "--keyframes",
        choices=["render", "generate"],
        default="render",
        help="render: keyframes from rendered clips (PSNR); generate: from the base model's clips of the "
        "captions, judged against them (`kumo generate --interpolate`)",
    )
    r.add_argument("--base-model", default=None, help="with --keyframes generate: the text-to-video model")
    r.add_argument(
        "--no-caption",
        action="store_true",
        help="interpolate rendered clips without their captions (`kumo interpolate` without --prompt)",
    )
    flags.add_guidance_args(r)  # of the interpolation; the base's keyframes take the base's own
    flags.add_image_guidance_arg(r, "image guidance scale of the interpolation (default: the model's)")
    r.set_defaults(func=run_interpolate)


def _common_args(q, out: str, n: int) -> None:
    q.add_argument(
        "--model", default=None, help="conditioned pipeline folder (default: the built-in kumo-shapes-frames)"
    )
    q.add_argument("--n", type=int, default=n, help=f"number of captions (default {n})")
    q.add_argument("--seed", type=int, default=2024, help="caption, render and noise seed (default 2024)")
    flags.add_steps_arg(q, help="denoising steps (default: the model's)")
    q.add_argument("--out", default=out, help="folder for results.json")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")


def check_common(args) -> Path:
    """The flags every frames evaluation takes, and the model's config (no weights read)."""
    from kumovideo.cli.interpolate import resolve_frames_model

    positive = "--n and --batch-size must be positive"
    flags.check_whole_flags(args, "--n", high=MAX_CAPTIONS, too_small=positive)
    if hasattr(args, "batch_size"):
        flags.check_whole_flags(args, "--batch-size", too_small=positive)
    flags.check_seed_flag(args, clips=args.n)
    flags.check_whole_flags(args, "--steps", too_small="{name} {value}: pass 1 or more denoising steps")
    out = check_output_folder(args.out, "--out")
    args.model = resolve_frames_model(args.model, f"kumo eval {args.eval_command}")
    return out


def _load(folder):
    import torch

    from kumovideo.pipelines import KumoPipeline

    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32)  # shipped fp16; CPU math in fp32
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _captions(pipe, folder: Path, n: int, seed: int, keep=None) -> list[str]:
    """n distinct captions unseen in training (the model's training_captions.txt), alternating
    one and two objects: `kumo eval shapes`'s draw for the same seed, those `keep` accepts."""
    from kumovideo.cli.eval_common import eval_captions, seen_captions

    clip = pipe.default_clip()
    return eval_captions(n, seed, clip["height"], clip["num_frames"], seen_captions(folder), keep=keep)


def _renders(captions: list[str], clip: dict, seed: int):
    """uint8 clips (F, H, W, 3) of the captions at the model's clip size, seeded."""
    import numpy as np

    from kumovideo.data.shapes_world import clip_spec_from_caption, render_clip

    rng = np.random.default_rng([seed, 77])
    height, width, frames = clip["height"], clip["width"], clip["num_frames"]
    return [render_clip(clip_spec_from_caption(c, rng, height, frames, width=width, height=height)) for c in captions]


def _write(out_dir: Path, summary: dict, clips: list[dict], as_json: bool) -> None:
    from kumovideo.utils.atomic import atomic_file

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "results.json", "w") as f:
        json.dump({"summary": summary, "clips": clips}, f, indent=2, default=float)
    if as_json:
        print(json.dumps(summary, indent=2, default=float))


def _db(value) -> str:
    return "  n/a" if value is None else ("  inf" if math.isinf(value) else f"{value:5.2f}")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


# ---------------------------------------------------------------------------------------- i2v


def decode_clips(pipe, latents):
    """Latents (B, F_lat, C, h, w) -> uint8 clips (F, H, W, 3), one per item."""
    import torch

    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8

    with torch.no_grad():
        video = pipe.decode_latents(latents)  # (B, 3, F, H, W) in [-1, 1]
    return [frames_to_uint8(((v.float().permute(1, 0, 2, 3) + 1) / 2).cpu()) for v in video]


def vae_round_trip(vae, images):
    """uint8 images (N, S, S, 3) encoded as 1-frame clips and decoded: the VAE's ceiling."""
    import torch

    from kumovideo.pipelines.conditioning import encode_images, images_to_tensor
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8

    with torch.no_grad():
        z = encode_images(vae, images_to_tensor(list(images))) / vae.config.scaling_factor  # (N, C, h, w)
        video = vae.decode(z[:, :, None].to(vae.dtype)).sample[:, :, 0]  # (N, 3, S, S) in [-1, 1]
    return frames_to_uint8(((video.float() + 1) / 2).cpu())


def vae_clip_round_trip(vae, clip):
    """A uint8 clip (F, S, S, 3) encoded whole and decoded (eval_common.vae_round_trip): the
    ceiling of a latent model with this VAE, frame by frame."""
    from kumovideo.cli.eval_common import vae_round_trip
    from kumovideo.data.shapes_world import frames_to_tensor
    from kumovideo.pipelines.pipeline_kumo import frames_to_uint8

    decoded = vae_round_trip(vae, frames_to_tensor(clip)[None])[0]  # (F, 3, S, S) in [-1, 1]
    return frames_to_uint8((decoded + 1) / 2)


def run_i2v(args) -> int:
    out_dir = check_common(args)
    flags.check_guidance(args)

    import numpy as np
    import torch

    from kumovideo.cli.generate import sampling_settings
    from kumovideo.evaluation.frames_metrics import finite_mean, psnr, start_errors
    from kumovideo.evaluation.shapes_judge import judge_clip, summarise
    from kumovideo.pipelines.conditioning import encode_images, images_to_tensor

    pipe = _load(args.model)
    args.turbo, args.sampler = False, "default"
    _, steps, guidance, rescale, _ = sampling_settings(pipe, args)
    clip = pipe.default_clip()
    captions = _captions(pipe, args.model, args.n, args.seed)
    renders = _renders(captions, clip, args.seed)
    images = np.stack([r[0] for r in renders])
    ceilings = [psnr(a, b) for a, b in zip(vae_round_trip(pipe.vae, images), images)]

    results, judged = [], []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(captions), args.batch_size), desc="eval i2v", unit="batch"):
        batch = captions[i : i + args.batch_size]
        latents = pipe(
            batch,
            image=[torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images[i : i + len(batch)]],
            image_guidance_scale=args.image_guidance,
            num_inference_steps=steps,
            guidance_scale=guidance,
            guidance_rescale=rescale,
            generator=[torch.Generator().manual_seed(args.seed + i + j) for j in range(len(batch))],
            output_type="latent",
            keep_first_frame=False,
        ).frames
        # The model's own clip, and the pipeline's default: the image's latent kept as latent frame 0.
        own = decode_clips(pipe, latents)
        kept = latents.clone()
        kept[:, 0] = encode_images(pipe.vae, images_to_tensor(list(images[i : i + len(batch)])))
        for j, (text, frames, own_frames) in enumerate(zip(batch, decode_clips(pipe, kept), own)):
            image = images[i + j]
            judgement = judge_clip(frames, text)
            judged.append(judgement)
            results.append(
                {
                    "caption": text,
                    "first_frame_psnr": psnr(frames[0], image),
                    "first_frame_psnr_model": psnr(own_frames[0], image),
                    "vae_psnr": ceilings[i + j],
                    "start_errors": start_errors(frames[0], image, text),
                    "start_errors_model": start_errors(own_frames[0], image, text),
                    "match": judgement.match,
                }
            )
    elapsed = time.perf_counter() - start
    errors = [e for r in results for e in r["start_errors"]]
    errors_model = [e for r in results for e in r["start_errors_model"]]
    first = [r["first_frame_psnr"] for r in results]
    first_model = [r["first_frame_psnr_model"] for r in results]
    summary = {
        "n": len(results),
        "model": str(args.model),
        "steps": steps,
        "guidance": guidance,
        "image_guidance": args.image_guidance,
        "seed": args.seed,
        "first_frame_psnr": finite_mean(first),
        "first_frame_psnr_min": min(first),
        "first_frame_at_least_28db": float(np.mean([p >= 28 for p in first])),
        "first_frame_psnr_model": finite_mean(first_model),
        "first_frame_model_at_least_28db": float(np.mean([p >= 28 for p in first_model])),
        "vae_round_trip_psnr": finite_mean(ceilings),
        "start_error_mean": finite_mean(errors),
        "start_error_max": max(errors) if errors else None,
        "objects_within_0.05S": float(np.mean([e <= 0.05 for e in errors])) if errors else None,
        "start_error_model_mean": finite_mean(errors_model),
        "objects_within_0.05S_model": float(np.mean([e <= 0.05 for e in errors_model])) if errors_model else None,
        **{k: v for k, v in summarise(judged).items() if k != "n"},
        "seconds": elapsed,
    }
    _write(out_dir, summary, results, args.json)
    if not args.json:
        print(f"kumo eval i2v: {len(results)} captions, {steps} steps, guidance {guidance}, {elapsed:.0f} s")
        print(
            f"  first frame PSNR   {_db(summary['first_frame_psnr'])} dB "
            f"(min {_db(summary['first_frame_psnr_min'])}), "
            f">= 28 dB: {_pct(summary['first_frame_at_least_28db'])}"
        )
        print(
            f"  model's own        {_db(summary['first_frame_psnr_model'])} dB, >= 28 dB: "
            f"{_pct(summary['first_frame_model_at_least_28db'])}  (keep_first_frame=False)"
        )
        print(f"  VAE round trip     {_db(summary['vae_round_trip_psnr'])} dB (the ceiling)")
        print(
            f"  start error        {_num(summary['start_error_mean'])} S mean, within 0.05 S: "
            f"{_pct(summary['objects_within_0.05S'])}; model's own {_num(summary['start_error_model_mean'])} S, "
            f"{_pct(summary['objects_within_0.05S_model'])}"
        )
        print(f"  match rate         {_pct(summary['match_rate'])}")
        print(f"  one object         {_pct(summary['one_object']['match_rate'])}")
        print(f"  two objects        {_pct(summary['two_objects']['match_rate'])}")
        print(f"per-clip results: {out_dir / 'results.json'}")
    return 0


# ---------------------------------------------------------------------------------------- interpolate


def moving(caption_text: str) -> bool:
    """Every object of the caption moves (its frames differ: what interpolation is for)."""
    from kumovideo.data.shapes_world import parse_caption

    return all(obj["motion"] != "stays still" for obj in parse_caption(caption_text)["objects"])


PSNR_KEYS = ("in_between_psnr", "blend_psnr", "keyframe_psnr", "vae_in_between_psnr")


def run_interpolate(args) -> int:
    from kumovideo.pipelines.interpolation import check_factor

    check_factor(args.factor)
    flags.check_guidance(args)
    if args.keyframes == "generate" and args.no_caption:  # the base needs its caption to make keyframes
        raise KumoInputError(
            "--no-caption does not go with --keyframes generate, which makes keyframes from each caption; drop one"
        )
    if args.keyframes != "generate" and args.base_model is not None:
        raise KumoInputError("--base-model makes the keyframes of --keyframes generate; add that or drop it")
    out_dir = check_common(args)
    if args.keyframes == "generate":
        return _interpolate_generated(args, out_dir)

    import torch

    from kumovideo.evaluation.frames_metrics import finite_mean, in_between, linear_blend, psnr
    from kumovideo.pipelines.interpolation import interpolate_frames, interpolation_guidance, interpolation_steps

    pipe = _load(args.model)
    args.steps = interpolation_steps(pipe, args.steps)  # reported as run
    clip = pipe.default_clip()
    captions = _captions(pipe, args.model, args.n, args.seed, keep=moving)
    prompt_of = (lambda text: "") if args.no_caption else (lambda text: text)
    guidance = interpolation_guidance(pipe, prompt_of(captions[0]), args.guidance, args.image_guidance)
    results = []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    renders = _renders(captions, clip, args.seed)
    for i, (text, render) in enumerate(tqdm(zip(captions, renders), total=len(captions), desc="eval interpolate")):
        keyframes = render[:: args.factor]
        out = interpolate_frames(
            pipe,
            keyframes,
            args.factor,
            prompt=prompt_of(text),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            image_guidance_scale=args.image_guidance,
            guidance_rescale=args.guidance_rescale,
            generator=torch.Generator().manual_seed(args.seed + i),
            paste_keyframes=False,
        )
        between = in_between(len(render), args.factor)
        blend = linear_blend(keyframes, args.factor)
        ceiling = vae_clip_round_trip(pipe.vae, render)
        results.append(
            {
                "caption": text,
                "in_between_psnr": psnr(out[between], render[between]),
                "blend_psnr": psnr(blend[between], render[between]),
                "vae_in_between_psnr": psnr(ceiling[between], render[between]),
                "keyframe_psnr": psnr(out[:: args.factor], keyframes),
            }
        )
    elapsed = time.perf_counter() - start
    summary = {
        "n": len(results),
        "model": str(args.model),
        "factor": args.factor,
        "steps": args.steps,
        "captions": not args.no_caption,
        "guidance": guidance.text,
        "image_guidance": guidance.image,
        "seed": args.seed,
        **{key: finite_mean([r[key] for r in results]) for key in PSNR_KEYS},
        "seconds": elapsed,
        "seconds_per_clip": elapsed / len(results),
    }
    summary["gain_over_blend_db"] = summary["in_between_psnr"] - summary["blend_psnr"]
    _write(out_dir, summary, results, args.json)
    if not args.json:
        print(
            f"kumo eval interpolate: {len(results)} rendered clips, x{args.factor}, {args.steps} steps, "
            f"{'no captions' if args.no_caption else 'their captions'}, guidance {guidance.text:g}, "
            f"image guidance {guidance.image or 1:g}, {elapsed:.0f} s"
        )
        print(f"  in-between PSNR    {_db(summary['in_between_psnr'])} dB")
        print(f"  linear blend       {_db(summary['blend_psnr'])} dB  (gain {summary['gain_over_blend_db']:+.2f} dB)")
        print(f"  model keyframes    {_db(summary['keyframe_psnr'])} dB (before the input keyframes are pasted)")
        print(f"  VAE round trip     {_db(summary['vae_in_between_psnr'])} dB at the in-between frames (the ceiling)")
        print(f"per-clip results: {out_dir / 'results.json'}")
    return 0


def _interpolate_generated(args, out_dir: Path) -> int:
    """Keyframes from the base model's clips of the captions, interpolated; both judged."""
    import torch

    from kumovideo.builtin import builtin_model_dir
    from kumovideo.cli.generate import sampling_settings
    from kumovideo.evaluation.shapes_judge import judge_clip, summarise
    from kumovideo.pipelines import frames_to_uint8
    from kumovideo.pipelines.interpolation import interpolate_frames, interpolation_guidance, interpolation_steps

    base_folder = Path(args.base_model) if args.base_model else builtin_model_dir()
    base, pipe = _load(base_folder), _load(args.model)
    # The keyframes as `kumo generate` makes them (the base's defaults); the flags are the interpolation's.
    base_flags = argparse.Namespace(turbo=False, sampler="default", steps=None, guidance=None, guidance_rescale=None)
    _, steps, guidance, rescale, _ = sampling_settings(base, base_flags)
    captions = _captions(base, base_folder, args.n, args.seed)
    guidance_run = interpolation_guidance(pipe, captions[0], args.guidance, args.image_guidance)  # reported
    keyframe_judged, interpolated_judged, results = [], [], []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for i, text in enumerate(tqdm(captions, desc="eval interpolate", unit="clip")):
        g = torch.Generator().manual_seed(args.seed + i)
        video = base(
            text,
            num_inference_steps=steps,
            guidance_scale=guidance,
            guidance_rescale=rescale,
            generator=g,
            output_type="pt",
        ).frames[0]
        keyframes = frames_to_uint8(video)
        out = interpolate_frames(
            pipe,
            keyframes,
            args.factor,
            prompt=text,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            image_guidance_scale=args.image_guidance,
            guidance_rescale=args.guidance_rescale,
            generator=torch.Generator().manual_seed(args.seed + i),
        )
        keyframe_judged.append(judge_clip(keyframes, text))
        interpolated_judged.append(judge_clip(out, text))
        results.append(
            {
                "caption": text,
                "keyframes_match": keyframe_judged[-1].match,
                "interpolated_match": interpolated_judged[-1].match,
                "frames": len(out),
            }
        )
    elapsed = time.perf_counter() - start
    base_summary, interp_summary = summarise(keyframe_judged), summarise(interpolated_judged)
    summary = {
        "n": len(results),
        "model": str(args.model),
        "base_model": str(base_folder),
        "factor": args.factor,
        "steps": steps,
        "interpolation_steps": interpolation_steps(pipe, args.steps),
        "interpolation_guidance": guidance_run.text,
        "interpolation_image_guidance": guidance_run.image,
        "frames": results[0]["frames"],
        "keyframes_match_rate": base_summary["match_rate"],
        "interpolated_match_rate": interp_summary["match_rate"],
        "keyframes": base_summary,
        "interpolated": interp_summary,
        "seconds": elapsed,
    }
    _write(out_dir, summary, results, args.json)
    if not args.json:
        print(
            f"kumo eval interpolate --keyframes generate: {len(results)} captions, x{args.factor} to "
            f"{summary['frames']} frames, {elapsed:.0f} s"
        )
        for name, s in (("base keyframes", base_summary), ("interpolated", interp_summary)):
            print(
                f"  {name:<17}  match {_pct(s['match_rate'])}  one object {_pct(s['one_object']['match_rate'])}  "
                f"two objects {_pct(s['two_objects']['match_rate'])}"
            )
        print(f"per-clip results: {out_dir / 'results.json'}")
    return 0
