"""Process groups for parallel inference and training, on torch.distributed.

Processes are started by `torchrun` (one node or several, with a rendezvous); this module
reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
initialises the default process group (NCCL on CUDA, gloo on CPU) and lays the ranks out
on a `DeviceMesh` with two named dimensions:

    cfg      the classifier-free-guidance branch: rank 0 of it runs the negative
             (unconditional) prompt, rank 1 the positive one;
    ulysses  the Ulysses sequence-parallel group: the vision tokens are split between
             its ranks and the attention heads are exchanged by all-to-all.

`ulysses` is the inner (fastest-varying) dimension, so with torchrun's rank order its
ranks sit on the same node, where the all-to-all traffic is cheapest.

The `--parallel` spec is "ulysses=U,cfg=C" (either key optional, default 1); U * C must
equal the number of processes. Degrees are checked against the model before any work:
U must divide the number of attention heads and the number of vision tokens, C is 1 or
2 and 2 needs guidance on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import is_int

MESH_DIMS = ("cfg", "ulysses")


@dataclass(frozen=True)
class ParallelConfig:
    """Degrees of parallelism: `cfg` guidance branches x `ulysses` sequence shards."""

    cfg: int = 1
    ulysses: int = 1

    def __post_init__(self):
        for key in ("cfg", "ulysses"):
            value = getattr(self, key)
            if not is_int(value) or value < 1:
                raise KumoInputError(f"--parallel: {key}={value!r} must be a whole number of at least 1")
        if self.cfg > 2:
            raise KumoInputError(
                f"--parallel: cfg={self.cfg}, but guidance has two branches (negative and positive prompt); "
                "use cfg=1 or cfg=2"
            )

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses

    @property
    def is_parallel(self) -> bool:
        return self.world_size > 1

    def __str__(self) -> str:
        return f"ulysses={self.ulysses},cfg={self.cfg}"


def parse_parallel(spec: str | ParallelConfig | dict | None) -> ParallelConfig:
    """'ulysses=2,cfg=2' -> ParallelConfig(cfg=2, ulysses=2). None, '' or 'none' -> 1, 1."""
    if spec is None or isinstance(spec, ParallelConfig):
        return spec or ParallelConfig()
    if isinstance(spec, dict):
        items = dict(spec)
    elif not isinstance(spec, str):
        raise KumoInputError(f"parallel={spec!r}; pass a string such as 'ulysses=2,cfg=2', a dict or a ParallelConfig")
    else:
        text = spec.strip().lower()
        if text in ("", "none", "off"):
            return ParallelConfig()
        items = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in MESH_DIMS:
                raise KumoInputError(
                    f"--parallel {spec!r}: expected 'ulysses=U,cfg=C' (keys ulysses and cfg), got {part.strip()!r}"
                )
            if key in items:
                raise KumoInputError(f"--parallel {spec!r}: {key} is given twice")
            items[key] = value.strip()
    unknown = set(items) - set(MESH_DIMS)
    if unknown:
        raise KumoInputError(f"--parallel: unknown degree(s) {', '.join(sorted(unknown))}; use ulysses and cfg")
    degrees = {}
    for key, value in items.items():
        # int(2.5) would quietly read 2: only whole numbers, as ints or as text.
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise KumoInputError(f"--parallel: {key}={value!r} is not an integer")
        try:
            degrees[key] = int(value)
        except ValueError:
            raise KumoInputError(f"--parallel: {key}={value!r} is not an integer") from None
    return ParallelConfig(**degrees)  # which checks the degrees


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_world_size(config: ParallelConfig, world_size: int) -> None:
    if config.world_size != world_size:
        raise KumoInputError(
            f"--parallel {config} needs {config.world_size} process(es) (ulysses x cfg), but {world_size} were "
            f"started; launch with `torchrun --nproc-per-node {config.world_size} -m kumovideo.cli generate ...` "
            f"or change the degrees"
        )


def _ulysses_hint(num_heads: int, num_vision_tokens: int | None) -> str:
    n = math.gcd(num_heads, num_vision_tokens) if num_vision_tokens else num_heads
    return f"use ulysses in {{{', '.join(map(str, divisors(n)))}}}"


def check_heads(config: ParallelConfig, num_heads: int, num_vision_tokens: int | None = None) -> None:
    u = config.ulysses
    if num_heads % u:
        raise KumoInputError(
            f"--parallel ulysses={u} does not divide the model's {num_heads} attention heads "
            f"(Ulysses gives each rank whole heads); {_ulysses_hint(num_heads, num_vision_tokens)}"
        )


def check_tokens(config: ParallelConfig, num_heads: int, num_vision_tokens: int) -> None:
    u = config.ulysses
    if num_vision_tokens % u:
        raise KumoInputError(
            f"--parallel ulysses={u} does not divide the {num_vision_tokens} vision tokens of this clip size "
            f"(each rank holds an equal shard); {_ulysses_hint(num_heads, num_vision_tokens)}, "
            f"or change --frames/--height/--width"
        )


def check_guidance(config: ParallelConfig, guidance: bool) -> None:
    if config.cfg == 2 and not guidance:
        raise KumoInputError(
            "--parallel cfg=2 splits the guidance batch, but guidance is off (scale <= 1); use cfg=1 or a scale > 1"
        )


def validate_parallel(
    config: ParallelConfig,
    *,
    world_size: int,
    num_heads: int,
    num_vision_tokens: int,
    guidance: bool,
) -> None:
    """Refuse degrees that cannot work, with a one-line message saying what would."""
    check_world_size(config, world_size)
    check_guidance(config, guidance)
    check_heads(config, num_heads, num_vision_tokens)
    check_tokens(config, num_heads, num_vision_tokens)


# ------------------------------------------------------------------------- process groups


def torchrun_env() -> dict[str, int] | None:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; None when not launched by it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return {
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "local_rank": int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    }


def node_threads() -> int:
    """Intra-op threads of all ranks on this node, if each uses this process's count:
    LOCAL_WORLD_SIZE (set by torchrun; 1 when not launched by it) x torch's threads."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) * torch.get_num_threads()


def world_size_from_env() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    env = torchrun_env()
    return env["world_size"] if env else 1


# GNU OpenMP is not fork-safe: a forked child that raises torch's intra-op thread count
# after its parent ran parallel regions hangs in its first parallel op. Forked workers
# (run_workers(start_method="fork"), multiprocessing's default on Linux) therefore keep
# the thread count they were started with; torchrun starts fresh interpreters.
_forked_child = False


def _mark_forked_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked_child)


def is_forked_child() -> bool:
    """Whether this process was forked from one that had imported kumovideo.distributed."""
    return _forked_child


def default_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when CUDA is there, else cpu."""
    if torch.cuda.is_available():
        env = torchrun_env()
        return torch.device("cuda", env["local_rank"] if env else torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device: torch.device | None = None, backend: str | None = None, timeout_s: int = 1800) -> bool:
    """Initialise the default process group from torchrun's environment, if there is one
    and it is not initialised yet. Returns whether a process group is active."""
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    env = torchrun_env()
    if env is None or env["world_size"] == 1 and "MASTER_ADDR" not in os.environ:
        return False
    device = device or default_device()
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


@dataclass
class ParallelContext:
    """Where this process sits: its groups and its rank in each."""

    config: ParallelConfig
    mesh: Any = None  # DeviceMesh, or None in a single process
    device: torch.device = torch.device("cpu")

    @property
    def rank(self) -> int:
        return dist.get_rank() if self.mesh is not None else 0

    @property
    def world_size(self) -> int:
        return self.config.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def group(self, dim: str):
        return self.mesh.get_group(dim) if self.mesh is not None else None

    def local_rank(self, dim: str) -> int:
        return self.mesh.get_local_rank(dim) if self.mesh is not None else 0

    @property
    def cfg_group(self):
        return self.group("cfg")

    @property
    def ulysses_group(self):
        return self.group("ulysses")

    @property
    def cfg_rank(self) -> int:
        return self.local_rank("cfg")

    @property
    def ulysses_rank(self) -> int:
        return self.local_rank("ulysses")


def build_mesh(config: ParallelConfig, device: torch.device | None = None) -> ParallelContext:
    """A ParallelContext with a ('cfg', 'ulysses') DeviceMesh over all processes.

    In a single process with degrees 1, 1 no process group is needed and none is made."""
    device = device or default_device()
    if not config.is_parallel and not (dist.is_available() and dist.is_initialized()):
        return ParallelContext(config, None, device)
    if not dist.is_initialized():
        init_distributed(device)
    if not dist.is_initialized():
        raise KumoInputError(
            f"--parallel {config} needs {config.world_size} processes; start them with "
            f"`torchrun --nproc-per-node {config.world_size} -m kumovideo.cli generate ...`"
        )
    world = dist.get_world_size()
    if world != config.world_size:
        raise KumoInputError(
            f"--parallel {config} needs {config.world_size} process(es) (ulysses x cfg), but {world} were started"
        )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (config.cfg, config.ulysses), mesh_dim_names=MESH_DIMS)
    return ParallelContext(config, mesh, device)
