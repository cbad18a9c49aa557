"""A create request's fields -> a checked job spec, before anything is queued.

The rules are the project's own (`kumovideo.utils.numbers`, `kumovideo.pipelines.checks`,
`ClipGeometry.check_clip`): their one-line `KumoInputError` becomes the 400's message,
with the field named in `param`. `seconds` maps to frames as `fps * seconds + 1` (8 fps:
"1" -> 9 frames, "2" -> 17, "4" -> 33), which must be a frame count the VAE decodes
(8k+1); anything else is refused rather than silently rounded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from kumovideo.geometry import ClipGeometry
from kumovideo.pipelines import checks
from kumovideo.pipelines.conditioning import fit_image, load_image
from kumovideo.pipelines.extension import frames_to_add
from kumovideo.pipelines.layout import check_layout_inputs, check_regions
from kumovideo.pipelines.lora import check_lora_scale
from kumovideo.pipelines.video_to_video import DEFAULT_STRENGTH
from kumovideo.serve.errors import ApiError
from kumovideo.serve.limits import Limits
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import check_real, check_seed, check_whole

SIZE_PATTERN = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
SECONDS_PATTERN = re.compile(r"[0-9]{1,4}(\.[0-9]{1,3})?")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
# Every field a create request may hold: OpenAI's (prompt, model, seconds, size,
# input_reference) and this server's extensions (docs/serving.md's table).
FIELDS = frozenset(
    (
        "prompt model seconds size input_reference negative_prompt seed steps guidance_scale turbo multiscale "
        "motion_score negative_motion_score negative_motion_end image_guidance_scale lora_scale regions layout"
    ).split()
)
# A remix's: OpenAI's (prompt) and this server's extensions; the rest comes from the source.
REMIX_FIELDS = frozenset("prompt negative_prompt strength seed".split())
# An edit of an uploaded clip (`POST /v1/videos/edits`): OpenAI's (prompt, video), `strength`,
# and a create request's own settings but its first frame (the upload is the source) and its
# layout (`regions` and `layout` are `POST /v1/videos`'s alone).
EDIT_FIELDS = (FIELDS - {"input_reference", "image_guidance_scale", "regions", "layout"}) | {"video", "strength"}
# Regions a request may give: each adds a transformer row to every step (docs/layout.md).
MAX_REGIONS = 8


@dataclass(frozen=True)
class ModelInfo:
    """What the request checks need to know about one served model."""

    name: str
    turbo: bool
    geometry: ClipGeometry
    frames: int  # the default clip
    height: int
    width: int
    fps: int
    steps: int  # the checkpoint's recommended sampling
    guidance: float
    scheduler_config: dict  # the steps it may sample (checks.check_scheduler_steps)
    # Lumina-Video's additions where the model has them (docs/lumina.md); the request checks
    # read the transformer's config (multiscale_patch_sizes, motion_conditioning) and defaults.
    transformer_config: dict = field(default_factory=dict)
    multiscale_split: float = checks.DEFAULT_MULTISCALE_SPLIT
    motion_score_range: tuple[float, float] | None = None
    aspect_range: tuple[float, float] | None = None  # None: trained at its default size only
    video_strength: float = DEFAULT_STRENGTH  # a remix's or an edit's default strength
    lora_of: str | None = None  # a LoRA (`kumo serve --lora`): the served model it adapts
    layout_planner: str | None = None  # kumo_defaults.json's `layout` (docs/layout.md); None: it names none

    def card(self, created: int) -> dict:
        """Its entry in `GET /v1/models` (OpenAI's model object; `parent`: the model a LoRA
        adapts, as vLLM writes it)."""
        card = {"id": self.name, "object": "model", "created": created, "owned_by": "kumovideo"}
        return {**card, "parent": self.lora_of}

    def takes(self, *, image: bool, multiscale: bool, motion: bool, layout: bool = False) -> bool:
        """Whether its transformer was trained for what the request asks (and, for `layout:
        true`, whether its folder names a layout planner)."""
        if layout and self.layout_planner is None:
            return False
        return checks.trained_for(self.transformer_config, image=image, multiscale=multiscale, motion=motion)

    def trained_for_size(self, width: int | None, height: int | None) -> bool:
        return checks.trained_for_size((self.width, self.height), self.aspect_range, width, height)


def bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _checked(param: str, check, *args, **kwargs):
    try:
        return check(*args, **kwargs)
    except KumoInputError as exc:
        raise bad(param, str(exc)) from None


def _number_from_form(value, cast):
    """Form fields are strings: "3" -> 3, so the shared checks see numbers; anything that is
    not a number stays a string and is refused by them."""
    if isinstance(value, str):
        try:
            return cast(value)
        except ValueError:
            return value
    return value


def _optional_number(fields: dict, key: str):
    """A number field that may be left out (absent or "" -> None), as `_number_from_form` reads it."""
    value = fields.get(key)
    return None if value in (None, "") else _number_from_form(value, float)


def _bool(value, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise bad(param, f"{param}={value!r} must be true or false")


def route(models: dict[str, ModelInfo], default: str, size: tuple[int, int] | None, **needs: bool) -> str:
    """The served model for a request that names none (the CLI's rule, `kumovideo.builtin.
    lumina_request`, over what is served): the default if it was trained for what the request
    asks (`ModelInfo.takes`: an input image, multi-scale, a motion score, a planned layout) and its size, else
    the first served model that was, else the first that takes what it asks (any size runs,
    with a warning), else the default (whose check then names what it lacks)."""
    width, height = size or (None, None)
    ordered = [models[default]] + [m for m in models.values() if m.name != default and not (m.turbo or m.lora_of)]
    taking = [m for m in ordered if m.takes(**needs)]
    fitting = [m for m in taking if m.trained_for_size(width, height)]
    return (fitting or taking or ordered)[0].name


def _size_field(size) -> tuple[int, int] | None:
    """`size` "WIDTHxHEIGHT" as (width, height); None when not given."""
    if size is None or size == "":
        return None
    match = SIZE_PATTERN.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise bad("size", f'size={size!r} must be WIDTHxHEIGHT in pixels, such as "128x128"')
    return int(match[1]), int(match[2])


def _input_image(value, max_pixels: int) -> np.ndarray | None:
    """`input_reference`: an uploaded image file (multipart, OpenAI's way) or, in a JSON
    body, a `data:image/...;base64,...` URL, bare or as OpenAI's `{"image_url": ...}`;
    decoded by the pipeline's own loader."""
    if isinstance(value, dict):
        if set(value) != {"image_url"}:
            raise bad(
                "input_reference",
                f"input_reference {{{', '.join(map(repr, value))}}}: only {{'image_url': "
                "'data:image/...;base64,...'} is taken here (no file ids); or upload the image as a form file",
            )
        value = value["image_url"]
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)):
        raise bad(
            "input_reference",
            f"input_reference is a {type(value).__name__}; send an image file (a multipart upload) "
            "or a data:image/...;base64, URL",
        )
    if isinstance(value, str):
        head, comma, data = value.partition(",")
        if not (head.startswith("data:image/") and head.endswith(";base64") and comma):
            raise bad(
                "input_reference",
                "input_reference must be an image file (a multipart upload) or a data:image/...;base64, URL",
            )
        try:
            value = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise bad("input_reference", "input_reference's data: URL is not valid base64") from None
    return _checked("input_reference", load_image, value, max_pixels=max_pixels)


def pick_model(
    fields: dict, models: dict[str, ModelInfo], default: str, image: bool = False, size: tuple[int, int] | None = None
) -> ModelInfo:
    """`model` if given (one of the served names); else `turbo: true` picks the served
    Turbo model; else `route`'s choice (the default unless the request needs another).
    `size`: the request's (width, height) if it gives one."""
    turbo = _bool(fields.get("turbo", False), "turbo")
    name = fields.get("model")
    if name is None or name == "":
        if turbo:
            name = next((m.name for m in models.values() if m.turbo and not m.lora_of), None)
            if name is None:
                raise bad("turbo", "no Turbo model is served; leave turbo out or start kumo serve with one")
        else:
            motion = fields.get("motion_score") not in (None, "")
            multiscale = _bool(fields.get("multiscale", False), "multiscale")
            layout = _layout_field(fields.get("layout")) is True
            name = route(models, default, size, image=image, multiscale=multiscale, motion=motion, layout=layout)
    if not isinstance(name, str) or name not in models:
        served = ", ".join(repr(n) for n in models)
        raise bad("model", f"model {name!r} is not served here; use one of {served}", code="model_not_found")
    info = models[name]
    if turbo and not info.turbo:
        raise bad("turbo", f"model {name!r} is not a Turbo model; drop turbo or pick a Turbo model")
    return info


def _sampling(fields: dict, model: ModelInfo, limits: Limits) -> tuple[int, int, float]:
    """`seed`, `steps` and `guidance_scale`, each the model's where left out, within the server's limits."""
    seed = _checked("seed", check_seed, _number_from_form(fields.get("seed", 0), int))
    steps = fields.get("steps")
    steps = model.steps if steps in (None, "") else _number_from_form(steps, int)
    steps = _checked("steps", check_whole, steps, "steps", high=limits.max_steps)
    _checked("steps", checks.check_scheduler_steps, steps, model.scheduler_config)
    guidance = fields.get("guidance_scale")
    guidance = model.guidance if guidance in (None, "") else _number_from_form(guidance, float)
    guidance = _checked(
        "guidance_scale", check_real, guidance, "guidance_scale", low=0, high=limits.max_guidance, above_low=False
    )
    return seed, steps, guidance


def _known_fields(fields: dict, taken: frozenset) -> None:
    unknown = sorted(set(fields) - taken)
    if unknown:  # a misspelt field would otherwise be dropped without a word (OpenAI refuses them too)
        raise bad(
            unknown[0],
            f"unknown parameter {unknown[0]!r}; the fields taken are {', '.join(sorted(taken))}",
            code="unknown_parameter",
        )


def _prompts(fields: dict, limits: Limits) -> tuple[str, str | None]:
    """`prompt` (required) and `negative_prompt`: one string each, within the server's length."""
    prompt = fields.get("prompt")
    if prompt is None:
        raise bad("prompt", "prompt is required: say what the clip should show", code="missing_required_parameter")
    negative = fields.get("negative_prompt") or None
    _checked("prompt", checks.check_prompts, prompt, None)
    _checked("negative_prompt", checks.check_prompts, prompt, negative)
    if isinstance(prompt, list):
        raise bad("prompt", "prompt must be one string (one video per request)")
    if isinstance(negative, list):
        raise bad("negative_prompt", "negative_prompt must be one string (one video per request)")
    if not prompt.strip():
        raise bad("prompt", "the prompt is empty; say what the clip should show")
    for param, text in (("prompt", prompt), ("negative_prompt", negative or "")):
        if len(text) > limits.max_prompt_chars:
            raise bad(
                param, f"{param} has {len(text)} characters; this server takes at most {limits.max_prompt_chars}"
            )
    return prompt, negative


def _layout_field(value) -> bool | None:
    """`layout`: true or false (JSON's booleans, or a form's "true" / "false"); left out (or
    "") None, the model's planner where it names one."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise bad("layout", f"layout={value!r} must be true or false (or left out: the model's own planner)")
    return value


def _regions_field(value):
    """`regions` as sent: a list (a JSON body), or a string holding its JSON (a form field);
    None when left out. Only decoded here: `_layout` checks it."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise bad(
                "regions",
                'regions is not valid JSON; send a list such as [{"prompt": "...", "box": [x0, y0, x1, y1]}]',
            ) from None
    return value


def _region_count(regions) -> int:
    """The regions of the (one prompt's) layout, counted before they are checked one by one:
    a list of region dicts, or a list of such lists (one per prompt; more than one is refused
    by `check_regions` before it reads any)."""
    if not isinstance(regions, (list, tuple)):
        return 0
    if regions and all(isinstance(r, (list, tuple)) for r in regions):
        return max(len(r) for r in regions)
    return len(regions)


def _layout(fields: dict, model: ModelInfo, frames: int, conditioned: bool, limits: Limits) -> tuple:
    """`regions` (checked by the pipeline's own `check_regions`, kept as sent) and `layout`
    (None, True or False), or a 400 naming the field."""
    layout = _layout_field(fields.get("layout"))
    regions = _regions_field(fields.get("regions"))
    if regions is not None:
        if conditioned:
            raise bad("regions", "regions do not combine with input_reference (image-to-video); send one or the other")
        count = _region_count(regions)
        if count > MAX_REGIONS:
            raise bad("regions", f"regions has {count} regions; this server takes at most {MAX_REGIONS}")
    # With regions, `layout` (a boolean by now) cannot be wrong: what is refused is theirs.
    param = "layout" if regions is None else "regions"
    planner = model.layout_planner
    _checked(param, check_layout_inputs, regions, layout, planner, 1, frames, conditioned=conditioned)
    if regions is not None:
        for i, region in enumerate(check_regions(regions, 1, frames)[0]):
            try:  # text the tokenizer can read, as the prompt's
                checks.check_prompts(region.prompt, None)
            except KumoInputError as exc:
                raise bad("regions", f"regions[{i}]'s {exc}") from None
            if len(region.prompt) > limits.max_prompt_chars:
                most, length = limits.max_prompt_chars, len(region.prompt)
                message = f"regions[{i}]'s prompt has {length} characters; this server takes at most {most}"
                raise bad("regions", message)
    return regions, layout


def parse_remix(fields: dict, source_id: str, source: dict, models: dict[str, ModelInfo], limits: Limits) -> dict:
    """The job spec of a `POST /v1/videos/{id}/remix` body: the source job's spec (`source`:
    its model, size, length, steps, guidance and seed) with the new prompt, made by
    video-to-video from the source's clip (`kumovideo.pipelines.video_to_video`) at
    `strength` (this server's extension, default: the model's `video_strength`, else 0.6);
    `seed` and `negative_prompt` may be given anew. The source's `regions` are not kept: they
    lay out its prompt, not the new one (its `layout` is, though video-to-video never plans
    one). The caller has checked that the source is completed."""
    _known_fields(fields, REMIX_FIELDS)
    prompt, negative = _prompts(fields, limits)
    if source["model"] not in models:
        served = ", ".join(repr(n) for n in models)
        raise bad("video_id", f"the source's model {source['model']!r} is no longer served (served: {served})")
    strength = _optional_number(fields, "strength")
    _checked("strength", checks.check_video_to_video, True, strength)
    seed = fields.get("seed")
    seed = source["seed"] if seed in (None, "") else _checked("seed", check_seed, _number_from_form(seed, int))
    if source.get("added_frames"):  # an extension's clip is its source and the added frames: remade whole
        source = dict(source)
        frames = source.pop("frames") + source.pop("added_frames")
        geometry = models[source["model"]].geometry
        _checked("video_id", geometry.check_clip, frames, source["height"], source["width"])
        if frames > limits.max_frames:
            raise bad("video_id", f"the source has {frames} frames; this server remakes at most {limits.max_frames}")
        source["frames"] = frames
    source = {k: v for k, v in source.items() if k != "regions"}
    return {
        **source,
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": seed,
        "strength": models[source["model"]].video_strength if strength is None else strength,
        "remixed_from_video_id": source_id,
    }


# An extension's (`POST /v1/videos/extensions`): OpenAI's (prompt, seconds, video) and this
# server's model, seed, steps, guidance_scale and negative_prompt.
EXTEND_FIELDS = frozenset("prompt seconds video model seed steps guidance_scale negative_prompt".split())


def video_field(fields: dict) -> str | bytes:
    """`video` of an edit or an extension: the id of `{"id": "video_..."}` (a video made here),
    or an uploaded clip's bytes (not empty); anything else is a 400."""
    video = fields.get("video")
    if isinstance(video, dict):
        if set(video) != {"id"} or not isinstance(video["id"], str):
            raise bad("video", 'video must be {"id": "video_..."} or an uploaded clip', code=None)
        return video["id"]
    if isinstance(video, bytes):
        if not video:
            raise bad("video", "the uploaded video is an empty file; upload a clip (.mp4, .webm, .gif)")
        return video
    what = "video is required" if video in (None, "") else f"video is a {type(video).__name__}"
    raise bad(
        "video",
        f'{what}: upload a clip as a form file, or give {{"id": "video_..."}} of a video made here',
        code="missing_required_parameter" if video in (None, "") else "invalid_value",
    )


def _decoded(clip: str, read, /, *args, **kwargs):
    """`read(*args, **kwargs)` on a clip (`clip` names it); one it cannot use is a 400 naming `video`."""
    try:
        return read(*args, **kwargs)
    except KumoInputError as exc:  # too short, at its own rate
        raise bad("video", str(exc)) from None
    except Exception as exc:  # PyAV's errors are many; each means the clip cannot be used
        reason = str(exc) if isinstance(exc, ValueError) else f"it cannot be decoded ({type(exc).__name__})"
        raise bad("video", f"{clip} cannot be used: {reason}; upload an .mp4, .webm or .gif") from None


def parse_extend(fields: dict, data: bytes, models: dict[str, ModelInfo], default: str, limits: Limits) -> dict:
    """The job spec of a `POST /v1/videos/extensions` body: `data` (a served video's file or an
    upload, decoded here, at most 4x the server's frames) made `seconds` longer by a model
    trained with conditioning frames (`kumovideo.pipelines.extension`: the clip's last frames
    known); the clip keeps its size and frame rate (8 where the file has none), and the
    job's `seconds` is the whole clip's."""
    from kumovideo.utils.video_io import read_video_head

    _known_fields(fields, EXTEND_FIELDS)
    longest = limits.max_frames * 4
    source, fps = _decoded("the video", read_video_head, data, longest + 1, max_pixels=limits.max_image_pixels)
    if len(source) > longest:
        raise bad("video", f"the video has over {longest} frames; extend a shorter one")
    fps = fps or 8.0
    prompt, negative = _prompts(fields, limits)
    name = fields.get("model") or route(models, default, None, image=True, multiscale=False, motion=False)
    model = pick_model({"model": name}, models, default)
    _checked("model", checks.check_frame_conditioning, model.transformer_config, f"model {model.name!r}")
    seconds = fields.get("seconds")
    text = str(seconds) if seconds is not None and not isinstance(seconds, bool) else ""
    if not SECONDS_PATTERN.fullmatch(text) or float(text) <= 0:
        raise bad("seconds", f'seconds={seconds!r} must be the seconds to add, such as "2"')
    added = frames_to_add(float(text), fps)  # kumo extend's rule: the nearest whole frame (29.97 fps)
    if len(source) + added > limits.max_frames * 4:
        raise bad(
            "seconds",
            f"the clip would be {len(source) + added} frames; this server makes at most {limits.max_frames * 4}",
        )
    height, width = source.shape[1:3]
    if max(width, height) > limits.max_side:  # the new frames are made at the clip's size
        raise bad("video", f"the video is {width}x{height}, larger than this server's {limits.max_side} pixels a side")
    _checked("video", model.geometry.check_sides, height, width, "the clip to extend keeps its size")
    seed, steps, guidance = _sampling(fields, model, limits)
    total = (len(source) + added - 1) / fps
    return {
        "model": model.name,
        "prompt": prompt,
        "negative_prompt": negative,
        "seconds": f"{total:g}",
        "size": f"{width}x{height}",
        "frames": len(source),  # the source's, read back by the worker
        "added_frames": added,
        "height": height,
        "width": width,
        "fps": fps,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance,
        "remixed_from_video_id": None,
    }


def parse_edit_upload(fields: dict, upload: bytes, models: dict[str, ModelInfo], default: str, limits: Limits) -> dict:
    """The job spec of a `POST /v1/videos/edits` body whose `video` is `upload` (a clip): a
    create request's settings (model, size, seconds, ...) and `strength`; the upload must
    decode to at least the clip's frames (only those are read), each at most the server's
    image size. Video-to-video from it, as a remix is from a served clip."""
    from kumovideo.pipelines.video_to_video import read_source

    _known_fields(fields, EDIT_FIELDS)
    strength = _optional_number(fields, "strength")
    _checked("strength", checks.check_video_to_video, True, strength)
    spec = parse_create({k: v for k, v in fields.items() if k not in ("video", "strength")}, models, default, limits)
    # Its frames at the clip's times (a 30 fps upload keeps its speed): only checked here.
    what = "the uploaded video"
    _decoded(what, read_source, upload, spec["frames"], spec["fps"], max_pixels=limits.max_image_pixels, what=what)
    default = models[spec["model"]].video_strength
    return {**spec, "strength": default if strength is None else strength, "remixed_from_video_id": None}


def parse_create(fields: dict, models: dict[str, ModelInfo], default: str, limits: Limits) -> dict:
    """The job spec of a `POST /v1/videos` body (JSON object or form fields), or ApiError."""
    _known_fields(fields, FIELDS)
    prompt, negative = _prompts(fields, limits)
    image = _input_image(fields.get("input_reference"), limits.max_image_pixels)
    size = fields.get("size")
    asked_size = _size_field(size)
    model = pick_model(fields, models, default, image=image is not None, size=asked_size)
    if image is not None:
        _checked("input_reference", checks.check_frame_conditioning, model.transformer_config, f"model {model.name!r}")

    frames, seconds = model.frames, fields.get("seconds")
    if seconds is None or seconds == "":
        seconds = f"{(model.frames - 1) / model.fps:g}"
    else:
        text = str(seconds) if not isinstance(seconds, bool) else ""
        if not SECONDS_PATTERN.fullmatch(text):
            raise bad("seconds", f'seconds={seconds!r} must be a number of seconds such as "2"')
        value = float(text)
        frames = round(value * model.fps) + 1
        if not math.isclose(frames - 1, value * model.fps) or not model.geometry.is_valid_frames(frames):
            step = model.geometry.frame_step / model.fps
            raise bad(
                "seconds",
                f"seconds={text} is not a length {model.name} makes at {model.fps} fps "
                f'(fps * seconds + 1 frames, a multiple of {step:g} s); use e.g. "1" or "2"',
            )
        seconds = f"{value:g}"
    if frames > limits.max_frames:
        longest = (limits.max_frames - 1) // model.fps
        raise bad("seconds", f"seconds={seconds} is {frames} frames; this server makes at most {longest} s")

    width, height = asked_size or (model.width, model.height)
    if size is None or size == "":
        size = f"{width}x{height}"
    else:
        if max(width, height) > limits.max_side:
            raise bad("size", f"size={size} is larger than this server's {limits.max_side} pixels a side")
    _checked("size", model.geometry.check_clip, frames, height, width)  # frames are valid by now

    seed, steps, guidance = _sampling(fields, model, limits)
    multiscale = _bool(fields.get("multiscale", False), "multiscale")
    _checked(
        "multiscale",
        checks.check_multiscale,
        model.transformer_config,
        model.geometry,
        height,
        width,
        multiscale,
        model.multiscale_split if multiscale else None,
        what=model.name,
    )
    motion_score = _optional_number(fields, "motion_score")
    _checked("motion_score", checks.check_motion_score, model.transformer_config, motion_score, what=model.name)
    motion_score = checks.clamp_motion_score(motion_score, model.motion_score_range)
    negative_motion = _optional_number(fields, "negative_motion_score")
    negative_end = _optional_number(fields, "negative_motion_end")
    _checked("negative_motion_score", checks.check_negative_motion, motion_score, negative_motion, None, guidance)
    _checked("negative_motion_end", checks.check_negative_motion_end, negative_motion, negative_end)
    negative_motion = checks.clamp_motion_score(negative_motion, model.motion_score_range, "negative motion score")
    image_guidance = fields.get("image_guidance_scale")
    if image_guidance not in (None, ""):
        if image is None:
            raise bad("image_guidance_scale", "image_guidance_scale needs an input_reference; add one or drop it")
        image_guidance = _number_from_form(image_guidance, float)
        _checked("image_guidance_scale", checks.check_image_guidance, image_guidance)
        if not image_guidance <= limits.max_guidance:
            limit = limits.max_guidance
            raise bad("image_guidance_scale", f"image_guidance_scale={image_guidance} is over this server's {limit}")
    else:
        image_guidance = None
    lora_scale = fields.get("lora_scale")
    if lora_scale not in (None, ""):
        if model.lora_of is None:
            loras = ", ".join(repr(m.name) for m in models.values() if m.lora_of) or "none is served"
            raise bad("lora_scale", f"lora_scale scales a LoRA and {model.name!r} is not one (LoRAs: {loras})")
        lora_scale = _checked("lora_scale", check_lora_scale, _number_from_form(lora_scale, float))
    else:
        lora_scale = 1.0 if model.lora_of else None
    regions, layout = _layout(fields, model, frames, image is not None, limits)
    fitted = None if image is None else fit_image(image, height, width, "input_reference")
    return {
        "model": model.name,
        "lora": model.name if model.lora_of else None,  # the adapter the worker switches on
        "lora_scale": lora_scale,
        "multiscale": multiscale,
        "motion_score": motion_score,
        "negative_motion_score": negative_motion,  # motion guidance (None: off)
        "negative_motion_end": negative_end,
        "prompt": prompt,
        "negative_prompt": negative,
        "seconds": seconds,
        "size": size,
        "frames": frames,
        "height": height,
        "width": width,
        "fps": model.fps,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance,
        # The first frame, fitted to the clip (resized and centre-cropped, logged), as a PNG:
        # the spec is stored as JSON with the job, so a restart loses nothing.
        "input_reference_png": None if fitted is None else _png_base64(fitted),
        "image_guidance_scale": image_guidance,
        "regions": regions,  # as sent (None: none given); the worker passes them to the pipeline
        "layout": layout,  # None: the model's planner
    }


def _png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def spec_image(spec: dict) -> np.ndarray | None:
    """The job's first frame (uint8 H, W, 3), or None for text-to-video."""
    png = spec.get("input_reference_png")
    return None if png is None else load_image(base64.b64decode(png))
