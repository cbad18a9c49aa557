"""KumoPipeline: text -> video with T5, MADiT and the 3D causal VAE.

    prompt --T5--> text states (B, L, D_text)
    seed   --randn--> latents (B, F_lat, C, H/s, W/s)    (kumovideo.geometry; the published VAE:
                                                        s = 8, F_lat = (F - 1)/4 + 1)
    sampler (kumovideo.schedulers.sampling.SAMPLERS): at each timestep MADiT predicts v
           (with classifier-free guidance), the sampler steps (DDIM, Turbo consistency, re-noise)
    latents --VAE decode--> frames (B, F, 3, H, W)

The initial noise is drawn exactly as the original does (`torch.randn` of the latent
shape from the caller's generator, before anything else), so a seed gives the same video
as the original implementation.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, DiffusionPipeline
from diffusers.guiders.guider_utils import rescale_noise_cfg
from diffusers.loaders import CogVideoXLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from kumovideo.geometry import ClipGeometry
from kumovideo.models.cpu_conv import route_conv3d_to_onednn
from kumovideo.models.transformer_kumo import KumoTransformer3DModel
from kumovideo.pipelines import checks
from kumovideo.pipelines.conditioning import build_conditions
from kumovideo.pipelines.layout import (
    FILL_STEPS,
    Region,
    RegionComposer,
    check_layout_inputs,
    check_regions,
    clip_seeds,
    layout_prompts,
    planned_regions,
    region_map,
)
from kumovideo.pipelines.loading import (
    COMPONENTS,
    CaptionVocabulary,
    caption_vocabulary_of,
    load_pipeline_components,
    load_vae,
    read_sampling_defaults,
    read_training_captions,
    write_sampling_defaults,
    write_training_captions,
)
from kumovideo.pipelines.video_to_video import encode_video, fit_video, strength_start, video_frames, video_strength
from kumovideo.schedulers import KumoDDIMScheduler, KumoLCMScheduler
from kumovideo.schedulers.sampling import SAMPLERS, Sampler, sample_ddim_on, two_phase_timesteps
from kumovideo.utils.devices import resolve_device
from kumovideo.utils.errors import KumoInputError

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


class KumoPipeline(DiffusionPipeline, CogVideoXLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]  # what callback_on_step_end can be given
    # The checkpoint's recommended sampling (kumo_defaults.json), set by from_pretrained and
    # written back by save_pretrained; empty for a pipeline built from components.
    sampling_defaults: dict = {}
    # The words and word pairs of the captions the model was trained on (its folder's
    # training_captions.txt), set by from_pretrained; None when the folder does not say (the
    # original checkpoints).
    caption_vocabulary: CaptionVocabulary | None = None
    # Those captions as read (and a loaded LoRA's after them), written back by save_pretrained.
    training_captions: str | None = None

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
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    # ------------------------------------------------------------------ geometry

    @property
    def geometry(self) -> ClipGeometry:
        """Clip <-> latent <-> token sizes, from the VAE's and the transformer's configs."""
        return ClipGeometry.of(self)

    @property
    def vae_scale_factor_spatial(self) -> int:
        """Pixels per latent pixel, per side (diffusers' name)."""
        return self.geometry.spatial

    @property
    def vae_scale_factor_temporal(self) -> int:
        """Frames per latent frame after the first (diffusers' name)."""
        return self.geometry.temporal

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load an original KumoVideo / KumoVideo-Turbo folder, or one this package saved.

        Local folders only are read here (the original `model_index.json` names module
        paths diffusers cannot import); components may be passed in to replace the saved
        ones (`scheduler=KumoLCMScheduler(...)`), `torch_dtype` casts the weights.
        """
        torch_dtype = kwargs.pop("torch_dtype", None)
        components = {k: kwargs.pop(k) for k in list(kwargs) if k in COMPONENTS}
        checks.check_pretrained_arguments(pretrained_model_name_or_path, torch_dtype, components)
        if kwargs:
            logger.warning("KumoPipeline.from_pretrained ignores arguments: %s", ", ".join(sorted(kwargs)))
        defaults = read_sampling_defaults(pretrained_model_name_or_path)  # checked before the weights load
        pipe = cls(**load_pipeline_components(pretrained_model_name_or_path, torch_dtype=torch_dtype, **components))
        pipe.sampling_defaults = defaults
        pipe.training_captions = read_training_captions(pretrained_model_name_or_path)
        pipe.caption_vocabulary = caption_vocabulary_of(pipe.training_captions)
        return pipe

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict,
        adapter_name: str | None = None,
        **kwargs,
    ):
        """diffusers' `load_lora_weights` (CogVideoXLoraLoaderMixin: the adapter goes into the
        transformer) from a local LoRA folder or `.safetensors` file only, checked first
        (`kumovideo.pipelines.lora`); a LoRA made for another transformer is one line. A folder's
        training captions join the model's vocabulary (`warn_unknown_words`), and its `vae/`, if
        it has one (a concept the base's decoder cannot draw), replaces the pipeline's VAE."""
        from kumovideo.pipelines import lora

        lora.require_peft()
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            source, folder = pretrained_model_name_or_path_or_dict, None
        else:
            weights = lora.lora_weights_file(pretrained_model_name_or_path_or_dict)
            source, folder = str(weights.parent), Path(pretrained_model_name_or_path_or_dict)
            kwargs = {**kwargs, "weight_name": weights.name, "use_safetensors": True, "local_files_only": True}
        try:
            with warnings.catch_warnings(record=True) as caught:  # peft's page on a mismatch: said in one line
                warnings.simplefilter("always")
                super().load_lora_weights(source, adapter_name=adapter_name, **kwargs)
            for warning in caught:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise KumoInputError(
                f"the LoRA {folder or 'state dict'} does not fit this model's transformer ({reason[:200]}); "
                "load it into the model it was trained from"
            ) from None
        if folder is not None and folder.is_dir():
            added = read_training_captions(folder)
            if added is not None and self.caption_vocabulary is not None:
                self.caption_vocabulary = self.caption_vocabulary.merged(caption_vocabulary_of(added))
                self.training_captions = self.training_captions.rstrip("\n") + "\n" + added
            if (folder / "vae").is_dir():  # the decoder its concept needs (kumovideo.training.lora)
                vae = load_vae(folder / "vae", torch_dtype=self.vae.dtype).to(self.vae.device)
                self.register_modules(vae=vae)
                logger.info("the LoRA %s brought its own VAE (%s/vae)", folder, folder)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """diffusers' save_pretrained, plus the sampling defaults (kumo_defaults.json) and the
        training captions (training_captions.txt) it was loaded with: without them the saved
        copy no longer warns about words the model never saw."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_sampling_defaults(save_directory, self.sampling_defaults)
        write_training_captions(save_directory, self.training_captions)

    def default_sampling(self) -> dict:
        """num_inference_steps, guidance_scale and guidance_rescale for a call that leaves
        them out: the checkpoint's kumo_defaults.json (its `turbo_*` keys when the scheduler
        is the consistency one), else the original's recipe (50 DDIM steps at guidance 6;
        4 Turbo steps at guidance 2)."""
        return recommended_sampling(self.sampling_defaults, turbo=isinstance(self.scheduler, KumoLCMScheduler))

    def default_clip(self) -> dict:
        """height, width and num_frames the transformer was made for (its config's sample
        size): 480x720x41 for the original, 128x128x17 for the built-in model."""
        num_frames, height, width = self.geometry.sample_clip(self.transformer.config)
        return {"height": height, "width": width, "num_frames": num_frames}

    @property
    def multiscale_split(self) -> float:
        """The share of the steps multi-scale sampling runs at the coarsest scale when a call
        leaves it out: the checkpoint's kumo_defaults.json `multiscale_split`, else 0.5."""
        return checks.default_multiscale_split(self.sampling_defaults)

    @property
    def multiscale_handoff(self) -> float | None:
        """The noise level (t / T) where multi-scale sampling's coarse steps end when a call
        leaves it out: the checkpoint's kumo_defaults.json `multiscale_handoff`, else None
        (the steps evenly spaced, the coarse ones the first `multiscale_split` of them)."""
        return self.sampling_defaults.get("multiscale_handoff")

    @property
    def steps_v_ddim(self) -> bool:
        """Whether the scheduler is v-prediction DDIM, which `sample_ddim` can step over any
        timesteps (a multi-scale handoff needs it)."""
        ddim = isinstance(self.scheduler, KumoDDIMScheduler)
        return ddim and self.scheduler.config.prediction_type == "v_prediction"

    def resolve_multiscale_handoff(self, multiscale: bool, handoff: float | None, sampler: str) -> float | None:
        """The handoff a call runs with: the one it gives (checked later), else, with
        `multiscale`, the checkpoint's default where it applies (DDIM through the scheduler
        sampler; with Turbo or the re-noising sampler the steps stay evenly spaced)."""
        if handoff is not None or not multiscale:
            return handoff
        return self.multiscale_handoff if sampler == "scheduler" and self.steps_v_ddim else None

    @property
    def motion_score_range(self) -> tuple[float, float] | None:
        """The motion scores the model was trained on (kumo_defaults.json `motion_score_range`,
        [low, high]); a call's score outside it is clamped with a warning. None: not recorded."""
        return checks.recorded_range(self.sampling_defaults, "motion_score_range")

    @property
    def aspect_range(self) -> tuple[float, float] | None:
        """The width / height ratios the model was trained at (kumo_defaults.json `aspect_range`);
        a call outside it warns. None: not recorded (no warning)."""
        return checks.recorded_range(self.sampling_defaults, "aspect_range")

    @property
    def area_range(self) -> tuple[float, float] | None:
        """The frame sizes in pixels (width x height) the model was trained at (kumo_defaults.json
        `area_range`); a call outside it warns. None: not recorded (no warning)."""
        return checks.recorded_range(self.sampling_defaults, "area_range")

    def resolve_call_defaults(self, **settings) -> dict:
        """`settings` with every None among height, width, num_frames, num_inference_steps,
        guidance_scale, guidance_rescale, max_sequence_length and multiscale_split replaced by
        this pipeline's default (the handoff: `resolve_multiscale_handoff`)."""
        defaults = {
            **self.default_clip(),
            **self.default_sampling(),
            "max_sequence_length": self.max_sequence_length,
            "multiscale_split": self.multiscale_split,
        }
        return {key: defaults[key] if value is None and key in defaults else value for key, value in settings.items()}

    def to(self, *args, **kwargs):
        """diffusers' `to`, with a missing GPU or an unknown device said in one line (torch
        would fail with "Torch not compiled with CUDA enabled" halfway through the move)."""
        device = next((a for a in args if isinstance(a, (str, torch.device))), kwargs.get("device"))
        if device is not None:
            resolve_device(device)
        return super().to(*args, **kwargs)

    # ------------------------------------------------------------------ memory switches

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' model offload; on a machine without a GPU one line saying so (`checks.check_offload_device`)."""
        checks.check_offload_device(device, "enable_model_cpu_offload")
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' sequential offload; on a machine without a GPU one line saying so."""
        checks.check_offload_device(device, "enable_sequential_cpu_offload")
        super().enable_sequential_cpu_offload(gpu_id=gpu_id, device=device)

    def enable_vae_slicing(self):
        """Decode one video of the batch at a time (less peak memory, same frames)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self):
        self.vae.disable_slicing()

    def enable_vae_tiling(self, **tile_kwargs):
        """Decode in overlapping spatial tiles (large frames on small GPUs), diffusers' tiling
        with its overlap factors moved to the nearest ones this VAE's tile decodes exactly:
        its tiled decode steps int(L (1 - f)) latents a tile and keeps S - int(S f) pixels of
        each (L latents, S = L x stride pixels a tile), which agree only for f = k / L. The
        published VAE's defaults (1/6 of 30, 1/5 of 45 latents) do; a small VAE's (1/6 of 4)
        wrote larger frames with doubled seams."""
        self.vae.enable_tiling(**tile_kwargs)
        vae, stride = self.vae, self.geometry.spatial
        for side in ("height", "width"):
            name = f"tile_overlap_factor_{side}"
            latents = getattr(vae, f"tile_latent_min_{side}")
            setattr(vae, name, exact_tile_overlap(latents, stride, getattr(vae, name)))

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
            for prompt, row in zip(prompts, full):
                length = int((row != self.tokenizer.pad_token_id).sum())
                if length > max_sequence_length:
                    words = prompt.split()
                    k = self._words_within(words, max_sequence_length)
                    logger.warning(
                        "prompt is %d tokens, longer than the text window of %d: truncated, "
                        "the model reads %r, not %r",
                        length,
                        max_sequence_length,
                        " ".join(words[:k]),
                        " ".join(words[k:]),
                    )
        return ids

    def _words_within(self, words: list[str], max_sequence_length: int) -> int:
        """How many of the first words fit the window whole (said in words: the tokenizer's
        decode of the truncated ids drops what it cannot read, 'xyzzy' read back as 'yy')."""
        low, high = 0, len(words)
        while low < high:  # the largest k whose first k words fit
            k = (low + high + 1) // 2
            if len(self.tokenizer(" ".join(words[:k]), add_special_tokens=True).input_ids) <= max_sequence_length:
                low = k
            else:
                high = k - 1
        return low

    def encode_prompt(
        self,
        prompt: str | list[str],
        num_videos_per_prompt: int = 1,
        max_sequence_length: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """T5 states (B * num_videos_per_prompt, max_sequence_length, D_text)."""
        prompts = [self.normalize_prompt(p) for p in ([prompt] if isinstance(prompt, str) else prompt)]
        max_sequence_length = max_sequence_length or self.max_sequence_length
        device = device or self._execution_device
        ids = self._tokenize(prompts, max_sequence_length).to(device)
        with torch.no_grad():
            states = self.text_encoder(ids)[0]
        states = states.to(dtype=dtype or self.transformer.dtype, device=device)
        return states.repeat_interleave(num_videos_per_prompt, dim=0)

    def normalize_prompt(self, prompt: str) -> str:
        """The prompt as the model's tokenizer should see it: lowercased with single spaces and
        no closing full stop, exclamation or question mark when the checkpoint says its captions
        are (kumo_defaults.json `lowercase_prompts`, as the built-in model's, whose vocabulary
        has no capitals and no punctuation: "A red circle ... background." is its caption),
        else unchanged."""
        if self.sampling_defaults.get("lowercase_prompts"):
            return " ".join(prompt.split()).lower().rstrip(".!? ")
        return prompt

    def warn_unknown_words(self, prompts: list[str]) -> None:
        """One warning line per prompt naming the words the model never saw in training, or,
        when it knows every word, the neighbouring words it never saw side by side: it would
        not follow them (the built-in model knows only ShapesWorld captions)."""
        vocabulary = self.caption_vocabulary
        if vocabulary is None:
            return
        where = "its captions are in its folder's training_captions.txt"
        for prompt in prompts:
            words = self.normalize_prompt(prompt).split()
            if unknown := vocabulary.unknown_words(words):
                logger.warning(
                    "this model never saw the words %s in training, so the clip will not follow them (%s)",
                    ", ".join(repr(w) for w in unknown),
                    where,
                )
            elif unseen := vocabulary.unseen_pairs(words):
                logger.warning(
                    "this model never saw %s side by side in training, so the clip may not follow them (%s)",
                    ", ".join(repr(p) for p in unseen),
                    where,
                )

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        height,
        width,
        num_frames,
        num_inference_steps,
        max_sequence_length,
        guidance_scale=1.0,
        guidance_rescale=0.0,
        num_videos_per_prompt=1,
        generator=None,
        latents=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        output_type="pil",
        sampler="scheduler",
        conditioning_frames=None,
        image_guidance_scale=None,
        multiscale=False,
        multiscale_split=None,
        motion_score=None,
        multiscale_handoff=None,
        negative_motion_score=None,
        negative_motion_end=None,
        video=None,
        strength=None,
        attention_kwargs=None,
        regions=None,
        layout=None,
    ):
        """Every argument of a call (sizes and steps resolved), before any work; each mistake
        is a KumoInputError naming it (`kumovideo.pipelines.checks`). `conditioning_frames` is
        the per-prompt list `conditioning_frames_per_prompt` makes; `multiscale_split` and
        `multiscale_handoff` are resolved when `multiscale` is on, as given otherwise (then
        they must be None)."""
        checks.check_prompts(prompt, negative_prompt)
        checks.check_whole_numbers(
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            max_sequence_length=max_sequence_length,
        )
        geometry = self.geometry
        geometry.check_clip(num_frames, height, width)
        checks.check_scheduler(self.scheduler, sampler)
        checks.check_scheduler_steps(num_inference_steps, self.scheduler.config)
        checks.check_max_sequence_length(max_sequence_length, self.max_sequence_length)
        checks.check_num_videos_per_prompt(num_videos_per_prompt)
        checks.check_guidance(guidance_scale, guidance_rescale)
        batch_size = (1 if isinstance(prompt, str) else len(prompt)) * num_videos_per_prompt
        checks.check_generator(generator, batch_size)
        checks.check_latents_type(latents)
        checks.check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        checks.check_sampler(sampler)
        checks.check_output_type(output_type)
        checks.check_latents_shape(latents, geometry.latent_shape(batch_size, num_frames, height, width))
        checks.check_image_guidance(image_guidance_scale, conditioned=conditioning_frames is not None)
        if conditioning_frames is not None:
            checks.check_frame_conditioning(self.transformer.config)
            checks.check_conditioning_frames(conditioning_frames, num_frames, geometry.temporal)
        checks.check_multiscale(self.transformer.config, geometry, height, width, multiscale, multiscale_split)
        checks.check_multiscale_handoff(multiscale, multiscale_handoff, sampler, self.steps_v_ddim)
        checks.check_motion_score(self.transformer.config, motion_score)
        checks.check_negative_motion(motion_score, negative_motion_score, negative_motion_end, guidance_scale)
        checks.check_video_to_video(video, strength)
        checks.warn_untrained_size(width, height, self.aspect_range, self.area_range)
        checks.check_attention_kwargs(attention_kwargs)
        check_layout_inputs(
            regions,
            layout,
            self.sampling_defaults.get("layout"),
            batch_size // num_videos_per_prompt,
            num_frames,
            conditioned=conditioning_frames is not None,
        )
        checks.check_single_process(
            isinstance(self.transformer, KumoTransformer3DModel),
            multiscale,
            motion_score,
            attention_kwargs,
            conditioned=conditioning_frames is not None,
            video=video,
        )

    @staticmethod
    def conditioning_frames_per_prompt(image, conditioning_frames, num_prompts: int) -> list[dict] | None:
        """`image` / `conditioning_frames` as one {pixel frame: image} per prompt (None: text only).
        `image` is `conditioning_frames={0: image}`; either may be a list, one per prompt."""
        if image is not None and conditioning_frames is not None:
            raise KumoInputError(
                "pass image or conditioning_frames, not both (image is conditioning_frames={0: image})"
            )
        if image is not None:
            images = image if isinstance(image, list) else [image] * num_prompts
            conditioning_frames = [{0: i} for i in images]
        if conditioning_frames is None:
            return None
        if isinstance(conditioning_frames, dict):
            conditioning_frames = [conditioning_frames] * num_prompts
        if not isinstance(conditioning_frames, list) or len(conditioning_frames) != num_prompts:
            raise KumoInputError(
                f"give one image / conditioning_frames dict for all prompts, or a list of {num_prompts} "
                "(one per prompt)"
            )
        return conditioning_frames

    # ------------------------------------------------------------------ latents

    def prepare_latents(self, batch_size, num_frames, height, width, dtype, device, generator, latents=None):
        """The initial noise (B, F_lat, C, h, w) times the scheduler's sigma; `latents` (of that
        shape, as check_inputs makes sure) instead of a draw when given."""
        if latents is None:
            # Drawn in float32 on the generator's device, as the original does, then cast.
            shape = self.geometry.latent_shape(batch_size, num_frames, height, width)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return (latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma).to(dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F_lat, C, h, w) latents -> (B, 3, F, H, W) video in [-1, 1]. On the CPU one clip
        at a time: four 128x128x17 clips decode in 1.62 s that way and in 4.27 s as one batch, two
        threads (every op slower per element at the batch's activation sizes; docs/benchmarks.md)."""
        latents = (latents.permute(0, 2, 1, 3, 4) / self.vae.config.scaling_factor).to(self.vae.dtype)
        if latents.device.type == "cpu" and len(latents) > 1:
            return torch.cat([self.vae.decode(clip[None]).sample for clip in latents])
        return self.vae.decode(latents).sample

    # ------------------------------------------------------------------ multi-scale

    def multiscale_schedule(
        self, timesteps: torch.Tensor, split: float | None
    ) -> Callable[[torch.Tensor], int | None]:
        """The patch size of each step, as a function of its timestep: the transformer's
        coarsest for the first `checks.coarse_steps(len(timesteps), split)` steps, that is
        while t is above the timestep at that index of the sampler's (descending) list, then
        None (the native one). Every sampler calls the model with the timesteps of its list,
        so this needs no sampler changes. `split` None: the native scale throughout."""
        if split is None:
            return _native_scale
        coarsest = max(self.transformer.config.multiscale_patch_sizes)
        boundary = end_of_first_steps(timesteps, checks.coarse_steps(len(timesteps), split))

        def patch_size_at(t: torch.Tensor) -> int | None:
            return coarsest if float(t) > boundary else None

        return patch_size_at

    # ------------------------------------------------------------------ motion

    def motion_scores(
        self, motion_score: float | None, negative_motion_score: float | None, branches: int, batch_size: int, device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The per-row scores (branches x batch,) of a call: every row told `motion_score`, and,
        with motion guidance, the same with the negative-prompt branches (every row but the last
        batch: the guidance puts the positive branch last) told `negative_motion_score`. Both
        clamped to the checkpoint's range; (None, None) without a score."""
        motion_score = checks.clamp_motion_score(motion_score, self.motion_score_range)
        if motion_score is None:
            return None, None
        scores = torch.full((branches * batch_size,), float(motion_score), device=device)
        negative_motion_score = checks.clamp_motion_score(
            negative_motion_score, self.motion_score_range, "negative motion score"
        )
        if negative_motion_score is None:
            return scores, None
        negative = scores.clone()
        negative[: (branches - 1) * batch_size] = float(negative_motion_score)
        return scores, negative

    def motion_schedule(
        self,
        timesteps: torch.Tensor,
        scores: torch.Tensor | None,
        negative: torch.Tensor | None,
        negative_motion_end: float | None,
    ) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """The scores each step passes, as a function of its timestep: `negative` for the first
        `negative_motion_end` of the steps (None: the checkpoint's, else all), `scores` after;
        None throughout without a score. Keyed on t, as `multiscale_schedule` is."""
        if negative is None:
            return lambda t: scores
        if negative_motion_end is None:
            negative_motion_end = self.sampling_defaults.get("negative_motion_end", 1.0)
        boundary = end_of_first_steps(timesteps, checks.leading_steps(len(timesteps), negative_motion_end))
        return lambda t: negative if float(t) > boundary else scores

    def clip_layouts(
        self, prompts, regions, layout, num_videos_per_prompt, generator, clip_size, planned
    ) -> list[list[Region]] | None:
        """Each clip's regions (one list per clip, prompt-major as the noise), None where no clip
        has any: the call's `regions` for every video of its prompt, else, where `planned` (no
        conditioning frames, no source video) and `layout` is not False, the checkpoint's
        planner's, drawn from each clip's seed. `clip_size`: (frames, height, width)."""
        num_frames, height, width = clip_size
        per_prompt = check_regions(regions, len(prompts), num_frames)
        if per_prompt is not None:
            per_clip = [r for r in per_prompt for _ in range(num_videos_per_prompt)]
        elif layout is False or not planned:
            return None
        else:
            texts = [self.normalize_prompt(p) for p in prompts for _ in range(num_videos_per_prompt)]
            seeds = clip_seeds(generator, len(texts))
            per_clip = planned_regions(self.sampling_defaults.get("layout"), texts, seeds, width, height, num_frames)
        return per_clip if any(per_clip) else None

    # ------------------------------------------------------------------ call

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """The steps of the current (or last) call, as diffusers' pipelines name it (a step
        callback's `int(pipe.num_timesteps * 0.4)`)."""
        return self._num_timesteps

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
        image=None,
        conditioning_frames: dict | list[dict] | None = None,
        image_guidance_scale: float | None = None,
        keep_first_frame: bool = True,
        multiscale: bool = False,
        multiscale_split: float | None = None,
        motion_score: float | None = None,
        multiscale_handoff: float | None = None,
        negative_motion_score: float | None = None,
        negative_motion_end: float | None = None,
        video=None,
        strength: float | None = None,
        attention_kwargs: dict | None = None,
        regions: list | None = None,
        layout: bool | None = None,
    ):
        """Generate clips. `sampler="scheduler"` steps the pipeline's scheduler (DDIM, or the
        Turbo consistency scheduler); `sampler="renoise"` runs the Kandinsky-4-Flash-style
        few-step re-noising sampler on any model (guidance as given; Flash uses none).
        `guidance_rescale` in [0, 1] pulls the guided prediction's per-clip std back toward
        the conditional one's (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
        Steps are Flawed", sec. 3.4: for zero-terminal-SNR v-prediction models like this one,
        strong guidance otherwise over-saturates).

        Conditioning frames (a model with `frame_conditioning`, docs/conditioning.md): `image`
        (a path, PIL image, uint8 (H, W, 3) array or (3, H, W) tensor in [0, 1]) starts the clip
        at that image; `conditioning_frames` {pixel frame index (0 or even): image} fixes any
        frames (interpolation: `kumovideo.pipelines.interpolation`). Either may be a list, one
        per prompt. With `image_guidance_scale` > 1 guidance has three branches (Kandinsky
        Video / InstructPix2Pix): v = v(-,-) + s_img (v(img,-) - v(-,-)) + s_txt (v(img,txt) -
        v(img,-)), or, with text guidance off (`guidance_scale` <= 1), two that both keep the
        text: v(-,txt) + s_img (v(img,txt) - v(-,txt)); otherwise the condition goes to both
        branches of the text guidance. Where
        frame 0 is known, `keep_first_frame` puts its latent back as latent frame 0 after
        sampling (the causal VAE encodes frame 0 alone: its latent is the clip's first latent),
        as LTX-Video keeps conditioning latents clean; False decodes the model's own.

        Lumina-Video's additions, for a transformer trained with them: `multiscale` samples the
        first `multiscale_split` of the steps (default: the checkpoint's kumo_defaults.json
        `multiscale_split`, else 0.5) at its coarsest patch size, (k/p)^2 times fewer tokens,
        and the rest at the native one; the sides must then be multiples of the VAE's stride
        times that patch size. `multiscale_handoff` (default: the checkpoint's, else None) is
        the noise level t / T where the coarse steps end: the coarse ones evenly spaced above
        it, the native ones below (DDIM on that list, `sample_ddim`); None, or every step
        coarse, spaces all the steps evenly, as the scheduler does. `motion_score` (percent of
        the frame width moved per second, as the data pipeline measures it; None: no score,
        the model's own idea of motion) goes to every guidance branch; outside the
        checkpoint's `motion_score_range` it is clamped with a warning. Motion guidance
        (Lumina-Video's `negMotion`): `negative_motion_score` (a low score, clamped likewise)
        goes to the text guidance's negative branch instead for the first `negative_motion_end`
        of the steps (default: the checkpoint's kumo_defaults.json `negative_motion_end`, else
        all), so the guidance pushes away from little motion too; it needs `motion_score` and
        `guidance_scale` > 1, and costs nothing (no extra branch).

        Video-to-video (SDEdit, `kumovideo.pipelines.video_to_video`): `video` (a path, a uint8
        (F, H, W, 3) array, a float (F, 3, H, W) tensor in [0, 1] or a list of images; its first
        `num_frames` frames, fitted to the clip's size) is encoded, noised to where the last
        `strength` of the steps begin (default: the checkpoint's `video_strength`, else 0.6),
        and only those steps run, with this prompt: the clip keeps the source's layout and
        motion and takes the prompt's changes.

        `attention_kwargs` (diffusers' CogVideoX name) goes to the transformer: {"scale": s}
        runs a loaded LoRA at s for this call alone (0: the base weights).

        Regional prompts (`kumovideo.pipelines.layout`, docs/layout.md): `regions`, a list of
        {"prompt", "box": [x0, y0, x1, y1], "end_box"} (fractions of the frame; the box moves
        linearly to `end_box` over the clip), or one such list per prompt, draws each region's
        prompt inside its boxes, one branch per region. `layout` (None: the checkpoint's
        kumo_defaults.json `layout` planner, which lays out the prompts it understands; the
        built-in model's plans its two-object captions) False turns the planner off, True
        requires one. Not with conditioning frames; the planner stays off for `video`.

        Left out (None): the clip size is the transformer's (`default_clip`: 128x128x17 for
        the built-in model, 480x720x41 for the original), steps and guidance the
        checkpoint's recommendation (`default_sampling`)."""
        call = self.resolve_call_defaults(
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            max_sequence_length=max_sequence_length,
            **({"multiscale_split": multiscale_split} if multiscale else {}),
        )
        call["multiscale_handoff"] = self.resolve_multiscale_handoff(multiscale, multiscale_handoff, sampler)
        num_prompts = len(prompt) if isinstance(prompt, list) else 1
        known = self.conditioning_frames_per_prompt(image, conditioning_frames, num_prompts)
        self.check_inputs(
            prompt,
            negative_prompt,
            # the multi-scale settings resolved with multiscale, else as given
            **{"multiscale_split": multiscale_split, "multiscale_handoff": multiscale_handoff, **call},
            num_videos_per_prompt=num_videos_per_prompt,
            generator=generator,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            output_type=output_type,
            sampler=sampler,
            conditioning_frames=known,
            image_guidance_scale=image_guidance_scale,
            multiscale=multiscale,
            motion_score=motion_score,
            negative_motion_score=negative_motion_score,
            negative_motion_end=negative_motion_end,
            video=video,
            strength=strength,
            attention_kwargs=attention_kwargs,
            regions=regions,
            layout=layout,
        )
        height, width, num_frames = call["height"], call["width"], call["num_frames"]
        if video is not None:  # read and fitted before any model runs: a short clip is refused here
            source = fit_video(video_frames(video, num_frames=num_frames), num_frames, height, width)
        num_inference_steps, max_sequence_length = call["num_inference_steps"], call["max_sequence_length"]
        guidance_scale, guidance_rescale = call["guidance_scale"], call["guidance_rescale"]
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.warn_unknown_words(prompts)
        if negative_prompt and guidance_scale <= 1:  # diffusers drops it silently; say so once
            logger.warning(
                "the negative prompt has no effect at guidance_scale %g: it steers only classifier-free guidance, "
                "which is off at 1 or below; raise the guidance above 1 to use it",
                guidance_scale,
            )
        self._guidance_scale = guidance_scale
        batch_size = len(prompts) * num_videos_per_prompt
        device = self._execution_device
        dtype = self.transformer.dtype

        # 1. Initial noise first, so the generator's stream matches the original's.
        latents = self.prepare_latents(batch_size, num_frames, height, width, dtype, device, generator, latents)
        # 1b. The layout of each clip (regional prompts), None without any.
        plannable = known is None and video is None  # the planner lays out text-to-video only
        clip_size = (num_frames, height, width)
        layouts = self.clip_layouts(prompts, regions, layout, num_videos_per_prompt, generator, clip_size, plannable)

        # 2. Text. With guidance, [negative; positive] along the batch, as the original;
        # with image guidance [negative; negative; positive] (no image, image, image), or,
        # without text guidance, [positive; positive] (no image, image): no branch drops the text.
        image_guidance = known is not None and image_guidance_scale is not None and image_guidance_scale > 1
        text_guidance = self.do_classifier_free_guidance
        if layouts is not None:  # one branch per region, branch-major: [region 0 (B); region 1 (B); ...]
            branch_prompts = layout_prompts(layouts, prompts, num_videos_per_prompt)
            prompt_embeds = self.encode_prompt(branch_prompts, 1, max_sequence_length, device, dtype)
        else:
            prompt_embeds = self.encode_prompt(prompts, num_videos_per_prompt, max_sequence_length, device, dtype)
        if text_guidance:
            negative_prompt = negative_prompt or ""
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            negative_embeds = self.encode_prompt(negatives, num_videos_per_prompt, max_sequence_length, device, dtype)
            prompt_embeds = torch.cat([negative_embeds] * (1 + image_guidance) + [prompt_embeds], dim=0)
        elif image_guidance:
            prompt_embeds = torch.cat([prompt_embeds, prompt_embeds], dim=0)
        replaceable = {"prompt_embeds": prompt_embeds}  # what a step callback may swap besides the latents

        # 2b. Conditioning frames: (B, F_lat, 2C + 2, h, w), repeated like the text for the branches.
        condition = None
        if known is not None:
            geometry = self.geometry
            per_video = [k for k in known for _ in range(num_videos_per_prompt)]
            condition = build_conditions(
                self.vae, per_video, num_frames, height, width, geometry.temporal, geometry.spatial
            ).to(device=device, dtype=dtype)
            if image_guidance and text_guidance:
                condition = torch.cat([torch.zeros_like(condition), condition, condition])
            elif image_guidance:
                condition = torch.cat([torch.zeros_like(condition), condition])
            elif text_guidance:
                condition = torch.cat([condition, condition])
        branches = 1 + image_guidance + text_guidance
        regions_per_clip = 0 if layouts is None else max(len(r) for r in layouts)  # K: branches per clip

        # 2c. What every step passes besides x and t: the condition, the motion score (one value
        # for every video and every guidance branch; with motion guidance, the negative one for
        # the negative-prompt branches, the first (branches - 1) x batch rows, in its steps).
        step_inputs = {} if condition is None else {"condition": condition}
        if attention_kwargs is not None:
            step_inputs["attention_kwargs"] = attention_kwargs
        motion = self.motion_scores(motion_score, negative_motion_score, branches, batch_size, device)
        if regions_per_clip:  # the positive rows once per region branch
            motion = tuple(
                None if m is None else torch.cat([m[:-batch_size], m[-batch_size:].repeat(regions_per_clip)])
                for m in motion
            )

        # 3. Denoise.
        run = SAMPLERS[sampler]
        timesteps = run.timesteps(self.scheduler, num_inference_steps, device)
        first = checks.coarse_steps(num_inference_steps, call["multiscale_split"]) if multiscale else 0
        if multiscale and call["multiscale_handoff"] is not None and first < num_inference_steps:
            # the coarse steps above that noise level, the native ones below (every step coarse: even)
            train_steps = self.scheduler.config.num_train_timesteps
            timesteps = two_phase_timesteps(num_inference_steps, first, call["multiscale_handoff"], train_steps)
            timesteps, run = timesteps.to(device), Sampler(run.timesteps, sample_ddim_on)
        patch_size_at = self.multiscale_schedule(timesteps, call["multiscale_split"] if multiscale else None)
        motion_at = self.motion_schedule(timesteps, *motion, negative_motion_end)
        if video is not None:
            # SDEdit: the source's latents noised to the first remaining step; the schedules
            # above keep the full list's noise levels.
            strength = video_strength(self.sampling_defaults) if strength is None else strength
            timesteps = timesteps[strength_start(len(timesteps), strength) :]
            x0 = encode_video(self.vae, source).to(device).expand(batch_size, -1, -1, -1, -1)
            latents = self.scheduler.add_noise(x0, latents.float(), timesteps[:1]).to(dtype)

        composer = None
        if layouts is not None:
            fill = self.sampling_defaults.get("layout_fill", FILL_STEPS)
            fill_until = end_of_first_steps(timesteps, checks.leading_steps(len(timesteps), fill))
            geometry = self.geometry
            maps = torch.stack([region_map(r, geometry, num_frames, height, width) for r in layouts]).to(device)
            composer = RegionComposer(
                maps, [len(r) for r in layouts], self.scheduler.alphas_cumprod, fill_until, geometry.patch
            )

        def guided_v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if composer is not None:
                model_input = composer.branch_inputs(x, t)
                model_input = torch.cat([x, model_input]) if text_guidance else model_input
            else:
                model_input = torch.cat([x] * branches) if branches > 1 else x
            model_input = self.scheduler.scale_model_input(model_input, t)
            patch_size = patch_size_at(t)  # None: native
            scale = {} if patch_size is None else {"patch_size": patch_size}
            motion_score = motion_at(t)
            if motion_score is not None:
                scale["motion_score"] = motion_score
            v_pred = self.transformer(
                hidden_states=model_input,
                encoder_hidden_states=replaceable["prompt_embeds"],
                timestep=t.expand(model_input.shape[0]),
                return_dict=False,
                **step_inputs,
                **scale,
            )[0].float()
            if composer is not None:  # the regions' branches made one prediction, then guided as usual
                v_uncond = v_pred[:batch_size] if text_guidance else None
                v_text = composer.combine(v_pred[batch_size:] if text_guidance else v_pred, x, t)
                v_pred = v_uncond + guidance_scale * (v_text - v_uncond) if text_guidance else v_text
            elif image_guidance and text_guidance:
                v_none, v_image, v_text = v_pred.chunk(3)
                v_pred = v_none + image_guidance_scale * (v_image - v_none) + guidance_scale * (v_text - v_image)
            elif image_guidance:
                v_no_image, v_text = v_pred.chunk(2)
                v_pred = v_no_image + image_guidance_scale * (v_text - v_no_image)
            elif text_guidance:
                v_uncond, v_text = v_pred.chunk(2)
                v_pred = v_uncond + guidance_scale * (v_text - v_uncond)
            else:
                v_text = v_pred
            if branches > 1 and guidance_rescale > 0:
                v_pred = rescale_noise_cfg(v_pred, v_text, guidance_rescale)
            return v_pred

        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:

            def on_step(i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
                """Every sampler's step report: the bar, then callback_on_step_end: its latents
                replace x, its prompt_embeds (diffusers' convention) the text of the next steps."""
                progress_bar.update()
                if callback_on_step_end is None:
                    return None
                values = {"latents": x, **replaceable}
                values = {k: values[k] for k in callback_on_step_end_tensor_inputs}
                returned = checks.check_callback_result(callback_on_step_end(self, i, t, values), values)
                replaceable.update((k, v) for k, v in returned.items() if k != "latents")
                return returned.get("latents")

            latents = run.sample(guided_v, latents, self.scheduler, timesteps, generator, on_step)
        if condition is not None and keep_first_frame:
            latents = with_known_first_latent(latents, condition[-batch_size:])

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


def exact_tile_overlap(tile_latents: int, stride: int, factor: float) -> float:
    """The overlap factor nearest `factor` at which diffusers' CogVideoX tiled decode keeps as
    many pixels of a tile as its step covers: int(L (1 - f)) * stride == L * stride -
    int(L * stride * f), i.e. f = k / L for a whole k in [1, L); float rounding decides between
    k / L and its neighbours."""
    import math

    size = tile_latents * stride
    for k in sorted(range(1, max(tile_latents, 2)), key=lambda k: abs(k / tile_latents - factor)):
        exact = k / tile_latents
        for f in (exact, math.nextafter(exact, 1.0), math.nextafter(exact, 0.0)):
            if int(tile_latents * (1 - f)) * stride == size - int(size * f):
                return f
    raise KumoInputError(
        f"VAE tiles of {tile_latents} latents cannot overlap evenly; pass a larger tile_sample_min_height/width"
    )


def recommended_sampling(sampling_defaults: dict, turbo: bool = False) -> dict:
    """num_inference_steps, guidance_scale and guidance_rescale a checkpoint recommends: its
    kumo_defaults.json (the `turbo_*` keys for the consistency scheduler), else the original's."""
    original, names = (ORIGINAL_TURBO_SAMPLING, TURBO_DEFAULT_KEYS) if turbo else (ORIGINAL_SAMPLING, {})
    return {key: sampling_defaults.get(names.get(key, key), value) for key, value in original.items()}


def end_of_first_steps(timesteps: torch.Tensor, n: int) -> float:
    """The timestep a setting on the first `n` steps of a descending list holds above: a step
    with t above it is one of them (-inf when all are)."""
    return float(timesteps[n]) if n < len(timesteps) else -math.inf


def _native_scale(t: torch.Tensor) -> None:
    """`multiscale_schedule` without multi-scale sampling: the native patch size at every step."""
    return None


def with_known_first_latent(latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Latents (B, F_lat, C, h, w) with latent frame 0 replaced by the condition's end-slot
    latent wherever frame 0 is known (its mask is 1): the clip then starts at the image as
    closely as the VAE can reproduce it."""
    c = latents.shape[2]
    known = condition[:, 0, 2 * c : 2 * c + 1].to(latents.dtype)  # (B, 1, h, w): the end mask of latent frame 0
    latents = latents.clone()
    latents[:, 0] = known * condition[:, 0, :c].to(latents.dtype) + (1 - known) * latents[:, 0]
    return latents


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
