"""KumoVideo-Turbo's consistency scheduler.

A latent consistency model sampler (Luo et al. 2023, "Latent Consistency Models",
Algorithm 1: multistep consistency sampling) on KumoVideo's noise schedule. diffusers'
`LCMScheduler` already implements the algorithm: the skipping-step timestep grid taken
from 50 original DDIM steps, the boundary-condition scalings
`c_skip = s^2 / ((10 t)^2 + s^2)`, `c_out = 10 t / sqrt((10 t)^2 + s^2)` with
sigma_data s = 0.5, and re-noising of the x0 estimate between steps. What it lacks is
CogVideoX's SNR-shifted, zero-terminal-SNR alphas; this class swaps them in and sets
KumoVideo's defaults (v-prediction), and nothing else.
"""

import torch
from diffusers import LCMScheduler
from diffusers.configuration_utils import register_to_config

from kumovideo.schedulers.noise_schedule import (
    BETA_END,
    BETA_START,
    NUM_TRAIN_TIMESTEPS,
    SNR_SHIFT_SCALE,
    kumo_alphas_cumprod,
    schedule_only,
)


class KumoLCMScheduler(LCMScheduler):
    # A few settings a line, in diffusers' order: every one is a config key (register_to_config).
    # fmt: off
    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END,
        beta_schedule: str = "scaled_linear", trained_betas=None, original_inference_steps: int = 50,
        clip_sample: bool = False, clip_sample_range: float = 1.0, set_alpha_to_one: bool = True,
        steps_offset: int = 0, prediction_type: str = "v_prediction",
        thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
        timestep_spacing: str = "leading", timestep_scaling: float = 10.0,
        rescale_betas_zero_snr: bool = False, snr_shift_scale: float = SNR_SHIFT_SCALE,
    ):
        # fmt: on
        if beta_schedule != "scaled_linear" or trained_betas is not None or rescale_betas_zero_snr:
            raise ValueError(
                "KumoLCMScheduler uses KumoVideo's own schedule (scaled-linear betas, SNR shift, zero terminal SNR); "
                "set only beta_start, beta_end, num_train_timesteps and snr_shift_scale"
            )
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            original_inference_steps=original_inference_steps,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            set_alpha_to_one=set_alpha_to_one,
            steps_offset=steps_offset,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            timestep_scaling=timestep_scaling,
        )
        alphas_cumprod = kumo_alphas_cumprod(beta_start, beta_end, num_train_timesteps, snr_shift_scale)
        self.alphas_cumprod = alphas_cumprod
        self.alphas = self.alphas_cumprod / torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        self.betas = 1.0 - self.alphas

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' from_config; a KumoDDIMScheduler config gives only its noise schedule
        (`schedule_only`), so `KumoLCMScheduler.from_config(pipe.scheduler.config)` swaps a
        base pipeline to consistency sampling as `on_schedule_of` does."""
        return super().from_config(schedule_only(config, "KumoDDIMScheduler"), return_unused_kwargs, **kwargs)

    @classmethod
    def on_schedule_of(cls, base_config, original_inference_steps: int = 50) -> "KumoLCMScheduler":
        """Consistency sampling on a base checkpoint's noise schedule (its DDIM scheduler's
        config): the same betas, step count and SNR shift; the rest is LCM's own."""
        return cls(
            num_train_timesteps=base_config.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS),
            beta_start=base_config.get("beta_start", BETA_START),
            beta_end=base_config.get("beta_end", BETA_END),
            snr_shift_scale=base_config.get("snr_shift_scale", SNR_SHIFT_SCALE),
            original_inference_steps=original_inference_steps,
        )
