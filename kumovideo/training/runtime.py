"""What every training run shares: process group set-up (torchrun / accelerate launch
set the environment), devices and precision, the exponential moving average, the loss
log, and the progress bar."""

from __future__ import annotations

import atexit
import contextlib
import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from kumovideo.utils.errors import KumoInputError


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun / accelerate launch set them, or one line
    saying what is wrong: a stray WORLD_SIZE in a plain shell would otherwise fail deep in
    init_process_group (MASTER_ADDR missing) or wait for peers that never come."""
    values = {}
    for key, default in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        text = os.environ.get(key, default)
        try:
            values[key] = int(text)
        except ValueError:
            raise KumoInputError(f"{key}={text!r} in the environment is not a whole number") from None
    world_size, rank, local_rank = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world_size < 1 or not 0 <= rank < world_size:
        raise KumoInputError(f"RANK={rank} and WORLD_SIZE={world_size} in the environment do not fit together")
    if world_size > 1 and not dist.is_initialized():  # env:// rendezvous reads these
        missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(key)]
        if missing:
            raise KumoInputError(
                f"WORLD_SIZE={world_size} is set but {' and '.join(missing)} not: start the processes with "
                "`torchrun --nproc-per-node N -m kumovideo.cli train ...` (or accelerate launch), "
                "or unset WORLD_SIZE for one process"
            )
    return rank, world_size, local_rank


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup_runtime(device: str | None = None) -> Runtime:
    """One process, or one of many under torchrun/accelerate (WORLD_SIZE > 1): DDP set-up."""
    rank, world_size, local_rank = _launch_env()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # `--device cuda`: this process's GPU
        device = torch.device("cuda", local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Destroyed before the interpreter shuts down: a gloo group left to finalization can
        # abort a rank that finished first (SIGABRT, "terminate called without an active
        # exception"; pytorch/pytorch#190489), and torchrun then kills the ranks still
        # writing the last checkpoint or the export.
        atexit.register(_destroy_process_group)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def autocast_context(runtime: Runtime, mixed_precision: str):
    """bf16 autocast on GPU ("auto" or "bf16"); plain fp32 on CPU unless "bf16" is forced."""
    use_bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and runtime.device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=torch.bfloat16)


def step_generator(seed: int, step: int, rank: int, stream: int = 0) -> torch.Generator:
    """A generator for one step's randomness, independent of everything before it."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) * 7 + stream)


def make_ema(parameters: list[torch.Tensor], decay: float):
    """diffusers' EMA (decay warms up as min(decay, (1 + n) / (10 + n)), so early steps
    don't freeze the random init)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=decay)


def ema_named_state(ema, names: list[str]) -> dict[str, torch.Tensor]:
    """The EMA weights by parameter name (safetensors-ready), plus its update count."""
    state = {name: p.detach().float().cpu().contiguous() for name, p in zip(names, ema.shadow_params)}
    state["__optimization_step__"] = torch.tensor(ema.optimization_step)
    return state


def load_ema_named_state(ema, names: list[str], state: dict[str, torch.Tensor]) -> None:
    ema.optimization_step = int(state["__optimization_step__"])
    for p, name in zip(ema.shadow_params, names):
        p.data.copy_(state[name])


class LossLog:
    """CSV loss log (step, stage, loss parts, it/s), appended and flushed per row, so a
    resumed run continues the same file. Rows after `start` (steps a killed run logged past
    its last checkpoint, which the resumed run redoes) are dropped first."""

    def __init__(self, path: Path, enabled: bool, start: int = 0):
        self.path = path
        self.enabled = enabled
        self._writer = None
        self._file = None
        if enabled and path.exists():
            self._drop_rows_after(start)

    def _drop_rows_after(self, start: int) -> None:
        from kumovideo.utils.atomic import atomic_file

        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        kept = [r for r in body if r and r[0].isdigit() and int(r[0]) <= start]
        if len(kept) == len(body):
            return
        with atomic_file(self.path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        if self._file is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True, smoothing=0.1)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def finite_or_raise(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise FloatingPointError(
            f"loss became {loss.item()} at step {step}; lower the learning rate or check the data"
        )
