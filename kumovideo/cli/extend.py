"""`kumo extend IN.mp4 --prompt P --seconds S -o OUT.mp4`: make a clip longer.

The clip is kept exactly and S seconds are added at its frame rate, generated from its last
frames (--context, default 5) by a model trained with conditioning frames (default: the
built-in kumo-shapes-frames; docs/conditioning.md), one segment of the model's length at a
time. The prompt says what happens next.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from kumovideo.cli.args import check_guidance, check_seed_flag, check_whole_flags, resolve_device
from kumovideo.cli.interpolate import add_sampling_args
from kumovideo.utils.errors import KumoInputError

MAX_SECONDS = 60


def register(sub) -> None:
    p = sub.add_parser("extend", help="make a clip longer, from its last frame", description=__doc__)
    p.add_argument("input", help="the clip to extend (.mp4, .webm, .gif, ...)")
    p.add_argument("-o", "--output", required=True, help="output file: .mp4 (H.264), .webm (VP9) or .gif")
    p.add_argument("--prompt", required=True, help="what happens next")
    p.add_argument("--seconds", type=float, default=2.0, help=f"seconds to add, at most {MAX_SECONDS} (default 2)")
    p.add_argument(
        "--model",
        default=None,
        help="pipeline folder trained with conditioning frames (default: the built-in kumo-shapes-frames)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        metavar="K",
        help="the clip's last K frames (odd) each segment starts from, given at its frames 0, 2, ...; 1: the last "
        "frame alone (default 5: enough to carry a growing or shrinking object's trend)",
    )
    add_sampling_args(p, "denoising steps per segment (default: the model's)", "default: off")
    p.set_defaults(func=run)


def added_frames(seconds: float, fps: float) -> int:
    """Frames that `seconds` add at `fps` (at least one), the seconds checked."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise KumoInputError(f"--seconds {seconds:g}: add between 0 and {MAX_SECONDS} seconds, e.g. 2")
    from kumovideo.pipelines.extension import frames_to_add

    return frames_to_add(seconds, fps)


def check_args(args):
    """Every check before a model loads: the output (not the input), the flags, the clip
    (decoded; its size one the model takes) and the model's config."""
    from kumovideo.cli.interpolate import read_keyframes, resolve_frames_model
    from kumovideo.pipelines.checks import check_prompts, folder_clip
    from kumovideo.pipelines.extension import context_frames
    from kumovideo.utils.paths import check_not_overwriting
    from kumovideo.utils.video_io import check_output_fps, check_output_path

    output = check_output_path(args.output)
    check_not_overwriting({"INPUT": Path(args.input)}, {"-o": output})
    check_prompts(args.prompt, None)
    if not args.prompt.strip():
        raise KumoInputError("--prompt is empty; say what happens next")
    check_whole_flags(args, "--steps")
    check_guidance(args)
    check_seed_flag(args)
    device = resolve_device(args.device)
    frames, fps = read_keyframes(args.input, least=1)
    fps = fps or 8.0
    added = added_frames(args.seconds, fps)
    check_output_fps(output, fps)
    model = resolve_frames_model(args.model, "kumo extend")
    geometry, (clip_frames, _, _) = folder_clip(model)
    geometry.check_sides(*frames.shape[1:3], f"{args.input}'s frames")
    if args.context is not None:  # odd, and short of the model's clip: the pipeline's rule, before it loads
        context_frames(len(frames), args.context, clip_frames)
    return frames, fps, added, output, model, device


def run(args) -> int:
    frames, fps, added, output, folder, device = check_args(args)

    import torch

    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.extension import extend_frames
    from kumovideo.utils.video_io import write_video

    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
    out = extend_frames(
        pipe,
        frames,
        added,
        args.prompt,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        guidance_rescale=args.guidance_rescale,
        image_guidance_scale=args.image_guidance,
        **({} if args.context is None else {"context": args.context}),
    )
    write_video(out, output, fps=fps)
    from kumovideo.cli import STARTED

    elapsed = time.perf_counter() - STARTED
    print(f"wrote {output} ({len(frames)} + {added} frames, {fps:g} fps) in {elapsed:.1f} s")
    return 0
