"""`kumo serve` under load and after a crash (issue 21), through the public HTTP API only.

Real `kumo serve` subprocesses on loopback (port 0, a temporary data dir), small
counts so the file stays well under a minute on 2 cores. The server helper lives in
scripts/bench_serve.py, which measures the same cases at the issue's full size.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("kumovideo.serve.app", reason="kumo serve (or its extra: starlette, uvicorn) is not available")

_spec = importlib.util.spec_from_file_location(
    "bench_serve", Path(__file__).resolve().parents[1] / "scripts" / "bench_serve.py"
)
bench_serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_serve)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def serve():
    """Start `kumo serve` subprocesses; every one is killed at teardown, pass or fail."""
    started = []

    def start(data_dir: Path, **kw):
        server = bench_serve.Server(data_dir, **kw)
        started.append(server)
        server.wait_ready(timeout=180)
        return server

    yield start
    for server in started:
        server.stop()


def test_concurrent_clients_lose_and_duplicate_nothing(serve, tmp_path):
    server = serve(tmp_path / "data", max_queue=4)
    clients, per_client = 4, 2

    def client(c: int):
        answers = []
        for i in range(per_client):
            status, obj, _ = server.submit(prompt=f"a red circle {c} {i}", turbo=True, seed=10 * c + i)
            answers.append((status, obj))
        return answers

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = [a for batch in pool.map(client, range(clients)) for a in batch]

    assert len(answers) == clients * per_client
    accepted = []
    for status, obj in answers:
        assert status in (200, 201, 202, 429), (status, obj)
        if status == 429:
            assert isinstance(obj, dict) and obj["error"]["message"], obj
        else:
            assert obj["object"] == "video" and obj["status"] in ("queued", "in_progress", "completed"), obj
            accepted.append(obj["id"])
    assert accepted, "every request was refused"
    assert len(set(accepted)) == len(accepted), accepted

    for vid in accepted:
        final = server.wait(vid, poll=0.05, timeout=180)
        assert final["status"] == "completed", final

    listed = [v["id"] for v in server.list_all()]
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == set(accepted)


def test_kill_9_during_a_job_then_restart(serve, tmp_path):
    data = tmp_path / "data"
    server = serve(data)

    status, done, _ = server.submit(prompt="a blue square moving left", turbo=True, seed=1)
    assert status in (200, 201, 202), done
    assert server.wait(done["id"], poll=0.05, timeout=180)["status"] == "completed"
    status, clip, _ = server.request("GET", f"/v1/videos/{done['id']}/content")
    assert status == 200 and len(clip) > 100
    digest = hashlib.sha256(clip).hexdigest()

    # The base model at its most steps: seconds of work, surely caught in progress.
    status, long, _ = server.submit(prompt="a green triangle", turbo=False, steps=100, seed=2)
    assert status in (200, 201, 202), long
    seen = server.wait(long["id"], poll=0.02, timeout=180, until=("in_progress", "completed", "failed"))
    assert seen["status"] == "in_progress", seen

    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=30)

    again = serve(data)
    status, after, _ = again.get(long["id"])
    assert status == 200, after
    assert after["status"] == "failed", after
    assert bench_serve.error_message(after).strip(), after

    assert done["id"] in {v["id"] for v in again.list_all()}
    status, clip_again, _ = again.request("GET", f"/v1/videos/{done['id']}/content")
    assert status == 200
    assert hashlib.sha256(clip_again).hexdigest() == digest
