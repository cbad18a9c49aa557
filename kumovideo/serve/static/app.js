// KumoVideo's page: a plain client of the public Videos API (/v1/videos), nothing else.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "kumovideo.apiKey";
const POLL_MS = 250;
const PAGE = 12;
const blobUrls = new Map(); // video id -> object URL (only when an API key is set)
let lastId = null; // the gallery's last id, for ?after=

function apiKey() {
  return $("api-key").value.trim();
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { ...options, headers });
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

function showError(message) {
  const el = $("error");
  el.textContent = message ? String(message).split("\n")[0] : "";
  el.title = message || "";
  el.hidden = !message;
}

// A <video> needs a URL; with an API key the content is fetched with the header instead.
async function contentUrl(id) {
  const path = `/v1/videos/${encodeURIComponent(id)}/content`;
  if (!apiKey()) return path;
  if (!blobUrls.has(id)) {
    const blob = await (await api(path)).blob();
    blobUrls.set(id, URL.createObjectURL(blob));
  }
  return blobUrls.get(id);
}

function makeVideo(src, label) {
  const v = document.createElement("video");
  Object.assign(v, { autoplay: true, loop: true, muted: true, playsInline: true, src });
  v.setAttribute("muted", "");
  v.setAttribute("playsinline", "");
  v.setAttribute("aria-label", label);
  return v;
}

function formBody() {
  const body = {
    prompt: $("prompt").value.trim(),
    size: $("size").value,
    turbo: $("turbo").checked,
  };
  if ($("model").value) body.model = $("model").value;
  if (!$("lora-box").hidden && $("lora-scale").value !== "") body.lora_scale = Number($("lora-scale").value);
  const neg = $("negative-prompt").value.trim();
  if (neg) body.negative_prompt = neg;
  // The seed goes as text: a JavaScript number loses digits past 2**53, and the API reads
  // digits in a string as the number. Empty: a random one, shown with the clip so it can be
  // made again (the API's own default is 0, the same clip every time).
  body.seed = $("seed").value !== "" ? $("seed").value : String(crypto.getRandomValues(new Uint32Array(1))[0]);
  if ($("steps").value !== "") body.steps = Number($("steps").value);
  // Lumina-Video's switches; a request with any of them goes to the model trained for them.
  if ($("motion-score").value !== "") body.motion_score = Number($("motion-score").value);
  if ($("negative-motion-score").value !== "") body.negative_motion_score = Number($("negative-motion-score").value);
  if ($("multiscale").checked) body.multiscale = true;
  // Regional prompts (docs/layout.md). Text that is not JSON goes as it is, so that the
  // server's one-line error says what is wrong with it.
  if ($("layout").value === "false") body.layout = false;
  const regions = $("regions").value.trim();
  if (regions) {
    try {
      body.regions = JSON.parse(regions);
    } catch (_) {
      body.regions = regions;
    }
  }
  return body;
}

function setProgress(video) {
  const p = Math.max(0, Math.min(100, Number(video.progress) || 0));
  $("progress").value = video.status === "completed" ? 100 : p;
  $("progress").textContent = `${Math.round($("progress").value)}%`;
  $("status-line").textContent = `${video.status} ${Math.round($("progress").value)}%`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The chosen first frame as a data: URL (the API takes it as input_reference), or null.
function firstFrame() {
  const file = $("first-frame").files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}.`));
    reader.readAsDataURL(file);
  });
}

async function generate(event) {
  event.preventDefault();
  showError("");
  const body = formBody();
  if (!body.prompt) return showError("Write a prompt first.");
  $("submit").disabled = true;
  try {
    const image = await firstFrame();
    if (image) body.input_reference = image;
    const video = await (await api("/v1/videos", { method: "POST", body: JSON.stringify(body) })).json();
    await follow(video, `seed ${body.seed}`);
  } catch (err) {
    showError(err.message);
  } finally {
    $("submit").disabled = false;
    refreshGallery();
  }
}

// A new job followed to its end: the progress bar, then the clip (or the job's error) in the player.
async function follow(video, note) {
  $("current").hidden = false;
  $("player").replaceChildren();
  setProgress(video);
  refreshGallery();
  while (video.status === "queued" || video.status === "in_progress") {
    await sleep(POLL_MS);
    video = await (await api(`/v1/videos/${encodeURIComponent(video.id)}`)).json();
    setProgress(video);
  }
  if (video.status === "completed") {
    $("player").replaceChildren(makeVideo(await contentUrl(video.id), video.prompt));
    $("status-line").textContent = `completed 100%, ${note}`;
  } else {
    showError(video.error && video.error.message ? video.error.message : `The job ${video.status}.`);
  }
}

// Remix (POST /v1/videos/{id}/remix): the clip made again with the prompt now in the form,
// keeping its layout and motion (video-to-video); the source's size, length and seed.
async function remix(source) {
  showError("");
  const prompt = $("prompt").value.trim();
  if (!prompt) return showError("Write the new prompt above, then press Remix on the clip.");
  const body = { prompt };
  const neg = $("negative-prompt").value.trim();
  if (neg) body.negative_prompt = neg;
  try {
    const path = `/v1/videos/${encodeURIComponent(source.id)}/remix`;
    const video = await (await api(path, { method: "POST", body: JSON.stringify(body) })).json();
    await follow(video, `remixed from "${source.prompt}"`);
  } catch (err) {
    showError(err.message);
  } finally {
    refreshGallery();
  }
}

// Extend (POST /v1/videos/extensions): two seconds more from the clip's last frames, with the
// prompt in the form, or the clip's own when the form's is empty.
async function extendClip(source) {
  showError("");
  const prompt = $("prompt").value.trim() || source.prompt;
  const body = { prompt, seconds: "2", video: { id: source.id } };
  try {
    const video = await (await api("/v1/videos/extensions", { method: "POST", body: JSON.stringify(body) })).json();
    await follow(video, `extended from "${source.prompt}"`);
  } catch (err) {
    showError(err.message);
  } finally {
    refreshGallery();
  }
}

// A gallery item's button: its text, its accessible name (which clip), a tooltip, the action.
function clipButton(text, label, title, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.title = title;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

async function galleryItem(video) {
  const li = document.createElement("li");
  li.dataset.id = video.id;
  let media;
  if (video.status === "completed") {
    try {
      media = makeVideo(await contentUrl(video.id), video.prompt || video.id);
    } catch (_) { /* file gone: fall through to the placeholder */ }
  }
  if (!media) {
    media = document.createElement("div");
    media.className = "placeholder";
    media.textContent = video.status;
  }
  const prompt = document.createElement("p");
  prompt.className = "prompt";
  prompt.textContent = video.prompt || "(no prompt)";
  const status = document.createElement("p");
  status.className = "status";
  status.textContent = `${video.status} · ${video.size || ""} · ${new Date(video.created_at * 1000).toLocaleString()}`;
  const name = video.prompt || video.id;
  const del = clipButton("Delete", `Delete clip: ${name}`, "Delete this clip and its file", async () => {
    try {
      await api(`/v1/videos/${encodeURIComponent(video.id)}`, { method: "DELETE" });
      if (blobUrls.has(video.id)) URL.revokeObjectURL(blobUrls.get(video.id));
      blobUrls.delete(video.id);
      li.remove();
    } catch (err) {
      showError(err.message);
    }
  });
  li.append(media, prompt, status, del);
  if (video.status === "completed") {
    li.append(
      clipButton("Remix", `Remix clip: ${name}`, "Make this clip again with the prompt above, keeping its layout and motion",
        () => remix(video)),
      clipButton("Extend", `Extend clip: ${name}`, "Add two seconds from its last frames, with the prompt above (or its own)",
        () => extendClip(video)),
    );
  }
  return li;
}

// The served models (GET /v1/models) in the Model list; "automatic" lets the server pick.
// A LoRA (a model with a parent) shows the LoRA scale field.
async function loadModels() {
  try {
    const list = await (await api("/v1/models")).json();
    const chosen = $("model").value;
    const options = list.data.map((m) => {
      const option = new Option(m.parent ? `${m.id} (LoRA on ${m.parent})` : m.id, m.id);
      option.dataset.lora = m.parent ? "1" : "";
      return option;
    });
    $("model").replaceChildren(new Option("automatic", ""), ...options);
    if (list.data.some((m) => m.id === chosen)) $("model").value = chosen;
    showLoraScale();
  } catch (err) {
    showError(err.message);
  }
}

function showLoraScale() {
  const option = $("model").selectedOptions[0];
  $("lora-box").hidden = !(option && option.dataset.lora);
}

let galleryRun = 0;
async function refreshGallery(append = false) {
  const run = ++galleryRun;
  try {
    const after = append && lastId ? `&after=${encodeURIComponent(lastId)}` : "";
    const list = await (await api(`/v1/videos?limit=${PAGE}${after}`)).json();
    if (run !== galleryRun) return; // a newer refresh superseded this one
    const items = await Promise.all(list.data.map(galleryItem));
    if (run !== galleryRun) return;
    if (append) $("gallery").append(...items);
    else $("gallery").replaceChildren(...items);
    if (list.data.length) lastId = list.data[list.data.length - 1].id;
    $("more").hidden = !(list.has_more ?? list.data.length === PAGE);
  } catch (err) {
    showError(err.message);
  }
}

$("api-key").value = localStorage.getItem(KEY_STORE) || "";
$("api-key").addEventListener("change", () => {
  if (apiKey()) localStorage.setItem(KEY_STORE, apiKey());
  else localStorage.removeItem(KEY_STORE);
  loadModels();
  refreshGallery();
});
if (apiKey()) $("key-box").open = true;
$("model").addEventListener("change", showLoraScale);
$("gen-form").addEventListener("submit", generate);
$("more").addEventListener("click", () => refreshGallery(true));
loadModels();
refreshGallery();
