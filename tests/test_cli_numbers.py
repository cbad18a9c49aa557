"""Whole numbers and seeds on the command line: every command refuses one that C code
(torch, numpy, PyAV) would overflow on, or that could never run, with exit status 2 and one
line `kumo: error: ...`, before any model loads or any file is written; the wording below
the range stays each command's own."""

from __future__ import annotations

import pytest
from cli_checks import assert_one_line_error

from kumovideo.cli import main
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import COUNT_MAX, SEED_MAX, check_real, check_whole

HUGE = "99999999999999999999"  # over 2**64: "Overflow when unpacking long long" in torch


def _commands(tmp_path):
    clips = tmp_path / "clips.jsonl"
    clips.write_text("{}\n")
    return {
        "generate": ["generate", "a red circle", "-o", str(tmp_path / "x.mp4")],
        "eval": ["eval", "shapes", "--out", str(tmp_path / "eval")],
        "render": ["shapes", "render", "--n", "1", "--out", str(tmp_path / "clips")],
        "bench": ["bench", "--flops-only"],
        "cut": ["data", "cut", str(clips), "-o", str(tmp_path / "cut")],
        "encode": ["data", "encode", str(clips), "--vae", str(tmp_path), "-o", str(tmp_path / "latents")],
    }


@pytest.mark.parametrize(
    "command, args, needles",
    [
        # seeds
        ("generate", ["--seed", HUGE], [f"--seed {HUGE} is too large", "2**63 - 1"]),
        ("generate", ["--seed", str(SEED_MAX + 1)], ["--seed", "is too large", str(SEED_MAX)]),
        ("generate", ["--seed", "-1"], ["--seed -1 is negative; pass 0 or more"]),
        ("eval", ["--seed", HUGE], [f"--seed {HUGE} is too large"]),
        ("eval", ["--seed", "-1"], ["--seed -1 is negative; pass 0 or more"]),
        ("eval", ["--seed", str(SEED_MAX), "--n", "2"], ["for 2 clips", f"at most {SEED_MAX - 1}"]),
        ("render", ["--seed", HUGE], [f"--seed {HUGE} is too large"]),
        ("render", ["--seed", "-5"], ["--seed -5 is negative; pass 0 or more"]),
        # counts and sizes
        ("generate", ["--steps", HUGE], [f"--steps {HUGE} is too large; use at most {COUNT_MAX}"]),
        ("generate", ["--frames", HUGE], ["--frames", "too large"]),
        ("generate", ["--height", HUGE], ["--height", "too large"]),
        ("generate", ["--width", HUGE], ["--width", "too large"]),
        ("generate", ["--fps", HUGE], ["--fps", "too large; use at most 1000"]),
        ("generate", ["--fps", "0"], ["--fps must be a positive integer, got 0"]),
        ("eval", ["--n", HUGE], ["--n", "too large; use at most 10000"]),
        ("eval", ["--batch-size", HUGE], ["--batch-size", "too large"]),
        ("eval", ["--steps", HUGE], ["--steps", "too large"]),
        ("eval", ["--n", "0"], ["--n and --batch-size must be positive"]),
        ("render", ["--n", HUGE], ["--n", "too large"]),
        ("render", ["--fps", HUGE], ["--fps", "too large; use at most 1000"]),
        ("render", ["--fps", "0"], ["--fps 0 is not a frame rate"]),
        ("bench", ["--steps", HUGE], ["--steps", "too large"]),
        ("bench", ["--runs", HUGE], ["--runs", "too large"]),
        ("bench", ["--warmup", HUGE], ["--warmup", "too large"]),
        ("bench", ["--threads", HUGE], ["--threads", "too large; use at most 1024"]),
        ("bench", ["--baseline-threads", "0"], ["--baseline-threads must be positive, got 0"]),
        ("bench", ["--runs", "0"], ["--runs must be at least 1, got 0"]),
        ("bench", ["--warmup", "-1"], ["--warmup must be 0 or more, got -1"]),
        ("cut", ["--workers", HUGE], ["--workers", "too large; use at most 1024"]),
        ("cut", ["--fps", "1e30"], ["--fps 1e+30 is too large; use at most 1000"]),
        ("cut", ["--fps", "nan"], ["--fps nan is not a frame rate"]),
        ("cut", ["--size", f"{HUGE}x64"], ["--size width", "too large"]),
        ("encode", ["--frames", "99999999999999999997"], ["--frames", "too large"]),
        ("encode", ["--frames", "0"], ["--frames 0: the VAE needs 4k+1 frames"]),
        ("encode", ["--shard-size", HUGE], ["--shard-size", "too large"]),
        ("encode", ["--shard-size", "0"], ["--shard-size must be 1 or more"]),
    ],
)
def test_out_of_range_numbers_are_one_line_errors(tmp_path, capsys, command, args, needles):
    argv = _commands(tmp_path)[command]
    assert main(argv + args) == 2
    assert_one_line_error(capsys, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.jsonl"]  # nothing written


def test_check_whole_and_check_real():
    assert check_whole(5, "--n") == 5
    assert check_whole(0, "--n", low=0) == 0
    for value, needle in ((True, "not a whole number"), (0, "--n 0: pass 1 or more"), (COUNT_MAX + 1, "too large")):
        with pytest.raises(KumoInputError, match=needle):
            check_whole(value, "--n")
    assert check_real(2.5, "--fps", high=10) == 2.5
    for value, needle in ((float("nan"), "pass 0 or more"), (0, "pass 0 or more"), (float("inf"), "too large")):
        with pytest.raises(KumoInputError, match=needle):
            check_real(value, "--fps", high=10)
