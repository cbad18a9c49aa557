"""`kumo bench`: the harness on the tiny preset (fast rows, the CogVideoX peer, JSON), the
refusals that need no model, and --flops-only for the full-size model."""

from __future__ import annotations

import json

import pytest
import torch
from cli_checks import assert_one_line_error as one_line_error

from kumovideo.cli import main
from kumovideo.perf.bench import BenchSpec, format_table, run_bench

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--preset", "kumo-tiny", "--steps", "2", "--runs", "2", "--warmup", "1"]


@pytest.fixture
def busy_cores(monkeypatch):
    """A machine whose cores other work keeps busy: `--threads auto` gives a small model 1 thread."""
    import kumovideo.perf.fast_paths as fast_paths

    monkeypatch.setattr(fast_paths.os, "getloadavg", lambda: (fast_paths.usable_cores() + 2.0, 1.0, 1.0))


def test_bench_tiny_with_fast_paths_and_peer(busy_cores):
    result = run_bench(
        BenchSpec(
            preset="kumo-tiny",
            steps=2,
            runs=2,
            warmup=1,
            fast=True,
            dtype="fp32",
            step_cache=0.0,
            vs="cogvideox",
            device="cpu",
        )
    )
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == ["eager", "fast", "cogvideox"]
    assert result["tokens"] == {"vision": 36, "text": 16, "joint": 52, "batch": 2}
    assert result["flops_per_step"] == 2 * 4_550_656  # the hand count of tests/test_perf_flops.py
    for r in rows.values():
        assert len(r["step_s"]["samples"]) == 2 and r["step_s"]["median"] > 0
        assert r["achieved_tflops"] > 0 and r["peak_memory_bytes"] > 0
        assert r["mfu_bf16_peak"] is None  # no GPU
    assert rows["eager"]["e2e_s"]["median"] > 0 and rows["cogvideox"]["e2e_s"] is None
    fast = rows["fast"]
    assert fast["fast_paths"]["fused_qkv"] == 6 and fast["threads"] == 1
    # fp32 fast paths with a zero-threshold step cache: the same latents as eager
    assert fast["final_latents_rel_diff_vs_eager"] < 1e-5
    assert fast["step_cache"]["hits"] == 0
    assert rows["cogvideox"]["flops_per_step"] < result["flops_per_step"]
    table = format_table(result)
    for needle in ("s/step", "eager", "fast", "cogvideox", "52 tokens", "fused_qkv=6"):
        assert needle in table


def test_cli_table_and_json(capsys):
    assert main(["bench", *TINY, "--no-e2e"]) == 0
    out = capsys.readouterr().out
    assert "kumo bench: kumo-tiny" in out and "eager" in out and "fast " not in out
    assert main(["bench", *TINY, "--no-e2e", "--fused-qkv", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in result["rows"]] == ["eager", "fast"]
    assert result["rows"][0]["e2e_s"] is None


def test_a_huge_clip_on_cpu_is_refused_from_its_counted_flops(capsys, monkeypatch):
    import kumovideo.perf.bench as bench

    # The count runs on the meta device: the refusal comes before any model is built.
    monkeypatch.setattr(bench, "build_subject", lambda *a: pytest.fail("a model was built"))
    assert main(["bench", "--height", "512", "--width", "512", "--frames", "65", "--device", "cpu"]) == 2
    one_line_error(capsys, "512x512x65 counts 2.0 TFLOP a guided step", "--flops-only")
    assert main(["bench", "--height", "512", "--width", "512", "--frames", "65", "--flops-only"]) == 0


def test_full_size_on_cpu_is_refused_in_one_line(capsys):
    assert main(["bench", "--preset", "kumo-2.6b", "--device", "cpu"]) == 2
    one_line_error(capsys, "kumo-2.6b", "GPU", "--flops-only")


def test_flops_only_full_size(capsys):
    assert main(["bench", "--preset", "kumo-2.6b", "--flops-only", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["height"], info["width"], info["frames"]) == (480, 720, 41)
    assert info["tokens"] == 15076 and info["batch"] == 2
    assert round(info["flops_per_step"] / 1e12, 2) == 214.56
    assert main(["bench", "--preset", "kumo-2.6b", "--flops-only"]) == 0
    assert "214.56 TFLOP" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--runs", "0"], "--runs"),
        (["--steps", "0"], "--steps"),
        (["--threads", "many"], "--threads"),
        (["--baseline-threads", "0"], "--baseline-threads"),
        (["--step-cache", "-1"], "--step-cache"),
        (["--frames", "10"], "num_frames=10"),
        (["--fp8"], "FP8"),
        (["--offload", "model"], "CUDA"),
        (["--dtype", "fp16", "--device", "cpu"], "fp16"),
    ],
)
def test_bad_input_one_line(capsys, args, needle):
    if args == ["--fp8"] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", *TINY, *args]) == 2
    one_line_error(capsys, needle)


def test_time_budget_stops_after_three_runs():
    result = run_bench(
        BenchSpec(preset="kumo-tiny", steps=1, runs=6, warmup=0, e2e=False, device="cpu", max_time=1e-9)
    )
    assert (result["runs"], result["runs_asked"]) == (3, 6)
    assert "of 6 asked: time budget" in format_table(result)


def test_threads_auto_for_every_row_and_a_default_threads_baseline(busy_cores, monkeypatch):
    import kumovideo.perf.fast_paths as fast_paths

    result = run_bench(BenchSpec(preset="kumo-tiny", steps=1, runs=1, warmup=0, e2e=False, device="cpu"))
    assert [(r["row"], r["threads"]) for r in result["rows"]] == [("eager", 1)]  # auto: a tiny model, busy cores
    result = run_bench(
        BenchSpec(preset="kumo-tiny", steps=1, runs=1, warmup=0, e2e=False, device="cpu", baseline_threads=2)
    )
    rows = result["rows"]
    assert [(r["row"], r["threads"]) for r in rows] == [("eager", 2), ("fast", 1)]
    assert rows[1]["fast_paths"] == {"threads": 1}
    monkeypatch.setattr(fast_paths.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    result = run_bench(BenchSpec(preset="kumo-tiny", steps=1, runs=1, warmup=0, e2e=False, device="cpu"))
    assert [(r["row"], r["threads"]) for r in result["rows"]] == [("eager", fast_paths.usable_cores())]  # idle
