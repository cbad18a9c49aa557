"""The warm models and the worker thread.

Pipelines are loaded once at start-up and stay on their device; each request only pays
for its own sampling and decode (no 4 s of importing and loading, as a `kumo generate`
run does). One worker thread per device runs jobs from a bounded queue one at a time (two
clips at once on one device would only share its cores), reporting progress through the
pipeline's `callback_on_step_end` into the job store.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from kumovideo.serve.jobs import JobStore
from kumovideo.serve.params import ModelInfo, spec_image
from kumovideo.utils.errors import KumoInputError

logger = logging.getLogger(__name__)

STEPS_SHARE = 90  # progress the denoising steps take; the decode and the write take the rest
STOPPED = "server stopped while this job was in progress"


class Cancelled(Exception):
    """Raised from the step callback when a job is deleted or the server stops."""


def default_models() -> dict[str, Path]:
    """The built-in base, Turbo, Lumina and conditioned models, by their served names."""
    from kumovideo.builtin import FRAMES_DIR, LUMINA_DIR, builtin_model_dir

    models = {"kumo-shapes": builtin_model_dir(turbo=False), "kumo-shapes-turbo": builtin_model_dir(turbo=True)}
    if (LUMINA_DIR / "model_index.json").exists():  # multi-scale, motion scores, any aspect
        models["kumo-shapes-lumina"] = LUMINA_DIR
    if (FRAMES_DIR / "model_index.json").exists():  # image-to-video (input_reference)
        models["kumo-shapes-frames"] = FRAMES_DIR
    return models


def load_models(
    folders: dict[str, Path], device="cpu", loras: dict[str, tuple[Path, str]] | None = None
) -> tuple[dict, dict[str, ModelInfo]]:
    """name -> pipeline on `device`, and name -> what the request checks need. `loras`: name ->
    (LoRA folder or file, the served model it adapts); each is served under its name from its
    base's weights (one copy: `pipeline_with_lora`), the adapter switched on per job."""
    import dataclasses

    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.lora import pipeline_with_lora
    from kumovideo.pipelines.video_to_video import video_strength
    from kumovideo.schedulers import KumoLCMScheduler

    pipes, infos = {}, {}
    for name, folder in folders.items():
        pipe = KumoPipeline.from_pretrained(folder).to(device)
        pipe.set_progress_bar_config(disable=True)
        clip, sampling = pipe.default_clip(), pipe.default_sampling()
        pipes[name] = pipe
        infos[name] = ModelInfo(
            name=name,
            turbo=isinstance(pipe.scheduler, KumoLCMScheduler),
            geometry=pipe.geometry,
            frames=clip["num_frames"],
            height=clip["height"],
            width=clip["width"],
            fps=int(pipe.sampling_defaults.get("fps", 8)),
            steps=sampling["num_inference_steps"],
            guidance=float(sampling["guidance_scale"]),
            scheduler_config=dict(pipe.scheduler.config),
            transformer_config=dict(pipe.transformer.config),
            multiscale_split=pipe.multiscale_split,
            motion_score_range=pipe.motion_score_range,
            aspect_range=pipe.aspect_range,
            video_strength=video_strength(pipe.sampling_defaults),
            layout_planner=pipe.sampling_defaults.get("layout"),
        )
    for name, (path, base) in (loras or {}).items():
        pipes[name] = pipeline_with_lora(pipes[base], path, adapter_name=name)
        pipes[name].set_progress_bar_config(disable=True)
        infos[name] = dataclasses.replace(infos[base], name=name, lora_of=base)
    return pipes, infos


def generate(pipe, spec: dict, on_step=None, source=None):
    """One clip of a job spec as uint8 frames (F, H, W, 3); a remix's from `source`, its
    source clip's frames (video-to-video at the spec's `strength`); with the spec's
    `regions` and `layout` where it has them."""
    import torch

    from kumovideo.pipelines import frames_to_uint8
    from kumovideo.pipelines.lora import use_adapter

    def callback(p, step, timestep, tensors):
        if on_step is not None:
            on_step(step + 1, p._num_timesteps)
        return {}

    image = spec_image(spec)
    conditioning = {} if image is None else {"image": image, "image_guidance_scale": spec.get("image_guidance_scale")}
    if source is not None:
        conditioning.update(video=source, strength=spec["strength"])
    # Regional prompts (`POST /v1/videos`'s `regions`, `layout`): passed only when the job has
    # them, so a job stored before they existed samples as it did.
    conditioning.update({key: spec[key] for key in ("regions", "layout") if spec.get(key) is not None})
    scale = spec.get("lora_scale")
    use_adapter(pipe, spec.get("lora"), 1.0 if scale is None else scale)  # the transformer is shared with its LoRAs
    video = pipe(
        prompt=spec["prompt"],
        negative_prompt=spec["negative_prompt"],
        num_frames=spec["frames"],
        height=spec["height"],
        width=spec["width"],
        num_inference_steps=spec["steps"],
        guidance_scale=spec["guidance_scale"],
        generator=torch.Generator(device="cpu").manual_seed(spec["seed"]),
        multiscale=spec.get("multiscale", False),
        motion_score=spec.get("motion_score"),
        negative_motion_score=spec.get("negative_motion_score"),
        negative_motion_end=spec.get("negative_motion_end"),
        output_type="pt",
        callback_on_step_end=callback,
        **conditioning,
    ).frames[0]
    return frames_to_uint8(video)


def extend(pipe, spec: dict, source, on_step=None):
    """An extension job: `source` (uint8 frames) and the spec's `added_frames` more, segment by
    segment (`kumovideo.pipelines.extension`); progress counts every segment's steps."""
    import torch

    from kumovideo.pipelines.extension import context_frames, extend_frames, segment_frames

    segments, _ = segment_frames(pipe, spec["added_frames"], context_frames(len(source)))
    done = 0

    def callback(p, step, timestep, tensors):
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, segments * p._num_timesteps)
        return {}

    return extend_frames(
        pipe,
        source,
        spec["added_frames"],
        spec["prompt"],
        generator=torch.Generator(device="cpu").manual_seed(spec["seed"]),
        negative_prompt=spec["negative_prompt"],
        num_inference_steps=spec["steps"],
        guidance_scale=spec["guidance_scale"],
        callback_on_step_end=callback,
    )


class Worker:
    """One thread per device, each with its own copy of the models (`pipes`: name -> pipeline,
    or a list of such, one per device), all taking job ids from one queue. How many may wait
    is the app's check (`JobStore.queued_count`), not this queue's size: a job deleted while
    queued leaves its id here until a worker skips it, and must not hold a place."""

    def __init__(self, store: JobStore, pipes: dict | list[dict]):
        self.store = store
        self.replicas = [pipes] if isinstance(pipes, dict) else list(pipes)
        self.jobs: queue.Queue[str | None] = queue.Queue()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(replica,), name=f"kumo-serve-worker-{i}", daemon=True)
            for i, replica in enumerate(self.replicas)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def submit(self, job_id: str) -> None:
        self.jobs.put_nowait(job_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running job at its next step, fail the queued ones, join the thread."""
        self.stopping.set()
        while True:
            try:
                job_id = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job_id is not None:
                self.store.fail(job_id, "server_stopped", "server stopped before this job started; submit it again")
        for _ in self.threads:  # one wake-up each
            self.jobs.put_nowait(None)
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout)

    def _loop(self, pipes: dict) -> None:
        while not self.stopping.is_set():
            job_id = self.jobs.get()
            if job_id is None or self.stopping.is_set():
                break
            try:
                self._run(job_id, pipes)
            except Exception:  # a bug here must not end the worker; the job says it failed
                logger.exception("job %s failed", job_id)
                self.store.fail(job_id, "server_error", "generation failed (server error; see the server log)")

    def _run(self, job_id: str, pipes: dict) -> None:
        import json

        from kumovideo.pipelines.video_to_video import read_source
        from kumovideo.utils.video_io import read_video_head, write_video

        if not self.store.start(job_id):
            return  # deleted while queued
        job = self.store.get(job_id)
        spec = json.loads(job["spec"])

        def on_step(done: int, total: int) -> None:
            if self.stopping.is_set():
                raise Cancelled(STOPPED)
            if not self.store.update(job_id, progress=int(STEPS_SHARE * done / max(total, 1))):
                raise Cancelled("deleted")

        needs_source = spec.get("strength") is not None or spec.get("added_frames")  # remix, edit or extension
        source = self.store.source_path(job_id) if needs_source else None
        try:
            pipe = pipes[spec["model"]]
            if spec.get("added_frames"):  # an extension keeps its source's frames as they are
                frames = extend(pipe, spec, read_video_head(source, spec["frames"])[0], on_step)
            elif source is not None:  # a remix's or an edit's: at the clip's times, as parse_edit_upload checked
                frames = generate(pipe, spec, on_step, read_source(source, spec["frames"], spec["fps"]))
            else:
                frames = generate(pipe, spec, on_step)
        except Cancelled as exc:
            if str(exc) == STOPPED:
                self.store.fail(job_id, "server_stopped", STOPPED)
            return
        except KumoInputError as exc:  # a rule the request checks did not catch
            self.store.fail(job_id, "invalid_request", str(exc))
            return
        finally:
            if source is not None:
                source.unlink(missing_ok=True)
        path = self.store.video_path(job_id)
        write_video(frames, path, fps=spec["fps"])  # atomic: a temporary file renamed
        if not self.store.complete(job_id):  # deleted during the decode
            path.unlink(missing_ok=True)


def warm_up(pipes: dict, infos: dict[str, ModelInfo]) -> None:
    """One one-step clip per model before the server listens, so the first request does not
    pay for first-call costs (allocator growth, lazy kernels, tokenizer caches). Its prompt
    is no caption: the pipeline's unknown-word warning is held back meanwhile."""
    pipeline_logger = logging.getLogger("kumovideo.pipelines.pipeline_kumo")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)
    try:
        for name, pipe in pipes.items():
            info = infos[name]
            clip = dict(frames=info.frames, height=info.height, width=info.width, steps=1, seed=0)
            spec = dict(prompt="warm-up", negative_prompt=None, guidance_scale=info.guidance, **clip)
            generate(pipe, {**spec, "lora": name if info.lora_of else None})
    finally:
        pipeline_logger.setLevel(level)
