"""Regressions from an audit of video-to-video, extension and their Videos API routes: a
remix of an extension, uploads at other frame rates (30, 29.97 fps, GIF), an extension
larger than the server's sides, source files left behind, a long --video decoded whole."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("starlette")

import test_serve_api as api  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kumovideo.pipelines.video_to_video import read_source, video_frames  # noqa: E402
from kumovideo.serve.app import create_app  # noqa: E402
from kumovideo.serve.errors import ApiError  # noqa: E402
from kumovideo.serve.jobs import JobStore  # noqa: E402
from kumovideo.serve.limits import Limits  # noqa: E402
from kumovideo.serve.params import parse_remix  # noqa: E402
from kumovideo.utils.errors import KumoInputError  # noqa: E402
from kumovideo.utils.video_io import write_video  # noqa: E402

models, assert_error = api.models, api.assert_error
PROMPT = "a red square stays still on a black background"


def numbered_clip(path, frames: int, fps, size: int = 64):
    """A clip whose frame i is grey level 4 i (read back within the codec's error)."""
    video = np.repeat(np.arange(frames, dtype=np.uint8)[:, None, None, None] * 4, size, 1)
    return write_video(np.repeat(np.repeat(video, size, 2), 3, 3), path, fps=fps)


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / 4) for f in frames]


def test_a_30fps_source_is_read_at_the_clips_times(tmp_path):
    clip = numbered_clip(tmp_path / "30.mp4", 31, 30)
    # 9 frames at 8 fps span 1 s: every 3.75th frame of the source, not its first 9
    assert frame_numbers(read_source(clip, 9, 8)) == [round(i * 30 / 8) for i in range(9)]
    assert frame_numbers(read_source(clip, 9, 30)) == list(range(9))  # its own rate: as it is
    with pytest.raises(KumoInputError, match=r"at 30 fps is too short: the clip needs 17 frames at 8 fps \(2 s"):
        read_source(clip, 17, 8)  # 2 s of a 1 s clip


def test_a_video_path_decodes_only_the_frames_used(tmp_path):
    clip = numbered_clip(tmp_path / "long.mp4", 40, 8)
    assert video_frames(str(clip), num_frames=3).shape[0] == 3


def test_an_edit_upload_too_short_at_its_own_rate_is_400(models, tmp_path):
    pipes, infos = models
    short = numbered_clip(tmp_path / "short.mp4", 17, 30).read_bytes()  # 17 frames, 0.53 s
    body = {"prompt": PROMPT, "model": api.TURBO, "seconds": "1"}
    with TestClient(create_app(JobStore(tmp_path / "store"), pipes, infos, start_worker=False)) as client:
        error = assert_error(client.post("/v1/videos/edits", data=body, files={"video": ("s.mp4", short)}), 400)
        assert error["param"] == "video" and "30 fps" in error["message"], error


def test_extension_seconds_round_to_a_frame_and_a_gif_keeps_its_rate(models, tmp_path):
    pipes, infos = models
    ntsc = numbered_clip(tmp_path / "ntsc.mp4", 5, Fraction(30000, 1001)).read_bytes()
    gif = numbered_clip(tmp_path / "eight.gif", 9, 8).read_bytes()  # FFmpeg reads it as 8.33 fps
    store = JobStore(tmp_path / "store")
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:
        url = "/v1/videos/extensions"
        made = client.post(url, data={"prompt": PROMPT, "seconds": "2"}, files={"video": ("n.mp4", ntsc)})
        assert made.status_code == 200, made.text  # 59.94 frames: 60, as kumo extend rounds
        assert json.loads(store.get(made.json()["id"])["spec"])["added_frames"] == 60
        made = client.post(url, data={"prompt": PROMPT, "seconds": "1"}, files={"video": ("e.gif", gif)})
        assert made.status_code == 200, made.text
        spec = json.loads(store.get(made.json()["id"])["spec"])
        assert (spec["fps"], spec["added_frames"], made.json()["seconds"]) == (8, 8, "2")


def test_an_extension_larger_than_the_servers_sides_is_400(models, tmp_path):
    pipes, infos = models
    big = numbered_clip(tmp_path / "big.mp4", 2, 8, size=1024).read_bytes()
    with TestClient(create_app(JobStore(tmp_path / "store"), pipes, infos, start_worker=False)) as client:
        response = client.post("/v1/videos/extensions", data={"prompt": PROMPT, "seconds": "1"}, files={"video": big})
        assert "512 pixels" in assert_error(response, 400, "video")["message"]
        assert client.get("/v1/videos").json()["data"] == []


def test_a_remix_of_an_extension_remakes_the_whole_clip(models):
    _, infos = models
    extension = {  # as parse_extend writes it: a 9-frame source and 8 frames added
        **dict(model="kumo-shapes-frames", prompt="p", negative_prompt=None, seconds="2", size="128x128"),
        **dict(frames=9, added_frames=8, height=128, width=128, fps=8, seed=1, steps=2, guidance_scale=1.0),
        "remixed_from_video_id": None,
    }
    spec = parse_remix({"prompt": "a blue circle"}, "video_" + "1" * 32, extension, infos, Limits())
    assert "added_frames" not in spec and spec["frames"] == 17  # not an extension run again
    odd = {**extension, "frames": 10}  # 18 frames: no length the model makes
    with pytest.raises(ApiError) as caught:
        parse_remix({"prompt": "a blue circle"}, "video_" + "1" * 32, odd, infos, Limits())
    assert caught.value.status == 400 and caught.value.param == "video_id"


def test_a_failed_job_leaves_no_source_file(tmp_path):
    store = JobStore(tmp_path)
    job = store.create(model="m", size="64x64", seconds="1", prompt="p", spec={"strength": 0.5})
    store.write_source(job["id"], b"clip")
    assert store.fail(job["id"], "server_stopped", "stopped")  # as Worker.stop fails a queued job
    assert not store.source_path(job["id"]).exists()
    store.close()
