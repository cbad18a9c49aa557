"""`kumo generate PROMPT -o OUT.mp4`: one clip from a prompt.

`--image first.png` starts the clip at an image; `--interpolate 2|4` makes the clip's
frames keyframes and interpolates between them (more frames, factor x the frame rate).
Both use a model trained with conditioning frames (docs/conditioning.md). `--multiscale`
samples the first steps at a coarser patch size and `--motion-score X` asks for an amount
of motion (Lumina-Video), with a model trained for them."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from kumovideo.cli.args import (
    add_fast_path_args,
    add_guidance_args,
    add_image_guidance_arg,
    add_lora_args,
    add_multiscale_handoff_arg,
    add_multiscale_split_arg,
    add_sampler_arg,
    add_steps_arg,
    apply_cli_fast_paths,
    apply_cli_lora,
    check_fast_path_args,
    check_guidance,
    check_lora_args,
    check_seed_flag,
    check_whole_flags,
    flag_value,
    resolve_device,
)
from kumovideo.cli.v2a import (
    SoundtrackRequest,
    add_soundtrack_args,
    check_soundtrack_args,
    make_soundtrack,
    write_soundtrack,
)
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import FPS_MAX

logger = logging.getLogger(__name__)
# A clip this many times the model's own frame count gets a warning: attention over all its
# latent frames at once grows with their square, and no model here was trained on such lengths.
LONG_CLIP_FACTOR = 8


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a clip from a text prompt", description=__doc__)
    p.add_argument("prompt", help="what the clip should show")
    p.add_argument("-o", "--output", required=True, help="output file: .mp4 (H.264), .webm (VP9) or .gif")
    p.add_argument(
        "--model",
        help="pipeline folder (original KumoVideo layout or saved by kumovideo); default: the built-in model",
    )
    p.add_argument("--negative-prompt", default=None, help="what the clip should not show (with guidance > 1)")
    add_steps_arg(p)
    add_guidance_args(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same clip, same file")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="number of frames, 8k+1: 9, 17, 25, 33, 41, ... (4x temporal compression to an odd "
        "number of latent frames; default: the model's)",
    )
    p.add_argument(
        "--height", type=int, default=None, help="height in pixels, a multiple of 16 (default: the model's)"
    )
    p.add_argument("--width", type=int, default=None, help="width in pixels, a multiple of 16 (default: the model's)")
    p.add_argument(
        "--fps", type=int, default=None, help="frame rate of the written clip (default: the model's, else 8)"
    )
    p.add_argument("--turbo", action="store_true", help="few-step consistency sampling (KumoVideo-Turbo)")
    add_sampler_arg(
        p, "'renoise': Kandinsky-4-Flash-style few-step re-noising sampler, any model (default 4 steps, guidance 1)"
    )
    p.add_argument("--cpu-offload", action="store_true", help="keep only the running model on the GPU")
    p.add_argument(
        "--offload",
        choices=["none", "model", "group", "sequential"],
        default="none",
        help="memory mode on a GPU: model (= --cpu-offload), group (blocks streamed), sequential (least memory)",
    )
    add_fast_path_args(p)
    add_lora_args(p)
    p.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (less memory)")
    add_frames_args(p)
    add_video_args(p)
    add_layout_args(p)
    add_lumina_args(p)
    p.add_argument(
        "--audio", action="store_true", help="add a soundtrack made from the clip by a video-to-audio model (kumo v2a)"
    )
    p.add_argument("--audio-model", default=None, help="with --audio: V2A pipeline folder (default: the built-in)")
    add_soundtrack_args(p, prefix="audio-")
    p.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (default fp32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument(
        "--parallel",
        default=None,
        metavar="ulysses=U,cfg=C",
        help="several processes started by torchrun: Ulysses sequence parallel x guidance parallel "
        "(U x C = number of processes; see docs/distributed.md)",
    )
    p.add_argument(
        "--t5-on", choices=["all", "rank0"], default=None, help="with --parallel: where T5 runs (default all)"
    )
    p.add_argument(
        "--vae-on",
        choices=["rank0", "all", "split"],
        default=None,
        help="with --parallel: where the VAE decodes; 'split' deals its tiles over all ranks (default rank0)",
    )
    p.set_defaults(func=run)


def add_frames_args(p) -> None:
    """--image, --image-guidance, --interpolate and --interpolate-model (docs/conditioning.md)."""
    p.add_argument(
        "--image",
        default=None,
        help="start the clip at this image (PNG/JPEG; resized and centre-cropped to the clip); needs a model "
        "trained with conditioning frames (default then: the built-in kumo-shapes-frames)",
    )
    add_image_guidance_arg(
        p, "with --image or --interpolate: image guidance scale (> 1: one more guidance branch, Kandinsky Video style)"
    )
    p.add_argument(
        "--interpolate",
        type=int,
        default=None,
        metavar="2|4",
        help="make the clip's frames keyframes and interpolate x2 or x4 (factor x the frames and the frame rate)",
    )
    p.add_argument(
        "--interpolate-model",
        default=None,
        help="with --interpolate: the conditioned model that interpolates (default: the built-in kumo-shapes-frames)",
    )


def add_video_args(p) -> None:
    """--video and --strength: video-to-video (SDEdit; the Videos API's remix)."""
    p.add_argument(
        "--video",
        default=None,
        help="remake this clip with the prompt (video-to-video): its first seconds, taken at the clip's frame rate "
        "(--frames of them at --fps) and fitted to its size, are noised and only the last --strength of the steps "
        "run, so its layout and motion stay",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help="with --video: the share of the steps run, in (0, 1]; lower keeps more of the source "
        "(default: the model's, else 0.6)",
    )


def add_layout_args(p) -> None:
    """--regions and --no-layout: regional prompts on box tracks (kumovideo.pipelines.layout)."""
    p.add_argument(
        "--regions",
        default=None,
        metavar="JSON",
        help='draw each region\'s prompt inside its box: a JSON file holding [{"prompt": ..., "box": [x0, y0, x1, '
        'y1], "end_box": [...]}, ...], boxes as fractions of the frame, moving linearly from box to end_box '
        "(docs/layout.md)",
    )
    p.add_argument(
        "--no-layout",
        action="store_true",
        help="do not lay out the prompt's objects with the model's planner (the built-in model plans two-object "
        "captions: one box per object, each drawn by its own clause)",
    )


def check_layout_args(args) -> list | None:
    """--regions read and checked (the boxes' form, before any model loads); its list, or None."""
    if args.regions is None:
        return None
    import json

    from kumovideo.pipelines.layout import check_regions

    try:
        regions = json.loads(Path(args.regions).read_text())
    except OSError as exc:
        raise KumoInputError(
            f"--regions {args.regions} cannot be read ({exc.strerror or exc}); give a JSON file"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KumoInputError(
            f"--regions {args.regions} is not JSON ({exc}); see docs/layout.md for its form"
        ) from None
    check_regions(regions, 1, 2)
    if args.no_layout:
        raise KumoInputError("--regions is a layout and --no-layout turns layouts off; give one of them")
    return regions


def check_video_args(args):
    """--video (found, and its first frame decoded) and --strength checked, before any model
    loads; the path, or None. Its frames are read once the clip's length and rate are known
    (`read_video_source`): a long file is never decoded whole."""
    from kumovideo.pipelines import checks

    checks.check_video_to_video(args.video, args.strength)
    if args.video is None:
        return None
    if args.parallel:
        raise KumoInputError("--video runs in one process; drop --parallel")
    from kumovideo.pipelines.video_to_video import video_frames

    video_frames(args.video, "--video", num_frames=1)
    return args.video


def read_video_source(path: str, frames: int, fps: float):
    """--video's frames at the clip's times (uint8 (frames, H, W, 3)): a 30 fps source remade
    at 8 fps keeps its speed; too short is one line."""
    from kumovideo.pipelines.video_to_video import read_source

    try:
        return read_source(path, frames, fps, what=f"--video {path}")
    except KumoInputError:
        raise
    except Exception as exc:  # decoded its first frame in check_video_args; a later one is broken
        raise KumoInputError(f"--video {path} cannot be decoded as a video ({type(exc).__name__})") from None


def add_lumina_args(p) -> None:
    """--multiscale, --multiscale-split and --motion-score (Lumina-Video's multi-scale patching
    and motion conditioning; a model trained with them), and motion guidance."""
    p.add_argument(
        "--multiscale",
        action="store_true",
        help="sample the first steps at the model's coarsest patch size (fewer tokens, faster), the rest at "
        "the native one; needs a model trained with several patch sizes",
    )
    add_multiscale_split_arg(p)
    add_multiscale_handoff_arg(p)
    p.add_argument(
        "--motion-score",
        type=float,
        default=None,
        metavar="X",
        help="how much the clip should move, in percent of the frame width per second (e.g. 20: a pan across "
        "the frame in 5 s); needs a model trained with motion conditioning (default: no score)",
    )
    add_negative_motion_args(p)


def add_negative_motion_args(p, score: str = "--motion-score", needs: str = "--motion-score and guidance > 1") -> None:
    """--negative-motion-score and --negative-motion-end: Lumina-Video's motion guidance.
    `score` names where this command's positive score comes from, `needs` what the negative needs."""
    p.add_argument(
        "--negative-motion-score",
        type=float,
        default=None,
        metavar="X",
        help=f"motion guidance (Lumina-Video): tell the guidance's negative branch this score, so the clip moves "
        f"more than {score} alone makes it (X below the score) or less (X above); needs {needs} (default: off)",
    )
    p.add_argument(
        "--negative-motion-end",
        type=float,
        default=None,
        metavar="F",
        help="with --negative-motion-score: the share of the first steps it applies to, in (0, 1] "
        "(default: the model's, else 1)",
    )


def check_lumina_flags(args) -> None:
    """--multiscale / --multiscale-split / --motion-score on their own (the model's configs
    are asked later, by `check_lumina_model`)."""
    from kumovideo.pipelines.checks import check_multiscale_split_flag

    split, handoff = args.multiscale_split, args.multiscale_handoff
    check_multiscale_split_flag(args.multiscale, split, handoff)
    if split is not None and not (math.isfinite(split) and 0 < split <= 1):
        raise KumoInputError(
            f"--multiscale-split {split}: give the share of the steps at the coarse scale, in (0, 1], e.g. 0.5"
        )
    if handoff is not None and not (math.isfinite(handoff) and 0 < handoff < 1):
        raise KumoInputError(
            f"--multiscale-handoff {handoff}: give the noise level t / T where the coarse steps end, in (0, 1), "
            "e.g. 0.5"
        )
    if args.motion_score is not None and not math.isfinite(args.motion_score):
        raise KumoInputError(
            f"--motion-score {args.motion_score} is not a number; give percent of the frame width per second, e.g. 20"
        )
    check_negative_motion_flags(args, args.guidance)
    if args.parallel and (args.multiscale or args.motion_score is not None):
        flag = "--multiscale" if args.multiscale else "--motion-score"
        raise KumoInputError(f"{flag} runs in one process; drop --parallel")


def check_negative_motion_flags(args, guidance: float | None) -> None:
    """--negative-motion-score / --negative-motion-end as flags (`checks.check_negative_motion`;
    guidance None: not known yet, checked against the model's default by `check_lumina_model`)."""
    from kumovideo.pipelines import checks

    checks.check_negative_motion(args.motion_score, args.negative_motion_score, args.negative_motion_end, guidance)


def check_lumina_model(args, folder: Path, defaults: dict) -> dict:
    """--multiscale and --motion-score against the model folder's configs (no weights read):
    the pipeline-call arguments they become, the score clamped to the model's recorded range
    (with a warning)."""
    from kumovideo.pipelines import checks

    if not (args.multiscale or args.motion_score is not None):
        return {}  # --negative-motion-score needs --motion-score: check_lumina_flags said so
    config = checks.read_folder_config(folder)
    what = f"the model {folder}"
    if args.turbo and not args.model:
        what = f"the built-in Turbo model (--turbo, {folder})"
    extras: dict = {}
    if args.multiscale:
        geometry, (_, default_height, default_width) = checks.folder_clip(folder)
        split = args.multiscale_split
        if split is None:  # as the pipeline resolves it
            split = checks.default_multiscale_split(defaults)
        checks.check_multiscale(
            config, geometry, args.height or default_height, args.width or default_width, True, split, what
        )
        extras.update(multiscale=True, multiscale_split=split)
        if args.multiscale_handoff is not None:
            extras["multiscale_handoff"] = args.multiscale_handoff
    if args.motion_score is not None:
        checks.check_motion_score(config, args.motion_score, what)
        extras["motion_score"] = checks.clamp_motion_score(
            args.motion_score, checks.recorded_range(defaults, "motion_score_range")
        )
    if args.negative_motion_score is not None:
        check_negative_motion_flags(args, planned_guidance(args, defaults))
        extras["negative_motion_score"] = checks.clamp_motion_score(
            args.negative_motion_score, checks.recorded_range(defaults, "motion_score_range"), "negative motion score"
        )
        if args.negative_motion_end is not None:
            extras["negative_motion_end"] = args.negative_motion_end
    return extras


class FramesRequest(NamedTuple):
    image: str | None  # --image
    image_guidance: float | None
    interpolate: int | None  # --interpolate factor
    interpolate_model: Path | None  # checked from its config


def check_frames_args(args) -> FramesRequest | None:
    """--image / --interpolate and their flags, with the models' configs read (no weights)."""
    from kumovideo.cli.interpolate import resolve_frames_model

    if args.image is not None and args.interpolate is not None:
        raise KumoInputError(
            "--image and --interpolate do not go together: --interpolate makes its keyframes from the prompt alone; "
            "generate from the image, then run `kumo interpolate` on that clip"
        )
    if args.image is None and args.interpolate is None:
        given = [f for f in ("--image-guidance", "--interpolate-model") if flag_value(args, f) is not None]
        if given:
            raise KumoInputError(f"{given[0]} needs --image or --interpolate; add one or drop it")
        return None
    if args.parallel:
        raise KumoInputError("--image and --interpolate run in one process; drop --parallel")
    if args.image is not None:
        from kumovideo.pipelines.conditioning import load_image

        if args.interpolate_model is not None:
            raise KumoInputError("--interpolate-model needs --interpolate; with --image pass the model as --model")
        if args.turbo and args.model is None:  # it would sample the frames model with a scheduler not distilled for it
            raise KumoInputError(
                "--turbo and --image: the built-in image-to-video model (kumo-shapes-frames) has no Turbo "
                "distillation; drop --turbo (or pass --model with a Turbo model trained on conditioning frames)"
            )
        load_image(args.image)  # a missing or unreadable file is one line here, before any model loads
        resolve_frames_model(args.model, "--image")
        return FramesRequest(args.image, args.image_guidance, None, None)
    from kumovideo.pipelines.interpolation import check_factor

    check_factor(args.interpolate)
    return FramesRequest(
        None, args.image_guidance, args.interpolate, resolve_frames_model(args.interpolate_model, "--interpolate")
    )


class PlannedClip(NamedTuple):
    frames: int
    height: int
    width: int
    steps: int
    fps: float  # the clip's own (before --interpolate multiplies it)


def check_planned_clip(args, folder: Path, defaults: dict, request: FramesRequest | None, output: Path) -> PlannedClip:
    """Frames, size and steps as the run will use them, checked against the model folder's
    configs alone (no weights read; the pipeline checks them again when called): a wrong
    --frames or --steps is one line in a second, not after gigabytes of weights load."""
    from kumovideo.pipelines import checks
    from kumovideo.pipelines.pipeline_kumo import recommended_sampling
    from kumovideo.schedulers import KumoLCMScheduler
    from kumovideo.utils.numbers import check_interpolated_fps
    from kumovideo.utils.video_io import check_output_fps

    geometry, (default_frames, default_height, default_width) = checks.folder_clip(folder)
    frames, height, width = args.frames or default_frames, args.height or default_height, args.width or default_width
    geometry.check_clip(frames, height, width)
    check_fits_in_memory(frames, height, width)
    if frames > LONG_CLIP_FACTOR * default_frames:
        logger.warning(
            "%d frames is %.0fx the %d this model makes: it was not trained on clips this long, and every step "
            "attends over all %d latent frames at once (slow, memory-hungry); generate shorter clips",
            frames,
            frames / default_frames,
            default_frames,
            geometry.latent_frames(frames),
        )
    scheduler = checks.read_folder_config(folder, "scheduler")
    if args.turbo and "original_inference_steps" not in scheduler:  # as sampling_settings swaps it in
        scheduler = dict(KumoLCMScheduler.on_schedule_of(scheduler).config)
    turbo = "original_inference_steps" in scheduler
    steps = flags_or_recommended(args, recommended_sampling(defaults, turbo=turbo))[0]
    checks.check_scheduler_steps(steps, scheduler)
    fps = args.fps or defaults.get("fps", 8)
    written = fps  # the file's rate: with --interpolate, one rule with `kumo interpolate`
    if request is not None and request.interpolate:
        written = check_interpolated_fps(fps, request.interpolate, "--fps")
    check_output_fps(output, written)
    if request is not None and request.interpolate:
        _, (_, keep_height, keep_width) = checks.folder_clip(request.interpolate_model)
        if height * keep_width != width * keep_height:
            aspect = math.gcd(keep_width, keep_height)
            raise KumoInputError(
                f"--interpolate: the interpolation model ({request.interpolate_model}) makes {keep_width}x"
                f"{keep_height} clips and would crop {width}x{height} keyframes to that; generate at its aspect "
                f"({keep_width // aspect}:{keep_height // aspect}), or without --interpolate"
            )
    return PlannedClip(frames, height, width, steps, fps)


def check_fits_in_memory(frames: int, height: int, width: int) -> None:
    """Refuse a clip whose decoded frames alone (float32 RGB) would not fit in this machine's
    memory: such a run would otherwise denoise for minutes and then be killed in the decode."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    needed = frames * height * width * 3 * 4
    if total and needed > total:
        raise KumoInputError(
            f"a {frames}-frame {width}x{height} clip needs over {needed / 2**30:.0f} GiB "
            f"for its decoded frames alone, more than this machine's {total / 2**30:.0f} GiB; "
            "ask for fewer frames or a smaller size"
        )


class SamplingSettings(NamedTuple):
    turbo: bool
    steps: int
    guidance: float
    guidance_rescale: float
    defaults: dict  # the checkpoint's kumo_defaults.json


def sampling_settings(pipe, args) -> SamplingSettings:
    """How to sample a loaded pipeline. `--turbo` on a base checkpoint swaps in the
    consistency scheduler; a Turbo checkpoint is Turbo anyway. Unset flags come from the
    pipeline's defaults (`KumoPipeline.default_sampling`: the checkpoint's
    kumo_defaults.json, else the original's recipe)."""
    from kumovideo.schedulers import KumoLCMScheduler

    if args.turbo and not isinstance(pipe.scheduler, KumoLCMScheduler):
        pipe.scheduler = KumoLCMScheduler.on_schedule_of(pipe.scheduler.config)
    turbo = isinstance(pipe.scheduler, KumoLCMScheduler)
    steps, guidance, rescale = flags_or_recommended(args, pipe.default_sampling())
    return SamplingSettings(turbo, steps, guidance, rescale, pipe.sampling_defaults)


def flags_or_recommended(args, recommended: dict) -> tuple[int, float, float]:
    """Steps, guidance and guidance rescale: the flags, else `recommended` (a pipeline's
    `default_sampling`); `--sampler renoise` recommends 4 steps without guidance."""
    if getattr(args, "sampler", "default") == "renoise":  # Kandinsky 4 Flash: a few steps, no guidance
        recommended = {**recommended, "num_inference_steps": 4, "guidance_scale": 1.0}
    steps = args.steps or recommended["num_inference_steps"]
    guidance = args.guidance if args.guidance is not None else recommended["guidance_scale"]
    rescale = args.guidance_rescale if args.guidance_rescale is not None else recommended["guidance_rescale"]
    return steps, guidance, rescale


def planned_guidance(args, defaults: dict) -> float:
    """The guidance scale a run will use, before the weights load: the flag, else the model
    folder's kumo_defaults.json, else the original's (as `sampling_settings` resolves it)."""
    from kumovideo.pipelines.pipeline_kumo import recommended_sampling

    return flags_or_recommended(args, recommended_sampling(defaults))[1]


def announce_decode(frames: int, height: int, width: int):
    """A step-end callback that says, after the last step, that the VAE decode has begun:
    it has no progress bar, and a large clip decodes for tens of seconds on a CPU."""

    def callback(pipe, step, timestep, tensors):
        if step == pipe._num_timesteps - 1:
            from tqdm.auto import tqdm  # writes above the step bar instead of through it

            tqdm.write(f"kumo: decoding {frames} frames of {width}x{height} with the VAE ...", file=sys.stderr)
        return {}

    return callback


class Checked(NamedTuple):
    output: Path
    dtype: object  # torch.dtype
    device: object  # torch.device
    soundtrack: SoundtrackRequest | None  # --audio
    frames: FramesRequest | None  # --image, --interpolate
    source: str | None  # --video's path
    regions: list | None  # --regions' boxes


def check_args(args) -> Checked:
    """Every flag that can be checked before a model loads (in this order), as one-line
    errors; the output path, dtype and device they name."""
    from kumovideo.utils.dtypes import SHORT_NAMES, resolve_dtype
    from kumovideo.utils.video_io import check_output_path

    output = check_output_path(args.output)
    check_guidance(args)
    dtype = resolve_dtype(args.dtype, SHORT_NAMES)
    device = resolve_device(args.device)
    if device.type == "cpu" and args.dtype == "fp16":
        logger.warning(
            "--dtype fp16 on a CPU is emulated on most CPUs: a clip took about 20x as long as in fp32 on a 2-core "
            "test machine (the VAE decode most of it); use --dtype bf16 or fp32"
        )
    if args.cpu_offload:
        if args.offload not in ("none", "model"):
            raise KumoInputError("--cpu-offload is --offload model; give one of them")
        args.offload = "model"
    if args.offload != "none" and device.type != "cuda":
        raise KumoInputError(
            f"--{'cpu-offload' if args.cpu_offload else 'offload ' + args.offload} needs a CUDA GPU "
            "(it moves models between GPU and CPU); drop it on CPU"
        )
    check_whole_flags(args, "--steps", "--frames", "--height", "--width")
    check_whole_flags(args, "--fps", high=FPS_MAX)
    check_seed_flag(args)
    check_fast_path_args(args)
    check_lumina_flags(args)
    check_lora_args(args)
    if not args.prompt.strip():
        raise KumoInputError("the prompt is empty; say what the clip should show")
    if not args.parallel and (args.t5_on or args.vae_on):
        flag = "--t5-on" if args.t5_on else "--vae-on"
        raise KumoInputError(f"{flag} places work across processes and needs --parallel (under torchrun); drop it")
    frames = check_frames_args(args)
    regions = check_layout_args(args)
    if regions is not None and frames is not None:
        raise KumoInputError("--regions does not combine with --image / --interpolate; drop one of them")
    return Checked(output, dtype, device, check_audio_args(args, output), frames, check_video_args(args), regions)


def check_audio_args(args, output: Path) -> SoundtrackRequest | None:
    """--audio and its flags (which mean nothing without it)."""
    if args.audio:
        return check_soundtrack_args(args, output, args.audio_model, "--audio-steps", "--audio-guidance")
    given = [
        flag
        for flag in ("--audio-model", "--audio-steps", "--audio-guidance", "--audio-prompt", "--audio-negative-prompt")
        if flag_value(args, flag) is not None
    ] + (["--wav"] if args.wav is not None else [])
    if given:
        raise KumoInputError(f"{given[0]} shapes the soundtrack and needs --audio; add --audio or drop it")
    return None


def run(args) -> int:
    import torch

    from kumovideo.utils.video_io import write_video

    # all checks before a model loads
    output, dtype, device, soundtrack, conditioning, source, regions = check_args(args)

    from kumovideo.builtin import LUMINA_DIR, builtin_frames_dir, builtin_model_dir, lumina_request
    from kumovideo.pipelines import KumoPipeline, frames_to_uint8
    from kumovideo.pipelines.loading import check_checkpoint_folder, read_sampling_defaults

    image = conditioning.image if conditioning else None
    if args.model:
        folder = Path(args.model)
    else:
        needs_lumina = lumina_request(args.multiscale, args.motion_score, args.width, args.height)
        folder = builtin_frames_dir() if image is not None else builtin_model_dir(args.turbo, needs_lumina)
    check_checkpoint_folder(folder)  # missing, partial or pickle-only: named before its configs are read
    recommended = read_sampling_defaults(folder)  # a bad kumo_defaults.json is named before the weights load
    lumina = check_lumina_model(args, folder, recommended)  # --multiscale, --motion-score: from the configs
    planned = check_planned_clip(args, folder, recommended, conditioning, output)  # frames, size, steps, fps
    if source is not None:  # at the rate the clip is written at
        source = read_video_source(source, planned.frames, planned.fps)
    ctx = None
    if args.parallel:  # checked against the process count and the model's configs before loading weights
        from kumovideo.distributed.launch import prepare_parallel

        ctx = prepare_parallel(args, folder, device)
        device = ctx.device
    pipe = KumoPipeline.from_pretrained(folder, torch_dtype=dtype)
    apply_cli_lora(pipe, args)
    turbo, steps, guidance, guidance_rescale, defaults = sampling_settings(pipe, args)
    runner = pipe
    if ctx is not None:
        from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

        runner = ParallelKumoPipeline(
            pipe, ctx, text_encoder_on=args.t5_on or "all", vae_on=args.vae_on or "rank0"
        ).to(device)
    else:
        pipe.to(device)
    apply_cli_fast_paths(pipe, args)  # on the device, before any offload hooks
    if ctx is None and args.offload != "none":
        from kumovideo.perf.fast_paths import apply_memory_mode

        apply_memory_mode(pipe, offload=args.offload, device=device)
    if args.vae_tiling:
        pipe.enable_vae_tiling()

    frames, height, width, fps = planned.frames, planned.height, planned.width, planned.fps

    call = dict(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_frames=frames,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        guidance_rescale=guidance_rescale,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        output_type="pt",
    )
    if image is not None:
        call.update(image=image, image_guidance_scale=conditioning.image_guidance)
    if source is not None:
        call.update(video=source, strength=args.strength)
    if regions is not None:
        call["regions"] = regions
    elif args.no_layout:
        call["layout"] = False
    call.update(lumina)
    if ctx is None or ctx.is_main:
        call["callback_on_step_end"] = announce_decode(frames, height, width)
    video = runner(**call, sampler="scheduler" if args.sampler == "default" else "renoise").frames
    if ctx is not None:
        from kumovideo.distributed.launch import finish

        finish(ctx)
        if video is None:  # only rank 0 holds the clip and writes the file
            return 0
    clip_frames = frames_to_uint8(video[0])
    if conditioning is not None and conditioning.interpolate:
        clip_frames = interpolate_keyframes(clip_frames, conditioning, args, dtype, device)
        frames, fps = len(clip_frames), fps * conditioning.interpolate
        height, width = clip_frames.shape[1:3]  # the interpolation model's size (same aspect: check_planned_clip)
    if soundtrack is None:
        write_video(clip_frames, output, fps=fps)
    else:  # the silent clip beside the output, then the output with its sound: never a half-made file
        silent = output.with_name(f".{output.stem}.silent{output.suffix}")
        try:
            write_video(clip_frames, silent, fps=fps)
            audio, sample_rate = make_soundtrack(clip_frames, fps, soundtrack, device)
            write_soundtrack(silent, audio, sample_rate, output, soundtrack)
        finally:
            silent.unlink(missing_ok=True)
    from kumovideo.cli import STARTED

    elapsed = time.perf_counter() - STARTED  # all of it: start-up, loading, generating, writing
    sound = " with sound" if soundtrack else ""
    if conditioning is not None and conditioning.interpolate:
        sound += f", interpolated x{conditioning.interpolate}"
    if not args.model and folder == LUMINA_DIR:  # chosen for a flag the base lacks
        sound += ", the built-in kumo-shapes-lumina model"
    counted = f"{frames} frame{'' if frames == 1 else 's'}"
    if source is not None:  # SDEdit runs only the last share of the steps
        from kumovideo.pipelines.video_to_video import strength_start, video_strength

        strength = video_strength(recommended) if args.strength is None else args.strength
        steps = f"{steps - strength_start(steps, strength)} of {steps}"
        sound += f", remade from {args.video} at strength {strength:g}"
    print(f"wrote {output} ({counted}, {width}x{height}, {fps} fps, {steps} steps{sound}) in {elapsed:.1f} s")
    return 0


def interpolate_keyframes(keyframes, request: FramesRequest, args, dtype, device):
    """`--interpolate`: the generated clip's frames as keyframes, interpolated by the conditioned model."""
    import torch

    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.interpolation import interpolate_frames

    pipe = KumoPipeline.from_pretrained(request.interpolate_model, torch_dtype=dtype).to(device)
    return interpolate_frames(
        pipe,
        keyframes,
        request.interpolate,
        prompt=args.prompt,
        image_guidance_scale=request.image_guidance,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
    )
