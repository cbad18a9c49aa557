"""The GPU kit's driver: every part of issue 17's check in one call (see docs/gpu.md).

    python scripts/gpu/kit.py [--dry-run] [--out DIR] [--only a,b] [--skip a,b] [--budget S]

Normally started by `scripts/gpu/check.sh`, which installs the carried wheels first.
Parts, in order (each its own subprocess and time budget, `scripts/gpu/runner.py`):

    env      machine, packages, matmul and copy ceilings              parts.py env
    tests    pytest tests/gpu -m gpu (correctness on CUDA)            pytest
    bench    kumo bench 2.6B bf16: eager, regional compile, peer      kumo bench --vs cogvideox
    fp8      kumo bench 2.6B FP8 (torchao) + compile                  kumo bench --fp8
    clips    50-step clip, 4-step Turbo clip, VAE decode, peak mem    parts.py clips
    offload  peak memory with model offload + VAE tiling              parts.py offload
    profile  top kernels, only when a target was missed               parts.py profile

Writes $OUT/results.json (every part's JSON, its exact command, status and time),
$OUT/log.txt and $OUT/table.txt, and prints the table last. --dry-run runs the same parts
on the CPU at toy sizes (CUDA-only parts are recorded as skipped, with the reason).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import Part, run_parts, select_parts, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KIT_VERSION = 1
DEFAULT_BUDGET_S = 500  # all parts; check.sh's wheel install and Python start come on top (< 30 s)

# Each part's budget on the H200 (a cap: the runner kills a part at it, and never gives a
# part more than what is left of the total). Expected times are in docs/gpu.md.
BUDGETS = {"env": 30, "tests": 150, "bench": 140, "fp8": 110, "clips": 110, "offload": 70, "profile": 60}
DRY_BUDGETS = {"env": 30, "tests": 60, "bench": 60, "fp8": 30, "clips": 60, "offload": 60, "profile": 60}

GB = 1e9

# (key, what, part, getter, "<=" or ">=", limit, unit)
TARGETS = [
    ("step_bf16", "guided step bf16, regional compile (s)", "bench", lambda r: _row(r, "fast", "step"), "<=", 0.45),
    ("mfu_bf16", "MFU of that step", "bench", lambda r: _row(r, "fast", "mfu"), ">=", 0.50),
    ("step_fp8", "guided step FP8 + compile (s)", "fp8", lambda r: _row(r, "fast", "step"), "<=", 0.30),
    ("vs_peer", "vs CogVideoX peer, FLOP-scaled", "bench", lambda r: _row(r, "fast", "peer"), ">=", 1.3),
    (
        "mem_offload",
        "peak mem, model offload + VAE tiling (GB)",
        "offload",
        lambda r: r["peak_memory_bytes"] / GB,
        "<=",
        10.0,
    ),
    ("clip50", "50-step clip end to end (s)", "clips", lambda r: r["clip"]["wall_s"], "<=", 30.0),
    ("turbo4", "4-step Turbo clip end to end (s)", "clips", lambda r: r["turbo_clip"]["median_s"], "<=", 4.0),
]

# Figures without a target, shown in the table too.
FIGURES = [
    ("step_eager", "guided step bf16, eager (s)", "bench", lambda r: _row(r, "eager", "step")),
    ("step_peer", "CogVideoX peer step, eager (s)", "bench", lambda r: _row(r, "cogvideox", "step")),
    ("compile_first", "first call with compile (s)", "bench", lambda r: _row(r, "fast", "first")),
    ("mem_plain", "peak mem, whole clip, no offload (GB)", "clips", lambda r: r["clip"]["peak_memory_bytes"] / GB),
    ("vae_decode", "VAE decode of the clip (s)", "clips", lambda r: r["vae_decode"]["median_s"]),
]


def _row(result: dict, name: str, what: str):
    row = next(r for r in result["rows"] if r["row"] == name)
    return {
        "step": lambda: row["step_s"]["median"],
        "mfu": lambda: row["mfu_bf16_peak"],
        "peer": lambda: row["speedup_vs_peer_flop_scaled"],
        "first": lambda: row["first_call_s"],
    }[what]()


def _value(results: dict, part: str, getter):
    entry = results.get("parts", {}).get(part, {})
    if "result" not in entry:
        return None
    try:
        value = getter(entry["result"])
    except (KeyError, StopIteration, TypeError, ZeroDivisionError):
        return None
    return float(value) if value is not None else None


def judge(results: dict) -> list[dict]:
    """Every target with its value and 'met', 'missed', 'not measured' or, in a dry run, 'dry run'."""
    out = []
    for key, what, part, getter, op, limit in TARGETS:
        value = _value(results, part, getter)
        if value is None:
            verdict = "not measured"
        elif results.get("dry_run"):
            verdict = "dry run (not judged)"
        else:
            verdict = "met" if (value <= limit if op == "<=" else value >= limit) else "missed"
        out.append(
            {"key": key, "what": what, "part": part, "value": value, "target": f"{op} {limit}", "verdict": verdict}
        )
    return out


def profile_when(results: dict) -> str | None:
    if results.get("dry_run"):
        return None  # rehearsed regardless
    missed = [t["key"] for t in judge(results) if t["verdict"] == "missed"]
    return None if missed else "no target missed: no profile needed"


# ------------------------------------------------------------------------------ parts


def collect_junit(stdout: str, result_file: Path, work: Path) -> dict:
    """pytest's junit XML -> {counts, tests: [{name, outcome, time_s, message, properties}]}."""
    path = work / "junit.xml"
    summary = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    if not path.exists():
        return {"error": "no junit.xml written", "summary": summary}
    tests, counts = [], {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or node.text or "")[:800]
                break
        counts[outcome] += 1
        entry = {
            "name": f"{case.get('classname', '')}::{case.get('name')}",
            "outcome": outcome,
            "time_s": float(case.get("time", 0) or 0),
        }
        if message:
            entry["message"] = message
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props:
            entry["properties"] = props
        tests.append(entry)
    return {"counts": counts, "summary": summary, "tests": tests}


def build_parts(dry_run: bool, work_root: Path) -> list[Part]:
    py = sys.executable
    budgets = DRY_BUDGETS if dry_run else BUDGETS
    flag = ["--dry-run"] if dry_run else []
    kumo = [py, "-m", "kumovideo.cli"]

    def shown(argv: list[str]) -> str:
        text = shlex.join(argv)
        return text.replace(shlex.join(kumo), "kumo").replace(py, "python3")

    if dry_run:
        size = ["--preset", "kumo-tiny", "--device", "cpu", "--threads", "1"]
        timing = ["--steps", "1", "--runs", "1", "--warmup", "1", "--no-e2e"]
        bench = [*kumo, "bench", *size, "--fast", "--vs", "cogvideox", *timing, "--json"]
        fp8 = [*kumo, "bench", *size, "--fast", "--fp8", "--no-baseline", *timing, "--json"]
    else:
        size = ["--preset", "kumo-2.6b", "--device", "cuda"]
        timing = ["--steps", "3", "--runs", "3", "--warmup", "2", "--no-e2e", "--max-time", "60"]
        bench = [*kumo, "bench", *size, "--fast", "--compile", "--vs", "cogvideox", *timing, "--json"]
        fp8 = [*kumo, "bench", *size, "--fast", "--compile", "--fp8", "--no-baseline", *timing, "--json"]
    fp8_skip = None
    if dry_run:
        fp8_skip = "CUDA only: FP8 needs a GPU of compute capability >= 8.9 (CPU dry run)"
    elif importlib.util.find_spec("torchao") is None:
        fp8_skip = "skipped: torchao missing (make gpu-wheels carries it in .whl)"
    tests = [
        py,
        "-m",
        "pytest",
        "-q",
        "tests/gpu",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        str(work_root / "tests" / "junit.xml"),
        "--timeout",
        "120",
    ]
    parts = [
        Part("env", [py, "scripts/gpu/parts.py", "env", *flag], budgets["env"], what="machine, packages, ceilings"),
        Part(
            "tests",
            tests,
            budgets["tests"],
            result="none",
            collect=collect_junit,
            shown="python3 -m pytest -q tests/gpu -m gpu --timeout 120",
            what="correctness on CUDA (tests/gpu)",
        ),
        Part(
            "bench",
            bench,
            budgets["bench"],
            result="stdout",
            shown=shown(bench),
            what="2.6B bf16 guided step: eager, regional compile, CogVideoX peer",
        ),
        Part("fp8", fp8, budgets["fp8"], result="stdout", shown=shown(fp8), skip=fp8_skip, what="FP8 step"),
        Part(
            "clips",
            [py, "scripts/gpu/parts.py", "clips", *flag],
            budgets["clips"],
            what="50-step clip, 4-step Turbo clip, VAE decode, peak memory",
        ),
        Part(
            "offload",
            [py, "scripts/gpu/parts.py", "offload", *flag],
            budgets["offload"],
            what="peak memory with model offload + VAE tiling",
        ),
        Part(
            "profile",
            [py, "scripts/gpu/parts.py", "profile", *flag],
            budgets["profile"],
            when=profile_when,
            what="torch.profiler top kernels when a target is missed",
        ),
    ]
    return parts


# ------------------------------------------------------------------------------ table


def _fmt(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


DRY_TITLE = "CPU DRY RUN (toy sizes: no figure below is a GPU measurement)"


def format_table(results: dict) -> str:
    dry = results.get("dry_run")
    lines = [
        f"GPU kit {DRY_TITLE if dry else 'on ' + str(results.get('gpu'))} - {results.get('started')}",
        f"{'part':<9}{'status':<10}{'wall s':>8}{'budget':>8}  note",
    ]
    for name, e in results["parts"].items():
        note = e.get("reason", "")
        if name == "tests" and isinstance(e.get("result"), dict) and "counts" in e["result"]:
            c = e["result"]["counts"]
            note = f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped " + note
        lines.append(
            f"{name:<9}{e['status']:<10}{_fmt(e.get('wall_s')):>8}{_fmt(e.get('budget_s')):>8}  {note}".rstrip()
        )
    lines.append("")
    lines.append(f"{'figure':<44}{'value':>10}  {'target':<9}verdict")
    for t in results.get("targets", []):
        lines.append(f"{t['what']:<44}{_fmt(t['value']):>10}  {t['target']:<9}{t['verdict']}")
    for _key, what, part, getter in FIGURES:
        lines.append(f"{what:<44}{_fmt(_value(results, part, getter)):>10}  {'':<9}-")
    failed = []
    tests = results["parts"].get("tests", {}).get("result") or {}
    for t in tests.get("tests", []) if isinstance(tests, dict) else []:
        if t["outcome"] in ("failed", "error"):
            failed.append(
                f"  FAILED {t['name']}: {(t.get('message') or '').splitlines()[0][:100] if t.get('message') else ''}"
            )
    if failed:
        lines.append("")
        lines += failed
    return "\n".join(lines)


def header(dry_run: bool, argv: list[str]) -> dict:
    info: dict = {
        "kit": f"scripts/gpu (version {KIT_VERSION})",
        "dry_run": dry_run,
        "label": "CPU dry run at toy sizes: not GPU measurements" if dry_run else "GPU measurements",
        "argv": argv,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    try:
        info["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every part at toy sizes on the CPU")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu-out"), help="results folder ($OUT)")
    p.add_argument("--only", default=None, help="comma-separated parts to run (the others are recorded as skipped)")
    p.add_argument("--skip", default=None, help="comma-separated parts to skip")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all parts together")
    args = p.parse_args(argv)
    os.chdir(REPO)
    out = Path(args.out)
    work_root = Path(os.environ.get("TMPDIR", "/tmp")) / f"kumo-gpu-kit-{os.getpid()}"
    parts = build_parts(args.dry_run, work_root)
    select_parts(parts, args.only, args.skip, p.error)

    def update(results: dict) -> None:
        results["targets"] = judge(results)
        env = results["parts"].get("env", {}).get("result") or {}
        if isinstance(env, dict) and env.get("gpu"):
            results["gpu"] = env["gpu"].get("name")

    results = run_parts(
        parts, out, args.budget, header=header(args.dry_run, sys.argv), work_root=work_root, on_update=update
    )
    table = format_table(results)
    (out / "table.txt").write_text(table + "\n")
    write_json(out / "results.json", results)
    print(table, flush=True)
    bad = [n for n, e in results["parts"].items() if e["status"] in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
