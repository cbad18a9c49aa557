"""KumoPipeline: text -> video with T5, MADiT and the 3D causal VAE.

    prompt --T5--> text states (B, L, D_text)
    seed   --randn--> latents (B, F_lat, C, H/8, W/8)
    for t in scheduler.timesteps:  MADiT predicts v (with classifier-free guidance),
                                   the scheduler (DDIM or Turbo consistency) steps
    latents --VAE decode--> frames (B, F, 3, H, W)

The initial noise is drawn exactly as the original does (`torch.randn` of the latent
shape from the caller's generator, before anything else), so a seed gives the same video
as the original implementation.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, DiffusionPipeline
from diffusers.guiders.guider_utils import rescale_noise_cfg
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from kumovideo.models.cpu_conv import route_conv3d_to_onednn
from kumovideo.models.transformer_kumo import KumoTransformer3DModel
from kumovideo.pipelines.loading import load_pipeline_components, read_sampling_defaults
from kumovideo.schedulers import KumoDDIMScheduler, KumoLCMScheduler
from kumovideo.schedulers.sampling import renoise_timesteps, sample_renoise
from kumovideo.utils.devices import resolve_device
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_int, is_real

logger = logging.getLogger(__name__)


@dataclass
class KumoPipelineOutput(BaseOutput):
    """`frames`: list of lists of PIL images, np (B, F, H, W, 3) in [0, 1], torch (B, F, 3, H, W)
    in [0, 1], or latents (B, F_lat, C, h, w), depending on `output_type`."""

    frames: Any


# How the original samples when a call and the checkpoint say nothing (base, Turbo).
ORIGINAL_SAMPLING = {"num_inference_steps": 50, "guidance_scale": 6.0, "guidance_rescale": 0.0}
ORIGINAL_TURBO_SAMPLING = {"num_inference_steps": 4, "guidance_scale": 2.0, "guidance_rescale": 0.0}
# The kumo_defaults.json key that overrides each with the consistency (Turbo) scheduler.
TURBO_DEFAULT_KEYS = {
    "num_inference_steps": "turbo_steps",
    "guidance_scale": "turbo_guidance_scale",
    "guidance_rescale": "turbo_guidance_rescale",
}


class KumoPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]  # what callback_on_step_end can be given
    # The checkpoint's recommended sampling (kumo_defaults.json), set by from_pretrained and
    # written back by save_pretrained; empty for a pipeline built from components.
    sampling_defaults: dict = {}

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae: AutoencoderKLCogVideoX,
        transformer: KumoTransformer3DModel,
        scheduler: KumoDDIMScheduler | KumoLCMScheduler,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        route_conv3d_to_onednn(self.vae)  # the same decode, 4-5x faster on the CPU
        self.vae_scale_factor_spatial = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale_factor_temporal = self.vae.config.temporal_compression_ratio
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load an original KumoVideo / KumoVideo-Turbo folder, or one this package saved.

        Local folders only are read here (the original `model_index.json` names module
        paths diffusers cannot import); components may be passed in to replace the saved
        ones (`scheduler=KumoLCMScheduler(...)`), `torch_dtype` casts the weights.
        """
        torch_dtype = kwargs.pop("torch_dtype", None)
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            raise KumoInputError(f"pass a checkpoint folder path, not {type(pretrained_model_name_or_path).__name__}")
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise KumoInputError(
                f"torch_dtype={torch_dtype!r}; pass a torch.dtype such as torch.float16 or torch.bfloat16"
            )
        components = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k in ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
        }
        for name, component in components.items():
            if component is None or isinstance(component, (str, os.PathLike)):
                raise KumoInputError(
                    f"{name}={component!r}: pass a loaded {name} object to replace the saved one, or leave {name} out"
                )
        if kwargs:
            logger.warning("KumoPipeline.from_pretrained ignores arguments: %s", ", ".join(sorted(kwargs)))
        defaults = read_sampling_defaults(pretrained_model_name_or_path)  # checked before the weights load
        pipe = cls(**load_pipeline_components(pretrained_model_name_or_path, torch_dtype=torch_dtype, **components))
        pipe.sampling_defaults = defaults
        return pipe

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """diffusers' save_pretrained, plus the sampling defaults (kumo_defaults.json) it was loaded with."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.sampling_defaults:
            from kumovideo.utils.atomic import atomic_file

            with atomic_file(os.path.join(save_directory, "kumo_defaults.json"), "w") as fh:
                fh.write(json.dumps(self.sampling_defaults, indent=2) + "\n")

    def default_sampling(self) -> dict:
        """num_inference_steps, guidance_scale and guidance_rescale for a call that leaves
        them out: the checkpoint's kumo_defaults.json (its `turbo_*` keys when the scheduler
        is the consistency one), else the original's recipe (50 DDIM steps at guidance 6;
        4 Turbo steps at guidance 2)."""
        if isinstance(self.scheduler, KumoLCMScheduler):
            original, names = ORIGINAL_TURBO_SAMPLING, TURBO_DEFAULT_KEYS
        else:
            original, names = ORIGINAL_SAMPLING, {}
        return {key: self.sampling_defaults.get(names.get(key, key), value) for key, value in original.items()}

    def default_clip(self) -> dict:
        """height, width and num_frames the transformer was made for (its config's sample
        size): 480x720x41 for the original, 64x64x17 for the built-in model."""
        c = self.transformer.config
        return {
            "height": c.sample_height * self.vae_scale_factor_spatial,
            "width": c.sample_width * self.vae_scale_factor_spatial,
            "num_frames": c.sample_frames,
        }

    def resolve_call_defaults(self, **settings) -> dict:
        """`settings` with every None among height, width, num_frames, num_inference_steps,
        guidance_scale and guidance_rescale replaced by this pipeline's default."""
        defaults = {**self.default_clip(), **self.default_sampling()}
        return {key: defaults[key] if value is None and key in defaults else value for key, value in settings.items()}

    def to(self, *args, **kwargs):
        """diffusers' `to`, with a missing GPU or an unknown device said in one line (torch
        would fail with "Torch not compiled with CUDA enabled" halfway through the move)."""
        device = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        if device is not None:
            resolve_device(device)
        return super().to(*args, **kwargs)

    # ------------------------------------------------------------------ memory switches

    def enable_vae_slicing(self):
        """Decode one video of the batch at a time (less peak memory, same frames)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self):
        self.vae.disable_slicing()

    def enable_vae_tiling(self, **tile_kwargs):
        """Decode in overlapping spatial tiles (large frames on small GPUs)."""
        self.vae.enable_tiling(**tile_kwargs)

    def disable_vae_tiling(self):
        self.vae.disable_tiling()

    # ------------------------------------------------------------------ text

    @property
    def max_sequence_length(self) -> int:
        return self.transformer.config.max_text_seq_length

    def _tokenize(self, prompts: list[str], max_sequence_length: int):
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        full = self.tokenizer(prompts, padding="longest", add_special_tokens=True, return_tensors="pt").input_ids
        if full.shape[-1] > max_sequence_length:
            for i, row in enumerate(full):
                length = int((row != self.tokenizer.pad_token_id).sum())
                if length > max_sequence_length:
                    logger.warning(
                        "prompt is %d tokens, longer than the text window of %d: it was truncated to %r",
                        length,
                        max_sequence_length,
                        self.tokenizer.decode(ids[i], skip_special_tokens=True),
                    )
        return ids

    def encode_prompt(
        self,
        prompt: str | list[str],
        num_videos_per_prompt: int = 1,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """T5 states (B * num_videos_per_prompt, max_sequence_length, D_text)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        max_sequence_length = max_sequence_length or self.max_sequence_length
        device = device or self._execution_device
        ids = self._tokenize(prompts, max_sequence_length).to(device)
        with torch.no_grad():
            states = self.text_encoder(ids)[0]
        states = states.to(dtype=dtype or self.transformer.dtype, device=device)
        return states.repeat_interleave(num_videos_per_prompt, dim=0)

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self, prompt, negative_prompt, height, width, num_frames, num_inference_steps, max_sequence_length
    ):
        if not isinstance(prompt, (str, list)) or (
            isinstance(prompt, list) and not all(isinstance(p, str) for p in prompt)
        ):
            raise KumoInputError("prompt must be a string or a list of strings")
        if isinstance(prompt, list) and not prompt:
            raise KumoInputError("prompt list is empty; pass at least one prompt")
        if negative_prompt is not None and not (
            isinstance(negative_prompt, str)
            or (isinstance(negative_prompt, list) and all(isinstance(p, str) for p in negative_prompt))
        ):
            raise KumoInputError("negative_prompt must be a string, a list of strings (one per prompt) or None")
        if isinstance(negative_prompt, list):
            count = len(prompt) if isinstance(prompt, list) else 1
            if len(negative_prompt) != count:
                raise KumoInputError(
                    f"{len(negative_prompt)} negative prompts for {count} prompt(s); pass one each or a single string"
                )
        for name, value in (
            ("height", height),
            ("width", width),
            ("num_frames", num_frames),
            ("num_inference_steps", num_inference_steps),
            ("max_sequence_length", max_sequence_length),
        ):
            if not is_int(value):
                raise KumoInputError(f"{name}={value!r} must be a whole number (an int)")
        check_clip_shape(
            num_frames,
            height,
            width,
            self.vae_scale_factor_spatial,
            self.vae_scale_factor_temporal,
            self.transformer.config.patch_size,
        )
        if num_inference_steps < 1:
            raise KumoInputError(f"num_inference_steps={num_inference_steps}; use at least 1")
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise KumoInputError(
                f"num_inference_steps={num_inference_steps} is more than the model's "
                f"{self.scheduler.config.num_train_timesteps} training timesteps; use fewer"
            )
        if max_sequence_length != self.max_sequence_length:
            raise KumoInputError(
                f"max_sequence_length={max_sequence_length}, but this transformer was trained with a text window of "
                f"{self.max_sequence_length}; leave it unset"
            )

    def check_call_arguments(
        self,
        batch_size,
        num_videos_per_prompt,
        guidance_scale,
        guidance_rescale,
        generator,
        latents,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
    ):
        """The arguments check_inputs does not cover, before any work: each mistake would
        otherwise surface deep inside torch or after the first denoising step."""
        if not is_int(num_videos_per_prompt) or num_videos_per_prompt < 1:
            raise KumoInputError(f"num_videos_per_prompt={num_videos_per_prompt!r}; use a whole number >= 1")
        for name, value in (("guidance_scale", guidance_scale), ("guidance_rescale", guidance_rescale)):
            if not is_real(value) or not math.isfinite(value):
                raise KumoInputError(f"{name}={value!r} must be a finite number")
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
        if latents is not None and not (torch.is_tensor(latents) and latents.is_floating_point()):
            what = f"a {latents.dtype} tensor" if torch.is_tensor(latents) else type(latents).__name__
            raise KumoInputError(f"latents must be a floating-point torch.Tensor, got {what}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise KumoInputError("callback_on_step_end must be callable: (pipe, step, timestep, tensors) -> dict")
        names = callback_on_step_end_tensor_inputs
        if isinstance(names, str) or not all(n in self._callback_tensor_inputs for n in names):
            raise KumoInputError(
                f"callback_on_step_end_tensor_inputs={names!r}; use a list of names from "
                f"{self._callback_tensor_inputs}"
            )

    # ------------------------------------------------------------------ latents

    def prepare_latents(self, batch_size, num_frames, height, width, dtype, device, generator, latents=None):
        shape = (
            batch_size,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            self.transformer.config.in_channels,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        if latents is None:
            # Drawn in float32 on the generator's device, as the original does, then cast.
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise KumoInputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        return (latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma).to(dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F_lat, C, h, w) latents -> (B, 3, F, H, W) video in [-1, 1]."""
        latents = latents.permute(0, 2, 1, 3, 4) / self.vae.config.scaling_factor
        return self.vae.decode(latents.to(self.vae.dtype)).sample

    # ------------------------------------------------------------------ call

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_rescale: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        max_sequence_length: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        sampler: str = "scheduler",
    ):
        """Generate clips. `sampler="scheduler"` steps the pipeline's scheduler (DDIM, or the
        Turbo consistency scheduler); `sampler="renoise"` runs the Kandinsky-4-Flash-style
        few-step re-noising sampler on any model (guidance as given; Flash uses none).
        `guidance_rescale` in [0, 1] pulls the guided prediction's per-clip std back toward
        the conditional one's (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
        Steps are Flawed", sec. 3.4: for zero-terminal-SNR v-prediction models like this one,
        strong guidance otherwise over-saturates).

        Left out (None): the clip size is the transformer's (`default_clip`: 64x64x17 for
        the built-in model, 480x720x41 for the original), steps and guidance the
        checkpoint's recommendation (`default_sampling`)."""
        size = self.resolve_call_defaults(
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
        )
        height, width, num_frames = size["height"], size["width"], size["num_frames"]
        num_inference_steps, guidance_scale = size["num_inference_steps"], size["guidance_scale"]
        guidance_rescale = size["guidance_rescale"]
        if max_sequence_length is None:
            max_sequence_length = self.max_sequence_length
        self.check_inputs(prompt, negative_prompt, height, width, num_frames, num_inference_steps, max_sequence_length)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.check_call_arguments(
            len(prompts) * (num_videos_per_prompt if is_int(num_videos_per_prompt) else 1),
            num_videos_per_prompt,
            guidance_scale,
            guidance_rescale,
            generator,
            latents,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        if sampler not in ("scheduler", "renoise"):
            raise KumoInputError(f"sampler={sampler!r}; use 'scheduler' or 'renoise'")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise KumoInputError(f"output_type={output_type!r}; use 'pil', 'np', 'pt' or 'latent'")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise KumoInputError(f"guidance_rescale={guidance_rescale}; use a value from 0 (off) to 1")
        self._guidance_scale = guidance_scale
        batch_size = len(prompts) * num_videos_per_prompt
        device = self._execution_device
        dtype = self.transformer.dtype

        # 1. Initial noise first, so the generator's stream matches the original's.
        latents = self.prepare_latents(batch_size, num_frames, height, width, dtype, device, generator, latents)

        # 2. Text. With guidance, [negative; positive] along the batch, as the original.
        prompt_embeds = self.encode_prompt(prompts, num_videos_per_prompt, max_sequence_length, device, dtype)
        if self.do_classifier_free_guidance:
            negative_prompt = negative_prompt or ""
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            negative_embeds = self.encode_prompt(negatives, num_videos_per_prompt, max_sequence_length, device, dtype)
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds], dim=0)

        # 3. Denoise.
        def guided_v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            model_input = torch.cat([x] * 2) if self.do_classifier_free_guidance else x
            model_input = self.scheduler.scale_model_input(model_input, t)
            v_pred = self.transformer(
                hidden_states=model_input,
                encoder_hidden_states=prompt_embeds,
                timestep=t.expand(model_input.shape[0]),
                return_dict=False,
            )[0].float()
            if self.do_classifier_free_guidance:
                v_uncond, v_text = v_pred.chunk(2)
                v_pred = v_uncond + guidance_scale * (v_text - v_uncond)
                if guidance_rescale > 0:
                    v_pred = rescale_noise_cfg(v_pred, v_text, guidance_rescale)
            return v_pred

        if sampler == "renoise":
            timesteps = renoise_timesteps(num_inference_steps, self.scheduler.config.num_train_timesteps).to(device)
            self._num_timesteps = len(timesteps)
            with self.progress_bar(total=len(timesteps)) as progress_bar:

                def on_step(i, t, x):
                    progress_bar.update()
                    if callback_on_step_end is None:
                        return None
                    values = {"latents": x, "prompt_embeds": prompt_embeds}
                    values = {k: values[k] for k in callback_on_step_end_tensor_inputs}
                    return _callback_result(callback_on_step_end(self, i, t, values)).get("latents")

                latents = sample_renoise(
                    guided_v, latents, timesteps, self.scheduler.alphas_cumprod, generator, on_step
                )
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            step_kwargs = {}
            if "generator" in inspect.signature(self.scheduler.step).parameters:
                step_kwargs["generator"] = generator
            self._num_timesteps = len(timesteps)
            with self.progress_bar(total=len(timesteps)) as progress_bar:
                for i, t in enumerate(timesteps):
                    v_pred = guided_v(latents, t)
                    latents = self.scheduler.step(v_pred, t, latents, **step_kwargs, return_dict=False)[0].to(dtype)
                    if callback_on_step_end is not None:
                        values = {"latents": latents, "prompt_embeds": prompt_embeds}
                        values = {k: values[k] for k in callback_on_step_end_tensor_inputs}
                        returned = _callback_result(callback_on_step_end(self, i, t, values))
                        latents = returned.get("latents", latents)
                    progress_bar.update()

        # 4. Decode.
        if output_type == "latent":
            video = latents
        else:
            video = self.decode_latents(latents)
            video = self.video_processor.postprocess_video(video, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return KumoPipelineOutput(frames=video)


def _callback_result(returned) -> dict:
    """What a step callback returned: a dict of replacement tensors, or None for none."""
    if returned is None:
        return {}
    if not isinstance(returned, dict):
        raise KumoInputError(
            f"callback_on_step_end returned a {type(returned).__name__}; return a dict of the "
            "tensors it replaces (e.g. {'latents': latents}) or None"
        )
    return returned


def check_clip_shape(
    num_frames: int, height: int, width: int, spatial: int = 8, temporal: int = 4, patch: int = 2
) -> None:
    """Raise KumoInputError unless the 3D causal VAE and the patchify can make this clip.

    Valid lengths are 8k+1: 4x temporal compression, and the CogVideoX decoder restores
    the first frame on its own only for an odd latent frame count (an even count decodes to
    the wrong number of frames). Sides are multiples of VAE stride x patch size."""
    t = temporal
    step = 2 * t
    lower = max(1, (num_frames - 1) // step * step + 1)
    nearest = f"use {lower} or {lower + step}"
    if num_frames < 1 or (num_frames - 1) % t:
        raise KumoInputError(f"num_frames={num_frames} is not {t}k+1 (the VAE compresses time {t}x); {nearest}")
    latent_frames = (num_frames - 1) // t + 1
    if latent_frames > 1 and latent_frames % 2 == 0:
        raise KumoInputError(
            f"num_frames={num_frames} gives {latent_frames} latent frames, but the 3D causal VAE decodes only an odd "
            f"number of them (num_frames = {step}k+1); {nearest}"
        )
    multiple = spatial * patch
    for name, value in (("height", height), ("width", width)):
        if value < multiple or value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise KumoInputError(
                f"{name}={value} is not a multiple of {multiple} (VAE {spatial}x times patch {patch}); "
                f"use {lower} or {lower + multiple}"
            )


def frames_to_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Video in [0, 1] as np (F, H, W, 3) (or a batch of them, (B, F, H, W, 3)) or torch
    (F, 3, H, W) -> uint8 in the np layout."""
    torch_layout = torch.is_tensor(frames)
    if not (torch_layout or isinstance(frames, np.ndarray)):
        raise KumoInputError(
            f"frames must be a video (a np.ndarray or torch.Tensor), not {type(frames).__name__}; "
            "take e.g. pipe(...).frames[0]"
        )
    if torch_layout and (frames.ndim != 4 or frames.shape[1] != 3):
        raise KumoInputError(
            f"frames of shape {tuple(frames.shape)} are not one RGB video as torch (F, 3, H, W); "
            "take one video of a batch, e.g. pipe(..., output_type='pt').frames[0]"
        )
    if not torch_layout and (frames.ndim < 4 or frames.shape[-1] != 3):
        raise KumoInputError(
            f"frames of shape {tuple(frames.shape)} are not RGB video as np (F, H, W, 3); "
            "take e.g. pipe(..., output_type='np').frames[0]"
        )
    if torch_layout:
        frames = frames.permute(0, 2, 3, 1).float().cpu().numpy()
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
