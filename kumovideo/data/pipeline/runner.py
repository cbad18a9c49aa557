"""Run one task per file: in this process, in local worker processes, or on Ray Data.

Every stage (`scan`, `cut`) is a plain function from one JSON-able item (a path, a clip
entry) to one JSON-able result, so the same function runs unchanged in all three modes:

* ``workers=1``: in this process, simplest to debug;
* ``workers=N``: a `multiprocessing` pool of N processes, results streamed back in
  completion order (``imap_unordered``), so the caller can write each one as it arrives;
* ``ray_address``: a Ray Data pipeline (``from_items`` -> ``map``), on the cluster at that
  address ("auto" for the one this machine belongs to, "local" to start one here).
  Results stream back through ``iter_rows`` and are written by the driver, so the manifest
  is still appended record by record.

A progress bar counts files and shows files/s.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm

from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.extras import missing_extra_message, require


def default_workers() -> int:
    """Local worker processes by default: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    # Each worker is one of N parallel processes: keep OpenCV and torch single-threaded so
    # N workers do not fight over N cores with N x threads each.
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# Modules the worker processes need, imported once by the fork server.
_PRELOAD = ["kumovideo.data.pipeline.scan", "kumovideo.data.pipeline.cut"]


def _mp_context():
    # Not plain fork: after OpenCV (or torch) has run its thread pool in this process, a
    # forked child inherits the pool's locks but not its threads and can hang. A fork
    # server is a fresh single-threaded process that imports the pipeline once and forks
    # each worker from that clean state, so workers still start in a fraction of a second.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


class _JsonTask:
    """Wrap `fn` for Ray Data rows: {"item": json} -> {"result": json}."""

    def __init__(self, fn: Callable[[Any], dict]):
        self.fn = fn

    def __call__(self, row: dict) -> dict:
        _init_worker()
        return {"result": json.dumps(self.fn(json.loads(row["item"])))}


# The addresses ray.init accepts: "auto", "local", "HOST:PORT", or "ray://HOST[:PORT]"
# (Ray Client).
_HOST = r"([\w.-]+|\[[0-9a-fA-F:]+\])"  # a name, an IPv4 address, or an [IPv6] address
_RAY_ADDRESS = re.compile(rf"auto|local|{_HOST}:\d+|ray://{_HOST}(:\d+)?")


def check_ray(address: str) -> None:
    """Refuse a malformed --ray address, or --ray without Ray Data, before any work starts."""
    if not _RAY_ADDRESS.fullmatch(address):
        raise KumoInputError(f"--ray {address!r} is not a Ray address; use auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        require("ray.data", "--ray")
    except ModuleNotFoundError:  # Ray without what Ray Data needs (pyarrow, ...): the extra has it
        raise KumoInputError(missing_extra_message("ray.data", "--ray")) from None


def _run_ray(fn: Callable[[Any], dict], items: list, address: str, workers: int) -> Iterator[dict]:
    check_ray(address)
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own bar reports progress
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address == "local":
            kwargs["num_cpus"] = workers
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise KumoInputError(
                f"cannot reach a Ray cluster at {address!r} ({exc}); start one "
                "with `ray start --head` or use --ray local"
            ) from exc
        started_here = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # our own bar counts files
        ds = ray.data.from_items([{"item": json.dumps(it)} for it in items], override_num_blocks=max(1, len(items)))
        ds = ds.map(_JsonTask(fn), num_cpus=1)
        for row in ds.iter_rows():
            yield json.loads(row["result"])
    finally:
        if started_here and address == "local":
            ray.shutdown()


def crash_result(item: Any, reason: str) -> dict:
    """The result for an item whose worker died: the item's entry (a clip) or path (a video)
    with the reason, the shape the stages give a failure."""
    base = dict(item) if isinstance(item, dict) else {"path": str(item)}
    return {**base, "status": "error", "error": reason}


CRASH_REASON = "the worker process died while working on it (killed for memory, or a crash in a native library)"


def run_tasks(
    fn: Callable[[Any], dict],
    items: Iterable,
    workers: int = 1,
    ray_address: str | None = None,
    desc: str = "",
    quiet: bool = False,
    on_crash: Callable[[Any, str], dict] = crash_result,
) -> Iterator[dict]:
    """Yield fn(item) for every item, in completion order, with a files/s progress bar; with
    workers, on_crash(item, reason) for an item whose worker process died."""
    items = list(items)
    bar = tqdm(
        total=len(items), unit="file", desc=desc, disable=quiet or not items, dynamic_ncols=True, file=sys.stderr
    )
    try:
        if ray_address:
            source = _run_ray(fn, items, ray_address, workers)
        elif workers <= 1 or len(items) <= 1:
            source = (fn(it) for it in items)
        else:
            source = _run_pool(fn, items, workers, on_crash)
        for result in source:
            bar.update(1)
            yield result
    finally:
        bar.close()


class _Marked:
    """Run `fn` on (number, item) with a marker file in `folder` while it runs: when a worker
    dies, the markers left name the items it may have been working on."""

    def __init__(self, fn: Callable[[Any], dict], folder: str):
        self.fn, self.folder = fn, folder

    def __call__(self, job: tuple[int, Any]) -> tuple[int, dict]:
        marker = os.path.join(self.folder, str(job[0]))
        open(marker, "w").close()
        result = self.fn(job[1])
        os.remove(marker)
        return job[0], result


def _run_pool(
    fn: Callable[[Any], dict], items: list, workers: int, on_crash: Callable[[Any, str], dict] = crash_result
) -> Iterator[dict]:
    """fn(item) in a pool of worker processes, in completion order. A worker that dies (the
    OOM killer, a segfault in FFmpeg or OpenCV) breaks the pool, and `multiprocessing.Pool`
    would wait for its result forever. Here the items it may have been running are run again
    one at a time, each alone in a new process, so the one that kills its process is reported
    (`on_crash`) and every other item still gets its result."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    todo = list(enumerate(items))
    with tempfile.TemporaryDirectory(prefix="kumo-tasks-") as folder:
        task = _Marked(fn, folder)

        def pool(size: int) -> ProcessPoolExecutor:
            return ProcessPoolExecutor(size, mp_context=_mp_context(), initializer=_init_worker)

        while todo:
            finished: set[int] = set()
            executor = pool(min(workers, len(todo)))
            try:
                for future in as_completed([executor.submit(task, job) for job in todo]):
                    number, result = future.result()
                    finished.add(number)
                    yield result
                return
            except BrokenProcessPool:
                # No marker: it died between items; every item left is run alone then.
                suspects = {int(name) for name in os.listdir(folder)} or {job[0] for job in todo}
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
            for number, item in todo:
                if number in suspects and number not in finished:
                    alone = pool(1)
                    try:
                        yield alone.submit(task, (number, item)).result()[1]
                    except BrokenProcessPool:
                        yield on_crash(item, CRASH_REASON)
                    finally:
                        alone.shutdown(wait=True)
            todo = [job for job in todo if job[0] not in finished and job[0] not in suspects]
