"""`kumo shapes`: the ShapesWorld procedural video world.

    kumo shapes render --n 100 --out data/shapes [--size 128] [--frames 17] [--seed 0] [--fps 8]
                       [--width W --height H] [--motion-range LO,HI] [--held-back]

writes clip_00000.mp4 + clip_00000.txt (its caption), ... to the output folder. ShapesWorld
v1.1: `--width`/`--height` a W x H frame (any aspect within 1:2 .. 2:1, each side a multiple
of 16; a side not given is --size), `--motion-range` the motion amount m drawn uniformly per
clip (default: m = 1, the v1 stream); either also writes clip_00000.json, {"motion_amount",
"motion_score", "width", "height"}, so motion conditioning can be checked clip by clip.
`--held-back` renders clips that each show the held-back colour cyan, which no base model is
trained on (the colour a LoRA fine-tune learns), so it can be seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kumovideo.cli.args import check_seed_flag, check_whole_flags
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import FPS_MAX
from kumovideo.utils.paths import check_output_folder


def register(sub) -> None:
    """Add the `shapes` command (and its sub-commands) to the `kumo` parser."""
    parser = sub.add_parser(
        "shapes",
        help="render ShapesWorld clips (the built-in model's training world)",
        description="ShapesWorld: procedurally rendered videos of coloured shapes with captions.",
    )
    actions = parser.add_subparsers(dest="shapes_command", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    render = actions.add_parser(
        "render",
        help="render N random clips to mp4 files with caption .txt files",
        description="Render N random ShapesWorld clips as clip_NNNNN.mp4 (H.264) + clip_NNNNN.txt (caption).",
    )
    render.add_argument("--n", type=int, required=True, help="number of clips to render")
    render.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    render.add_argument("--size", type=int, default=128, help="frame side in pixels, a multiple of 16 (default 128)")
    render.add_argument("--frames", type=int, default=17, help="frames per clip, 4k+1 (default 17)")
    render.add_argument("--seed", type=int, default=0, help="random seed; the same seed renders the same clips")
    render.add_argument("--fps", type=int, default=8, help="frames per second of the mp4 files (default 8)")
    render.add_argument("--width", type=int, default=None, help="v1.1: frame width, multiple of 16 (default --size)")
    render.add_argument("--height", type=int, default=None, help="v1.1: frame height, multiple of 16 (default --size)")
    render.add_argument(
        "--motion-range",
        default=None,
        metavar="LO,HI",
        help="v1.1: motion amount m drawn uniformly per clip from [LO, HI] within 0.5..1.5 (default: m = 1); "
        "m is recorded in clip_NNNNN.json",
    )
    render.add_argument(
        "--held-back",
        action="store_true",
        help="every clip shows the held-back colour cyan (never in base training; for fine-tuning)",
    )
    render.set_defaults(func=run_render)


def check_args(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """Reject bad arguments before any work, with what is wrong and what to do; returns the
    frame (W, H) and the motion range (None: m = 1)."""
    from kumovideo.data.shapes_world import check_num_frames, check_size, frame_size, parse_motion_range

    check_whole_flags(args, "--n", too_small="{name} {value} is not a number of clips; pass --n 1 or more")
    no_rate = "{name} {value} is not a frame rate; pass --fps 1 or more (the world uses 8)"
    check_whole_flags(args, "--fps", high=FPS_MAX, too_small=no_rate)
    check_seed_flag(args)
    check_output_folder(args.out, "--out")
    # Prefix the world's own messages with the flag to change.
    for flag, value, check in (
        ("--size", args.size, check_size),
        ("--frames", args.frames, check_num_frames),
        ("--width", args.width, check_size),
        ("--height", args.height, check_size),
    ):
        try:
            if value is not None:
                check(value)
        except KumoInputError as exc:
            raise KumoInputError(f"{flag}: {exc}") from None
    frame = frame_size(args.size, args.width, args.height)  # its message names the frame and the aspect rule
    try:
        motion_amounts = parse_motion_range(args.motion_range)
    except KumoInputError as exc:
        message = str(exc)
        raise KumoInputError(message if message.startswith("--") else f"--motion-range: {message}") from None
    return frame, motion_amounts


def run_render(args: argparse.Namespace) -> int:
    from kumovideo.data.shapes_world import HELD_BACK, render_to_disk

    frame, motion_amounts = check_args(args)
    paths = render_to_disk(
        args.n,
        args.out,
        seed=args.seed,
        size=args.size,
        num_frames=args.frames,
        fps=args.fps,
        progress=True,
        width=args.width,
        height=args.height,
        motion_amounts=motion_amounts,
        include=HELD_BACK if args.held_back else None,
    )
    v11 = args.width is not None or args.height is not None or motion_amounts is not None
    sidecars = " + clip_NNNNN.json" if v11 else ""
    held_back = f", each with the held-back colour {HELD_BACK}" if args.held_back else ""
    print(
        f"wrote {len(paths)} clips ({frame[0]}x{frame[1]}, {args.frames} frames, {args.fps} fps{held_back}) "
        f"as clip_NNNNN.mp4 + clip_NNNNN.txt{sidecars} to {args.out}"
    )
    return 0
