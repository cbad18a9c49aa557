"""`kumo serve`'s API (kumovideo.serve): plain HTTP and OpenAI's client against an
in-process server on the built-in Turbo model (one or two steps), and every refusal's
status and OpenAI-style error body through Starlette's TestClient (worker off: jobs stay
queued, nothing is generated)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx2 as httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient  # noqa: E402

from kumovideo.serve.app import create_app  # noqa: E402
from kumovideo.serve.jobs import RESTARTED, JobStore  # noqa: E402
from kumovideo.serve.limits import Limits  # noqa: E402
from kumovideo.serve.worker import default_models, load_models  # noqa: E402

TURBO = "kumo-shapes-turbo"
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the client's, not ours


@pytest.fixture(scope="module")
def models():
    return load_models(default_models())


def offline_client(models, tmp_path, **kwargs) -> TestClient:
    """A TestClient over a fresh data dir; the worker is not started, so jobs stay queued."""
    pipes, infos = models
    return TestClient(create_app(JobStore(tmp_path), pipes, infos, start_worker=False, **kwargs))


@pytest.fixture
def client(models, tmp_path):
    with offline_client(models, tmp_path) as c:
        yield c


@pytest.fixture(scope="module")
def live(models, tmp_path_factory):
    """A real server (uvicorn in a thread, its worker running) on a free loopback port."""
    import uvicorn

    pipes, infos = models
    store = JobStore(tmp_path_factory.mktemp("serve"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, pipes, infos), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(10)


def wait_done(get, video_id: str, timeout: float = 30.0) -> dict:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        video = get(video_id)
        seen.append(video["progress"])
        if video["status"] in ("completed", "failed"):
            assert seen == sorted(seen), f"progress went backwards: {seen}"
            return video
        time.sleep(0.05)
    raise AssertionError(f"{video_id} not done in {timeout} s (progress {seen[-5:]})")


def assert_error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# ---------------------------------------------------------------------- a real server


def test_create_poll_content_delete_over_http(live, tmp_path):
    from kumovideo.utils.video_io import read_video

    base, store = live
    body = {"prompt": "a red circle moves right", "model": TURBO, "seconds": "2", "size": "64x64", "steps": 2}
    created = httpx.post(f"{base}/v1/videos", json=body).json()
    assert created["object"] == "video" and created["status"] == "queued" and created["id"].startswith("video_")
    assert (created["model"], created["size"], created["seconds"]) == (TURBO, "64x64", "2")
    video = wait_done(lambda i: httpx.get(f"{base}/v1/videos/{i}").json(), created["id"])
    assert video["status"] == "completed" and video["progress"] == 100 and video["error"] is None
    response = httpx.get(f"{base}/v1/videos/{video['id']}/content")
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    (tmp_path / "clip.mp4").write_bytes(response.content)
    frames, fps = read_video(tmp_path / "clip.mp4")
    assert frames.shape == (17, 64, 64, 3) and fps == 8
    gone = httpx.delete(f"{base}/v1/videos/{video['id']}").json()
    assert gone == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert not store.video_path(video["id"]).exists()
    assert_error(httpx.get(f"{base}/v1/videos/{video['id']}"), 404)


def test_openai_client(live, tmp_path):
    openai = pytest.importorskip("openai")
    from kumovideo.utils.video_io import read_video

    base, _ = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    video = client.videos.create(
        prompt="a blue square", model=TURBO, seconds="1", size="80x48", extra_body={"steps": 1, "seed": 3}
    )
    assert video.status == "queued" and video.seconds == "1" and video.size == "80x48"
    video = wait_done(lambda i: client.videos.retrieve(i).model_dump(), video.id)
    assert video["status"] == "completed"
    client.videos.download_content(video["id"]).write_to_file(tmp_path / "clip.mp4")
    frames, _ = read_video(tmp_path / "clip.mp4")
    assert frames.shape == (9, 48, 80, 3)
    assert video["id"] in [v.id for v in client.videos.list(limit=5)]
    assert client.videos.delete(video["id"]).deleted
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video["id"])
    with pytest.raises(openai.BadRequestError):
        client.videos.create(prompt="x", model="sora-2")


# ---------------------------------------------------------------------- list, queue, restart


def test_list_newest_first_with_pagination(client):
    ids = [client.post("/v1/videos", json={"prompt": f"clip {i}"}).json()["id"] for i in range(5)]
    page = client.get("/v1/videos", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [v["id"] for v in page["data"]] == [ids[4], ids[3]]
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    rest = client.get("/v1/videos", params={"limit": 10, "after": page["last_id"]}).json()
    assert [v["id"] for v in rest["data"]] == [ids[2], ids[1], ids[0]] and rest["has_more"] is False
    oldest = client.get("/v1/videos", params={"order": "asc", "limit": 1}).json()
    assert oldest["data"][0]["id"] == ids[0]
    assert_error(client.get("/v1/videos", params={"after": "video_" + "0" * 32}), 400, "after")
    assert_error(client.get("/v1/videos", params={"limit": 0}), 400, "limit")


def test_full_queue_answers_429(models, tmp_path):
    with offline_client(models, tmp_path, limits=Limits(max_queue=2)) as c:
        assert [c.post("/v1/videos", json={"prompt": "p"}).status_code for _ in range(2)] == [200, 200]
        error = assert_error(c.post("/v1/videos", json={"prompt": "p"}), 429)
        assert error["code"] == "rate_limit_exceeded"
        assert len(c.get("/v1/videos").json()["data"]) == 2  # the refused one is not listed
        for video in c.get("/v1/videos").json()["data"]:  # deleted while queued: they no longer hold a place
            assert c.delete(f"/v1/videos/{video['id']}").status_code == 200
        assert c.get("/health").json()["queued"] == 0
        assert c.post("/v1/videos", json={"prompt": "p"}).status_code == 200


def test_one_server_per_data_dir(tmp_path, capsys):
    """A second server on a live one's data dir would fail its running jobs at start-up."""
    from kumovideo.serve.jobs import DataDirInUse

    first = JobStore(tmp_path)
    with pytest.raises(DataDirInUse, match=r"in use by another kumo serve \(pid \d+\)"):
        JobStore(tmp_path)
    from kumovideo.cli import main

    started = time.monotonic()
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "0", "--no-warmup"]) == 2  # before any model loads
    assert time.monotonic() - started < 5
    first.close()
    JobStore(tmp_path).close()  # released on close (and by the kernel when the holder dies)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kumo: error: data dir") and "another kumo serve" in err[0]


def test_a_finished_job_keeps_its_answer(tmp_path):
    store = JobStore(tmp_path)
    fields = dict(model=TURBO, size="128x128", seconds="2", prompt="p", spec={})
    failed, done = (store.create(**fields)["id"] for _ in range(2))
    assert store.start(failed) and store.fail(failed, "server_restarted", "cut off")
    assert not store.update(failed, progress=50) and not store.complete(failed)
    assert store.start(done) and store.complete(done)
    assert not store.fail(done, "server_stopped", "late")
    assert (store.get(failed)["status"], store.get(done)["status"]) == ("failed", "completed")
    store.close()


def test_restart_keeps_jobs_and_fails_interrupted_ones(models, tmp_path):
    store = JobStore(tmp_path)
    fields = dict(model=TURBO, size="64x64", seconds="2", prompt="p", spec={})
    done, running, waiting = (store.create(**fields)["id"] for _ in range(3))
    store.start(done)
    store.video_path(done).write_bytes(b"mp4")
    store.complete(done)
    store.start(running)
    store.update(running, progress=40)
    partial = store.videos_dir / f".{running}.x1y2.mp4"  # write_video's temporary file, cut off
    partial.write_bytes(b"half")
    store.close()  # as if the server had been killed here
    with offline_client(models, tmp_path) as c:
        listed = {v["id"]: v for v in c.get("/v1/videos").json()["data"]}
        assert set(listed) == {done, running, waiting}
        assert listed[done]["status"] == "completed"
        assert c.get(f"/v1/videos/{done}/content").content == b"mp4"
        assert listed[running]["status"] == "failed"
        assert listed[running]["error"] == {"code": "server_restarted", "message": RESTARTED}
        assert listed[waiting]["status"] == "failed" and listed[waiting]["error"]["message"]
        assert not partial.exists()


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "p", "size": "65x64"}, "size"),
        ({"prompt": "p", "size": "big"}, "size"),
        ({"prompt": "p", "size": "4096x4096"}, "size"),
        ({"prompt": "p", "seconds": "1.3"}, "seconds"),
        ({"prompt": "p", "seconds": "0.5"}, "seconds"),
        ({"prompt": "p", "seconds": "100"}, "seconds"),
        ({"prompt": "p", "seconds": "two"}, "seconds"),
        ({"prompt": "p", "model": "sora-2"}, "model"),
        ({"prompt": "p", "model": "kumo-shapes", "turbo": True}, "turbo"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "p", "negative_prompt": 5}, "negative_prompt"),
        ({"prompt": "p", "seed": -1}, "seed"),
        ({"prompt": "p", "seed": 2**70}, "seed"),
        ({"prompt": "p", "seed": "x"}, "seed"),
        ({"prompt": "p", "steps": 0}, "steps"),
        ({"prompt": "p", "steps": 1.5}, "steps"),
        ({"prompt": "p", "guidance_scale": 1000}, "guidance_scale"),
        ({"prompt": "p", "guidance_scale": "strong"}, "guidance_scale"),
        ({"prompt": "p", "turbo": "maybe"}, "turbo"),
        ({"prompt": "p", "model": TURBO, "motion_score": 20}, "motion_score"),  # Turbo has no motion conditioning
        ({"prompt": "p", "model": TURBO, "multiscale": True}, "multiscale"),  # nor a coarse scale
        ({"prompt": "p", "motion_score": "fast"}, "motion_score"),
        ({"prompt": "p", "multiscale": "maybe"}, "multiscale"),
        ({"prompt": "p", "negative_motion_score": 10}, "negative_motion_score"),  # needs a motion_score
        (
            {"prompt": "p", "motion_score": 20, "negative_motion_score": 10, "guidance_scale": 1},
            "negative_motion_score",
        ),
        ({"prompt": "p", "motion_score": 20, "negative_motion_end": 0.5}, "negative_motion_end"),
        (
            {"prompt": "p", "motion_score": 20, "negative_motion_score": 10, "negative_motion_end": 2},
            "negative_motion_end",
        ),
        ({"prompt": "p", "stpes": 4}, "stpes"),  # misspelt: refused, never dropped without a word
        ({"prompt": "SURROGATE"}, "prompt"),
        ({"prompt": "p", "negative_prompt": ["x" * 5000]}, "negative_prompt"),  # one string, as the prompt
    ],
)
def test_bad_create_is_400_naming_the_field(client, body, param):
    if body.get("prompt") == "SURROGATE":  # JSON's "\ud800": no character, it fails in the tokenizer or SQLite
        content = json.dumps({**body, "prompt": "a red circle \ud800"})  # ASCII, the surrogate escaped
        response = client.post("/v1/videos", content=content, headers={"content-type": "application/json"})
        return assert_error(response, 400, param)
    assert_error(client.post("/v1/videos", json=body), 400, param)


def test_bad_bodies_and_ids(client):
    assert_error(client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/videos", json=["prompt"]), 400)
    big = b'{"prompt": "' + b"x" * (9 << 20) + b'"}'
    too_large = assert_error(client.post("/v1/videos", content=big, headers={"content-type": "application/json"}), 413)
    assert "8 MiB" in too_large["message"] and "uploaded image or video" in too_large["message"]
    deep = b'{"prompt": "p", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    assert_error(client.post("/v1/videos", content=deep, headers={"content-type": "application/json"}), 400)
    assert_error(client.get("/v1/videos", params={"limit": "\u00b2"}), 400, "limit")  # "²".isdigit() is True
    for path in ("/v1/videos/video_" + "0" * 32, "/v1/videos/../../etc/passwd", "/v1/videos/nope/content"):
        assert_error(client.get(path), 404)
    assert_error(client.delete("/v1/videos/video_" + "1" * 32), 404)
    queued = client.post("/v1/videos", json={"prompt": "p"}).json()["id"]
    assert_error(client.get(f"/v1/videos/{queued}/content"), 409)


def test_multipart_form(client):
    ok = client.post("/v1/videos", data={"prompt": "p", "turbo": "true", "seed": "7", "seconds": "1"}).json()
    assert (ok["status"], ok["model"], ok["seconds"], ok["size"]) == ("queued", TURBO, "1", "128x128")  # its own size
    assert_error(client.post("/v1/videos", data={"prompt": "p", "seed": "seven"}), 400, "seed")
    files = {"input_reference": ("a.png", b"png", "image/png")}
    error = assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "input_reference")
    assert "cannot be read as an image" in error["message"]
    files = {"seed": ("seed.txt", b"7", "text/plain")}
    assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "seed")
    files = {"input_reference": ("a.png", b"", "image/png")}  # an empty upload is no image, not "no image"
    error = assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "input_reference")
    assert "empty" in error["message"]
    files = [("input_reference", ("a.png", b"png", "image/png")), ("other", ("b.png", b"png", "image/png"))]
    error = assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "other")
    assert "must be a text field, not a file" in error["message"]  # one file more than taken is named
    files += [("third", ("c.png", b"png", "image/png"))]
    error = assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400)
    assert "could not be parsed: " in error["message"] and "files" in error["message"].lower()  # says which limit


def first_frame_png(width: int, height: int) -> bytes:
    """A red square on black, as a PNG."""
    import io

    import numpy as np
    from PIL import Image

    image = np.zeros((height, width, 3), np.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = (255, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_requests_go_to_the_model_trained_for_them(client, models):
    """Without `model`, the CLI's rule: an input_reference goes to the conditioned model,
    multi-scale, a motion score or a size the base was not trained at to the Lumina model."""
    _, infos = models
    frames = infos["kumo-shapes-frames"]
    created = client.post("/v1/videos", json={"prompt": "p"}).json()
    assert created["model"] == "kumo-shapes"
    for extra in ({"size": "64x64"}, {"size": "112x64"}, {"multiscale": True}, {"motion_score": 20}):
        assert client.post("/v1/videos", json={"prompt": "p", **extra}).json()["model"] == "kumo-shapes-lumina"
    files = {"input_reference": ("first.png", first_frame_png(frames.width, frames.height), "image/png")}
    created = client.post("/v1/videos", data={"prompt": "a red square stays still"}, files=files).json()
    assert (created["model"], created["size"]) == ("kumo-shapes-frames", f"{frames.width}x{frames.height}")
    import base64

    url = "data:image/png;base64," + base64.b64encode(first_frame_png(96, 64)).decode()  # another aspect: cropped
    created = client.post("/v1/videos", json={"prompt": "p", "input_reference": url, "image_guidance_scale": 1.5})
    assert created.json()["model"] == "kumo-shapes-frames", created.text
    created = client.post("/v1/videos", json={"prompt": "p", "input_reference": {"image_url": url}})  # OpenAI's shape
    assert created.json()["model"] == "kumo-shapes-frames", created.text


def test_huge_input_reference_is_refused_before_decoding(models, tmp_path):
    with offline_client(models, tmp_path, limits=Limits(max_image_pixels=64 * 64)) as c:
        files = {"input_reference": ("first.png", first_frame_png(128, 128), "image/png")}
        error = assert_error(c.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "input_reference")
        assert "128x128 pixels" in error["message"] and "scale it down" in error["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input_reference": "https://example.com/a.png"}, "input_reference"),  # no fetching
        ({"input_reference": "data:image/png;base64,%%%"}, "input_reference"),
        ({"input_reference": "data:image/png;base64,aGVsbG8="}, "input_reference"),  # "hello": not an image
        ({"input_reference": "IMAGE", "model": "kumo-shapes"}, "input_reference"),  # not trained for it
        ({"input_reference": "IMAGE", "image_guidance_scale": "lots"}, "image_guidance_scale"),
        ({"input_reference": "IMAGE", "image_guidance_scale": 1000}, "image_guidance_scale"),
        ({"image_guidance_scale": 2}, "image_guidance_scale"),  # needs an image
        ({"input_reference": {"file_id": "file_1"}}, "input_reference"),  # no file ids here
        ({"input_reference": 7}, "input_reference"),
    ],
)
def test_bad_input_reference_is_400(client, body, param):
    import base64

    if body.get("input_reference") == "IMAGE":
        png = base64.b64encode(first_frame_png(64, 64)).decode()
        body = {**body, "input_reference": "data:image/png;base64," + png}
    assert_error(client.post("/v1/videos", json={"prompt": "p", **body}), 400, param)


def test_image_to_video_over_http(live, models, tmp_path):
    """An uploaded first frame comes back as the clip's first frame (its latent is kept)."""
    import numpy as np
    from PIL import Image

    from kumovideo.utils.video_io import read_video

    base, _ = live
    frames_info = models[1]["kumo-shapes-frames"]
    png = first_frame_png(frames_info.width, frames_info.height)
    files = {"input_reference": ("first.png", png, "image/png")}
    body = {"prompt": "a red square stays still on a black background", "steps": "2", "seconds": "1"}
    created = httpx.post(f"{base}/v1/videos", data=body, files=files).json()
    assert created["model"] == "kumo-shapes-frames", created
    video = wait_done(lambda i: httpx.get(f"{base}/v1/videos/{i}").json(), created["id"], timeout=60)
    assert video["status"] == "completed", video
    (tmp_path / "clip.mp4").write_bytes(httpx.get(f"{base}/v1/videos/{video['id']}/content").content)
    clip, _ = read_video(tmp_path / "clip.mp4")
    import io

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)
    mse = np.mean((clip[0].astype(np.float64) - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 25  # the VAE's round trip and the video codec, not a new frame


def test_api_key(models, tmp_path):
    with offline_client(models, tmp_path, api_key="s3cret") as c:
        assert_error(c.get("/v1/videos"), 401)
        assert_error(c.get("/v1/videos", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/v1/videos", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/").status_code == 200  # the page itself is open; it sends the key


def test_unexpected_error_is_a_bare_500(models, tmp_path, monkeypatch, caplog):
    pipes, infos = models
    store = JobStore(tmp_path)
    app = create_app(store, pipes, infos, start_worker=False)

    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "page", broken)
    with TestClient(app) as c:  # nothing re-raised past the app: uvicorn would log it a second time
        with caplog.at_level(logging.ERROR, logger="kumovideo.serve.app"):
            response = c.get("/v1/videos")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "secret" not in response.text
    (record,) = caplog.records  # logged once, with the traceback
    assert record.getMessage() == "error answering GET /v1/videos" and record.exc_info


def test_curl_style_json_and_cli_host_check(client, tmp_path, monkeypatch):
    curl = {"content-type": "application/x-www-form-urlencoded"}  # `curl -d '{...}'` sends this
    assert client.post("/v1/videos", content=b'{"prompt": "p"}', headers=curl).json()["status"] == "queued"

    from argparse import Namespace

    from kumovideo.cli.serve import check_args
    from kumovideo.utils.errors import KumoInputError

    monkeypatch.delenv("KUMO_API_KEY", raising=False)
    args = dict(model=None, lora=None, host="0.0.0.0", port=8000, data_dir=str(tmp_path), api_key=None, max_queue=4)
    with pytest.raises(KumoInputError, match="--api-key"):
        check_args(Namespace(**args))
    monkeypatch.setenv("KUMO_API_KEY", "k")
    assert check_args(Namespace(**args))[3] == "k"


def test_one_worker_per_device_share_the_queue(tmp_path, monkeypatch):
    """Two copies of the models (two devices) each get a worker thread taking jobs from the
    one queue: the first two jobs run at the same time, one on each, and all complete."""
    from kumovideo.serve import worker as worker_module
    from kumovideo.serve.worker import Worker

    replicas = [load_models({TURBO: default_models()[TURBO]})[0] for _ in range(2)]
    store = JobStore(tmp_path)
    together = threading.Barrier(2, timeout=30)  # broken (the job fails) unless two threads meet
    ran_on = []
    real_generate = worker_module.generate

    def generate_meeting_the_other_worker(pipe, spec, on_step=None, source=None):
        ran_on.append((threading.current_thread().name, pipe))
        if len(ran_on) <= 2:
            together.wait()
        return real_generate(pipe, spec, on_step, source)

    monkeypatch.setattr(worker_module, "generate", generate_meeting_the_other_worker)
    spec = dict(model=TURBO, prompt="a red circle", negative_prompt=None, frames=9, height=64, width=64)
    spec.update(steps=1, guidance_scale=1.0, seed=0, fps=8)
    worker = Worker(store, replicas)
    assert len(worker.threads) == 2
    ids = [store.create(model=TURBO, size="64x64", seconds="1", prompt="a red circle", spec=spec)["id"] for _ in "abc"]
    try:
        worker.start()
        for job_id in ids:
            worker.submit(job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(store.get(i)["status"] in ("queued", "in_progress") for i in ids):
            time.sleep(0.05)
    finally:
        worker.stop()
    assert [store.get(i)["status"] for i in ids] == ["completed"] * 3
    first_two = ran_on[:2]
    assert len({name for name, _ in first_two}) == 2 and len({id(pipe) for _, pipe in first_two}) == 2
    assert not any(t.is_alive() for t in worker.threads)


def test_serving_devices():
    import torch

    from kumovideo.cli.serve import serving_devices
    from kumovideo.utils.errors import KumoInputError

    expected = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())] or [torch.device("cpu")]
    assert serving_devices(None) == expected
    assert serving_devices("cpu") == [torch.device("cpu")]
    with pytest.raises(KumoInputError, match="name each device once"):
        serving_devices("cpu,cpu")
    if not torch.cuda.is_available():
        with pytest.raises(KumoInputError, match="no CUDA GPU"):
            serving_devices("cuda:0,cuda:1")


def test_lumina_fields_reach_the_job_spec(models, tmp_path):
    """The built-in Lumina model is multi-scale and motion-conditioned: both fields are taken, the
    score clamped to its trained range, and kept with the job; the 128x128 base, named, refuses them."""
    pipes, infos = models
    store = JobStore(tmp_path)
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:
        refused = client.post("/v1/videos", json={"prompt": "p", "model": "kumo-shapes", "motion_score": 20})
        assert refused.status_code == 400 and "motion_score" in refused.text, refused.text
        lumina = {"prompt": "p", "model": "kumo-shapes-lumina", "multiscale": True, "motion_score": 99}
        response = client.post("/v1/videos", json=lumina)
        assert response.status_code == 200, response.text
        spec = store.get(response.json()["id"])["spec"]
        guided = {**lumina, "motion_score": 25, "negative_motion_score": 2, "negative_motion_end": "0.5"}  # form-like
        response = client.post("/v1/videos", json=guided)
        assert response.status_code == 200, response.text
        guided_spec = store.get(response.json()["id"])["spec"]
    spec = json.loads(spec) if isinstance(spec, str) else spec
    assert spec["multiscale"] is True and spec["motion_score"] == 30.0 and spec["negative_motion_score"] is None
    guided_spec = json.loads(guided_spec) if isinstance(guided_spec, str) else guided_spec
    assert (guided_spec["negative_motion_score"], guided_spec["negative_motion_end"]) == (10.0, 0.5)  # clamped
