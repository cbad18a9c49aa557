"""`kumo interpolate IN.mp4 --factor 2|4 -o OUT.mp4`: more frames between a clip's frames.

An N-frame clip becomes factor * (N - 1) + 1 frames at factor times its frame rate, the
input frames kept as keyframes (Kandinsky Video 1.1's interpolation step), by a pipeline
trained with conditioning frames (default: the built-in kumo-shapes-frames;
docs/conditioning.md). Clips longer than the model's window run as overlapping windows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from kumovideo.cli.args import (
    add_guidance_args,
    add_image_guidance_arg,
    add_steps_arg,
    check_guidance,
    check_seed_flag,
    check_whole_flags,
    resolve_device,
)
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import check_interpolated_fps


def register(sub) -> None:
    p = sub.add_parser("interpolate", help="interpolate a clip x2 or x4 (keeps its frames)", description=__doc__)
    p.add_argument("input", help="the clip to interpolate (.mp4, .webm, .gif, ...)")
    p.add_argument("-o", "--output", required=True, help="output file: .mp4 (H.264), .webm (VP9) or .gif")
    p.add_argument("--factor", type=int, required=True, help="2 or 4: the output has factor x the frame rate")
    p.add_argument(
        "--model",
        default=None,
        help="pipeline folder trained with conditioning frames (default: the built-in kumo-shapes-frames)",
    )
    p.add_argument(
        "--prompt",
        default="",
        help="what the clip shows (optional; the model keeps objects' shapes better with it)",
    )
    add_sampling_args(p, "denoising steps (default: the model's)", "default: the model's")
    p.set_defaults(func=run)


def add_sampling_args(p, steps_help: str, image_guidance_default: str) -> None:
    """--steps, the guidance flags, --seed and --device of a command that runs a conditioned model."""
    add_steps_arg(p, help=steps_help)
    add_guidance_args(p)
    add_image_guidance_arg(p, f"image guidance scale (> 1: one more guidance branch; {image_guidance_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")


class Checked(NamedTuple):
    frames: object  # np.ndarray (N, H, W, 3) uint8
    fps: float
    out_fps: int  # the output's: factor x fps
    output: Path
    model: Path
    device: object


def read_keyframes(path: str, least: int = 2):
    """The clip's frames (N, H, W, 3) and frame rate; a clip that does not decode, or has
    fewer than `least` frames (interpolation needs 2), is one line."""
    from kumovideo.utils.video_io import read_video

    if not Path(path).is_file():
        raise KumoInputError(f"input clip {path} not found")
    try:
        frames, fps = read_video(path)
    except Exception as exc:  # av's errors for a file that is not a video, or a broken one
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KumoInputError(f"{path} cannot be decoded as video ({reason}); pass an .mp4, .webm or .gif") from None
    if len(frames) < least:
        raise KumoInputError(f"{path} has {len(frames)} frame(s); interpolation needs at least {least}")
    return frames, fps


def resolve_frames_model(model: str | None, flag: str) -> Path:
    """The conditioned model's folder, checked from its config before any weights load."""
    from kumovideo.builtin import builtin_frames_dir
    from kumovideo.pipelines.checks import check_folder_frame_conditioning

    folder = Path(model) if model else builtin_frames_dir()
    check_folder_frame_conditioning(folder, flag)
    return folder


def check_args(args) -> Checked:
    """Every check before a model loads: the factor, the output path, the flags, the input
    clip (decoded) and the model's config; nothing is written."""
    from kumovideo.pipelines.interpolation import check_factor
    from kumovideo.utils.paths import check_not_overwriting
    from kumovideo.utils.video_io import check_output_fps, check_output_path

    check_factor(args.factor)
    output = check_output_path(args.output)
    check_not_overwriting({"INPUT": Path(args.input)}, {"-o": output})  # the keyframes would be lost
    check_whole_flags(args, "--steps")
    check_guidance(args)
    check_seed_flag(args)
    device = resolve_device(args.device)
    frames, fps = read_keyframes(args.input)
    out_fps = round(check_interpolated_fps(fps, args.factor, f"{args.input}'s frame rate")) if fps else 8 * args.factor
    check_output_fps(output, out_fps)
    model = resolve_frames_model(args.model, "kumo interpolate")
    return Checked(frames, fps, out_fps, output, model, device)


def run(args) -> int:
    frames, fps, out_fps, output, folder, device = check_args(args)

    import torch

    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.interpolation import interpolate_frames, interpolation_steps
    from kumovideo.utils.video_io import write_video

    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
    steps = interpolation_steps(pipe, args.steps)
    out = interpolate_frames(
        pipe,
        frames,
        args.factor,
        prompt=args.prompt,
        num_inference_steps=steps,
        guidance_scale=args.guidance,
        image_guidance_scale=args.image_guidance,
        guidance_rescale=args.guidance_rescale,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    )
    write_video(out, output, fps=out_fps)
    from kumovideo.cli import STARTED

    elapsed = time.perf_counter() - STARTED
    print(f"wrote {output} ({len(frames)} -> {len(out)} frames, {out_fps} fps, {steps} steps) in {elapsed:.1f} s")
    return 0
