"""Samplers as short pure functions, separate from the noise schedule (k-diffusion style).

Each takes `model(x_t, t) -> v` (the guided v-prediction) and the starting noise, runs its
loop over the timesteps and returns the final sample. After every step it calls
`callback(i, t, x)`, which may return a replacement for x (None keeps it): the one way a
sampler reports its steps. `SAMPLERS` names them for `KumoPipeline(..., sampler=...)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
Generator = torch.Generator | list[torch.Generator] | None


def v_to_x0(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 from a v-prediction: x0 = sqrt(a) x_t - sqrt(1 - a) v (Salimans & Ho 2022, eq. 3 ff.)."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


def _reported(callback: StepCallback | None, i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x after the step callback: its replacement, or x itself."""
    replaced = callback(i, t, x) if callback is not None else None
    return x if replaced is None else replaced


# ---------------------------------------------------------------------------- the scheduler's own


def scheduler_timesteps(scheduler: Any, num_steps: int, device: torch.device | None = None) -> torch.Tensor:
    """The scheduler's timesteps for `num_steps` steps (it keeps them for its `step`)."""
    scheduler.set_timesteps(num_steps, device=device)
    return scheduler.timesteps


@torch.no_grad()
def sample_scheduler(
    model: ModelFn,
    x: torch.Tensor,
    scheduler: Any,
    timesteps: torch.Tensor,
    generator: Generator = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The diffusers scheduler loop: predict v at each timestep and let `scheduler.step` move
    x to the next. With KumoDDIMScheduler that is DDIM (Song et al. 2021, "Denoising
    Diffusion Implicit Models", eq. 12 with eta = 0); with KumoLCMScheduler it is multistep
    consistency sampling (Luo et al. 2023, "Latent Consistency Models", Alg. 1: x0 by the
    boundary scalings, re-noised to the next timestep with noise from `generator`)."""
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    dtype = x.dtype
    for i, t in enumerate(timesteps):
        x = scheduler.step(model(x, t), t, x, **step_kwargs, return_dict=False)[0].to(dtype)
        x = _reported(callback, i, t, x)
    return x


# ---------------------------------------------------------------------------- DDIM on any timesteps


def two_phase_timesteps(num_steps: int, first_steps: int, boundary: float, num_train_timesteps: int = 1000):
    """`first_steps` timesteps evenly spaced from T - 1 down to `boundary` x T (excluded),
    then the other steps evenly spaced below it, trailing as KumoDDIMScheduler spaces them:
    50 steps, 25 first, boundary 0.5 -> 999, 979, ..., 519, 499, ..., 19 (the scheduler's own
    list); 42 first instead -> the first 42 between 999 and 512, the last 8 from 499 to 62.
    Lumina-Video spends most of its steps in the noisy part of the schedule with a large time
    shift and switches patch size at fixed noise levels; this is that allocation, in two pieces."""
    steps = num_train_timesteps
    rest = num_steps - first_steps
    cut = boundary * steps
    first = [round(steps - 1 - i * (steps - cut) / first_steps) for i in range(first_steps)]
    last = [round(cut - 1 - j * cut / rest) for j in range(rest)]
    return torch.tensor(first + last, dtype=torch.long)


@torch.no_grad()
def sample_ddim(
    model_fn: ModelFn,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12, eta = 0) over any descending list of
    timesteps, for a v-predicting model: x0 from v, then x moved to the next timestep along
    the same noise (to x0 itself after the last). With the scheduler's evenly spaced list it
    is KumoDDIMScheduler's step, written in the same form (CogVideoX's a_t, b_t)."""
    alphas_cumprod = alphas_cumprod.to(x.device)
    dtype = x.dtype
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones_like(a_t)
        x0 = v_to_x0(model_fn(x, t), x, a_t)
        scale = ((1 - a_prev) / (1 - a_t)) ** 0.5
        x = (scale * x + (a_prev**0.5 - a_t**0.5 * scale) * x0).to(dtype)
        x = _reported(callback, i, t, x)
    return x


# ---------------------------------------------------------------------------- re-noising


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
    generator: Generator = None,
    callback: StepCallback | None = None,
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
        x = _reported(callback, i, t, x)
    return x


# ---------------------------------------------------------------------------- by name


@dataclass(frozen=True)
class Sampler:
    """A sampler as the pipeline runs it: `timesteps(scheduler, num_steps, device)`, then
    `sample(model, x, scheduler, timesteps, generator, callback)`."""

    timesteps: Callable[[Any, int, torch.device | None], torch.Tensor]
    sample: Callable[[ModelFn, torch.Tensor, Any, torch.Tensor, Generator, StepCallback | None], torch.Tensor]


def _renoise_timesteps_of(scheduler: Any, num_steps: int, device: torch.device | None = None) -> torch.Tensor:
    return renoise_timesteps(num_steps, scheduler.config.num_train_timesteps).to(device)


def _sample_renoise_on(model, x, scheduler, timesteps, generator=None, callback=None) -> torch.Tensor:
    return sample_renoise(model, x, timesteps, scheduler.alphas_cumprod, generator, callback)


def sample_ddim_on(model, x, scheduler, timesteps, generator=None, callback=None) -> torch.Tensor:
    """`sample_ddim` with the scheduler's noise schedule, in the shape `Sampler.sample` has."""
    return sample_ddim(model, x, timesteps, scheduler.alphas_cumprod, callback)


SAMPLERS: dict[str, Sampler] = {
    "scheduler": Sampler(scheduler_timesteps, sample_scheduler),  # DDIM, or Turbo's consistency steps
    "renoise": Sampler(_renoise_timesteps_of, _sample_renoise_on),  # Kandinsky-4-Flash style, any model
}
