"""The GPU kit (scripts/gpu, docs/gpu.md) rehearsed on the CPU, so it cannot rot while no
device is lent: `scripts/gpu/check.sh --dry-run` runs every part at toy sizes, each in its
own subprocess; every part must have run (or been skipped for a stated reason), written
its JSON into results.json, and the table must have been printed last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "gpu"))

from runner import Part, run_parts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTS = ["env", "tests", "bench", "fp8", "clips", "offload", "profile"]

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "KUMO_CACHE": str(out.parent / "cache")}
    env.pop("KUMO_GPU_TESTS_ON_CPU", None)
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "scripts/gpu/check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=230
    )
    return proc, out, time.perf_counter() - start


def test_dry_run_runs_every_part_and_prints_the_table_last(dry_run):
    proc, out, wall = dry_run
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] is True and "CPU dry run" in results["label"]
    assert list(results["parts"]) == PARTS
    for name in ("env", "tests", "bench", "clips", "offload", "profile"):
        part = results["parts"][name]
        assert part["status"] == "ok", (name, part)
        assert part["command"] and isinstance(part.get("result"), dict), name
    fp8 = results["parts"]["fp8"]
    assert fp8["status"] == "skipped" and "CUDA" in fp8["reason"]
    # The parts' own JSON: the kumo bench rows, the clips, the memory and the profile.
    bench = results["parts"]["bench"]["result"]
    assert [r["row"] for r in bench["rows"]] == ["eager", "fast", "cogvideox"]
    assert results["parts"]["bench"]["command"].startswith("kumo bench --preset kumo-tiny")
    clips = results["parts"]["clips"]["result"]
    assert clips["dry_run"] and clips["clip"]["wall_s"] > 0 and clips["turbo_clip"]["steps"] == 4
    assert clips["vae_decode"]["frames"] == 9
    assert results["parts"]["offload"]["result"]["peak_memory_bytes"] > 0
    assert results["parts"]["profile"]["result"]["top"]
    tests = results["parts"]["tests"]["result"]
    assert tests["counts"]["skipped"] >= 10 and tests["counts"]["failed"] == 0  # no CUDA here: all skipped
    # Every target is listed, none judged in a dry run.
    verdicts = {t["key"]: t["verdict"] for t in results["targets"]}
    assert set(verdicts) == {"step_bf16", "mfu_bf16", "step_fp8", "vs_peer", "mem_offload", "clip50", "turbo4"}
    assert "met" not in verdicts.values() and "missed" not in verdicts.values()
    # Few files come back from the device: results.json, log.txt, table.txt.
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.json", "table.txt"]
    table = (out / "table.txt").read_text().strip()
    assert proc.stdout.strip().endswith(table)
    assert "CPU DRY RUN" in table and "50-step clip end to end" in table
    print(f"dry run took {wall:.1f} s")


def test_a_part_that_hangs_or_crashes_loses_no_other_result(tmp_path):
    py = sys.executable
    write = "import json, os; json.dump({'x': 1}, open(os.environ['KIT_PART_JSON'], 'w'))"
    parts = [
        Part("hangs", [py, "-c", write + "; import time; time.sleep(60)"], budget_s=2),
        Part("crashes", [py, "-c", "raise SystemExit(3)"], budget_s=10),
        Part("works", [py, "-c", write], budget_s=10),
        Part("late", [py, "-c", write], budget_s=10, when=lambda r: "not needed"),
    ]
    start = time.perf_counter()
    results = run_parts(parts, tmp_path, total_budget_s=60, work_root=tmp_path / "work")
    assert time.perf_counter() - start < 30
    got = {k: (v["status"], v.get("result")) for k, v in results["parts"].items()}
    assert got == {
        "hangs": ("timeout", {"x": 1}),
        "crashes": ("failed", None),
        "works": ("ok", {"x": 1}),
        "late": ("skipped", None),
    }
    assert json.loads((tmp_path / "results.json").read_text())["parts"]["late"]["reason"] == "not needed"
