"""KumoVideo's DDIM: diffusers' `CogVideoXDDIMScheduler` with KumoVideo's settings.

Original checkpoints save a 4-key config (`KumoDDIMScheduler`: betas, train steps, SNR
shift); this class gives the remaining settings KumoVideo's defaults, so such a config
loads as it is: v-prediction, zero-terminal-SNR, "trailing" spacing (50 steps: 999, 979,
..., 19), no clipping. The maths is diffusers'; only the defaults and `from_config` (a Turbo
config gives only its noise schedule) are overridden.
"""

from diffusers import CogVideoXDDIMScheduler
from diffusers.configuration_utils import register_to_config

from kumovideo.schedulers.noise_schedule import (
    BETA_END,
    BETA_START,
    NUM_TRAIN_TIMESTEPS,
    SNR_SHIFT_SCALE,
    schedule_only,
)


class KumoDDIMScheduler(CogVideoXDDIMScheduler):
    # A few settings a line, in diffusers' order: every one is a config key (register_to_config).
    # fmt: off
    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END,
        beta_schedule: str = "scaled_linear", trained_betas=None,
        clip_sample: bool = False, set_alpha_to_one: bool = True, steps_offset: int = 0,
        prediction_type: str = "v_prediction", clip_sample_range: float = 1.0, sample_max_value: float = 1.0,
        timestep_spacing: str = "trailing", rescale_betas_zero_snr: bool = True,
        snr_shift_scale: float = SNR_SHIFT_SCALE,
    ):
        super().__init__(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, trained_betas=trained_betas,
            clip_sample=clip_sample, set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
            prediction_type=prediction_type, clip_sample_range=clip_sample_range, sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing, rescale_betas_zero_snr=rescale_betas_zero_snr,
            snr_shift_scale=snr_shift_scale,
        )
        # fmt: on

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' from_config; a KumoLCMScheduler config gives only its noise schedule
        (`schedule_only`): DDIM then samples it with its own trailing spacing and zero-SNR."""
        return super().from_config(schedule_only(config, "KumoLCMScheduler"), return_unused_kwargs, **kwargs)
