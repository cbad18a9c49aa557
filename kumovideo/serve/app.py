"""The Starlette app: OpenAI's Videos routes over the job store and the worker, the web
page at `/`, and `run_server` (uvicorn) for `kumo serve`.

Every refusal is an OpenAI-style error body with a 4xx; an unexpected exception is logged
here and answered with a 500 whose body says nothing of the internals.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kumovideo.serve.errors import ApiError, error_body, not_found, not_ready, video_gone
from kumovideo.serve.jobs import JobStore, video_object
from kumovideo.serve.limits import Limits
from kumovideo.serve.params import parse_create, parse_edit_upload, parse_extend, parse_remix, video_field
from kumovideo.serve.worker import Worker

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class BearerAuth:
    """ASGI middleware: with a key set, every /v1 request needs `Authorization: Bearer KEY`."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if self.api_key and scope["type"] == "http" and scope["path"].startswith("/v1"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                message = "missing or wrong API key: send Authorization: Bearer <key>"
                response = _error_response(ApiError(401, message, code="invalid_api_key"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class InternalErrors:
    """ASGI middleware: an unexpected exception is logged once, with its traceback, and
    answered with a 500 whose body says nothing of the internals. (Starlette's own handler
    for Exception re-raises after answering, so uvicorn logged every traceback a second time.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            logger.error("error answering %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:  # else the client already has a status line: the connection just ends
                body = error_body("internal server error", type="server_error")
                await JSONResponse(body, status_code=500)(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    too_large = ApiError(
        413,
        f"request body is larger than {limit / 2**20:g} MiB; an uploaded image or video counts: send a smaller "
        "one (it is scaled to the clip's size anyway)",
        code="request_too_large",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_fields(request: Request, limit: int, files: tuple[str, ...] = ("input_reference",)) -> dict:
    """A request's fields, from a JSON object or a (multipart or urlencoded) form; `files`:
    the fields that may be uploads (their bytes)."""
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == FORM_TYPES[1] and body.lstrip().startswith(b"{"):
        kind = "application/json"  # `curl -d '{...}'` without a Content-Type header
    if kind in FORM_TYPES:

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            # One more file than taken: the extra one is then named as such (not "too many files").
            form = await Request(request.scope, receive).form(max_files=len(files) + 1, max_fields=64)
        except Exception as exc:  # starlette's MultiPartException says which limit (one file, 64 fields)
            reason = str(getattr(exc, "message", "") or exc).rstrip(".") or type(exc).__name__
            raise ApiError(400, f"the form body could not be parsed: {reason}", code="invalid_body") from None
        fields = {}
        for key, value in form.items():
            if not isinstance(value, str):  # an upload: only the fields in `files`
                if key not in files:
                    raise ApiError(400, f"{key} must be a text field, not a file", param=key)
                value = await value.read()
            fields[key] = value
        return fields
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting too deep
        raise ApiError(
            400, "the body is not valid JSON; send a JSON object or a multipart form", code="invalid_json"
        ) from None
    if not isinstance(fields, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return fields


def create_app(
    store: JobStore,
    pipes: dict,
    infos: dict,
    *,
    limits: Limits | None = None,
    api_key: str | None = None,
    start_worker: bool = True,
) -> Starlette:
    """The app over `store` and warm `pipes` (name -> pipeline; `infos` name -> ModelInfo,
    the first the default). Jobs a crash cut off are failed now, before anything runs."""
    limits = limits or Limits()
    interrupted = store.fail_interrupted()
    if interrupted:
        logger.warning("%d job(s) cut off by the last stop marked failed", interrupted)
    worker = Worker(store, pipes)
    default_model = next(iter(infos))
    started = int(time.time())  # the models' `created`: they were loaded now

    def job_or_404(video_id: str) -> dict:
        job = store.get(video_id)
        if job is None:
            raise not_found(video_id)
        return job

    def check_queue_room() -> None:
        if store.queued_count() >= limits.max_queue:  # deleted jobs do not count; the one running neither
            raise ApiError(
                429,
                f"the job queue is full ({limits.max_queue} waiting); retry later",
                type="requests",
                code="rate_limit_exceeded",
            )

    def completed(video_id: str, action: str) -> dict:
        """A served video to remake or extend: 404 if there is none, 409 until it is completed."""
        job = job_or_404(video_id)
        if job["status"] != "completed":
            raise not_ready(job, f"{action} a completed video")
        return job

    def enqueue(spec: dict, source: bytes | str | None = None) -> JSONResponse:
        """Queue a job; `source`: an uploaded clip's bytes, or the id of the served video whose
        clip the job remakes or extends (hard-linked, so deleting that video does not fail it)."""
        check_queue_room()
        job = store.create(**{k: spec[k] for k in ("model", "size", "seconds", "prompt")}, spec=spec)
        if isinstance(source, bytes):
            store.write_source(job["id"], source)
        elif source is not None:
            try:
                store.link_source(job["id"], source)
            except FileNotFoundError:  # the source's file went (deleted meanwhile, or by hand)
                store.delete(job["id"])
                raise video_gone(source) from None
        worker.submit(job["id"])
        return JSONResponse(video_object(job))

    async def create(request: Request):
        fields = await read_fields(request, limits.max_body_bytes)
        # In a thread: an input_reference image is decoded and resized there, which must not
        # hold up the event loop (every other request and progress poll) meanwhile.
        return enqueue(await run_in_threadpool(parse_create, fields, infos, default_model, limits))

    async def remix(request: Request):
        source = completed(request.path_params["video_id"], "remix")
        return remix_of(source, await read_fields(request, limits.max_body_bytes, files=()))

    def remix_of(source: dict, fields: dict) -> JSONResponse:
        """`source`: a completed job."""
        return enqueue(parse_remix(fields, source["id"], json.loads(source["spec"]), infos, limits), source["id"])

    async def edit(request: Request):
        """OpenAI's edit: `video` an uploaded clip (multipart), or {"id": ...} of a served video
        (then the same as its remix)."""
        fields = await read_fields(request, limits.max_body_bytes, files=("video",))
        video = video_field(fields)
        if isinstance(video, str):
            return remix_of(completed(video, "remix"), {k: v for k, v in fields.items() if k != "video"})
        spec = await run_in_threadpool(parse_edit_upload, fields, video, infos, default_model, limits)  # decodes
        return enqueue(spec, video)

    async def extension(request: Request):
        """OpenAI's extension: `video` {"id": ...} of a served video or an uploaded clip, made
        `seconds` longer from its last frames by a model trained with conditioning frames."""
        fields = await read_fields(request, limits.max_body_bytes, files=("video",))
        video = video_field(fields)
        data = video
        if isinstance(video, str):
            try:
                data = store.video_path(completed(video, "extend")["id"]).read_bytes()
            except FileNotFoundError:
                raise video_gone(video) from None
        spec = await run_in_threadpool(parse_extend, fields, data, infos, default_model, limits)  # decodes: a thread
        return enqueue(spec, video)

    async def retrieve(request: Request):
        return JSONResponse(video_object(job_or_404(request.path_params["video_id"])))

    async def delete(request: Request):
        video_id = request.path_params["video_id"]
        if not store.delete(video_id):
            raise not_found(video_id)
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    async def content(request: Request):
        job = job_or_404(request.path_params["video_id"])
        variant = request.query_params.get("variant", "video")
        if variant != "video":
            raise ApiError(400, f"variant={variant!r}: only 'video' is available", param="variant")
        path = store.video_path(job["id"])
        if job["status"] != "completed":
            raise not_ready(job, "no content yet")
        if not path.exists():
            raise video_gone(job["id"])
        return FileResponse(path, media_type="video/mp4", filename=f"{job['id']}.mp4")

    async def list_videos(request: Request):
        q = request.query_params
        limit = q.get("limit", "20")
        if not re.fullmatch(r"[0-9]{1,9}", limit) or not 1 <= int(limit) <= limits.max_list:
            raise ApiError(400, f"limit={limit!r}; use 1 to {limits.max_list}", param="limit")
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, f"order={order!r}; use 'asc' or 'desc'", param="order")
        try:
            jobs, more = store.page(limit=int(limit), after=q.get("after"), newest_first=order == "desc")
        except KeyError:
            raise ApiError(400, f"after={q.get('after')!r} is no video's id", param="after") from None
        data = [video_object(j) for j in jobs]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return JSONResponse({"object": "list", "data": data, "has_more": more, "first_id": first, "last_id": last})

    async def index(request: Request):
        page = STATIC_DIR / "index.html"
        if page.exists():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse("<p>kumo serve: the web page is not installed; the API is at /v1/videos</p>")

    async def list_models(request: Request):
        return JSONResponse({"object": "list", "data": [info.card(started) for info in infos.values()]})

    async def retrieve_model(request: Request):
        name = request.path_params["model"]
        if name not in infos:
            served = ", ".join(repr(n) for n in infos)
            raise ApiError(404, f"model {name!r} is not served here; use one of {served}", code="model_not_found")
        return JSONResponse(infos[name].card(started))

    async def health(request: Request):
        return JSONResponse({"status": "ok", "models": list(infos), "queued": store.queued_count()})

    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc)

    async def http_error(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(ApiError(exc.status_code, str(exc.detail), code=code))

    def on_shutdown():
        worker.stop()

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/videos", create, methods=["POST"]),
        Route("/v1/videos", list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", retrieve, methods=["GET"]),
        Route("/v1/videos/{video_id}", delete, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", content, methods=["GET"]),
        Route("/v1/videos/{video_id}/remix", remix, methods=["POST"]),
        Route("/v1/videos/edits", edit, methods=["POST"]),
        Route("/v1/videos/extensions", extension, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if start_worker:
            worker.start()
        yield
        on_shutdown()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    app.state.worker, app.state.store = worker, store
    app.add_middleware(InternalErrors)
    app.add_middleware(BearerAuth, api_key=api_key)
    return app


def run_server(app, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn stops taking requests and the lifespan stops the
    worker); print `kumo serve: listening on http://HOST:PORT` once requests are taken."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else port
                print(f"kumo serve: listening on http://{host}:{bound}", flush=True)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    Server(config).run()
    sys.stdout.flush()
