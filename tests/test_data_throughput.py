"""Throughput: the per-video scan (probe, cuts and fades, optical flow, camera, overlays,
quality) runs at least 4x faster than real time on 480p H.264 on a 2-core machine.

`python -m kumovideo.data.pipeline.benchmark` measures the same thing on a longer video; its
output is recorded in docs/data-pipeline.md.
"""

from __future__ import annotations

import os

import pytest

from kumovideo.data.pipeline.benchmark import measure, write_benchmark_video

# A wall-clock target: meaningful on an idle machine, flaky beside other jobs (CI shares
# its 2 cores with the rest of the suite). Run it on purpose: KUMO_PERF_TESTS=1.
pytestmark = pytest.mark.skipif(
    os.environ.get("KUMO_PERF_TESTS") != "1", reason="wall-clock throughput test; set KUMO_PERF_TESTS=1 to run it"
)


def test_scan_is_at_least_4x_real_time_on_480p(tmp_path):
    path = write_benchmark_video(tmp_path / "b.mp4", seconds=8.0, fps=30, shot_seconds=2.0)
    result = measure(path, repeat=2)
    assert result["video_seconds"] == 8.0
    assert result["transitions"] == 3 and result["clips"] == 4
    # best of two runs: the machine is shared, a neighbour's burst should not fail the test
    assert result["best_x_realtime"] >= 4.0, result
