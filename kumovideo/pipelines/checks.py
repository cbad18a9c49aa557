"""The rules a pipeline call's arguments must meet, each stated once.

`KumoPipeline.check_inputs` runs them in order before any work (a mistake would otherwise
surface deep inside torch or after the first denoising step); `ParallelKumoPipeline` and
`KumoPipeline.from_pretrained` use the ones that apply to them. Every failure is a one-line
`KumoInputError` naming the argument and what to pass instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from kumovideo.geometry import ClipGeometry, config_value
from kumovideo.schedulers.sampling import SAMPLERS
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_int, is_real

OUTPUT_TYPES = ("pil", "np", "pt", "latent")

logger = logging.getLogger(__name__)

# Multi-scale sampling's share of coarse steps when neither the call nor kumo_defaults.json says.
DEFAULT_MULTISCALE_SPLIT = 0.5


def _one_of(names: Sequence[str]) -> str:
    """'a', 'b' or 'c'."""
    quoted = [repr(n) for n in names]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, str) for p in value)


def _check_unicode(texts: Any, name: str) -> None:
    """Text the tokenizer can read: a lone surrogate (from a bad decode, or JSON's "\\ud800")
    is no character and would fail deep in the tokenizer or the job store."""
    for text in [texts] if isinstance(texts, str) else texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise KumoInputError(
                f"{name} holds {text[exc.start]!r} at {exc.start}, a lone surrogate, not a character; send valid text"
            ) from None


def check_prompts(prompt: Any, negative_prompt: Any) -> None:
    """A prompt or a non-empty list of them; no negative prompt, one, or one per prompt."""
    if not (isinstance(prompt, str) or _is_strings(prompt)):
        raise KumoInputError("prompt must be a string or a list of strings")
    if isinstance(prompt, list) and not prompt:
        raise KumoInputError("prompt list is empty; pass at least one prompt")
    if negative_prompt is not None and not (isinstance(negative_prompt, str) or _is_strings(negative_prompt)):
        raise KumoInputError("negative_prompt must be a string, a list of strings (one per prompt) or None")
    _check_unicode(prompt, "prompt")
    if negative_prompt is not None:
        _check_unicode(negative_prompt, "negative_prompt")
    if isinstance(negative_prompt, list):
        count = len(prompt) if isinstance(prompt, list) else 1
        if len(negative_prompt) != count:
            raise KumoInputError(
                f"{len(negative_prompt)} negative prompts for {count} prompt(s); pass one each or a single string"
            )


def check_whole_numbers(**values: Any) -> None:
    for name, value in values.items():
        if not is_int(value):
            raise KumoInputError(f"{name}={value!r} must be a whole number (an int)")


def check_num_inference_steps(num_inference_steps: int, num_train_timesteps: int) -> None:
    if num_inference_steps < 1:
        raise KumoInputError(f"num_inference_steps={num_inference_steps}; use at least 1")
    if num_inference_steps > num_train_timesteps:
        raise KumoInputError(
            f"num_inference_steps={num_inference_steps} is more than the model's "
            f"{num_train_timesteps} training timesteps; use fewer"
        )


def check_scheduler_steps(num_inference_steps: int, scheduler_config: Any) -> None:
    """`check_num_inference_steps` against a scheduler's config; a consistency (Turbo)
    scheduler also samples at most its `original_inference_steps` (LCM's skipping grid: diffusers
    raises deep inside `set_timesteps` past it)."""
    check_num_inference_steps(num_inference_steps, scheduler_config["num_train_timesteps"])
    most = scheduler_config.get("original_inference_steps")
    if most is not None and num_inference_steps > most:
        raise KumoInputError(
            f"num_inference_steps={num_inference_steps}: consistency (Turbo) sampling takes at most {most} steps, "
            f"the grid it was distilled on; use {most} or fewer (Turbo's default is 4)"
        )


def check_scheduler(scheduler: Any, sampler: str) -> None:
    """A scheduler that walks the noise schedule the model was trained on: v-prediction on
    scaled-linear betas with the SNR shift and zero terminal SNR (what KumoDDIMScheduler and
    KumoLCMScheduler compute). diffusers' DDIMScheduler or DPMSolverMultistepScheduler
    `.from_config(pipe.scheduler.config)` drop the shift and sampled another schedule without
    a word; CogVideoXDPMScheduler's `step` takes more arguments and failed at the first step.
    `sampler="renoise"` reads only the noise schedule (its own steps)."""
    from kumovideo.schedulers.noise_schedule import SNR_SHIFT_SCALE, kumo_alphas_cumprod

    name, config = type(scheduler).__name__, scheduler.config
    swap = (
        "use pipe.scheduler = KumoDDIMScheduler.from_config(pipe.scheduler.config) "
        "(or KumoLCMScheduler for Turbo's consistency sampling)"
    )
    try:
        expected = kumo_alphas_cumprod(
            config["beta_start"],
            config["beta_end"],
            config["num_train_timesteps"],
            config.get("snr_shift_scale", SNR_SHIFT_SCALE),
        )
    except (KeyError, TypeError, RuntimeError):
        expected = None
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if (
        expected is None
        or not torch.is_tensor(alphas)
        or alphas.shape != expected.shape
        or not torch.allclose(alphas.double().cpu(), expected, atol=1e-6)
    ):
        raise KumoInputError(
            f"{name} does not sample this model's noise schedule (scaled-linear betas with its SNR shift and "
            f"zero terminal SNR); {swap}"
        )
    if sampler != "scheduler":
        return
    if config.get("prediction_type") != "v_prediction":
        raise KumoInputError(
            f"{name} has prediction_type={config.get('prediction_type')!r}, but the model predicts v; {swap}"
        )
    import inspect

    try:  # the samplers call step(model_output, timestep, sample, ...)
        inspect.signature(scheduler.step).bind(None, None, None)
    except TypeError:
        raise KumoInputError(f"{name}.step takes more than (model_output, timestep, sample); {swap}") from None


def check_max_sequence_length(max_sequence_length: int, text_window: int) -> None:
    if max_sequence_length != text_window:
        raise KumoInputError(
            f"max_sequence_length={max_sequence_length}, but this transformer was trained with a text window of "
            f"{text_window}; leave it unset"
        )


def check_num_videos_per_prompt(num_videos_per_prompt: Any) -> None:
    if not is_int(num_videos_per_prompt) or num_videos_per_prompt < 1:
        raise KumoInputError(f"num_videos_per_prompt={num_videos_per_prompt!r}; use a whole number >= 1")


def check_guidance(guidance_scale: Any, guidance_rescale: Any) -> None:
    """Finite numbers; the rescale a fraction (Lin et al. 2023, sec. 3.4)."""
    for name, value in (("guidance_scale", guidance_scale), ("guidance_rescale", guidance_rescale)):
        if not is_real(value) or not math.isfinite(value):
            raise KumoInputError(f"{name}={value!r} must be a finite number")
    if not 0.0 <= guidance_rescale <= 1.0:
        raise KumoInputError(f"guidance_rescale={guidance_rescale}; use a value from 0 (off) to 1")


def check_generator(generator: Any, batch_size: int) -> None:
    """None, one torch.Generator, or one per video of the batch."""
    if isinstance(generator, list):
        if len(generator) != batch_size or not all(isinstance(g, torch.Generator) for g in generator):
            raise KumoInputError(
                f"generator is a list of {len(generator)} items for {batch_size} video(s); pass one "
                "torch.Generator per video (prompts x num_videos_per_prompt), or a single one"
            )
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise KumoInputError(
            f"generator must be a torch.Generator (or a list, one per video), not {type(generator).__name__}"
        )


def check_latents_type(latents: Any) -> None:
    if latents is not None and not (torch.is_tensor(latents) and latents.is_floating_point()):
        what = f"a {latents.dtype} tensor" if torch.is_tensor(latents) else type(latents).__name__
        raise KumoInputError(f"latents must be a floating-point torch.Tensor, got {what}")


def check_latents_shape(latents: torch.Tensor | None, expected: tuple[int, ...]) -> None:
    if latents is not None and tuple(latents.shape) != tuple(expected):
        raise KumoInputError(f"latents have shape {tuple(latents.shape)}, expected {tuple(expected)}")


def check_callback(callback: Any, tensor_inputs: Any, allowed: Sequence[str]) -> None:
    if callback is not None and not callable(callback):
        raise KumoInputError("callback_on_step_end must be callable: (pipe, step, timestep, tensors) -> dict")
    if isinstance(tensor_inputs, str) or not all(n in allowed for n in tensor_inputs):
        raise KumoInputError(
            f"callback_on_step_end_tensor_inputs={tensor_inputs!r}; use a list of names from {allowed}"
        )


def check_callback_result(returned: Any, given: dict[str, torch.Tensor] | None = None) -> dict:
    """What a step callback returned: a dict of replacement tensors, or None for none. With
    `given` (the tensors it was passed), each replacement must be one of them, as a tensor of
    the same shape: a misspelt key was ignored without a word, and a batch of another size
    failed steps later inside the guidance."""
    if returned is None:
        return {}
    if not isinstance(returned, dict):
        raise KumoInputError(
            f"callback_on_step_end returned a {type(returned).__name__}; return a dict of the "
            "tensors it replaces (e.g. {'latents': latents}) or None"
        )
    if given is None:
        return returned
    for name, value in returned.items():
        if name not in given:
            raise KumoInputError(
                f"callback_on_step_end returned {name!r}, which it was not given; it can replace only "
                f"{', '.join(repr(k) for k in given) or 'nothing'} (the names in callback_on_step_end_tensor_inputs)"
            )
        if not torch.is_tensor(value) or value.shape != given[name].shape:
            what = f"shape {tuple(value.shape)}" if torch.is_tensor(value) else type(value).__name__
            raise KumoInputError(
                f"callback_on_step_end returned {name} of {what}; return a tensor of the shape it was given "
                f"{tuple(given[name].shape)}"
            )
    return returned


def check_sampler(sampler: Any) -> None:
    if sampler not in tuple(SAMPLERS):
        raise KumoInputError(f"sampler={sampler!r}; use {_one_of(tuple(SAMPLERS))}")


def check_output_type(output_type: Any) -> None:
    if output_type not in OUTPUT_TYPES:
        raise KumoInputError(f"output_type={output_type!r}; use {_one_of(OUTPUT_TYPES)}")


def check_image_guidance(image_guidance_scale: Any, conditioned: bool | None = None) -> None:
    """A finite number or None; with `conditioned` False (no image, no keyframes) only None:
    the scale weighs the image branch, and without an image it did nothing, without a word
    (None: not known here, as for the server's form, which checks that itself)."""
    scale = image_guidance_scale
    if scale is not None and not (is_real(scale) and math.isfinite(scale)):
        raise KumoInputError(f"image_guidance_scale={image_guidance_scale!r} must be a finite number (or None)")
    if scale is not None and conditioned is False:
        raise KumoInputError(
            f"image_guidance_scale={scale!r} weighs the image guidance branch and needs an image or "
            "conditioning_frames; add one or drop the scale"
        )


def trained_for(
    transformer_config: Any, *, image: bool = False, multiscale: bool = False, motion: bool = False
) -> bool:
    """Whether a transformer, by its config alone, was trained for what a request asks:
    conditioning frames (`image`), coarse patch sizes (`multiscale`), a motion score
    (`motion`). The checks below refuse what this says no to; the server routes by it."""
    return (
        (not image or bool(config_value(transformer_config, "frame_conditioning", False)))
        and (not multiscale or bool(config_value(transformer_config, "multiscale_patch_sizes")))
        and (not motion or bool(config_value(transformer_config, "motion_conditioning", False)))
    )


def trained_for_size(
    default_size: tuple[int, int], aspect_range: Sequence[float] | None, width: int | None, height: int | None
) -> bool:
    """Whether a model was trained for a clip of width x height (a side left out is the
    default's): one that records an `aspect_range` (aspect buckets) for any, else only its
    default (width, height)."""
    return aspect_range is not None or (width or default_size[0], height or default_size[1]) == tuple(default_size)


def check_frame_conditioning(transformer_config: Any, what: str = "this model") -> None:
    """Conditioning frames (an image, keyframes) need a transformer trained with them; read
    from its config, so the CLI can ask before any weights load."""
    if not trained_for(transformer_config, image=True):
        raise KumoInputError(
            f"{what} was not trained with conditioning frames (its transformer config has no frame_conditioning), "
            "so it cannot take an image or keyframes; use the built-in kumo-shapes-frames model or one fine-tuned "
            "with a `conditioning:` config (docs/conditioning.md)"
        )


def read_folder_config(folder: Any, part: str = "transformer") -> dict:
    """A pipeline folder's `part/config.json` (`scheduler/scheduler_config.json`; no weights
    read): for the CLI, which checks flags against a model's configs before anything loads."""
    import json
    from pathlib import Path

    name = "scheduler_config.json" if part == "scheduler" else "config.json"
    path = Path(folder) / part / name
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict):
        from kumovideo.pipelines.loading import check_checkpoint_folder

        check_checkpoint_folder(folder)  # a missing folder or a video-to-audio one said as such first
        raise KumoInputError(f"{folder} has no readable {part}/{name}; pass a pipeline folder")
    return config


def folder_clip(folder: Any) -> tuple[ClipGeometry, tuple[int, int, int]]:
    """(geometry, (frames, height, width)) of the clip the folder's transformer was made for,
    from its configs alone (`KumoPipeline.default_clip` without loading)."""
    transformer = read_folder_config(folder)
    geometry = ClipGeometry.from_configs(read_folder_config(folder, "vae"), transformer)
    return geometry, geometry.sample_clip(transformer)


def check_folder_frame_conditioning(folder: Any, flag: str) -> None:
    """`check_frame_conditioning` of a pipeline folder's transformer, from its config.json alone
    (no weights read): for the CLI, before anything loads."""
    check_frame_conditioning(read_folder_config(folder), f"the model {folder} ({flag})")


# ------------------------------------------------------------------ Lumina-Video: scales and motion


def check_multiscale(
    transformer_config: Any,
    geometry: ClipGeometry,
    height: int,
    width: int,
    multiscale: bool,
    multiscale_split: Any,
    what: str = "this model",
) -> None:
    """Multi-scale sampling (the first steps at the coarsest patch size): a transformer with
    coarse scales, a split in (0, 1], and sides the coarse patches tile. A split without
    `multiscale` is refused (it would do nothing)."""
    if not multiscale:
        if multiscale_split is not None:
            raise KumoInputError(
                f"multiscale_split={multiscale_split!r} is the share of the steps at the coarse scale and needs "
                "multiscale=True (--multiscale); add it or drop the split"
            )
        return
    if not trained_for(transformer_config, multiscale=True):
        raise KumoInputError(
            f"{what} has one patch size (no multiscale_patch_sizes in its transformer config); "
            "drop --multiscale / multiscale=True or use a model trained with several"
        )
    if not (is_real(multiscale_split) and 0 < multiscale_split <= 1):
        raise KumoInputError(
            f"multiscale_split={multiscale_split!r}; use the share of the steps to sample at the coarse scale, "
            "a number in (0, 1] such as 0.5"
        )
    coarsest = max(config_value(transformer_config, "multiscale_patch_sizes"))
    coarse = dataclasses.replace(geometry, patch=coarsest)
    coarse.check_sides(
        height, width, f"VAE {geometry.spatial}x times the coarsest patch {coarsest}, which multi-scale sampling needs"
    )


def check_multiscale_handoff(multiscale: bool, handoff: Any, sampler: str, v_ddim: bool) -> None:
    """`multiscale_handoff`, the noise level t / T where the coarse steps end: in (0, 1), with
    `multiscale`, and a v-prediction DDIM scheduler (`v_ddim`) to step between unevenly spaced
    timesteps (not the Turbo scheduler, not the re-noising sampler)."""
    if handoff is None:
        return
    if not multiscale:
        raise KumoInputError(
            f"multiscale_handoff={handoff!r} is where multi-scale sampling's coarse steps end and needs "
            "multiscale=True (--multiscale); add it or drop the handoff"
        )
    if not (is_real(handoff) and 0 < handoff < 1):
        raise KumoInputError(
            f"multiscale_handoff={handoff!r}; use the noise level (t / T) where the coarse steps end, "
            "a number in (0, 1) such as 0.5"
        )
    if sampler != "scheduler" or not v_ddim:
        raise KumoInputError(
            "multiscale_handoff steps DDIM over its own timesteps; it needs the DDIM scheduler and "
            "sampler='scheduler' (not Turbo, not --sampler renoise); drop the handoff"
        )


def default_multiscale_split(sampling_defaults: dict) -> float:
    """The share of the steps at the coarse scale when a call leaves it out: the checkpoint's
    kumo_defaults.json `multiscale_split`, else DEFAULT_MULTISCALE_SPLIT."""
    return sampling_defaults.get("multiscale_split", DEFAULT_MULTISCALE_SPLIT)


def check_multiscale_split_flag(multiscale: bool, split: float | None, handoff: float | None = None) -> None:
    """--multiscale-split (the share of the coarse steps) and --multiscale-handoff (where they
    end): without --multiscale they mean nothing (kumo generate, kumo eval and kumo bench
    refuse them before any model loads)."""
    if split is not None and not multiscale:
        raise KumoInputError("--multiscale-split needs --multiscale; add --multiscale or drop the split")
    if handoff is not None and not multiscale:
        raise KumoInputError("--multiscale-handoff needs --multiscale; add --multiscale or drop the handoff")


def recorded_range(sampling_defaults: dict, key: str) -> tuple[float, float] | None:
    """A [low, high] a checkpoint recorded in kumo_defaults.json (`motion_score_range`,
    `aspect_range`, `area_range`) as a pair, or None when it has none."""
    recorded = sampling_defaults.get(key)
    return None if recorded is None else (recorded[0], recorded[1])


def leading_steps(num_steps: int, fraction: float) -> int:
    """How many of the first steps of `num_steps` a setting asked for on a `fraction` of them
    covers: fraction x steps, rounded half up, at least one (it was asked for) and at most all."""
    return min(num_steps, max(1, math.floor(fraction * num_steps + 0.5)))


def coarse_steps(num_steps: int, split: float) -> int:
    """How many of the first steps of `num_steps` run at the coarse scale (`leading_steps`)."""
    return leading_steps(num_steps, split)


def check_motion_score(transformer_config: Any, motion_score: Any, what: str = "this model") -> None:
    """A motion score (percent of the frame width moved per second) for a transformer trained
    with motion conditioning; None (no score: the unconditioned default) for any."""
    if motion_score is None:
        return
    if not trained_for(transformer_config, motion=True):
        raise KumoInputError(
            f"{what} was not trained with a motion score (its transformer config has no motion_conditioning); "
            "drop --motion-score / motion_score, or use a model trained with one"
        )
    if not (is_real(motion_score) and math.isfinite(motion_score)):
        raise KumoInputError(
            f"motion_score={motion_score!r} must be a finite number (percent of the frame width moved per second)"
        )


def check_negative_motion(
    motion_score: Any, negative_motion_score: Any, negative_motion_end: Any, guidance_scale: float | None
) -> None:
    """Lumina-Video's motion guidance: the text guidance's negative branch told
    `negative_motion_score` (a low one) for the first `negative_motion_end` of the steps, so
    the guidance pushes away from little motion as well as from the negative prompt. It
    needs a motion score for the positive branch (`check_motion_score` checks the model takes
    one) and a negative branch (guidance > 1; `guidance_scale` None: not known yet, unchecked)."""
    if negative_motion_score is not None:
        if motion_score is None:
            raise KumoInputError(
                "--negative-motion-score / negative_motion_score needs a motion score, the one the positive branch "
                "is told (e.g. --motion-score 25 --negative-motion-score 10); add one or drop the negative"
            )
        if not (is_real(negative_motion_score) and math.isfinite(negative_motion_score)):
            raise KumoInputError(
                f"negative_motion_score={negative_motion_score!r} must be a finite number "
                "(percent of the frame width moved per second)"
            )
        if guidance_scale is not None and not guidance_scale > 1:
            raise KumoInputError(
                f"the negative motion score rides on the text guidance's negative branch, and guidance "
                f"{guidance_scale:g} has none; raise the guidance above 1 or drop the negative motion score"
            )
    check_negative_motion_end(negative_motion_score, negative_motion_end)


def check_video_to_video(video: Any, strength: Any) -> None:
    """SDEdit's strength, the share of the steps run on the source clip: in (0, 1], and only
    with a video (the video itself is read and checked by `video_to_video.video_frames`)."""
    if strength is None:
        return
    if video is None:
        raise KumoInputError("strength / --strength needs a source video (video= / --video); add one or drop it")
    if not (is_real(strength) and math.isfinite(strength) and 0 < strength <= 1):
        raise KumoInputError(
            f"strength={strength!r} must be in (0, 1]: the share of the steps run on the source video "
            "(lower keeps more of it; 1 keeps none of it), e.g. 0.6"
        )


def check_negative_motion_end(negative_motion_score: Any, negative_motion_end: Any) -> None:
    """The share of the first steps motion guidance runs for: in (0, 1], with a negative score."""
    if negative_motion_end is None:
        return
    if negative_motion_score is None:
        raise KumoInputError(
            "--negative-motion-end / negative_motion_end needs a negative motion score; add "
            "--negative-motion-score / negative_motion_score, or drop the end"
        )
    if not (is_real(negative_motion_end) and math.isfinite(negative_motion_end) and 0 < negative_motion_end <= 1):
        raise KumoInputError(
            f"negative_motion_end={negative_motion_end!r} must be a fraction of the steps in (0, 1], e.g. 0.3"
        )


def warn_untrained_size(
    width: int, height: int, aspect_range: Sequence[float] | None, area_range: Sequence[float] | None = None
) -> None:
    """One warning line when width x height is a shape or a scale the model was not trained at:
    width / height outside its kumo_defaults.json `aspect_range` ([low, high] of width / height),
    or width * height pixels outside its `area_range` ([low, high]; aspect buckets at one scale do
    not teach another: the 128x128-scale built-in Lumina model matches 15.6% of captions at
    64x64, docs/lumina.md). The clip is made, but it tends to lose the prompt. Nothing is said
    about what the model did not record."""
    if aspect_range is not None:
        low, high = aspect_range
        if not low - 1e-9 <= width / height <= high + 1e-9:
            logger.warning(
                "%dx%d is %.2f:1, outside the aspects this model was trained at (%.2f:1 .. %.2f:1, its "
                "kumo_defaults.json aspect_range); the clip may not follow the prompt",
                width,
                height,
                width / height,
                low,
                high,
            )
    if area_range is not None:
        low, high = area_range
        if not low <= width * height <= high:
            logger.warning(
                "%dx%d is %d pixels a frame, outside the sizes this model was trained at (%d .. %d, its "
                "kumo_defaults.json area_range); the clip may not follow the prompt",
                width,
                height,
                width * height,
                low,
                high,
            )


def clamp_motion_score(
    motion_score: float | None, score_range: Sequence[float] | None, name: str = "motion score"
) -> float | None:
    """The motion score inside the range the model was trained on (its kumo_defaults.json
    `motion_score_range`), with a warning naming it (`name`: which score) when it had to be
    moved; unchanged without a range."""
    if motion_score is None or score_range is None:
        return motion_score
    low, high = score_range
    clamped = min(max(motion_score, low), high)
    if clamped != motion_score:
        logger.warning(
            "%s %g is outside the range this model was trained on (%g to %g); using %g",
            name,
            motion_score,
            low,
            high,
            clamped,
        )
    return clamped


def check_single_process(
    is_plain_transformer: bool,
    multiscale: bool,
    motion_score: Any,
    attention_kwargs: Any = None,
    conditioned: bool = False,
    video: Any = None,
) -> None:
    """Multi-scale sampling, motion scores, a per-call LoRA scale and conditioning frames need
    the transformer itself: a stand-in (the sequence-parallel one of --parallel) passes none of
    them on (an image would be dropped without a word); a source video needs the VAE's encoder
    on every rank, which the stand-in pipeline does not promise."""
    extras = multiscale or motion_score is not None or attention_kwargs is not None or conditioned
    if not is_plain_transformer and (extras or video is not None):
        raise KumoInputError(
            "multi-scale sampling, motion scores, attention_kwargs, conditioning frames (image=) and video= run "
            "in one process; drop --parallel (or the stand-in transformer)"
        )


def check_offload_device(device: Any, method: str) -> None:
    """`enable_model_cpu_offload` / `enable_sequential_cpu_offload` keep the models on the CPU
    and move each to an accelerator while it runs: without one (and no `device` given) diffusers
    raised a RuntimeError after removing the pipeline's hooks; a device given must exist."""
    from diffusers.utils.torch_utils import get_device

    from kumovideo.utils.devices import resolve_device

    if device is not None:
        resolve_device(device)
    elif get_device() == "cpu":
        raise KumoInputError(
            f"{method} moves each model to a GPU while it runs, and no GPU is available; "
            "leave it out on a CPU-only machine (the models already run there)"
        )


def check_attention_kwargs(attention_kwargs: Any) -> None:
    """None, or diffusers' {"scale": s}: the LoRA scale of one call (the one key MADiT takes),
    checked before the text encoder runs rather than at the first step."""
    if attention_kwargs is None:
        return
    if not isinstance(attention_kwargs, dict) or set(attention_kwargs) - {"scale"}:
        raise KumoInputError(
            f"attention_kwargs={attention_kwargs!r}; pass None or {{'scale': s}}, the LoRA scale of this call"
        )
    scale = attention_kwargs.get("scale", 1.0)
    if not (is_real(scale) and math.isfinite(scale)):
        raise KumoInputError(f"attention_kwargs scale={scale!r} must be a finite number (0: the base weights)")


def check_conditioning_frames(per_prompt: list[dict], num_frames: int, temporal: int) -> None:
    """Each prompt's {pixel frame index: image}: indices inside the clip, 0 or even."""
    from kumovideo.pipelines.conditioning import check_frame_indices

    for known in per_prompt:
        if not isinstance(known, dict) or not known:
            raise KumoInputError(
                "conditioning_frames must be a non-empty dict {pixel frame index: image} (or a list of them)"
            )
        check_frame_indices(list(known), num_frames, temporal)


def check_pretrained_arguments(path: Any, torch_dtype: Any, components: dict[str, Any]) -> None:
    """`from_pretrained`'s: a folder path, a torch.dtype or None, loaded components."""
    if not isinstance(path, (str, os.PathLike)):
        raise KumoInputError(f"pass a checkpoint folder path, not {type(path).__name__}")
    if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
        raise KumoInputError(
            f"torch_dtype={torch_dtype!r}; pass a torch.dtype such as torch.float16 or torch.bfloat16"
        )
    for name, component in components.items():
        if component is None or isinstance(component, (str, os.PathLike)):
            raise KumoInputError(
                f"{name}={component!r}: pass a loaded {name} object to replace the saved one, or leave {name} out"
            )
