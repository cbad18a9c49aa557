"""Few-step samplers as short pure functions, separate from the noise schedule.

Each takes `model_fn(x_t, t) -> v` (the guided v-prediction), the starting noise, the
timesteps and the schedule's alpha_bar, and returns the final x0 estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def v_to_x0(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 from a v-prediction: x0 = sqrt(a) x_t - sqrt(1 - a) v (Salimans & Ho 2022, eq. 3 ff.)."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


def renoise_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Evenly spaced, trailing: 4 steps -> 999, 749, 499, 249."""
    step = num_train_timesteps / num_steps
    return torch.tensor([round(num_train_timesteps - 1 - i * step) for i in range(num_steps)], dtype=torch.long)


@torch.no_grad()
def sample_renoise(
    model_fn: ModelFn,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Kandinsky 4 Flash's few-step sampler: at each timestep predict x0, then re-noise it
    with fresh noise to the next timestep and predict again; the last x0 is the result.
    (The multistep consistency-sampling loop of Song et al. 2023, Alg. 1, used with a
    plain x0 predictor.)"""
    alphas_cumprod = alphas_cumprod.to(x.device)
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t].to(torch.float32)
        x0 = v_to_x0(model_fn(x, t).float(), x.float(), a_t)
        if i + 1 < len(timesteps):
            a_next = alphas_cumprod[timesteps[i + 1]].to(torch.float32)
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            x = (a_next.sqrt() * x0 + (1 - a_next).sqrt() * noise).to(x.dtype)
        else:
            x = x0.to(x.dtype)
        if callback is not None:  # callback(i, t, x) may return a replacement for x
            replaced = callback(i, t, x)
            if replaced is not None:
                x = replaced
    return x
