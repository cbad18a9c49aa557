"""The KumoVideo noise schedule, shared by the DDIM and consistency schedulers.

Scaled-linear betas (0.00085 -> 0.012 over 1000 steps), then CogVideoX's SNR shift
(`alpha_bar / (s + (1 - s) * alpha_bar)`, s = 3: every timestep noisier, which large
video latents need) and the zero-terminal-SNR rescale, so t = 999 is pure noise.
"""

from typing import Any

import torch
from diffusers.schedulers.scheduling_ddim_cogvideox import rescale_zero_terminal_snr

# The schedule's settings, the defaults of both schedulers' configs.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
SNR_SHIFT_SCALE = 3.0


def kumo_alphas_cumprod(
    beta_start: float = BETA_START,
    beta_end: float = BETA_END,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    snr_shift_scale: float = SNR_SHIFT_SCALE,
) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1, in float64 exactly as CogVideoX computes it (bit-compatible)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_cumprod = alphas_cumprod / (snr_shift_scale + (1 - snr_shift_scale) * alphas_cumprod)
    return rescale_zero_terminal_snr(alphas_cumprod)


# The config keys that say which noise schedule (and target) a model was trained on; the rest
# of a scheduler's config is how that scheduler walks it (spacing, LCM's grid, zero-SNR flag).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "snr_shift_scale", "prediction_type")


def schedule_only(config: Any, other_class: str) -> Any:
    """`config` for `from_config`: reduced to SCHEDULE_KEYS when it is `other_class`'s (the
    other Kumo scheduler's), else as given. diffusers' from_config keeps every shared key, so
    the DDIM config's `rescale_betas_zero_snr=True` made KumoLCMScheduler refuse it, and the
    Turbo config's "leading" spacing and `rescale_betas_zero_snr=False` gave DDIM 4 steps
    from t = 750 (not pure noise) without a word. Both walk the same schedule; only it carries over."""
    if isinstance(config, dict) and config.get("_class_name") == other_class:
        return {key: config[key] for key in SCHEDULE_KEYS if key in config}
    return config
