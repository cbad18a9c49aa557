"""`--ray`: the same stages as a Ray Data pipeline, on a local Ray started for the test."""

from __future__ import annotations

import pytest
from data_synth import ClipSpec, build_video

from kumovideo.data.pipeline.config import CutConfig, ScanConfig
from kumovideo.data.pipeline.cut import cut_task
from kumovideo.data.pipeline.filter import clip_entry
from kumovideo.data.pipeline.manifest import read_jsonl
from kumovideo.data.pipeline.runner import run_tasks
from kumovideo.data.pipeline.scan import scan_folder

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own internals


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_scan_and_cut_match_local(local_ray, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    build_video(
        folder / "a.mp4", [ClipSpec("pan_right", frames=30, seed=1), ClipSpec("tilt_up", frames=30, seed=2)], ["cut"]
    )
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    scan_folder(folder, local, ScanConfig(), workers=1, quiet=True)
    summary = scan_folder(folder, remote, ScanConfig(), ray_address="auto", quiet=True)
    assert summary.ok == 1 and len(summary.errors) == 1

    def strip(records):
        return {
            r["path"]: (
                [(c["id"], c["start_frame"], c["end_frame"], c["camera"]["label"]) for c in r.get("clips", [])],
                r.get("error"),
            )
            for r in records
        }

    assert strip(read_jsonl(remote)) == strip(read_jsonl(local))

    record = next(r for r in read_jsonl(remote) if r["status"] == "ok")
    entries = [clip_entry(record, c) for c in record["clips"]]
    out = tmp_path / "cut"
    out.mkdir()
    results = list(run_tasks(cut_task(CutConfig(), str(out)), entries, ray_address="auto", quiet=True))
    assert sorted(r["id"] for r in results) == sorted(e["id"] for e in entries)
    assert all(r["status"] == "ok" and (out / r["file"]).is_file() for r in results)
