"""`POST /v1/videos/{id}/remix` (OpenAI's remix): a completed video made again with a new
prompt, by video-to-video from its clip (kumovideo.pipelines.video_to_video), over a live
server on the built-in Turbo model, through OpenAI's client, and every refusal."""

from __future__ import annotations

import httpx2 as httpx
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import test_serve_api as api  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kumovideo.serve.app import create_app  # noqa: E402
from kumovideo.serve.jobs import JobStore  # noqa: E402
from kumovideo.utils.video_io import read_video, write_video  # noqa: E402

TURBO, assert_error, wait_done = api.TURBO, api.assert_error, api.wait_done
models, live = api.models, api.live  # the same fixtures: the models loaded, a live server

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the client's, not ours
SOURCE = {"prompt": "a red circle moves left on a black background", "model": TURBO, "steps": 4, "seed": 5}


def made(base: str, video_id: str) -> dict:
    return wait_done(lambda i: httpx.get(f"{base}/v1/videos/{i}").json(), video_id, timeout=90)


def test_remix_keeps_the_source_settings_and_takes_the_new_prompt(live, tmp_path):
    base, store = live
    source = made(base, httpx.post(f"{base}/v1/videos", json=SOURCE).json()["id"])
    assert source["status"] == "completed"
    prompt = "a blue circle moves left on a black background"
    created = httpx.post(f"{base}/v1/videos/{source['id']}/remix", json={"prompt": prompt, "strength": 0.8}).json()
    assert created["remixed_from_video_id"] == source["id"] and created["status"] == "queued"
    assert (created["model"], created["size"], created["seconds"]) == (source["model"], source["size"], "2")
    # The source may go meanwhile: the remix holds its own link to the clip.
    assert httpx.delete(f"{base}/v1/videos/{source['id']}").json()["deleted"]
    remix = made(base, created["id"])
    assert remix["status"] == "completed", remix
    assert not store.source_path(remix["id"]).exists()  # the link is gone with the job's end
    (tmp_path / "remix.mp4").write_bytes(httpx.get(f"{base}/v1/videos/{remix['id']}/content").content)
    frames, _ = read_video(tmp_path / "remix.mp4")
    assert frames.shape == (17, 128, 128, 3)
    bright = frames.reshape(-1, 3)[frames.reshape(-1, 3).max(1) > 120].astype(float)
    assert bright[:, 2].mean() > bright[:, 0].mean()  # the circle is blue now


def test_openai_client_remix(live):
    openai = pytest.importorskip("openai")
    base, _ = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    source = made(base, httpx.post(f"{base}/v1/videos", json={**SOURCE, "seconds": "1"}).json()["id"])
    remix = client.videos.remix(source["id"], prompt="a green circle moves left on a black background")
    assert remix.remixed_from_video_id == source["id"] and remix.seconds == "1"
    assert made(base, remix.id)["status"] == "completed"
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("video_" + "0" * 32, prompt="x")


def test_bad_remixes_are_4xx_naming_the_field(models, tmp_path):
    pipes, infos = models
    store = JobStore(tmp_path)
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:  # jobs stay queued
        source = client.post("/v1/videos", json={**SOURCE, "seconds": "1", "size": "64x64"}).json()["id"]
        url = f"/v1/videos/{source}/remix"
        assert assert_error(client.post(url, json={"prompt": "x"}), 409)["code"] == "video_not_ready"
        assert_error(client.post("/v1/videos/video_nope/remix", json={"prompt": "x"}), 404)
        assert store.start(source) and store.complete(source)  # as the worker would, but with no file
        assert assert_error(client.post(url, json={"prompt": "x"}), 410)["code"] == "video_gone"
        assert [v["id"] for v in client.get("/v1/videos").json()["data"]] == [source]  # no job left behind
        write_video(np.zeros((9, 64, 64, 3), np.uint8), store.video_path(source), fps=8)
        for body, param in [
            ({}, "prompt"),
            ({"prompt": ""}, "prompt"),
            ({"prompt": "x", "strength": 0}, "strength"),
            ({"prompt": "x", "strength": "lots"}, "strength"),
            ({"prompt": "x", "seed": -1}, "seed"),
            ({"prompt": "x", "size": "64x64"}, "size"),  # the source's size: not asked again
        ]:
            assert_error(client.post(url, json=body), 400, param)
        ok = client.post(url, json={"prompt": "x", "strength": 0.5, "seed": 9}).json()
        assert ok["remixed_from_video_id"] == source and (ok["size"], ok["seconds"]) == ("64x64", "1")
        assert store.source_path(ok["id"]).exists()
        assert client.delete(f"/v1/videos/{ok['id']}").json()["deleted"]
        assert not store.source_path(ok["id"]).exists()


def clip_bytes(tmp_path, frames: int = 17, size: int = 128, colour=(230, 40, 40)) -> bytes:
    """An mp4 of a still square of `colour` on black."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    video[:, size // 4 : size // 2, size // 4 : size // 2] = colour
    return write_video(video, tmp_path / f"up-{frames}-{size}.mp4", fps=8).read_bytes()


def test_edit_an_uploaded_clip_over_http_and_through_openai(live, tmp_path):
    openai = pytest.importorskip("openai")
    base, store = live
    body = {"prompt": "a blue square stays still on a black background", "model": TURBO, "steps": "4"}
    files = {"video": ("mine.mp4", clip_bytes(tmp_path), "video/mp4")}
    created = httpx.post(f"{base}/v1/videos/edits", data=body, files=files).json()
    assert created["status"] == "queued" and created["remixed_from_video_id"] is None, created
    edited = made(base, created["id"])
    assert edited["status"] == "completed", edited
    assert not store.source_path(edited["id"]).exists()
    (tmp_path / "edited.mp4").write_bytes(httpx.get(f"{base}/v1/videos/{edited['id']}/content").content)
    frames, _ = read_video(tmp_path / "edited.mp4")
    square = frames[:, 40:56, 40:56].reshape(-1, 3).astype(float).mean(0)
    assert square[2] > square[0], square  # the red square is blue now, where it was
    # A reference to a served video is its remix.
    again = httpx.post(f"{base}/v1/videos/edits", json={**body, "video": {"id": edited["id"]}})
    assert_error(again, 400, "model")  # a remix keeps the source's model: not asked again
    again = httpx.post(f"{base}/v1/videos/edits", json={"prompt": body["prompt"], "video": {"id": edited["id"]}})
    assert again.json()["remixed_from_video_id"] == edited["id"]
    assert made(base, again.json()["id"])["status"] == "completed"
    # OpenAI's client uploads the file (its reference form does not reach the wire in 3.63).
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    with open(tmp_path / "up-17-128.mp4", "rb") as f:
        video = client.videos.edit(prompt=body["prompt"], video=f, extra_body={"model": TURBO, "steps": "2"})
    assert video.model == TURBO and made(base, video.id)["status"] == "completed"


def test_bad_edits_are_400_naming_the_field(models, tmp_path):
    pipes, infos = models
    store = JobStore(tmp_path / "store")
    good = clip_bytes(tmp_path)
    prompt = {"prompt": "a blue square stays still on a black background"}
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:
        for data, files, param, needle in [
            (prompt, None, "video", "video is required"),
            (prompt, {"video": ("e.mp4", b"", "video/mp4")}, "video", "empty file"),
            (prompt, {"video": ("t.mp4", b"not a video at all", "video/mp4")}, "video", "cannot be used"),
            (prompt, {"video": ("s.mp4", clip_bytes(tmp_path, frames=9), "video/mp4")}, "video", "has 9 frames"),
            ({**prompt, "strength": "2"}, {"video": ("g.mp4", good, "video/mp4")}, "strength", "(0, 1]"),
            ({**prompt, "size": "65x64"}, {"video": ("g.mp4", good, "video/mp4")}, "size", "65"),
            ({}, {"video": ("g.mp4", good, "video/mp4")}, "prompt", "prompt is required"),
        ]:
            error = assert_error(client.post("/v1/videos/edits", data=data, files=files), 400, param)
            assert needle in error["message"], error
        first_frame = {"input_reference": ("f.png", b"x", "image/png"), "video": ("g.mp4", good, "video/mp4")}
        assert_error(client.post("/v1/videos/edits", data=prompt, files=first_frame), 400, "input_reference")
        error = assert_error(client.post("/v1/videos/edits", json={**prompt, "video": {"id": "x", "more": 1}}), 400)
        assert error["param"] == "video"
        assert_error(client.post("/v1/videos/edits", json={**prompt, "video": {"id": "video_" + "0" * 32}}), 404)
        assert client.get("/v1/videos").json()["data"] == []  # nothing refused was kept
        ok = client.post("/v1/videos/edits", data={**prompt, "strength": "0.5"}, files={"video": ("g.mp4", good)})
        job = ok.json()
        assert ok.status_code == 200 and store.source_path(job["id"]).read_bytes() == good


def test_extend_a_served_video_and_an_upload(live, tmp_path):
    base, store = live
    source = made(base, httpx.post(f"{base}/v1/videos", json={**SOURCE, "seconds": "1"}).json()["id"])
    body = {"prompt": SOURCE["prompt"], "seconds": "1", "steps": "2", "video": {"id": source["id"]}}
    created = httpx.post(f"{base}/v1/videos/extensions", json=body).json()
    assert created["model"] == "kumo-shapes-frames" and created["seconds"] == "2", created  # 9 + 8 frames
    longer = made(base, created["id"])
    assert longer["status"] == "completed", longer
    assert not store.source_path(longer["id"]).exists()
    (tmp_path / "source.mp4").write_bytes(httpx.get(f"{base}/v1/videos/{source['id']}/content").content)
    (tmp_path / "longer.mp4").write_bytes(httpx.get(f"{base}/v1/videos/{longer['id']}/content").content)
    before, _ = read_video(tmp_path / "source.mp4")
    after, fps = read_video(tmp_path / "longer.mp4")
    assert after.shape == (17, 128, 128, 3) and fps == 8
    error = np.mean((after[:9].astype(float) - before.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / max(error, 1e-9)) > 35  # the source, through one more H.264 pass
    upload = {"video": ("mine.mp4", clip_bytes(tmp_path, frames=5), "video/mp4")}
    created = httpx.post(
        f"{base}/v1/videos/extensions",
        data={"prompt": "a red square stays still", "seconds": "0.5", "steps": "1"},
        files=upload,
    ).json()
    assert created["seconds"] == "1", created  # 5 + 4 frames at 8 fps
    assert made(base, created["id"])["status"] == "completed"


def test_bad_extensions_are_4xx_naming_the_field(models, tmp_path):
    pipes, infos = models
    store = JobStore(tmp_path / "store")
    good = {"video": ("g.mp4", clip_bytes(tmp_path, frames=5), "video/mp4")}
    odd = {"video": ("o.mp4", write_video(np.zeros((5, 40, 72, 3), np.uint8), tmp_path / "o.mp4").read_bytes())}
    prompt = {"prompt": "a red square stays still on a black background"}
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:
        url = "/v1/videos/extensions"
        for data, files, param, needle in [
            ({**prompt, "seconds": "1"}, None, "video", "video is required"),
            ({**prompt, "seconds": "0"}, good, "seconds", "seconds to add"),
            ({**prompt, "seconds": "two"}, good, "seconds", "seconds to add"),  # 0.1 rounds to a frame
            ({**prompt}, good, "seconds", "seconds to add"),
            ({**prompt, "seconds": "1", "model": "kumo-shapes"}, good, "model", "conditioning frames"),
            ({**prompt, "seconds": "1"}, odd, "video", "not a multiple of 16"),
            ({**prompt, "seconds": "1", "strength": "0.5"}, good, "strength", "unknown parameter"),
            ({"seconds": "1"}, good, "prompt", "prompt is required"),
            ({**prompt, "seconds": "1"}, {"video": ("e.mp4", b"", "video/mp4")}, "video", "empty file"),
        ]:
            error = assert_error(client.post(url, data=data, files=files), 400, param)
            assert needle in error["message"], error
        assert_error(client.post(url, json={**prompt, "seconds": "1", "video": {"id": "video_" + "0" * 32}}), 404)
        queued = client.post("/v1/videos", json={**SOURCE, "seconds": "1"}).json()["id"]
        error = assert_error(client.post(url, json={**prompt, "seconds": "1", "video": {"id": queued}}), 409)
        assert error["code"] == "video_not_ready"
        assert [v["id"] for v in client.get("/v1/videos").json()["data"]] == [queued]  # nothing refused was kept
