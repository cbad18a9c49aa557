"""FSDP2 training for MADiT and sharded checkpoints that resume on any world size.

    from kumovideo.distributed.fsdp import training_mesh, shard_model, save_sharded, load_sharded

    tm = training_mesh(ulysses=1)                    # after init_process_group (torchrun)
    model = shard_model(model, tm.fsdp_mesh, mixed_precision="bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)   # after sharding
    step = load_sharded({"model": model, "optimizer": optimizer, "step": 0}, ckpt)["step"]
    ...
    save_sharded({"model": model, "optimizer": optimizer, "step": step}, ckpt)

* `shard_model` applies `fully_shard` to every MADiTBlock and then to the root (the patch
  embedding, timestep MLP and output head stay in the root unit), with a
  `MixedPrecisionPolicy` (parameters gathered in bf16/fp16, gradients reduced in fp32;
  the sharded master weights and the optimizer stay fp32). `embed` and `head` are
  registered as FSDP forward methods, so the sequence-parallel forward (which calls
  embed / run_blocks / head instead of forward) gathers the root parameters too.
* Data layout (`TrainingMesh`): FSDP shards over all ranks; with Ulysses degree U the
  ranks r with the same r // U form a sequence-parallel group and must see the same
  batch (`dp_rank`, `dp_size` index the data). Call
  `kumovideo.distributed.ulysses.sequence_parallel_forward(model, x, text, t, tm.ulysses_group)`
  instead of `model(...)` and compute the loss on its (gathered) output as usual: FSDP's
  average over all ranks then gives exactly the single-process gradient.
* `save_sharded` / `load_sharded` use torch.distributed.checkpoint: every rank writes its
  own shards (plus a small metadata file); loading reshards to whatever world size (and
  FSDP or plain model) is loading, including a single process without a process group.
  Other entries of the state dict (step, RNG states, data position, ...) are saved
  alongside and returned by `load_sharded`. The folder is written beside the target and
  renamed into place, so an interrupted save leaves the previous checkpoint intact
  (several nodes need a shared filesystem for the folder).
* `FullySharded` is `kumo train dit --fsdp`'s strategy for the training loop
  (`kumovideo.training.loop.train(sharding=...)`), built on the above.
"""

from __future__ import annotations

import io
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from kumovideo.utils.errors import KumoInputError

MIXED_PRECISION = {
    None: None,
    "fp32": None,
    "bf16": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
    "fp16": MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32),
}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass
class TrainingMesh:
    """FSDP mesh over all ranks plus the Ulysses group (None when U = 1)."""

    fsdp_mesh: Any
    ulysses_group: Any
    ulysses: int
    rank: int
    world_size: int

    @property
    def dp_rank(self) -> int:
        """Index of this rank's data shard: ranks in one Ulysses group share it."""
        return self.rank // self.ulysses

    @property
    def dp_size(self) -> int:
        return self.world_size // self.ulysses


def training_mesh(ulysses: int = 1, device_type: str | None = None) -> TrainingMesh:
    """Meshes for FSDP (+ optional Ulysses) training; the process group must be initialised."""
    from torch.distributed.device_mesh import init_device_mesh

    if not _distributed():
        raise RuntimeError("training_mesh needs an initialised process group (launch with torchrun)")
    world, rank = dist.get_world_size(), dist.get_rank()
    if ulysses < 1 or world % ulysses:
        raise ValueError(f"ulysses={ulysses} must divide the world size {world}")
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    fsdp_mesh = init_device_mesh(device_type, (world,), mesh_dim_names=("fsdp",))
    group = None
    if ulysses > 1:
        sp_mesh = init_device_mesh(device_type, (world // ulysses, ulysses), mesh_dim_names=("dp", "ulysses"))
        group = sp_mesh.get_group("ulysses")
    return TrainingMesh(fsdp_mesh, group, ulysses, rank, world)


def shard_model(
    model: nn.Module,
    mesh: Any = None,
    mixed_precision: str | MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """FSDP2: `fully_shard` each MADiT block, then the root. Returns the model (sharded in
    place; its parameters become DTensors). Build the optimizer afterwards."""
    if isinstance(mixed_precision, MixedPrecisionPolicy):
        policy = mixed_precision
    elif mixed_precision in MIXED_PRECISION:
        policy = MIXED_PRECISION[mixed_precision]
    else:
        raise ValueError(
            f"mixed_precision={mixed_precision!r}; use None, 'fp32', 'bf16', 'fp16' or a MixedPrecisionPolicy"
        )
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if policy is not None:
        kwargs["mp_policy"] = policy
    for block in model.transformer_blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    for name in ("embed", "head"):
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)
    return model


# ------------------------------------------------------------------------- checkpoints


def _split(state: dict[str, Any]):
    model = state.get("model")
    optimizer = state.get("optimizer")
    if not isinstance(model, nn.Module):
        raise TypeError("state['model'] must be the (sharded or plain) model")
    extras = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    return model, optimizer, extras


def _state_dicts(model, optimizer):
    if optimizer is None:
        return get_model_state_dict(model), None
    return get_state_dict(model, optimizer)


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _is_main() -> bool:
    return not _distributed() or dist.get_rank() == 0


def save_sharded(state: dict[str, Any], directory: str | Path) -> Path:
    """Write {"model": model, "optimizer": optimizer (optional), **extras} with DCP.

    Collective: every rank calls it with its own shards. Extras are saved once (tensors
    and plain Python values; read back with torch.load(weights_only=True))."""
    directory = Path(directory)
    model, optimizer, extras = _split(state)
    model_sd, optim_sd = _state_dicts(model, optimizer)
    blob = io.BytesIO()
    torch.save(extras, blob)
    payload: dict[str, Any] = {"model": model_sd, "extra": blob.getvalue()}
    if optim_sd is not None:
        payload["optimizer"] = optim_sd
    tmp = directory.with_name(f".{directory.name}.tmp")
    if _is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    _barrier()
    dcp.save(payload, checkpoint_id=str(tmp))
    _barrier()
    if _is_main():
        old = directory.with_name(f".{directory.name}.old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return directory


def load_sharded(state: dict[str, Any], directory: str | Path) -> dict[str, Any]:
    """Load a `save_sharded` checkpoint into state["model"] / state["optimizer"], whatever
    the world size now. Returns `state` with the extras replaced by the saved ones."""
    directory = Path(directory)
    if not (directory / ".metadata").exists():
        raise FileNotFoundError(f"no sharded checkpoint at {directory} (missing .metadata)")
    model, optimizer, _ = _split(state)
    model_sd, optim_sd = _state_dicts(model, optimizer)
    payload: dict[str, Any] = {"model": model_sd, "extra": b""}
    if optim_sd is not None:
        payload["optimizer"] = optim_sd
    dcp.load(payload, checkpoint_id=str(directory))
    if optimizer is None:
        set_model_state_dict(model, payload["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=payload["model"], optim_state_dict=payload["optimizer"])
    extras = torch.load(io.BytesIO(payload["extra"]), weights_only=True)
    state.update(extras)
    return state


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (for `save_pretrained`). Collective: every rank
    calls it; with a process group only rank 0 gets the weights (the others get {})."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# ------------------------------------------------------------------------- the training strategy


class CheckpointMismatch(Exception):
    """A sharded checkpoint whose tensors do not fit the modules (the first failure's first
    line); the training loop says it as its one-line "different model or config" error."""


def fsdp_mixed_precision(setting: str, device: torch.device) -> str | None:
    """A training config's `mixed_precision` as an FSDP policy name: "bf16", or None (fp32)."""
    return "bf16" if setting == "bf16" or (setting == "auto" and device.type == "cuda") else None


class FullySharded:
    """The training loop's strategy (`kumovideo.training.loop.train(sharding=...)`, the
    methods of `loop.Replicated`) for FSDP2 of the modules named in `sharded`
    (`kumo train dit --fsdp`). `state` is the loop's TrainState, `runtime` its Runtime
    (only `.device` is read); distributed does not import training, so both are used by
    their attributes here.

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
        device: torch.device,
        sharded: tuple[str, ...] = ("transformer",),
        ulysses: int = 1,
        mixed_precision: str = "auto",
    ):
        self._own_group = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
            self._own_group = True
        world = dist.get_world_size()
        if ulysses < 1 or world % ulysses:
            self.close()
            raise KumoInputError(f"--ulysses {ulysses} must divide the number of processes ({world})")
        self.mesh = training_mesh(ulysses, device_type=device.type)
        self.ulysses_group = self.mesh.ulysses_group
        self.sharded = tuple(sharded)
        self.mixed_precision = fsdp_mixed_precision(mixed_precision, device)
        self._classes: dict[str, type] = {}
        # MADiT's output is a view (unpatchify); the loss reads it out of place, which is safe.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

    def data_split(self, runtime) -> tuple[int, int, bool]:
        """This process's `DataShard(rank, size, shared_rng)`: a slice of one global batch."""
        return self.mesh.dp_rank, self.mesh.dp_size, True

    def shard(self, state, runtime) -> None:
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

    def wrap(self, state, runtime) -> None:
        """The trained modules FSDP does not shard under DDP (after a resume has loaded the weights)."""
        if self.mesh.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        for name, m in state.modules.items():
            if name not in self.sharded and any(p.requires_grad for p in m.parameters()):
                state.wrapped[name] = DistributedDataParallel(m, device_ids=ids)

    def loss_value(self, loss: torch.Tensor) -> float:
        """The step's loss over the global batch (the mean over ranks), as one process logs it."""
        total = loss.detach().float().clone()
        dist.all_reduce(total)
        return total.item() / self.mesh.world_size

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
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
    def _container(state) -> nn.Module:
        """One module holding every trained module and the EMA shadows (as buffers), so
        that one DCP state dict (and the optimizer's, keyed by these names) covers all."""
        box = nn.ModuleDict(state.modules)
        shadows = nn.Module()
        for name, shadow in zip(state.names, state.ema.shadow_params):
            shadows.register_buffer(name.replace(".", "/"), shadow)
        box["ema"] = shadows
        return box

    def save(self, out: Path, step: int, state, extra: dict, runtime) -> None:
        """Collective: checkpoint `step` into `out/checkpoints/` (the loop prunes old ones)."""
        save_sharded(
            {
                "model": self._container(state),
                "optimizer": state.optimizer,
                "step": step,
                "lr_scheduler": state.lr_scheduler.state_dict(),
                "ema_updates": state.ema.optimization_step,
                **extra,
            },
            Path(out) / "checkpoints" / f"step-{step:07d}",
        )

    def load(self, path: Path, state) -> int:
        """The step checkpoint `path` was written at, its shards loaded into `state`."""
        from torch.distributed.checkpoint.api import CheckpointException

        if (Path(path) / "state.json").exists():  # a safetensors checkpoint (`checkpointing.save_checkpoint`)
            raise KumoInputError(f"{path} was written without --fsdp; resume it without --fsdp")
        try:
            loaded = load_sharded({"model": self._container(state), "optimizer": state.optimizer}, path)
        except (CheckpointException, RuntimeError, KeyError, ValueError) as exc:
            # DCP wraps one exception per rank, each with its traceback: say the first one's first line.
            failures = getattr(exc, "failures", None)
            cause = next(iter(failures.values()))[0] if failures else exc
            first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
            raise CheckpointMismatch(first[:200]) from None
        state.lr_scheduler.load_state_dict(loaded["lr_scheduler"])
        state.ema.optimization_step = int(loaded["ema_updates"])
        return int(loaded["step"])

    def full_modules(self, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """Collective. On rank 0 the sharded modules come back whole (plain modules of their
        original class); on the other ranks as None."""
        out = dict(modules)
        for name in self.sharded:
            weights = full_state_dict(modules[name])
            out[name] = None
            if dist.get_rank() == 0:
                out[name] = self._classes[name].from_config(modules[name].config)
                out[name].load_state_dict(weights)
        return out

    def close(self) -> None:
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()
            self._own_group = False
