"""A reusable part runner for one-shot device checks (`scripts/gpu/check.sh`).

A *part* is one command run in its own subprocess (its own process session), with its own
time budget: when the budget runs out the whole process group is killed, so a crash or a
hang in one part never loses the results of the others. Every part reports JSON, either
on stdout (`result="stdout"`, e.g. `kumo bench --json`) or in the file named by the
environment variable KIT_PART_JSON (`result="file"`, which a part may rewrite as it goes,
so that a part killed at its budget still leaves what it measured). After every part the
merged results are rewritten to `<out>/results.json`; every part's stdout and stderr are
appended to `<out>/log.txt`. The device tool brings back at most 8 files, 2 folders deep:
the runner writes only those two files (the caller adds a table).

Used by `scripts/gpu/kit.py`; the training kit of the built-in model can pass its own list
of parts to `run_parts` and share the scaffolding (wheels, budgets, `$OUT` layout).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KILL_GRACE_S = 5.0
MIN_PART_S = 10.0  # a part is not started with less than this left of the total budget


@dataclass
class Part:
    """One command with its own time budget.

    argv: the command; `shown` is how the results and the table show it (default: argv
    joined). `skip`: a reason known in advance (a CUDA-only part in a dry run, a missing
    package). `when`: called with the results so far just before the part would start;
    a returned string skips the part with that reason. `collect`: turns (stdout, the
    part's JSON file, the part's work folder) into the part's result for parts that
    report some other way (pytest's junit XML)."""

    name: str
    argv: list[str]
    budget_s: float
    result: str = "file"  # "file" | "stdout" | "none"
    shown: str | None = None
    skip: str | None = None
    when: Callable[[dict], str | None] | None = None
    collect: Callable[[str, Path, Path], Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    what: str = ""

    @property
    def command(self) -> str:
        return self.shown or shlex.join(self.argv)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_json(path: Path, data: Any) -> None:
    """Atomic rewrite: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"unparsed": text[-2000:]}


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def select_parts(parts: list[Part], only: str | None, skip: str | None, error: Callable[[str], Any]) -> None:
    """--only / --skip (comma-separated part names): the parts left out are recorded as
    skipped, not dropped; an unknown name goes to `error` (argparse's, one line, exit 2)."""
    names = [part.name for part in parts]
    for flag in (only, skip):
        unknown = set((flag or "").split(",")) - set(names) - {""}
        if unknown:
            error(f"unknown part(s) {', '.join(sorted(unknown))}; parts: {', '.join(names)}")
    for part in parts:
        if only and part.name not in only.split(","):
            part.skip = part.skip or "not asked for (--only)"
        if skip and part.name in skip.split(","):
            part.skip = "asked to skip (--skip)"


def run_part(part: Part, work: Path, budget_s: float, log) -> dict:
    """Run one part within `budget_s`; returns its entry for results.json."""
    work.mkdir(parents=True, exist_ok=True)
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    env = {**os.environ, **part.env, "KIT_PART_JSON": str(result_file), "KIT_PART_WORK": str(work)}
    entry: dict[str, Any] = {
        "what": part.what,
        "command": part.command,
        "argv": part.argv,
        "budget_s": round(budget_s, 1),
        "started": _now(),
    }
    log.write(f"\n===== part {part.name}: {part.command}  (budget {budget_s:.0f} s, {_now()})\n")
    log.flush()
    start = time.perf_counter()
    proc = subprocess.Popen(
        part.argv,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        start_new_session=True,  # its own process group: a timeout kills its children too
        text=True,
    )
    try:
        stdout, _ = proc.communicate(timeout=budget_s)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, _ = proc.communicate()
        status = "timeout"
    wall = time.perf_counter() - start
    entry.update(status=status, rc=proc.returncode, wall_s=round(wall, 2))
    stdout = stdout or ""
    if stdout:
        log.write(f"----- stdout of {part.name}\n{stdout}\n")
    log.write(f"----- part {part.name}: {status} (rc {proc.returncode}) in {wall:.1f} s\n")
    log.flush()
    result: Any = None
    if part.collect is not None:
        try:
            result = part.collect(stdout, result_file, work)
        except Exception as e:  # a broken report must not lose the other parts
            result = {"collect_error": repr(e)}
    elif part.result == "stdout":
        try:
            result = json.loads(stdout) if stdout.strip() else None
        except json.JSONDecodeError:
            result = {"unparsed_stdout": stdout[-2000:]}
    elif part.result == "file":
        result = _read_json(result_file)
    if result is not None:
        entry["result"] = result
    if isinstance(result, dict) and result.get("skipped") and status == "ok":
        entry["status"] = "skipped"
        entry["reason"] = result["skipped"]
    if status == "timeout":
        entry["reason"] = f"killed at its budget of {budget_s:.0f} s (partial result kept if any)"
    elif status == "failed":
        entry["reason"] = f"exit status {proc.returncode}; see log.txt"
    return entry


def run_parts(
    parts: list[Part],
    out: Path,
    total_budget_s: float,
    header: dict | None = None,
    work_root: Path | None = None,
    on_update: Callable[[dict], None] | None = None,
) -> dict:
    """Run `parts` in order within `total_budget_s`; returns (and keeps rewriting) results.json."""
    out.mkdir(parents=True, exist_ok=True)
    work_root = work_root or Path(os.environ.get("TMPDIR", "/tmp")) / f"kit-work-{os.getpid()}"
    results: dict[str, Any] = {**(header or {}), "started": _now(), "total_budget_s": total_budget_s, "parts": {}}
    deadline = time.perf_counter() + total_budget_s
    results_path = out / "results.json"
    with open(out / "log.txt", "a") as log:
        for part in parts:
            left = deadline - time.perf_counter()
            reason = part.skip
            if reason is None and part.when is not None:
                reason = part.when(results)
            if reason is None and left < MIN_PART_S:
                reason = f"out of time: {left:.0f} s left of the kit's {total_budget_s:.0f} s"
            if reason is not None:
                results["parts"][part.name] = {"what": part.what, "command": part.command, "status": "skipped"}
                results["parts"][part.name]["reason"] = reason
                log.write(f"\n===== part {part.name}: skipped ({reason})\n")
            else:
                budget = min(part.budget_s, left)
                results["parts"][part.name] = run_part(part, work_root / part.name, budget, log)
            results["finished"] = _now()
            if on_update is not None:
                on_update(results)
            write_json(results_path, results)
    return results
