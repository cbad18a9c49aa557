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
"""

from __future__ import annotations

import io
import shutil
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
