"""The training loop every KumoVideo trainer runs (VAE, DiT, Turbo): optimizer, LR
warm-up, gradient clipping, EMA, DDP, progress bar, loss log, atomic checkpoints every N
steps and exact resume. A trainer supplies only `loss_fn(step) -> (loss, metrics)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from kumovideo.training.checkpointing import list_checkpoints, load_checkpoint, save_checkpoint
from kumovideo.training.config import TrainConfig
from kumovideo.training.runtime import (
    LossLog,
    Runtime,
    Timer,
    ema_named_state,
    finite_or_raise,
    load_ema_named_state,
    make_ema,
    progress,
)

LossFn = Callable[[int], tuple[torch.Tensor, dict]]


@dataclass
class TrainState:
    """The modules being trained, by name; `wrapped` holds their DDP wrappers when
    distributed (the loss function calls `wrapped[name]` for the forward pass)."""

    modules: dict[str, torch.nn.Module]
    wrapped: dict[str, torch.nn.Module] = field(default_factory=dict)
    param_groups: list[dict] | None = None

    def __post_init__(self):
        self.wrapped = dict(self.modules)


def wrap_distributed(state: TrainState, runtime: Runtime) -> None:
    if runtime.world_size > 1:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        state.wrapped = {
            name: DistributedDataParallel(m, device_ids=ids) if any(p.requires_grad for p in m.parameters()) else m
            for name, m in state.modules.items()
        }


def train(
    config: TrainConfig,
    runtime: Runtime,
    state: TrainState,
    loss_fn: LossFn,
    resume: bool = False,
    on_log: Callable[[int, dict], None] | None = None,
    on_sample: Callable[[int], None] | None = None,
    stop_after: int | None = None,
) -> dict:
    """Run (or continue) training to `config.total_steps`; returns the last metrics.
    `stop_after` ends the run early after that many global steps (used by tests)."""
    out = Path(config.output_dir)
    names = [n for n, p in _named_params(state.modules)]
    params = [p for n, p in _named_params(state.modules)]
    groups = state.param_groups or [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    lr_scheduler = stage_lr_schedule(optimizer, config)
    ema = make_ema(params, config.ema_decay)

    start = 0
    if resume:
        found = list_checkpoints(out)
        if found:
            start, ema_state, _ = load_checkpoint(found[-1], state.modules, optimizer, lr_scheduler)
            if ema_state is not None:
                load_ema_named_state(ema, names, ema_state)
            if runtime.is_main:
                print(f"resumed from {found[-1]} (step {start})")
    wrap_distributed(state, runtime)

    log = LossLog(out / "loss_log.csv", enabled=runtime.is_main)
    timer = Timer()
    metrics: dict = {}
    end = config.total_steps if stop_after is None else min(config.total_steps, stop_after)
    bar = progress(config.total_steps, start, runtime.is_main, desc=f"train {config.kind}")
    try:
        for step in range(start, end):
            stage, _ = config.stage_at(step)
            loss, metrics = loss_fn(step)
            finite_or_raise(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            lr_scheduler.step()
            ema.step(params)

            done = step + 1
            metrics = {"step": done, "stage": stage.name, "loss": loss.item(), "grad_norm": float(grad_norm), **metrics}
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", stage=stage.name)
            bar.update()
            if done % config.log_every == 0 or done == end:
                metrics["it_per_s"] = (done - start) / max(timer.elapsed(), 1e-9)
                log.write(metrics)
                if on_log is not None:
                    on_log(done, metrics)
            if runtime.is_main and (done % config.checkpoint_every == 0 or done == config.total_steps):
                save_checkpoint(
                    out, done, state.modules, ema_named_state(ema, names), optimizer, lr_scheduler,
                    extra={"stage": stage.name, "loss": metrics["loss"]}, keep=config.keep_checkpoints,
                )
            if on_sample is not None and runtime.is_main and config.sample_every and done % config.sample_every == 0:
                on_sample(done)
            if done % config.checkpoint_every == 0:
                runtime.barrier()  # others wait while rank 0 writes
    finally:
        bar.close()
        log.close()
    if end == config.total_steps:
        ema.copy_to(params)  # the run's result is the EMA weights
    return metrics


def stage_lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Linear warm-up, then each stage's learning rate (relative to the run's)."""

    def factor(step: int) -> float:
        stage, _ = config.stage_at(step)
        return min(1.0, (step + 1) / max(1, config.warmup_steps)) * ((stage.lr or config.lr) / config.lr)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _named_params(modules: dict[str, torch.nn.Module]):
    for m, module in modules.items():
        for n, p in module.named_parameters():
            if p.requires_grad:
                yield f"{m}.{n}", p
