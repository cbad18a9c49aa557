"""Training the video-to-audio model (`kumo train v2a`) on (video, audio) pairs.

* the pairs: ShapesWorld clips with their v1.1 soundtracks, rendered per step (held-out
  captions skipped with `holdout_captions: true`), or a folder of the user's own clips
  that carry audio (`clips:`, e.g. `kumo data cut`'s output): random windows of a stage's
  `num_frames` frames and the audio under them;
* v-prediction on diffusers' DDIM schedule (cosine, zero terminal SNR), timesteps per stage
  (`timestep_sampling`: uniform, or the report's cubic), as the DiT trainer draws them;
* video dropout (`video_dropout`) so the model also learns the unconditional branch that
  guidance needs; EMA; gradient clipping — the shared loop (`training/loop.py`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

from kumovideo.data.shapes_world import DEFAULT_FPS, caption, is_held_out, render_clip, render_sound, sample_example
from kumovideo.models.v2a_kumo import KumoV2AModel
from kumovideo.pipelines.pipeline_kumo_v2a import KumoV2APipeline
from kumovideo.pipelines.spectrogram import audio_to_mel, frames_to_condition, num_samples_for
from kumovideo.training.config import TrainConfig
from kumovideo.training.loop import TrainState, train
from kumovideo.training.objectives import diffuse, sample_timesteps, v_prediction_loss
from kumovideo.training.pipeline_folder import write_pipeline_folder
from kumovideo.training.runtime import Runtime, step_generator
from kumovideo.utils.errors import KumoInputError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".m4v")


def build_v2a_scheduler() -> DDIMScheduler:
    """Cosine betas rescaled to zero terminal SNR, trailing timesteps (Lin et al. 2023), v-prediction."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
    )


def shapes_pair(seed: int, index: int, size: int, num_frames: int, holdout: bool, model_config) -> tuple:
    """Example `index` of the ShapesWorld stream: (normalised log-mel (M, T), frames (F, 3, s, s)).
    With `holdout`, a held-out caption is replaced by the next draw from a side stream."""
    spec, text = sample_example(seed, index, size=size, num_frames=num_frames)
    redraw = 0
    while holdout and is_held_out(text):
        redraw += 1
        spec, text = sample_example(seed + redraw * 7919, index, size=size, num_frames=num_frames)
    mel = audio_to_mel(render_sound(spec, fps=DEFAULT_FPS, sample_rate=model_config.sample_rate), model_config)
    return mel, frames_to_condition(render_clip(spec), model_config.frame_size)


class FootagePairs:
    """Random windows of a folder of clips with audio: `num_frames` frames and the audio
    they span, resampled to the model's rate. Clips are decoded once and kept in memory."""

    def __init__(self, folder: str, model_config):
        from kumovideo.utils.audio_io import probe_media

        self.model_config = model_config
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        self.paths = [p for p in paths if probe_media(p).has_audio]
        if not self.paths:
            raise KumoInputError(
                f"clips={folder}: no video file with an audio track found ({len(paths)} without); "
                "cut clips with `kumo data cut` (it keeps audio) or point clips: at videos that have sound"
            )
        self._decoded: dict[Path, tuple[np.ndarray, float, np.ndarray]] = {}

    def _clip(self, path: Path):
        if path not in self._decoded:
            from kumovideo.utils.audio_io import read_audio
            from kumovideo.utils.video_io import read_video

            frames, fps = read_video(path)
            audio, _ = read_audio(path, self.model_config.sample_rate)
            self._decoded[path] = (frames, float(fps), audio)
        return self._decoded[path]

    def pair(self, rng: random.Random, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames, fps, audio = self._clip(rng.choice(self.paths))
        if abs(fps - DEFAULT_FPS) > 1e-3:
            raise KumoInputError(
                f"clips: training runs at {DEFAULT_FPS} fps, a clip has {fps:g}; cut them at that rate "
                f"(`kumo data` cut.fps: {DEFAULT_FPS})"
            )
        start = rng.randrange(max(1, len(frames) - num_frames + 1))
        window = frames[start : start + num_frames]
        if len(window) < num_frames:  # a short clip: hold its last frame
            window = np.concatenate([window, np.repeat(window[-1:], num_frames - len(window), axis=0)])
        rate = self.model_config.sample_rate
        first = round(start * rate / fps)
        n = num_samples_for(num_frames, fps, rate)
        sound = np.zeros(n, dtype=np.float32)
        piece = audio[first : first + n]
        sound[: len(piece)] = piece
        return audio_to_mel(sound, self.model_config), frames_to_condition(window, self.model_config.frame_size)


def build_denoiser(config: TrainConfig) -> KumoV2AModel:
    if config.init_from:  # shipped folders hold fp16 weights: train in fp32
        return KumoV2APipeline.from_pretrained(config.init_from).denoiser.float()
    return KumoV2AModel(**config.v2a)


def train_v2a(config: TrainConfig, runtime: Runtime, resume: bool = False, stop_after: int | None = None) -> dict:
    torch.manual_seed(config.seed)
    # The zero-initialised blocks pass through denormal floats early on; on a CPU those are
    # slow (measured: 1.6 s -> 0.9 s per step at step 250), and flushing them changes nothing else.
    torch.set_flush_denormal(True)
    denoiser = build_denoiser(config).to(runtime.device).train()
    scheduler = build_v2a_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).to(runtime.device)
    footage = FootagePairs(config.clips, denoiser.config) if config.clips else None
    state = TrainState(modules={"denoiser": denoiser})

    def loss_fn(step: int):
        stage, _ = config.stage_at(step)
        g = step_generator(config.seed, step, runtime.rank)
        first = (step * runtime.world_size + runtime.rank) * stage.batch_size
        if footage is None:
            pairs = [
                shapes_pair(
                    config.data_seed, i, stage.size, stage.num_frames, config.holdout_captions, denoiser.config
                )
                for i in range(first, first + stage.batch_size)
            ]
        else:
            rng = random.Random(config.data_seed * 1_000_003 + first)
            pairs = [footage.pair(rng, stage.num_frames) for _ in range(stage.batch_size)]
        mels = torch.stack([m for m, _ in pairs]).to(runtime.device)
        videos = torch.stack([v for _, v in pairs]).to(runtime.device)
        steps = scheduler.config.num_train_timesteps
        t = sample_timesteps(len(pairs), steps, stage.timestep_sampling, g).to(runtime.device)
        noise = torch.randn(mels.shape, generator=g).to(runtime.device)
        keep = (torch.rand(len(pairs), generator=g) >= config.video_dropout).float().to(runtime.device)
        x_t, v_target = diffuse(mels, noise, alphas_cumprod[t])
        v_pred = state.wrapped["denoiser"](x_t, t, videos, float(DEFAULT_FPS), keep)
        return v_prediction_loss(v_pred, v_target), {}

    metrics = train(config, runtime, state, loss_fn, resume=resume, stop_after=stop_after)
    if stop_after is None and runtime.is_main:
        export_v2a(denoiser.eval(), config)
    return metrics


def export_v2a(denoiser: KumoV2AModel, config: TrainConfig, target: Path | None = None) -> Path:
    """The V2A pipeline folder (default output_dir/pipeline) with `denoiser`'s weights, the
    run's sampling defaults and its recipe."""
    target = Path(target or Path(config.output_dir) / "pipeline")
    denoiser = denoiser.to("cpu", torch.float16 if config.export_fp16 else torch.float32)
    pipe = KumoV2APipeline(denoiser=denoiser, scheduler=build_v2a_scheduler())
    recipe = json.dumps({"config": config.to_dict(), "steps": config.total_steps}, indent=2, default=str)
    write_pipeline_folder(pipe, config, target, {"training_recipe.json": recipe + "\n"})
    denoiser.float()
    print(f"V2A pipeline saved to {target}")
    return target


def held_out_captions(seed: int, n: int, size: int, num_frames: int) -> list[str]:
    """`n` captions of held-out clips (never trained on with holdout_captions), in a fixed order."""
    found, index = [], 0
    while len(found) < n:
        spec, text = sample_example(seed, index, size=size, num_frames=num_frames)
        if is_held_out(text):
            found.append(caption(spec))
        index += 1
    return found
