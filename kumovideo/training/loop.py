"""The training loop every KumoVideo trainer runs (VAE, DiT, Turbo): optimizer, LR
warm-up, gradient clipping, EMA, DDP, progress bar, loss log, atomic checkpoints every N
steps and exact resume. A trainer supplies only `loss_fn(step) -> (loss, metrics)`.

How the modules are spread over processes is a strategy passed as `train(sharding=...)`:
`Replicated` (the default: whole modules on every rank, DDP when world_size > 1, rank 0
writes safetensors checkpoints) or `FullySharded` (`kumo train dit --fsdp`: FSDP2 for the
transformer, optionally with Ulysses sequence parallelism, DDP for the other trained
modules, sharded DCP checkpoints that resume on any world size)."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from kumovideo.training.checkpointing import (
    is_sharded_checkpoint,
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


class Replicated:
    """Every process holds whole modules; DDP when world_size > 1; rank 0 writes
    safetensors checkpoints (`checkpointing.py`)."""

    ulysses_group = None

    def data_shard(self, runtime: Runtime) -> DataShard:
        return DataShard(runtime.rank, runtime.world_size)

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

    def save(
        self,
        out: Path,
        step: int,
        state: TrainState,
        ema,
        names,
        optimizer,
        lr_scheduler,
        extra: dict,
        keep: int,
        runtime: Runtime,
    ) -> None:
        if runtime.is_main:
            save_checkpoint(
                out, step, state.modules, ema_named_state(ema, names), optimizer, lr_scheduler, extra=extra, keep=keep
            )

    def load(self, path: Path, state: TrainState, ema, names, optimizer, lr_scheduler) -> int:
        start, ema_state, _ = load_checkpoint(path, state.modules, optimizer, lr_scheduler)
        if ema_state is not None:
            try:
                load_ema_named_state(ema, names, ema_state)
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
    sharding: Replicated | None = None,
) -> dict:
    """Run (or continue) training to `config.total_steps`; returns the last metrics.
    `stop_after` ends the run early after that many global steps (used by tests)."""
    sharding = sharding or Replicated()
    out = Path(config.output_dir)
    sharding.shard(state, runtime)
    names = [n for n, p in _named_params(state.modules)]
    params = [p for n, p in _named_params(state.modules)]
    groups = state.param_groups or [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    lr_scheduler = stage_lr_schedule(optimizer, config)
    ema = make_ema(params, config.ema_decay)

    start = 0
    if runtime.is_main:
        remove_leftovers(out)  # temp folders of a save that was killed
    runtime.barrier()
    if resume:
        found = list_checkpoints(out)
        if found:
            start = sharding.load(found[-1], state, ema, names, optimizer, lr_scheduler)
            if runtime.is_main:
                print(f"resumed from {found[-1]} (step {start})")
        elif runtime.is_main:
            # Not an error: scripts pass --resume from a run's first start.
            print(f"kumo: no checkpoint found in {out}; training starts at step 0", file=sys.stderr)
    sharding.wrap(state, runtime)

    log = LossLog(out / "loss_log.csv", enabled=runtime.is_main, start=start)
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
            if done % config.log_every == 0 or done == end:
                metrics["it_per_s"] = (done - start) / max(timer.elapsed(), 1e-9)
                log.write(metrics)
                if on_log is not None:
                    on_log(done, metrics)
            if done % config.checkpoint_every == 0 or done == config.total_steps:
                sharding.save(
                    out,
                    done,
                    state,
                    ema,
                    names,
                    optimizer,
                    lr_scheduler,
                    {"kind": config.kind, "stage": stage.name, "loss": metrics["loss"]},
                    config.keep_checkpoints,
                    runtime,
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


# ------------------------------------------------------------------------- FSDP


def fsdp_mixed_precision(setting: str, device: torch.device) -> str | None:
    """The config's `mixed_precision` as an FSDP policy name: "bf16", or None (fp32)."""
    return "bf16" if setting == "bf16" or (setting == "auto" and device.type == "cuda") else None


class FullySharded(Replicated):
    """FSDP2 for the modules named in `sharded` (`kumo train dit --fsdp`), via
    `kumovideo.distributed.fsdp`:

    * `shard`: Ulysses attention installed (degree > 1), then `shard_model` (fully_shard
      per MADiT block and the root, mixed precision from the config) before the optimizer
      is built; the param groups are remapped to the sharded parameters.
    * the other trained modules (the text encoder) stay whole, under DDP over all ranks.
      With Ulysses, the ranks of a group see the same batch and compute the same loss on
      the gathered output; averaging over all ranks is still the exact gradient, for the
      FSDP and the DDP modules alike.
    * data: `DataShard(dp_rank, dp_size, shared_rng=True)`: a stage's `batch_size` is the
      global batch, split over the data-parallel ranks, and N ranks train on exactly the
      batches one process trains on with the same config.
    * gradient clipping on the global norm (sharded parts summed over ranks).
    * EMA: diffusers' EMAModel over the sharded parameters (its shadows are DTensors with
      the parameters' layout: each rank averages its own shard).
    * checkpoints: `save_sharded` (DCP) of the modules, the optimizer and the EMA shadows
      (as buffers of one container module), with the step, LR schedule and EMA update count
      as extras, into `checkpoints/step-NNNNNNN/`, renamed into place when complete;
      `load_sharded` reshards them to the world size (and Ulysses degree) resuming.
    * `full_modules`: the whole weights gathered to rank 0 in a plain module, for the export.

    World size 1 (no torchrun) runs the same code on a process group of one.
    """

    def __init__(
        self,
        runtime: Runtime,
        sharded: tuple[str, ...] = ("transformer",),
        ulysses: int = 1,
        mixed_precision: str = "auto",
    ):
        import torch.distributed as dist

        from kumovideo.distributed.fsdp import training_mesh

        self._own_group = False
        if not dist.is_initialized():
            backend = "nccl" if runtime.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
            self._own_group = True
        world = dist.get_world_size()
        if ulysses < 1 or world % ulysses:
            self.close()
            raise KumoInputError(f"--ulysses {ulysses} must divide the number of processes ({world})")
        self.mesh = training_mesh(ulysses, device_type=runtime.device.type)
        self.ulysses_group = self.mesh.ulysses_group
        self.sharded = tuple(sharded)
        self.mixed_precision = fsdp_mixed_precision(mixed_precision, runtime.device)
        self._classes: dict[str, type] = {}
        # MADiT's output is a view (unpatchify); the loss reads it out of place, which is safe.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

    def data_shard(self, runtime: Runtime) -> DataShard:
        return DataShard(self.mesh.dp_rank, self.mesh.dp_size, shared_rng=True)

    def shard(self, state: TrainState, runtime: Runtime) -> None:
        from kumovideo.distributed.fsdp import shard_model
        from kumovideo.distributed.ulysses import enable_ulysses

        name_of = {id(p): (m, n) for m, module in state.modules.items() for n, p in module.named_parameters()}
        for name in self.sharded:
            module = state.modules[name]
            heads = module.config.num_attention_heads
            if heads % self.mesh.ulysses:
                raise KumoInputError(f"--ulysses {self.mesh.ulysses} must divide the {heads} attention heads")
            self._classes[name] = type(module)
            enable_ulysses(module, self.ulysses_group)  # for good: gradient checkpointing recomputes blocks
            shard_model(module, self.mesh.fsdp_mesh, mixed_precision=self.mixed_precision)
        if state.param_groups:  # fully_shard replaced the parameters (by DTensors)
            now = {(m, n): p for m, module in state.modules.items() for n, p in module.named_parameters()}
            state.param_groups = [
                {**g, "params": [now[name_of[id(p)]] for p in g["params"]]} for g in state.param_groups
            ]
        state.wrapped = dict(state.modules)

    def wrap(self, state: TrainState, runtime: Runtime) -> None:
        if self.mesh.world_size == 1:
            return
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        for name, m in state.modules.items():
            if name not in self.sharded and any(p.requires_grad for p in m.parameters()):
                state.wrapped[name] = DistributedDataParallel(m, device_ids=ids)

    def loss_value(self, loss: torch.Tensor) -> float:
        """The step's loss over the global batch (the mean over ranks), as one process logs it."""
        import torch.distributed as dist

        total = loss.detach().float().clone()
        dist.all_reduce(total)
        return total.item() / self.mesh.world_size

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
        device = local[0].device if local else torch.device("cpu")
        sharded = torch.zeros((), device=device)
        whole = torch.zeros((), device=device)  # replicated (DDP-averaged, equal on every rank)
        for g, t in zip(grads, local):
            if isinstance(g, DTensor):
                sharded += t.float().pow(2).sum()
            else:
                whole += t.float().pow(2).sum()
        dist.all_reduce(sharded, group=self.mesh.fsdp_mesh.get_group())
        total = (sharded + whole).sqrt()
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)  # as torch.nn.utils.clip_grad_norm_
        with torch.no_grad():
            for t in local:
                t.mul_(coef.to(t.dtype))
        return total

    @staticmethod
    def _container(state: TrainState, ema, names: list[str]) -> torch.nn.Module:
        """One module holding every trained module and the EMA shadows (as buffers), so
        that one DCP state dict (and the optimizer's, keyed by these names) covers all."""
        box = torch.nn.ModuleDict(state.modules)
        shadows = torch.nn.Module()
        for name, shadow in zip(names, ema.shadow_params):
            shadows.register_buffer(name.replace(".", "/"), shadow)
        box["ema"] = shadows
        return box

    def save(
        self,
        out: Path,
        step: int,
        state: TrainState,
        ema,
        names,
        optimizer,
        lr_scheduler,
        extra: dict,
        keep: int,
        runtime: Runtime,
    ) -> None:
        from kumovideo.distributed.fsdp import save_sharded

        save_sharded(
            {
                "model": self._container(state, ema, names),
                "optimizer": optimizer,
                "step": step,
                "lr_scheduler": lr_scheduler.state_dict(),
                "ema_updates": ema.optimization_step,
                **extra,
            },
            Path(out) / "checkpoints" / f"step-{step:07d}",
        )
        if runtime.is_main:
            prune_checkpoints(out, keep)

    def load(self, path: Path, state: TrainState, ema, names, optimizer, lr_scheduler) -> int:
        from kumovideo.distributed.fsdp import load_sharded

        if not is_sharded_checkpoint(path):
            raise KumoInputError(f"{path} was written without --fsdp; resume it without --fsdp")
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            loaded = load_sharded({"model": self._container(state, ema, names), "optimizer": optimizer}, path)
        except (CheckpointException, RuntimeError, KeyError, ValueError) as exc:
            # DCP wraps one exception per rank, each with its traceback: say the first one's first line.
            failures = getattr(exc, "failures", None)
            cause = next(iter(failures.values()))[0] if failures else exc
            first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
            raise not_this_run(path, first[:200]) from None
        lr_scheduler.load_state_dict(loaded["lr_scheduler"])
        ema.optimization_step = int(loaded["ema_updates"])
        return int(loaded["step"])

    def full_modules(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """Collective. On rank 0 the sharded modules come back whole (plain modules of their
        original class); on the other ranks as None."""
        import torch.distributed as dist

        from kumovideo.distributed.fsdp import full_state_dict

        out = dict(modules)
        for name in self.sharded:
            weights = full_state_dict(modules[name])
            out[name] = None
            if dist.get_rank() == 0:
                out[name] = self._classes[name].from_config(modules[name].config)
                out[name].load_state_dict(weights)
        return out

    def close(self) -> None:
        import torch.distributed as dist

        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()
            self._own_group = False
