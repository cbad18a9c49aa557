"""KumoVideo-Turbo: consistency distillation of a trained pipeline into a 4-8 step model.

Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models", Alg. 1),
as the KumoVideo-Turbo report applies it:

* the student starts as a copy of the teacher (the base MADiT) and keeps v-prediction;
* one-stage guided distillation: the teacher's classifier-free guidance is applied with a
  *constant* scale w (no guidance embedding), so the student learns the guided ODE;
* skipping-step solver: one DDIM step of the teacher on the 50-step grid, t_n -> t_{n-k}
  (k = 1000 / 50 = 20 timesteps);
* the target is the EMA "target network" at (x_{t_{n-k}}, t_{n-k});
* consistency parametrisation f(x, t) = c_skip(t) x + c_out(t) x0(x, t) with the
  boundary scalings of `KumoLCMScheduler` (sigma_data 0.5, timestep x 10), so f(x, 0) = x;
* pseudo-Huber (c = 0.001) or L2 distance.

Optional LADD (Sauer et al. 2024, "Fast High-Resolution Image Synthesis with Latent
Adversarial Diffusion Distillation"): a discriminator made of the frozen teacher's hidden
states at a few blocks, with small trainable heads, judges re-noised student outputs
against re-noised real latents (hinge loss).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from kumovideo.pipelines.loading import load_pipeline_components
from kumovideo.pipelines.pipeline_kumo import KumoPipeline
from kumovideo.schedulers import KumoLCMScheduler
from kumovideo.schedulers.sampling import v_to_x0
from kumovideo.training.config import TrainConfig
from kumovideo.training.data_sources import LatentSource
from kumovideo.training.loop import TrainState, train
from kumovideo.training.objectives import diffuse
from kumovideo.training.pipeline_folder import save_trained_pipeline
from kumovideo.training.preflight import check_pipeline_folder
from kumovideo.training.runtime import Runtime, autocast_context, step_generator
from kumovideo.training.shapes_batches import is_image_step
from kumovideo.utils.errors import KumoInputError


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = 0.001) -> torch.Tensor:
    return (torch.sqrt((a.float() - b.float()) ** 2 + c**2) - c).mean()


class TeacherFeatureDiscriminator(nn.Module):
    """LADD discriminator: trainable heads on the frozen teacher's vision tokens at a few
    blocks. Each head: LayerNorm -> Linear -> SiLU -> Linear(1), averaged over tokens."""

    def __init__(self, teacher, layers: list[int]):
        super().__init__()
        self.layers = layers
        dim = teacher.config.num_attention_heads * teacher.config.attention_head_dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1)) for _ in layers
        )

    @staticmethod
    def teacher_features(teacher, x_t, text, t, layers) -> list[torch.Tensor]:
        vision, text_tokens, temb = teacher.embed(x_t, text, t)
        feats = []
        for i, block in enumerate(teacher.transformer_blocks):
            vision, text_tokens = block(vision, text_tokens, temb)
            if i in layers:
                feats.append(vision)
            if i >= max(layers):
                break
        return feats

    def logits(self, feats: list[torch.Tensor], params: dict | None = None) -> torch.Tensor:
        """(B,) logits; `params` evaluates the heads with given (e.g. detached) weights."""
        out = 0.0
        for j, feat in enumerate(feats):
            head = self.heads[j]
            if params is None:
                out = out + head(feat).mean(dim=(1, 2))
            else:
                sub = {k[len(f"heads.{j}.") :]: v for k, v in params.items() if k.startswith(f"heads.{j}.")}
                out = out + functional_call(head, sub, (feat,)).mean(dim=(1, 2))
        return out / len(feats)


def train_turbo(config: TrainConfig, runtime: Runtime, resume: bool = False, stop_after: int | None = None) -> dict:
    if not config.teacher:
        raise KumoInputError("a turbo config needs `teacher:` (the trained base pipeline folder)")
    check_pipeline_folder(config, "teacher")  # says to fix `teacher:`, not a --model flag train has not
    components = load_pipeline_components(config.teacher)
    tokenizer, text_encoder, vae = components["tokenizer"], components["text_encoder"], components["vae"]
    teacher = components["transformer"].float()
    for module in (teacher, text_encoder, vae):
        module.requires_grad_(False).eval().to(runtime.device)
    torch.manual_seed(config.seed)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target = copy.deepcopy(teacher).eval()  # EMA target network f_theta^-
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()

    lcm = distillation_scheduler(components, config)
    alphas_cumprod = lcm.alphas_cumprod.to(torch.float32).to(runtime.device)
    T = lcm.config.num_train_timesteps
    k = T // config.num_ddim_steps
    grid = torch.arange(T - 1, -1, -k)  # 999, 979, ..., 19: the 50-step DDIM grid
    max_len = student.config.max_text_seq_length

    target.requires_grad_(False)
    # The target network is checkpointed with the run (exact resume) but not optimized.
    modules = {"student": student, "target": target}
    discriminator = None
    if config.ladd:
        blocks = len(teacher.transformer_blocks)
        layers = config.ladd_layers or sorted({0, blocks // 2, blocks - 1})
        if max(layers) >= blocks:
            raise KumoInputError(
                f"ladd_layers={layers}: the teacher has {blocks} blocks; use indices from 0 to {blocks - 1}"
            )
        discriminator = TeacherFeatureDiscriminator(teacher, layers).to(runtime.device)
        modules["discriminator"] = discriminator
    state = TrainState(modules=modules)
    source = LatentSource(config, vae, runtime)
    with torch.no_grad():
        empty = text_encoder(
            tokenizer([""], padding="max_length", max_length=max_len, return_tensors="pt").input_ids.to(runtime.device)
        )[0]

    def boundary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_skip, c_out = lcm.get_scalings_for_boundary_condition_discrete(t)
        return c_skip.view(-1, 1, 1, 1, 1).float(), c_out.view(-1, 1, 1, 1, 1).float()

    def alpha(t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at t, 1 at t < 0 (the clean end of the grid)."""
        return torch.where(t >= 0, alphas_cumprod[t.clamp(min=0)], torch.ones_like(t, dtype=torch.float32)).view(
            -1, 1, 1, 1, 1
        )

    def consistency(model, x, t, text):
        v = model(x, text, t, return_dict=False)[0].float()
        c_skip, c_out = boundary(t)
        return c_skip * x.float() + c_out * v_to_x0(v, x.float(), alpha(t))

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        g = step_generator(config.seed, step, runtime.rank)
        latents, captions = source.batch(step, stage, g)
        if is_image_step(config.data_seed, step, stage.image_prob):
            latents = latents[:, :1]
        batch = latents.shape[0]
        ids = tokenizer(
            captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids
        idx = torch.randint(0, len(grid), (batch,), generator=g)
        t_n = grid[idx].to(runtime.device)
        t_prev = t_n - k
        noise = torch.randn(latents.shape, generator=g).to(runtime.device)
        latents = latents.to(runtime.device)
        x_t, _ = diffuse(latents, noise, alphas_cumprod[t_n])

        with torch.no_grad():
            text = text_encoder(ids.to(runtime.device))[0]
            # Teacher: guided v with the constant scale w, then one DDIM step t_n -> t_{n-k}.
            v_both = teacher(
                torch.cat([x_t, x_t]),
                torch.cat([empty.expand_as(text), text]),
                torch.cat([t_n, t_n]),
                return_dict=False,
            )[0].float()
            v_uncond, v_cond = v_both.chunk(2)
            v_w = v_uncond + config.distill_guidance * (v_cond - v_uncond)
            a_n = alpha(t_n)
            x0_hat = v_to_x0(v_w, x_t.float(), a_n)
            eps_hat = a_n.sqrt() * v_w + (1 - a_n).sqrt() * x_t.float()
            a_prev = alpha(t_prev)
            x_prev = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps_hat
            target_out = consistency(target, x_prev.to(x_t.dtype), t_prev.clamp(min=0), text)
            # at t_prev < 0 the target is the clean estimate itself (boundary condition)
            target_out = torch.where((t_prev < 0).view(-1, 1, 1, 1, 1), x_prev, target_out)

        with autocast_context(runtime, config.mixed_precision):
            student_out = consistency(state.wrapped["student"], x_t, t_n, text)
        if config.distill_loss == "huber":
            loss = pseudo_huber(student_out, target_out)
        else:
            loss = F.mse_loss(student_out.float(), target_out.float())
        metrics = {"consistency": loss.item()}

        if discriminator is not None:
            # Re-noise student output and real latents to the same random t'; hinge loss.
            t_d = torch.randint(0, T, (batch,), generator=g).to(runtime.device)
            noise_d = torch.randn(latents.shape, generator=g).to(runtime.device)
            fake_t, _ = diffuse(student_out, noise_d, alphas_cumprod[t_d])
            real_t, _ = diffuse(latents.float(), noise_d, alphas_cumprod[t_d])
            layers = discriminator.layers
            fake_feats = discriminator.teacher_features(teacher, fake_t, text, t_d, layers)
            with torch.no_grad():
                real_feats = discriminator.teacher_features(teacher, real_t, text, t_d, layers)
            d_loss = (
                F.relu(1 - discriminator.logits(real_feats)).mean()
                + F.relu(1 + discriminator.logits([f.detach() for f in fake_feats])).mean()
            )
            frozen_heads = {n: p.detach() for n, p in discriminator.named_parameters()}
            g_loss = -discriminator.logits(fake_feats, frozen_heads).mean()
            loss = loss + config.ladd_weight * g_loss + d_loss
            metrics.update({"d_loss": d_loss.item(), "g_loss": g_loss.item()})
        return loss, metrics

    # The target network follows the student by EMA every step (LCM's f_theta^-).
    student_params = list(student.parameters())
    target_params = list(target.parameters())

    def ema_loss_fn(step: int):
        if step > 0:
            with torch.no_grad():
                for p_t, p_s in zip(target_params, student_params):
                    p_t.lerp_(p_s.detach(), 1 - config.target_decay)
        return loss_fn(step)

    metrics = train(config, runtime, state, ema_loss_fn, resume=resume, stop_after=stop_after)
    if stop_after is None and runtime.is_main:
        export_turbo(components, student, config)
    return metrics


def distillation_scheduler(components: dict, config: TrainConfig) -> KumoLCMScheduler:
    """The consistency scheduler on the teacher's noise schedule (its betas, training step
    count and SNR shift), with the teacher's DDIM grid of `num_ddim_steps` as LCM's skeleton.
    Distillation targets and the exported Turbo pipeline both use it, so a teacher trained
    with other betas is distilled and sampled on its own schedule."""
    return KumoLCMScheduler.on_schedule_of(components["scheduler"].config, config.num_ddim_steps)


def export_turbo(components: dict, student, config: TrainConfig, target: str | Path | None = None) -> Path:
    """Save the Turbo pipeline (to `target`, default `output_dir/pipeline`): the distilled
    transformer with the consistency scheduler."""
    scheduler = distillation_scheduler(components, config)  # the schedule the student was distilled on
    pipe = KumoPipeline(**{**components, "transformer": student.eval(), "scheduler": scheduler})
    seen = Path(config.teacher) / "training_captions.txt"
    extra = {"training_captions.txt": seen.read_text()} if seen.exists() else {}
    return save_trained_pipeline(pipe, config, extra, target)
