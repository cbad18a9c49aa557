"""The training loop every KumoVideo trainer runs (VAE, DiT, Turbo): optimizer, LR
warm-up, gradient clipping, EMA, DDP, progress bar, loss log, atomic checkpoints every N
steps and exact resume. A trainer supplies only `loss_fn(step) -> (loss, metrics)`.

How the modules are spread over processes is a strategy passed as `train(sharding=...)`:
`Replicated` (the default: whole modules on every rank, DDP when world_size > 1, rank 0
writes safetensors checkpoints) or `kumovideo.distributed.fsdp.FullySharded` (`kumo train
dit --fsdp`: FSDP2 for the transformer, optionally with Ulysses sequence parallelism, DDP
for the other trained modules, sharded DCP checkpoints that resume on any world size).
A strategy has the methods of `Replicated`; `FullySharded` is written against them without
importing this module (distributed does not import training)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from kumovideo.training.checkpointing import (
    checkpoint_world_size,
    list_checkpoints,
    load_checkpoint,
    not_this_run,
    prune_checkpoints,
    remove_leftovers,
    save_checkpoint,
)
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
from kumovideo.utils.errors import KumoInputError

LossFn = Callable[[int], tuple[torch.Tensor, dict]]


@dataclass
class TrainState:
    """The modules being trained, by name; `wrapped` holds their DDP wrappers when
    distributed (the loss function calls `wrapped[name]` for the forward pass). `train`
    fills in the rest: what a checkpoint saves beside the modules."""

    modules: dict[str, torch.nn.Module]
    wrapped: dict[str, torch.nn.Module] = field(default_factory=dict)
    param_groups: list[dict] | None = None
    optimizer: torch.optim.Optimizer | None = None
    lr_scheduler: Any = None
    ema: Any = None  # diffusers' EMAModel over the trained parameters
    names: list[str] = field(default_factory=list)  # "<module>.<parameter>" of each trained parameter, EMA order

    def __post_init__(self):
        self.wrapped = dict(self.modules)


def wrap_distributed(state: TrainState, runtime: Runtime) -> None:
    if runtime.world_size > 1:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        state.wrapped = {
            name: DistributedDataParallel(m, device_ids=ids) if any(p.requires_grad for p in m.parameters()) else m
            for name, m in state.modules.items()
        }


@dataclass(frozen=True)
class DataShard:
    """This process's part of every step's data.

    Default (DDP): a stage's `batch_size` is per rank; rank `rank` of `size` trains on the
    `rank`-th of `size` batches of each step, with its random draws (noise, timesteps,
    caption dropout, ...) from its own stream.

    `shared_rng` (FSDP): `batch_size` is the global batch of a step. It is drawn once, from
    one stream that every process seeds alike, and split in `size` equal slices, the
    `rank`-th being this process's. The union of the processes' batches is exactly what
    one process trains on with the same config, so a run resumes on any world size."""

    rank: int = 0
    size: int = 1
    shared_rng: bool = False

    @property
    def stream(self) -> int:
        """The rank index the step generators are seeded with."""
        return 0 if self.shared_rng else self.rank

    def local_size(self, batch_size: int) -> int:
        """How many of a stage's `batch_size` examples this process trains on per step."""
        if not self.shared_rng:
            return batch_size
        if batch_size % self.size:
            raise KumoInputError(f"batch_size {batch_size} does not split over {self.size} data-parallel ranks")
        return batch_size // self.size

    def first(self, batch_size: int) -> int:
        """Index of this process's first example within what `draw` draws."""
        return self.rank * self.local_size(batch_size) if self.shared_rng else 0

    def draw(self, batch_size: int, fn: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """`fn(n)` draws randomness for n examples: this process's part of a step's batch."""
        first, n = self.first(batch_size), self.local_size(batch_size)
        return fn(batch_size)[first : first + n] if self.shared_rng else fn(batch_size)


@dataclass
class WallClock:
    """Checkpoints by wall time and a stop at a fixed time, besides `checkpoint_every`
    steps: for a run on a lease that ends at a known moment (scripts/gpu/train_builtin.py).
    One process only: ranks would each read their own clock."""

    stop_at: float | None = None  # time.time() at which the run checkpoints and stops
    checkpoint_every_s: float | None = None
    on_checkpoint: Callable[[int, Path], None] | None = None  # (step, checkpoint folder), after each save
    last_save: float = field(default_factory=time.time)

    def out_of_time(self) -> bool:
        return self.stop_at is not None and time.time() >= self.stop_at

    def checkpoint_due(self) -> bool:
        return self.checkpoint_every_s is not None and time.time() - self.last_save >= self.checkpoint_every_s

    def saved(self, step: int, out: Path) -> None:
        self.last_save = time.time()
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, out / "checkpoints" / f"step-{step:07d}")


class Replicated:
    """Every process holds whole modules; DDP when world_size > 1; rank 0 writes
    safetensors checkpoints (`checkpointing.py`)."""

    ulysses_group = None

    def data_split(self, runtime: Runtime) -> tuple[int, int, bool]:
        """This process's `DataShard(rank, size, shared_rng)`: one batch per rank."""
        return runtime.rank, runtime.world_size, False

    def shard(self, state: TrainState, runtime: Runtime) -> None:
        """Before the optimizer is built (nothing to do here)."""

    def wrap(self, state: TrainState, runtime: Runtime) -> None:
        """After a resume has loaded the weights."""
        wrap_distributed(state, runtime)

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def loss_value(self, loss: torch.Tensor) -> float:
        """The loss to log (here: this rank's)."""
        return loss.item()

    def save(self, out: Path, step: int, state: TrainState, extra: dict, runtime: Runtime) -> None:
        """Called on every rank: checkpoint `step` into `out/checkpoints/` (the loop prunes old ones)."""
        if runtime.is_main:
            ema = ema_named_state(state.ema, state.names)
            extra = {**extra, "world_size": runtime.world_size}  # what each step's data depended on
            save_checkpoint(out, step, state.modules, ema, state.optimizer, state.lr_scheduler, extra=extra, keep=None)

    def check_resume(self, path: Path, runtime: Runtime) -> None:
        """Warn (once, in one line) when a DDP run resumes on another number of processes:
        batch `step` of rank r is fixed by (step, r, world size) and `batch_size` is per rank,
        so the global batch changes and examples are trained again or skipped. (Written
        before checkpoints recorded it: nothing to compare.)"""
        saved = checkpoint_world_size(path)
        if runtime.is_main and saved is not None and saved != runtime.world_size:
            import logging

            logging.getLogger(__name__).warning(
                "resuming %s, trained on %d process(es), on %d: under DDP batch_size is per process, so the "
                "global batch and the data order change from here (examples are repeated or skipped); "
                "resume on %d processes to continue the run exactly, or train with --fsdp (dit), whose "
                "checkpoints resume on any number",
                path,
                saved,
                runtime.world_size,
                saved,
            )

    def load(self, path: Path, state: TrainState) -> int:
        """The step checkpoint `path` was written at, its state loaded into `state`."""
        start, ema_state, _ = load_checkpoint(path, state.modules, state.optimizer, state.lr_scheduler)
        if ema_state is not None:
            try:
                load_ema_named_state(state.ema, state.names, ema_state)
            except (KeyError, RuntimeError):  # a parameter missing, or of another shape
                raise not_this_run(path, "its EMA weights hold other parameters") from None
        return start

    def full_modules(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """Whole modules for the export (on rank 0 at least)."""
        return dict(modules)

    def close(self) -> None:
        pass


def train(
    config: TrainConfig,
    runtime: Runtime,
    state: TrainState,
    loss_fn: LossFn,
    resume: bool = False,
    on_log: Callable[[int, dict], None] | None = None,
    on_sample: Callable[[int], None] | None = None,
    stop_after: int | None = None,
    sharding: Any = None,  # Replicated (the default) or kumovideo.distributed.fsdp.FullySharded
    clock: WallClock | None = None,
) -> dict:
    """Run (or continue) training to `config.total_steps`; returns the last metrics.
    `stop_after` ends the run early after that many global steps (used by tests); `clock`
    adds checkpoints by wall time and ends the run, checkpointed, at its `stop_at`."""
    sharding = sharding or Replicated()
    clock = clock or WallClock()
    out = Path(config.output_dir)
    sharding.shard(state, runtime)
    state.names = [n for n, p in _named_params(state.modules)]
    params = [p for n, p in _named_params(state.modules)]
    groups = state.param_groups or [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    lr_scheduler = stage_lr_schedule(optimizer, config)
    ema = make_ema(params, config.ema_decay)
    state.optimizer, state.lr_scheduler, state.ema = optimizer, lr_scheduler, ema

    start = 0
    if runtime.is_main:
        remove_leftovers(out)  # temp folders of a save that was killed
    runtime.barrier()
    if resume:
        found = list_checkpoints(out)
        if found:
            start = _resume(sharding, found[-1], state)
            if hasattr(sharding, "check_resume"):  # FullySharded's data does not depend on the world size
                sharding.check_resume(found[-1], runtime)
            if runtime.is_main:
                print(f"resumed from {found[-1]} (step {start})")
        elif runtime.is_main:
            # Not an error: scripts pass --resume from a run's first start.
            print(f"kumo: no checkpoint found in {out}; training starts at step 0", file=sys.stderr)
    sharding.wrap(state, runtime)
    if runtime.is_main:
        record_run_config(out, config, resumed=start > 0)

    log = LossLog(out / "loss_log.csv", enabled=runtime.is_main, start=start)
    timer = Timer()
    metrics: dict = {}
    end = config.total_steps if stop_after is None else min(config.total_steps, stop_after)
    bar = progress(config.total_steps, start, runtime.is_main, desc=f"train {config.kind}")
    done = start
    try:
        for step in range(start, end):
            stage, _ = config.stage_at(step)
            loss, metrics = loss_fn(step)
            finite_or_raise(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = sharding.clip_grad_norm(params, config.grad_clip)
            optimizer.step()
            lr_scheduler.step()
            ema.step(params)

            done = step + 1
            metrics = {
                "step": done,
                "stage": stage.name,
                "loss": sharding.loss_value(loss),
                "grad_norm": float(grad_norm),
                **metrics,
            }
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", stage=stage.name)
            bar.update()
            out_of_time = clock.out_of_time()
            if done % config.log_every == 0 or done == end or out_of_time:
                metrics["it_per_s"] = (done - start) / max(timer.elapsed(), 1e-9)
                log.write(metrics)
                if on_log is not None:
                    on_log(done, metrics)
            timed = out_of_time or clock.checkpoint_due()
            if done % config.checkpoint_every == 0 or done == config.total_steps or timed:
                extra = {"kind": config.kind, "stage": stage.name, "loss": metrics["loss"]}
                sharding.save(out, done, state, extra, runtime)
                if runtime.is_main:
                    prune_checkpoints(out, config.keep_checkpoints)
                    clock.saved(done, out)
            if on_sample is not None and runtime.is_main and config.sample_every and done % config.sample_every == 0:
                on_sample(done)
            if done % config.checkpoint_every == 0:
                runtime.barrier()  # others wait while rank 0 writes
            if out_of_time:
                break
    finally:
        bar.close()
        log.close()
    if done == config.total_steps:
        ema.copy_to(params)  # the run's result is the EMA weights
    return metrics


RUN_CONFIG = "run_config.json"  # the settings the run's checkpoints were trained with


def record_run_config(out: Path, config: TrainConfig, resumed: bool) -> None:
    """Write the run's settings beside its checkpoints; on a resume, first say in one warning
    line which differ from those the checkpoints were trained with (a changed seed, learning
    rate or latent cache is allowed, e.g. to extend a run, but should not go unnoticed)."""
    import dataclasses
    import json
    import logging

    from kumovideo.utils.atomic import atomic_file

    settings = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # as the file reads back
    now = _flat(settings)
    path = out / RUN_CONFIG
    if resumed and path.is_file():
        try:
            before = _flat(json.loads(path.read_text()))
        except (OSError, ValueError):  # unreadable: nothing to compare with
            before = {}
        changed = [key for key in sorted(set(now) | set(before)) if before and now.get(key) != before.get(key)]
        if changed:
            shown = "; ".join(f"{key} {before.get(key)!r} -> {now.get(key)!r}" for key in changed[:6])
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            logging.getLogger(__name__).warning(
                "resuming %s with settings other than its checkpoints were trained with: %s%s", out, shown, more
            )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as f:
        json.dump(settings, f, indent=2)


def _flat(value, prefix: str = "") -> dict[str, Any]:
    """Nested settings as {"stages[0].lr": 1e-4, ...}."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{key}" if prefix else str(key), v) for key, v in value.items()]
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, v in items:
        flat.update(_flat(v, key))
    return flat


def _resume(sharding, path: Path, state: TrainState) -> int:
    """`sharding.load`, with a sharded checkpoint that does not fit the modules said in one line."""
    from kumovideo.distributed.fsdp import CheckpointMismatch

    try:
        return sharding.load(path, state)
    except CheckpointMismatch as exc:
        raise not_this_run(path, str(exc)) from None


def stage_lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Linear warm-up, then each stage's learning rate (relative to the run's), held, or
    cosine-decayed to the stage's `lr_end` over its steps (a pure function of the step, so
    a resumed run follows the same curve)."""

    def factor(step: int) -> float:
        stage, at = config.stage_at(step)
        lr = stage.lr or config.lr
        if stage.lr_end is not None:
            progress = at / max(1, stage.steps - 1)
            lr = stage.lr_end + 0.5 * (lr - stage.lr_end) * (1 + math.cos(math.pi * progress))
        return min(1.0, (step + 1) / max(1, config.warmup_steps)) * (lr / config.lr)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _named_params(modules: dict[str, torch.nn.Module]):
    for m, module in modules.items():
        for n, p in module.named_parameters():
            if p.requires_grad:
                yield f"{m}.{n}", p
