"""Flags that several `kumo` commands take, and the checks of their values, in one place.

Each command's `check_args(args)` runs these (and its own checks) first, before any model
loads or any work starts, so a mistake is one line `kumo: error: ...` and exit status 2.
Nothing heavy is imported at module level: `kumo --help` stays fast.
"""

from __future__ import annotations

import math

from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import COUNT_MAX, SEED_MAX, check_seed, check_whole

# The wording of `generate` and `bench` for a count or size below 1.
POSITIVE = "{name} must be a positive integer, got {value}"
STEPS_HELP = "denoising steps (default: the model's; 4 with --turbo or --sampler renoise)"


# ------------------------------------------------------------------------------ flags
def add_steps_arg(p, help: str = STEPS_HELP) -> None:
    p.add_argument("--steps", type=int, default=None, help=help)


def add_sampler_arg(p, help: str) -> None:
    p.add_argument("--sampler", choices=["default", "renoise"], default="default", help=help)


def add_guidance_args(p) -> None:
    """--guidance and --guidance-rescale, for `kumo generate` and `kumo eval shapes`."""
    p.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance scale; <= 1 turns guidance off"
    )
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=None,
        help="0..1: rescale the guided prediction toward the conditional one's std, against "
        "over-saturation at strong guidance (default: the model's, else 0)",
    )


def add_step_cache_arg(p, help: str) -> None:
    p.add_argument("--step-cache", type=float, default=None, metavar="T", help=help)


def add_multiscale_split_arg(p) -> None:
    """--multiscale-split, shared by generate, eval and bench."""
    p.add_argument(
        "--multiscale-split",
        type=float,
        default=None,
        metavar="F",
        help="with --multiscale: the share of the steps at the coarse scale, in (0, 1] (default: the model's, "
        "else 0.5)",
    )


def add_multiscale_handoff_arg(p) -> None:
    """--multiscale-handoff, shared by generate and eval."""
    p.add_argument(
        "--multiscale-handoff",
        type=float,
        default=None,
        metavar="H",
        help="with --multiscale: the noise level (t / T, in (0, 1)) where the coarse steps end, the native ones "
        "spread below it (default: the model's, else where even spacing puts it)",
    )


def add_fast_path_args(p) -> None:
    """The speed switches (docs/benchmarks.md), shared by generate and eval."""
    p.add_argument(
        "--fast",
        action="store_true",
        help="fused QKV projections and sensible CPU threads (outputs equal to the plain path)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the repeated block (regional)")
    add_step_cache_arg(p, "reuse block outputs across steps when block 0 changes by less than T (e.g. 0.05); lossy")


# ------------------------------------------------------------------------------ checks
def flag_value(args, flag: str):
    """The parsed value of `flag` ("--batch-size" -> args.batch_size)."""
    return getattr(args, flag.lstrip("-").replace("-", "_"))


def check_whole_flags(
    args, *flags: str, low: int = 1, high: int = COUNT_MAX, too_small: str | None = POSITIVE
) -> None:
    """Each of `flags` that was given, as a whole number from `low` to `high` (see
    `kumovideo.utils.numbers.check_whole`; `too_small` keeps a command's own wording)."""
    for flag in flags:
        value = flag_value(args, flag)
        if value is not None:
            check_whole(value, flag, low=low, high=high, too_small=too_small)


def check_seed_flag(args, clips: int = 1) -> None:
    """--seed, and the seeds --seed + 1 ... --seed + clips - 1 that the other clips of a
    run are generated with: all of them must be seeds every generator takes."""
    check_seed(args.seed, "--seed")
    if args.seed + clips - 1 > SEED_MAX:
        raise KumoInputError(
            f"--seed {args.seed} is too large for {clips} clips (clip i uses --seed + i); "
            f"use at most {SEED_MAX - clips + 1}"
        )


def add_image_guidance_arg(p, help: str) -> None:
    """--image-guidance, for the commands that take conditioning frames."""
    p.add_argument("--image-guidance", type=float, default=None, help=help)


def check_guidance(args) -> None:
    """--guidance, --guidance-rescale and, where the command has it, --image-guidance (NaN
    compares false to everything, so it is refused by name)."""
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise KumoInputError(f"--guidance {args.guidance} is not a number; use e.g. 4 (<= 1 turns guidance off)")
    if args.guidance_rescale is not None and not 0.0 <= args.guidance_rescale <= 1.0:
        raise KumoInputError(f"--guidance-rescale {args.guidance_rescale}: use a value from 0 (off) to 1")
    image = getattr(args, "image_guidance", None)
    if image is not None and not math.isfinite(image):
        raise KumoInputError(f"--image-guidance {image} is not a number; use e.g. 1.5 (<= 1: off)")


def check_audio_guidance(flag: str, value: float | None) -> None:
    """A video-to-audio guidance scale (over the video), when given: a finite number >= 0."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise KumoInputError(f"{flag} {value} must be a number >= 0 (1 turns guidance off)")


def check_fast_path_args(args) -> None:
    """--step-cache of `add_fast_path_args`: a positive threshold."""
    if args.step_cache is not None and not (math.isfinite(args.step_cache) and args.step_cache > 0):
        raise KumoInputError(f"--step-cache must be a positive threshold, got {args.step_cache}")


def resolve_device(name: str | None):
    """--device as a torch.device this machine has (kumovideo.utils.devices), the advice
    spelled as a flag; torch is imported only when this runs."""
    from kumovideo.utils.devices import resolve_device as resolve

    return resolve(name, cpu="--device cpu")


def apply_cli_fast_paths(pipe, args) -> None:
    """The switches of `add_fast_path_args` (checked by `check_fast_path_args`) on `pipe`."""
    if not (args.fast or args.compile or args.step_cache is not None):
        return
    check_fast_path_args(args)
    from kumovideo.perf.fast_paths import apply_fast_paths

    apply_fast_paths(
        pipe,
        fused_qkv=args.fast,
        compile=args.compile,
        step_cache=args.step_cache,
        threads="auto" if args.fast else None,
    )


def add_lora_args(p) -> None:
    p.add_argument(
        "--lora", default=None, help="a LoRA folder (kumo train dit with lora:) or .safetensors file to apply"
    )
    p.add_argument(
        "--lora-scale", type=float, default=None, help="with --lora: how much of it, 0 to 2 (default 1: as trained)"
    )


def check_lora_args(args) -> None:
    """--lora names a LoRA file or folder and peft is installed; --lora-scale is in range
    and comes with --lora. Before any model loads."""
    if args.lora is None:
        if args.lora_scale is not None:
            raise KumoInputError("--lora-scale scales a LoRA and needs --lora; add --lora FOLDER or drop it")
        return
    from kumovideo.pipelines.lora import check_lora_scale, lora_weights_file, require_peft

    lora_weights_file(args.lora)
    if args.lora_scale is not None:
        check_lora_scale(args.lora_scale)
    require_peft()


def apply_cli_lora(pipe, args) -> None:
    """The checked --lora merged into the transformer's weights at --lora-scale (fused: no
    per-step cost), its adapter layers then removed."""
    if args.lora is None:
        return
    pipe.load_lora_weights(args.lora, adapter_name="cli")
    pipe.fuse_lora(lora_scale=1.0 if args.lora_scale is None else args.lora_scale)
    pipe.unload_lora_weights()
