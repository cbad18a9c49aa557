"""The web page of `kumo serve` in headless Chromium: prompt, progress bar, playing clip, gallery.

Runs the real server as a subprocess and Debian's chromium through Playwright. Skipped when
chromium, Playwright or the server's extra are missing, except under CI=1 (the Makefile
installs them all there), where that is a failure.
"""

import importlib.util
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
PROMPT = "a red circle moves left on a black background"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium; make install does)"
    for module in ("playwright", "starlette", "uvicorn", "kumovideo.serve"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} is not importable (pip install -e '.[serve,test]')"
    return None


# No proxy for loopback requests, whatever the environment says.
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _builtin_lora(folder: Path) -> Path:
    """A rank-2 LoRA folder for the built-in base (random weights: the page only serves it)."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from kumovideo.builtin import builtin_model_dir
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.lora import LORA_INFO_NAME

    torch.manual_seed(0)
    transformer = KumoPipeline.from_pretrained(builtin_model_dir(False)).transformer
    transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"], init_lora_weights=False))
    KumoPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer), safe_serialization=True
    )
    (folder / LORA_INFO_NAME).write_text(json.dumps({"base": str(builtin_model_dir(False)), "rank": 2}))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the page test needs it under CI: {reason}")
        pytest.skip(reason)
    data_dir = tmp_path_factory.mktemp("serve-data")
    lora = _builtin_lora(tmp_path_factory.mktemp("lora") / "tiny-style")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("KUMO_API_KEY", None)
    cmd = [sys.executable, "-m", "kumovideo.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    cmd += ["--lora", str(lora)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    log: list[str] = []

    def pump():
        for line in proc.stdout:
            log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 120
    url = None
    try:
        while url is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                pytest.fail("kumo serve did not start:\n" + "".join(log[-40:]))
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if "kumo serve: listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
        assert not [line for line in log if "warm-up" in line or "%|" in line], "".join(log)  # a quiet start
        host, port_text = url.rsplit("/", 1)[-1].rsplit(":", 1)
        while True:  # the line may come just before the socket accepts
            try:
                socket.create_connection((host, int(port_text)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(45_000)
            yield page
        finally:
            context.close()


def test_static_files_served(server):
    with _open(server + "/", timeout=10) as r:
        html = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html")
    for name in ("/static/app.js", "/static/style.css"):
        assert name in html
        with _open(server + name, timeout=10) as r:
            assert r.status == 200 and r.read()


def test_page_generates_plays_and_lists_a_clip(server, page):
    page.goto(server + "/")
    # Every input has a label (accessible name).
    for label in ("Prompt", "Negative prompt", "Size", "Seed", "Steps", "Turbo"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    assert page.get_by_label("First frame", exact=False).get_attribute("type") == "file"

    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Turbo", exact=True).check()
    page.get_by_label("Seed", exact=True).fill("7")
    # Record every value the progress bar takes, from before the submit.
    page.evaluate(
        """() => {
            window.__seen = [];
            const bar = document.getElementById('progress');
            const tick = () => {
                if (!document.getElementById('current').hidden) window.__seen.push(bar.value);
            };
            window.__tick = setInterval(tick, 10);
        }"""
    )
    page.get_by_role("button", name="Generate").click()

    video = page.locator("#player video")
    video.wait_for(state="attached", timeout=45_000)
    page.evaluate("() => clearInterval(window.__tick)")
    seen = page.evaluate("() => window.__seen.concat([document.getElementById('progress').value])")
    assert seen and seen[-1] == 100, seen
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert seen[0] < 100 or len(seen) == 1, seen

    src = video.get_attribute("src")
    assert src.startswith("/v1/videos/") and src.endswith("/content"), src
    for attr in ("autoplay", "loop", "muted", "playsinline"):
        assert video.get_attribute(attr) is not None, attr
    # The clip decodes and plays in Chromium (Debian's build has H.264).
    page.wait_for_function("v => v.readyState >= 2 && v.videoWidth > 0", arg=video.element_handle(), timeout=15_000)
    assert video.evaluate("v => v.videoWidth") == 128  # the Turbo model's own size
    page.wait_for_function("v => v.currentTime > 0", arg=video.element_handle(), timeout=15_000)

    with _open(server + src, timeout=10) as r:
        body = r.read()
    assert r.headers["Content-Type"].startswith("video/mp4")
    assert body[4:8] == b"ftyp"

    # The gallery lists it, newest first, with its prompt and status.
    video_id = src.split("/")[3]
    item = page.locator(f'#gallery li[data-id="{video_id}"]')
    item.wait_for(timeout=15_000)
    assert page.locator("#gallery li").first.get_attribute("data-id") == video_id
    assert PROMPT in item.locator(".prompt").inner_text()
    assert "completed" in item.locator(".status").inner_text()
    assert item.locator("video").get_attribute("src") == src
    assert page.locator("#error").is_hidden()


def _model_of_the_clip(server: str, page) -> str:
    """The model the API says made the clip now in the player (once it is there)."""
    video = page.locator("#player video")
    video.wait_for(state="attached", timeout=45_000)
    video_id = video.get_attribute("src").split("/")[3]
    with _open(f"{server}/v1/videos/{video_id}", timeout=10) as r:
        return json.load(r)["model"]


def test_page_lists_the_served_models_and_runs_a_lora(server, page):
    """The Model list comes from GET /v1/models; a LoRA shows its scale field and the clip is
    made by it (the job names it)."""
    page.goto(server + "/")
    model = page.get_by_label("Model", exact=True)
    page.wait_for_function("() => document.getElementById('model').options.length > 1")
    labels = model.locator("option").all_inner_texts()
    assert labels[0] == "automatic" and "kumo-shapes" in labels and "kumo-shapes-turbo" in labels, labels
    assert "tiny-style (LoRA on kumo-shapes)" in labels, labels
    scale = page.get_by_label("LoRA scale", exact=True)
    assert scale.is_hidden()
    model.select_option("tiny-style")
    assert scale.is_visible()
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    scale.fill("0.5")
    page.get_by_label("Steps", exact=True).fill("2")
    page.get_by_role("button", name="Generate").click()
    assert _model_of_the_clip(server, page) == "tiny-style"
    model.select_option("")
    assert scale.is_hidden()
    page.get_by_label("Steps", exact=True).fill("")


def test_page_draws_a_seed_when_left_empty(server, page):
    """ "Seed (empty: random)": each Generate without a seed sends a new one, and the page says
    which; a typed seed goes up whole, past JavaScript's 2**53."""
    sent = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.method == "POST" else None)
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Turbo", exact=True).check()
    page.get_by_label("Steps", exact=True).fill("1")
    status = page.locator("#status-line")
    for _ in range(2):
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("() => /seed \\d+/.test(document.getElementById('status-line').textContent)")
        assert status.inner_text().endswith(f"seed {sent[-1]['seed']}"), status.inner_text()
        page.evaluate("() => { document.getElementById('status-line').textContent = ''; }")
    assert sent[0]["seed"] != sent[1]["seed"] and all(body["seed"].isdigit() for body in sent)
    page.get_by_label("Seed", exact=True).fill(str(2**63 - 1))
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => /seed \\d+/.test(document.getElementById('status-line').textContent)")
    assert sent[-1]["seed"] == str(2**63 - 1) and page.locator("#error").is_hidden()
    for label in ("Seed", "Steps"):
        page.get_by_label(label, exact=True).fill("")
    page.get_by_label("Turbo", exact=True).uncheck()


def test_page_makes_a_clip_from_a_first_frame(server, page, tmp_path):
    """A chosen image goes up as input_reference: the built-in conditioned model makes the clip."""
    import numpy as np
    from PIL import Image

    image = np.zeros((96, 96, 3), np.uint8)  # another size than the model's: resized by the server
    image[24:48, 24:48] = (255, 0, 0)
    Image.fromarray(image).save(tmp_path / "first.png")
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill("a red square stays still on a black background")
    page.get_by_label("First frame", exact=False).set_input_files(str(tmp_path / "first.png"))
    page.get_by_label("Steps", exact=True).fill("2")
    page.get_by_role("button", name="Generate").click()
    assert _model_of_the_clip(server, page) == "kumo-shapes-frames"
    assert page.locator("#error").is_hidden()


def test_page_asks_for_motion_and_multiscale(server, page):
    """Motion score, motion guidance and multi-scale go up with the request, which the server
    routes to the built-in Lumina model; a negative motion score alone is refused inline."""
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Steps", exact=True).fill("2")
    page.get_by_label("Negative motion score", exact=True).fill("10")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=15_000)
    assert "needs a motion score" in error.inner_text() and "\n" not in error.inner_text()
    page.get_by_label("Motion score", exact=True).fill("25")
    page.get_by_label("Multi-scale (faster)", exact=True).check()
    page.get_by_role("button", name="Generate").click()
    assert _model_of_the_clip(server, page) == "kumo-shapes-lumina"
    assert page.locator("#error").is_hidden()
    for label in ("Motion score", "Negative motion score", "Steps"):
        page.get_by_label(label, exact=True).fill("")
    page.get_by_label("Multi-scale (faster)", exact=True).uncheck()


def test_page_shows_a_refused_size_inline(server, page):
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    # A size the model cannot make: the server answers 400 and the page shows its message.
    page.evaluate(
        """() => {
            const s = document.getElementById('size');
            s.add(new Option('65x65', '65x65'));
            s.value = '65x65';
        }"""
    )
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=15_000)
    assert error.inner_text().strip()
    assert "\n" not in error.inner_text()


def _completed_job(server: str, prompt: str) -> str:
    """A finished clip made through the API (Turbo, the model's own size)."""
    request = urllib.request.Request(
        server + "/v1/videos",
        data=json.dumps({"prompt": prompt, "turbo": True, "seed": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with _open(request, timeout=10) as r:
        video = json.load(r)
    deadline = time.monotonic() + 45
    while video["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        with _open(f"{server}/v1/videos/{video['id']}", timeout=10) as r:
            video = json.load(r)
    assert video["status"] == "completed", video
    return video["id"]


def test_page_deletes_a_clip(server, page):
    video_id = _completed_job(server, "a blue square moves up on a black background")
    page.goto(server + "/")
    item = page.locator(f'#gallery li[data-id="{video_id}"]')
    item.wait_for(timeout=15_000)
    before = page.locator("#gallery li").count()
    item.get_by_role("button", name="Delete clip").click()
    item.wait_for(state="detached", timeout=15_000)
    assert page.locator("#gallery li").count() == before - 1
    with pytest.raises(urllib.error.HTTPError) as e:
        _open(f"{server}/v1/videos/{video_id}", timeout=10)
    assert e.value.code == 404


def test_page_remixes_a_clip_with_the_prompt_in_the_form(server, page):
    source = _completed_job(server, "a red circle moves left on a black background")
    page.goto(server + "/")
    item = page.locator(f'#gallery li[data-id="{source}"]')
    item.wait_for(timeout=15_000)
    item.get_by_role("button", name="Remix clip").click()  # no prompt yet: said inline, nothing sent
    assert "Write the new prompt" in page.locator("#error").inner_text()
    page.get_by_label("Prompt", exact=True).fill("a blue circle moves left on a black background")
    item.get_by_role("button", name="Remix clip").click()
    video = page.locator("#player video")
    video.wait_for(state="attached", timeout=45_000)
    assert "remixed from" in page.locator("#status-line").inner_text()
    remix_id = video.get_attribute("src").split("/")[3]
    with _open(f"{server}/v1/videos/{remix_id}", timeout=10) as r:
        made = json.load(r)
    assert made["remixed_from_video_id"] == source and made["prompt"].startswith("a blue circle")
    assert page.locator("#error").is_hidden()


def test_page_extends_a_clip_with_its_own_prompt(server, page):
    source = _completed_job(server, "a green circle moves right on a black background")
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill("")
    item = page.locator(f'#gallery li[data-id="{source}"]')
    item.wait_for(timeout=15_000)
    item.get_by_role("button", name="Extend clip").click()
    video = page.locator("#player video")
    video.wait_for(state="attached", timeout=90_000)
    assert "extended from" in page.locator("#status-line").inner_text()
    with _open(f"{server}/v1/videos/{video.get_attribute('src').split('/')[3]}", timeout=10) as r:
        made = json.load(r)
    assert made["prompt"] == "a green circle moves right on a black background"
    assert made["seconds"] == "4" and made["model"] == "kumo-shapes-frames"  # 2 s source + 2 s
    assert page.locator("#error").is_hidden()


def test_page_sends_regions_and_the_layout_switch(server, page):
    """The Layout panel: regions go up as JSON with the layout switch; text that is not JSON
    goes as it is and the server's one-line refusal shows inline, nothing made."""
    page.goto(server + "/")
    page.get_by_label("Prompt", exact=True).fill(
        "a red square stays still and a blue square stays still on a black background"
    )
    page.get_by_label("Turbo", exact=True).check()
    page.locator("#layout-box summary").click()
    regions = page.get_by_label("Regions", exact=False)
    regions.fill('[{"prompt": "a red square stays still on a black background", "box": [0.05, 0.3')
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=15_000)
    assert "regions is not valid JSON" in error.inner_text() and "\n" not in error.inner_text()
    assert page.locator("#current").is_hidden()  # no job
    layout = [
        {"prompt": "a red square stays still on a black background", "box": [0.05, 0.3, 0.4, 0.7]},
        {"prompt": "a blue square stays still on a black background", "box": [0.6, 0.3, 0.95, 0.7]},
    ]
    regions.fill(json.dumps(layout))
    page.get_by_label("Layout planner", exact=True).select_option("false")
    with page.expect_request(lambda r: r.url.endswith("/v1/videos") and r.method == "POST") as sent:
        page.get_by_role("button", name="Generate").click()
    body = json.loads(sent.value.post_data)
    assert body["regions"] == layout and body["layout"] is False
    assert _model_of_the_clip(server, page) == "kumo-shapes-turbo"
    assert page.locator("#error").is_hidden()
    regions.fill("")
    page.get_by_label("Layout planner", exact=True).select_option("")
    page.get_by_label("Turbo", exact=True).uncheck()
