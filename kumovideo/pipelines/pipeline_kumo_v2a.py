"""KumoV2APipeline: a soundtrack for a video (Kandinsky 4's video-to-audio, in this system).

    pipe = KumoV2APipeline.from_pretrained("path/to/kumo-shapes-v2a")
    audio = pipe(frames, fps=8, generator=torch.Generator().manual_seed(0)).audios[0]

Components: `denoiser` (KumoV2AModel: v-prediction on a normalised log-mel spectrogram,
conditioned on the frames) and `scheduler` (diffusers' DDIMScheduler). The vocoder is
Griffin-Lim (`pipelines/spectrogram.py`). The soundtrack is exactly as long as the video:
round(F / fps * sample_rate) samples.

Guidance is over the video: the unconditional branch is the model with the video dropped
(trained with video dropout), v = v_uncond + g * (v_video - v_uncond).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from kumovideo.models.v2a_kumo import KumoV2AModel
from kumovideo.pipelines import checks
from kumovideo.pipelines.loading import (
    check_safetensors_complete,
    read_json,
    read_sampling_defaults,
    write_sampling_defaults,
)
from kumovideo.pipelines.spectrogram import frames_to_condition, mel_to_audio, num_mel_frames, num_samples_for
from kumovideo.utils.errors import KumoInputError

DEFAULT_SAMPLING = {"num_inference_steps": 25, "guidance_scale": 1.0}
V2A_COMPONENTS = ("denoiser", "scheduler")


@dataclass
class KumoV2APipelineOutput(BaseOutput):
    """audios: one mono float32 array (N,) per video; sample_rate: Hz; mels: the generated
    normalised log-mel spectrograms (B, M, T)."""

    audios: list[np.ndarray]
    sample_rate: int
    mels: torch.Tensor


def check_video_frames(frames) -> np.ndarray:
    """uint8 (F, H, W, 3) frames, or a one-line KumoInputError."""
    if not isinstance(frames, np.ndarray):
        raise KumoInputError(
            f"video must be uint8 frames (F, H, W, 3) or a video file path, got {type(frames).__name__}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise KumoInputError(f"video frames must have shape (F, H, W, 3) with F >= 1, got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise KumoInputError(f"video frames must be uint8 (0..255), got {frames.dtype}")
    return frames


def check_v2a_folder(folder: str | os.PathLike) -> Path:
    """A V2A pipeline folder with every part, or a one-line KumoInputError naming what is missing."""
    path = Path(folder)
    if not (path / "model_index.json").is_file():
        raise KumoInputError(f"{path} is not a pipeline folder (no model_index.json); pass a V2A model folder")
    index = read_json(path / "model_index.json")
    if index.get("_class_name") != "KumoV2APipeline":
        raise KumoInputError(
            f"{path} holds a {index.get('_class_name', 'unknown')}, not a video-to-audio model (KumoV2APipeline)"
        )
    weights = path / "denoiser" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise KumoInputError(f"{path}: denoiser weights {weights.name} are missing (safetensors only)")
    check_safetensors_complete(weights)
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise KumoInputError(f"{path}: scheduler/scheduler_config.json is missing")
    return path


class KumoV2APipeline(DiffusionPipeline):
    model_cpu_offload_seq = "denoiser"

    def __init__(self, denoiser: KumoV2AModel, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)
        self.sampling_defaults: dict = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a local V2A folder (safetensors only); `torch_dtype` casts the weights."""
        torch_dtype = kwargs.pop("torch_dtype", None)
        if kwargs:
            raise KumoInputError(f"KumoV2APipeline.from_pretrained got unknown arguments: {', '.join(sorted(kwargs))}")
        # KumoPipeline's rule: a string dtype was passed on to diffusers, which warned and loaded float32
        checks.check_pretrained_arguments(pretrained_model_name_or_path, torch_dtype, {})
        path = check_v2a_folder(pretrained_model_name_or_path)
        defaults = read_sampling_defaults(path)
        denoiser = KumoV2AModel.from_pretrained(path / "denoiser", use_safetensors=True, torch_dtype=torch_dtype)
        scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
        pipe = cls(denoiser=denoiser.eval(), scheduler=scheduler)
        pipe.sampling_defaults = defaults
        return pipe

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """diffusers' save_pretrained, plus the sampling defaults (kumo_defaults.json) it was loaded with."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_sampling_defaults(save_directory, self.sampling_defaults)

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' model offload; on a machine without a GPU one line saying so (`checks.check_offload_device`)."""
        checks.check_offload_device(device, "enable_model_cpu_offload")
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    @property
    def sample_rate(self) -> int:
        return self.denoiser.config.sample_rate

    def default_sampling(self) -> dict:
        return {key: self.sampling_defaults.get(key, value) for key, value in DEFAULT_SAMPLING.items()}

    def check_inputs(
        self, videos: list[np.ndarray], fps, num_inference_steps, guidance_scale, generator, audio_prompt
    ):
        if audio_prompt is not None:
            raise KumoInputError("this video-to-audio model takes no text: leave out the audio prompt")
        checks.check_whole_numbers(num_inference_steps=num_inference_steps)
        checks.check_num_inference_steps(num_inference_steps, self.scheduler.config.num_train_timesteps)
        checks.check_guidance(guidance_scale, 0.0)
        checks.check_generator(generator, len(videos))
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
            raise KumoInputError(f"fps must be a number of frames per second in (0, 1000], got {fps!r}")
        lengths = {len(v) for v in videos}
        if len(lengths) > 1:
            raise KumoInputError(f"videos in one call must have the same number of frames, got {sorted(lengths)}")

    @torch.no_grad()
    def __call__(
        self,
        video: np.ndarray | list[np.ndarray],
        fps: float = 8,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        audio_prompt: str | None = None,
        latents: torch.Tensor | None = None,
        progress: bool = True,
        return_dict: bool = True,
    ) -> KumoV2APipelineOutput | tuple:
        """Soundtracks for one video (uint8 (F, H, W, 3) frames, or a file path: its frame rate is
        then the file's) or a list of videos of equal length. `return_dict=False`: the tuple
        (audios, sample_rate, mels), as diffusers' pipelines return their output's fields."""
        if isinstance(video, (str, os.PathLike)):
            from kumovideo.utils.video_io import read_video

            video, fps = read_video(video)
        videos = [check_video_frames(v) for v in (video if isinstance(video, list) else [video])]
        defaults = self.default_sampling()
        num_inference_steps = defaults["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        self.check_inputs(videos, fps, num_inference_steps, guidance_scale, generator, audio_prompt)

        config, device = self.denoiser.config, self._execution_device
        dtype = self.denoiser.dtype
        num_samples = num_samples_for(len(videos[0]), fps, config.sample_rate)
        shape = (len(videos), config.n_mels, num_mel_frames(num_samples, config.hop_length))
        condition = torch.stack([frames_to_condition(v, config.frame_size) for v in videos]).to(device, dtype)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            checks.check_latents_shape(latents, shape)
            latents = latents.to(device, dtype)

        features = self.denoiser.encode_video(condition, shape[-1], fps)  # once: the same for every step
        guided = guidance_scale != 1.0
        mask = None
        if guided:  # one batch: [video, no video] (the mask drops the second copy's features)
            features = torch.cat([features, features])
            mask = torch.cat([torch.ones(len(videos)), torch.zeros(len(videos))]).to(device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps) if progress else self.scheduler.timesteps:
            model_input = torch.cat([latents, latents]) if guided else latents
            v = self.denoiser(model_input, t, video_mask=mask, video_features=features)
            if guided:
                v_video, v_uncond = v.chunk(2)
                v = v_uncond + guidance_scale * (v_video - v_uncond)
            latents = self.scheduler.step(v, t, latents).prev_sample
        audios = [mel_to_audio(mel, config, num_samples) for mel in latents]
        self.maybe_free_model_hooks()
        output = KumoV2APipelineOutput(audios=audios, sample_rate=config.sample_rate, mels=latents.float().cpu())
        return output if return_dict else output.to_tuple()
