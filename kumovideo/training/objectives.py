"""What the models are trained to do: the v-prediction diffusion loss with its timestep
samplers, and the VAE's reconstruction + KL loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_timesteps(batch: int, num_train_timesteps: int, how: str, generator: torch.Generator) -> torch.Tensor:
    """Integer timesteps in [0, T).

    "uniform": pre-training. "cubic": the KumoVideo report's fine-tuning sampler,
    t = (1 - (u/T)^3) * T with u uniform in [0, T): more weight on noisy timesteps, where
    the layout and motion of a clip are decided.
    """
    if how == "uniform":
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator)
    if how == "cubic":
        u = torch.rand(batch, generator=generator) * num_train_timesteps
        t = (1 - (u / num_train_timesteps) ** 3) * num_train_timesteps
        return t.long().clamp(0, num_train_timesteps - 1)
    raise ValueError(f"unknown timestep sampling {how!r}")


def shift_timesteps(t: torch.Tensor, num_train_timesteps: int, shift: float) -> torch.Tensor:
    """Timesteps moved toward noise: u -> s u / (1 + (s - 1) u) with u = t / T (the time shift
    of SD3 and Lumina-Next, which Lumina-Video applies per patch size: a coarse patch is
    trained where sampling runs it, on the noisy steps). s = 1 leaves t as it is."""
    u = t.double() / num_train_timesteps
    shifted = shift * u / (1 + (shift - 1) * u)
    return (shifted * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


def diffuse(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and the v target (Salimans & Ho 2022): x_t = sqrt(a) x0 + sqrt(1-a) eps,
    v = sqrt(a) eps - sqrt(1-a) x0. `alpha_bar` is (B,), broadcast over the rest."""
    a = alpha_bar.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    return x_t, v


def v_prediction_loss(
    model_output: torch.Tensor, v_target: torch.Tensor, alpha_bar: torch.Tensor | None = None, snr_gamma=None
) -> torch.Tensor:
    """MSE of the v prediction; with `snr_gamma`, each example's weighted by Min-SNR-gamma for
    v-prediction (Hang et al. 2023, eq. 10 with the v target: min(SNR, gamma) / (SNR + 1)),
    SNR = alpha_bar / (1 - alpha_bar) at the example's timestep (`alpha_bar`, (B,))."""
    if snr_gamma is None:
        return F.mse_loss(model_output.float(), v_target.float())
    per_example = (model_output.float() - v_target.float()).pow(2).flatten(1).mean(1)
    snr = alpha_bar.float() / (1 - alpha_bar.float()).clamp_min(1e-8)
    weight = snr.clamp(max=snr_gamma) / (snr + 1)
    return (weight * per_example).mean()


def binding_contrast_loss(
    v_true: torch.Tensor, v_swapped: torch.Tensor, v_target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The v-loss as a two-way classifier of captions (Li et al. 2023's diffusion classifier, trained
    as Diffusion-DPO (Wallace et al. 2023) trains on loss differences): on the same x_t, the
    prediction under the clip's caption must be nearer the target than under the caption with two
    objects' attributes swapped, -log sigmoid((e_swapped - e_true) / temperature), e the
    per-example MSE. Pairing the two on one x_t and noise cancels what they share, so the gradient
    holds only what tells them apart: which words stand together. Returns (loss, the share of
    examples where e_true < e_swapped (0.5 for a model that reads a bag of words), the mean
    e_swapped - e_true)."""
    e_true = (v_true.float() - v_target.float()).pow(2).flatten(1).mean(1)
    e_swapped = (v_swapped.float() - v_target.float()).pow(2).flatten(1).mean(1)
    gap = e_swapped - e_true
    return F.softplus(-gap / temperature).mean(), (gap > 0).float().mean(), gap.detach().mean()


def vae_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, dict]:
    """L1 + MSE reconstruction (MSE is what PSNR measures; L1 keeps edges sharp) + weighted KL."""
    mse = F.mse_loss(reconstruction.float(), target.float())
    l1 = F.l1_loss(reconstruction.float(), target.float())
    kl = kl.mean()
    loss = mse + l1 + kl_weight * kl
    return loss, {"mse": mse.item(), "l1": l1.item(), "kl": kl.item(), "psnr": psnr_from_mse(mse.item() / 4)}


def psnr_from_mse(mse_01: float) -> float:
    """PSNR in dB of images in [0, 1] (MSE in [-1, 1] units divided by 4 first)."""
    return 10 * math.log10(1.0 / max(mse_01, 1e-12))


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) between two videos in [-1, 1], measured on [0, 1] pixels."""
    mse = F.mse_loss(((reconstruction.float() + 1) / 2).clamp(0, 1), (target.float() + 1) / 2).item()
    return psnr_from_mse(mse)
