"""Start N local worker processes with a gloo/NCCL process group, for tests and benchmarks.

Real runs use `torchrun` (see docs/distributed.md); this wraps
`torch.multiprocessing.spawn` with what torchrun would set: a free port from the OS,
RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT, `init_process_group`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, backend: str, threads: int, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=300))
    try:
        fn(rank, world_size, *args)
        # The rendezvous store lives in rank 0: it must not leave while another rank still
        # sets up groups through it (a rank that finished early would break the others' pipe).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_workers(
    fn: Callable, world_size: int, *args, backend: str = "gloo", threads: int = 1, start_method: str | None = None
) -> None:
    """Run `fn(rank, world_size, *args)` in `world_size` processes; `fn` must be a
    module-level function. Raises if any worker fails.

    start_method: 'spawn' (fresh interpreters, safest) or 'fork' (no re-import, much
    faster to start; fine for CPU/gloo work). Default: $KUMO_SPAWN_METHOD or 'spawn'."""
    start_method = start_method or os.environ.get("KUMO_SPAWN_METHOD", "spawn")
    mp.start_processes(
        _entry,
        args=(fn, world_size, free_port(), backend, threads, args),
        nprocs=world_size,
        join=True,
        start_method=start_method,
    )
