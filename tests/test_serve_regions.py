"""`POST /v1/videos`'s `regions` and `layout` (KumoVideo extensions; docs/serving.md,
docs/layout.md): given boxes reach the pipeline through the stored job and the worker over
a live server on the built-in Turbo model, a form takes them as a JSON string, every
refusal is a 400 naming the field with no job kept, and a remix drops them."""

from __future__ import annotations

import base64
import json

import httpx2 as httpx
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import test_serve_api as api  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kumovideo.serve.app import create_app  # noqa: E402
from kumovideo.serve.jobs import JobStore  # noqa: E402
from kumovideo.serve.params import MAX_REGIONS  # noqa: E402
from kumovideo.utils.video_io import read_video  # noqa: E402

TURBO, assert_error, wait_done = api.TURBO, api.assert_error, api.wait_done
models, live = api.models, api.live  # the same fixtures: the models loaded, a live server

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the client's, not ours
# One object, which the built-in planner leaves alone: without regions the model draws it alone.
BODY = {"prompt": "a red circle moves right on a black background", "model": TURBO, "seconds": "1"}
BODY.update(size="64x64", steps=2, seed=12)
REGIONS = [
    {"prompt": "a blue square stays still on a black background", "box": [0.05, 0.05, 0.45, 0.45]},
    {"prompt": "a green triangle moves down on a black background", "box": [0.5, 0.1, 0.95, 0.5]},
]
REGIONS[1]["end_box"] = [0.5, 0.5, 0.95, 0.9]


def spec_of(store: JobStore, video_id: str) -> dict:
    return json.loads(store.get(video_id)["spec"])


def clip_of(base: str, video_id: str, tmp_path) -> np.ndarray:
    path = tmp_path / f"{video_id}.mp4"
    path.write_bytes(httpx.get(f"{base}/v1/videos/{video_id}/content").content)
    return read_video(path)[0]


def red_share(clip: np.ndarray) -> float:
    pixels = clip.reshape(-1, 3).astype(int)
    return float(((pixels[:, 0] > 150) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)).mean())


def made(base: str, video_id: str) -> dict:
    video = wait_done(lambda i: httpx.get(f"{base}/v1/videos/{i}").json(), video_id, timeout=90)
    assert video["status"] == "completed", video
    return video


def test_regions_reach_the_clip_and_a_remix_drops_them(live, tmp_path):
    base, store = live
    plain = httpx.post(f"{base}/v1/videos", json=BODY).json()
    boxed = httpx.post(f"{base}/v1/videos", json={**BODY, "regions": REGIONS}).json()
    assert boxed["status"] == "queued", boxed
    assert spec_of(store, boxed["id"])["regions"] == REGIONS and spec_of(store, plain["id"])["regions"] is None
    made(base, plain["id"]), made(base, boxed["id"])
    without, with_regions = clip_of(base, plain["id"], tmp_path), clip_of(base, boxed["id"], tmp_path)
    assert without.shape == with_regions.shape == (9, 64, 64, 3)
    # The same seed and prompt: only the regions' branches made the difference. The caption's
    # red circle is drawn without them (16% of the pixels); with them, each box is drawn by
    # its own prompt (a blue square, a green triangle) and nothing is red.
    assert np.abs(without.astype(float) - with_regions.astype(float)).mean() > 5
    assert red_share(without) > 0.05 and red_share(with_regions) < 0.01
    # A remix has a new prompt, which the source's boxes do not lay out: they are dropped.
    remix = httpx.post(f"{base}/v1/videos/{boxed['id']}/remix", json={"prompt": "a blue circle moves right"}).json()
    assert remix["remixed_from_video_id"] == boxed["id"], remix
    assert "regions" not in spec_of(store, remix["id"])
    made(base, remix["id"])
    # An extension reads the clip, not the source's settings.
    body = {"prompt": BODY["prompt"], "seconds": "1", "steps": "1", "video": {"id": boxed["id"]}}
    extended = httpx.post(f"{base}/v1/videos/extensions", json=body).json()
    assert extended.get("status") == "queued", extended
    made(base, extended["id"])


@pytest.fixture
def offline(models, tmp_path):
    """A TestClient whose worker is off (jobs stay queued) and its store."""
    pipes, infos = models
    store = JobStore(tmp_path)
    with TestClient(create_app(store, pipes, infos, start_worker=False)) as client:
        yield client, store


def test_form_bodies_take_regions_as_a_json_string(offline):
    client, store = offline
    form = {"prompt": BODY["prompt"], "model": TURBO, "regions": json.dumps(REGIONS), "layout": "false"}
    urlencoded = client.post("/v1/videos", data=form)
    assert urlencoded.status_code == 200, urlencoded.text
    spec = spec_of(store, urlencoded.json()["id"])
    assert (spec["regions"], spec["layout"]) == (REGIONS, False)
    multipart = client.post("/v1/videos", files=[(key, (None, value)) for key, value in form.items()])
    assert multipart.status_code == 200, multipart.text
    assert spec_of(store, multipart.json()["id"])["regions"] == REGIONS
    planned = client.post("/v1/videos", json={"prompt": "p", "model": TURBO, "layout": True})  # Turbo names a planner
    assert planned.status_code == 200, planned.text
    spec = spec_of(store, planned.json()["id"])
    assert (spec["layout"], spec["regions"]) == (True, None)


def test_layout_true_goes_to_a_model_with_a_planner(offline):
    """With no model named, a non-square size alone goes to the Lumina model (trained for
    it), which names no planner; `layout: true` asks for one, so it goes to the base."""
    client, store = offline
    body = {"prompt": "a red circle moves right and a blue square stays still on a black background"}
    body.update(size="224x128", seconds="1", steps=2)
    assert client.post("/v1/videos", json=body).json()["model"] == "kumo-shapes-lumina"
    planned = client.post("/v1/videos", json={**body, "layout": True})
    assert planned.status_code == 200, planned.text
    assert planned.json()["model"] == "kumo-shapes"
    assert spec_of(store, planned.json()["id"])["layout"] is True


def png_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(api.first_frame_png(64, 64)).decode()


ONE = {"prompt": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}


@pytest.mark.parametrize(
    "body, param, needle",
    [
        ({"regions": [{**ONE, "box": [0.5, 0.1, 0.2, 0.5]}]}, "regions", "x0 < x1"),
        ({"regions": [{**ONE, "box": [0.1, 0.1, 1.5, 0.5]}]}, "regions", "fractions of the frame"),
        ({"regions": [{**ONE, "box": [0.1, 0.1, 10**400, 0.5]}]}, "regions", "too large"),
        ({"regions": [{**ONE, "box": [0.1, 0.1]}]}, "regions", "[x0, y0, x1, y1]"),
        ({"regions": [{**ONE, "colour": "red"}]}, "regions", "unknown keys colour"),
        ({"regions": [{"box": ONE["box"]}]}, "regions", "prompt"),
        ({"regions": [{**ONE, "prompt": "x" * 5000}]}, "regions", "5000 characters"),
        ({"regions": []}, "regions", "non-empty list"),
        ({"regions": {"prompt": "a"}}, "regions", "non-empty list"),
        ({"regions": [[ONE], [ONE]]}, "regions", "2 layouts for 1 prompts"),
        ({"regions": [ONE] * (MAX_REGIONS + 1)}, "regions", f"at most {MAX_REGIONS}"),
        ({"regions": [[ONE] * (MAX_REGIONS + 1)]}, "regions", f"at most {MAX_REGIONS}"),
        ({"regions": "[{not json"}, "regions", "not valid JSON"),
        ({"regions": [ONE], "input_reference": "IMAGE"}, "regions", "input_reference"),
        ({"layout": "maybe"}, "layout", "true or false"),
        ({"layout": 1}, "layout", "true or false"),
        ({"layout": True, "model": "kumo-shapes-lumina"}, "layout", "names none"),  # no planner in its folder
    ],
)
def test_bad_regions_and_layout_are_400_and_keep_no_job(offline, body, param, needle):
    client, _ = offline
    if body.get("input_reference") == "IMAGE":
        body = {**body, "input_reference": png_data_url()}
    error = assert_error(client.post("/v1/videos", json={"prompt": "p", **body}), 400, param)
    assert needle in error["message"] and "\n" not in error["message"], error
    assert client.get("/v1/videos").json()["data"] == []


def test_form_refusals_name_the_field(offline):
    client, _ = offline
    for form, param, needle in [
        ({"regions": "not json"}, "regions", "not valid JSON"),
        ({"regions": json.dumps([{**ONE, "end_box": [0, 0, 2, 1]}])}, "regions", "end_box"),
        ({"layout": "sometimes"}, "layout", "true or false"),
    ]:
        error = assert_error(client.post("/v1/videos", data={"prompt": "p", **form}), 400, param)
        assert needle in error["message"], error
    files = {"input_reference": ("first.png", api.first_frame_png(64, 64), "image/png")}
    form = {"prompt": "p", "regions": json.dumps([ONE])}
    assert_error(client.post("/v1/videos", data=form, files=files), 400, "regions")
    # An edit takes neither: they are `POST /v1/videos`'s alone.
    edit = client.post("/v1/videos/edits", data=form, files={"video": ("v.mp4", b"x", "video/mp4")})
    assert assert_error(edit, 400, "regions")["code"] == "unknown_parameter"
    assert client.get("/v1/videos").json()["data"] == []
