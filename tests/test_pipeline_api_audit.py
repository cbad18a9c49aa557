"""The pipelines' Python API against diffusers' conventions: scheduler swaps, save/load round
trips, step callbacks, per-call LoRA scale, offload on a CPU-only machine, and the one-line
refusals of arguments that would otherwise do nothing or fail late.

Runs on the tiny fixture pipeline (../shared/fixtures/kumovideo/pipeline) at 48x64x9 and on the
built-in models where a test needs what only they have (captions, Turbo, conditioning, V2A).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler

from kumovideo.builtin import BUILTIN_DIRS, FRAMES_DIR, V2A_DIR
from kumovideo.pipelines import KumoPipeline
from kumovideo.pipelines.interpolation import interpolate_frames, interpolation_guidance
from kumovideo.pipelines.pipeline_kumo_v2a import KumoV2APipeline
from kumovideo.schedulers import KumoDDIMScheduler, KumoLCMScheduler
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SIZE = dict(height=48, width=64, num_frames=9)
PROMPT = "a red circle moves left on a black background"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def load(folder) -> KumoPipeline:
    pipe = KumoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(fixtures_dir):
    return load(fixtures_dir / "pipeline")


def run(pipe, steps=2, **kwargs):
    kwargs.setdefault("generator", gen())
    return pipe(PROMPT, num_inference_steps=steps, output_type="latent", **SIZE, **kwargs).frames


class TextEncoderSpy:
    """Counts text encoder calls: a refusal must come before any model runs."""

    def __init__(self, pipe):
        self.calls = 0
        self.handle = pipe.text_encoder.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------------------- scheduler swaps


def test_lcm_from_a_ddim_config_swaps_to_turbo_sampling(pipe):
    # diffusers' idiom raised ValueError: the DDIM config's rescale_betas_zero_snr=True was refused.
    lcm = KumoLCMScheduler.from_config(pipe.scheduler.config)
    reference = KumoLCMScheduler.on_schedule_of(pipe.scheduler.config)
    assert dict(lcm.config) == dict(reference.config)
    assert torch.equal(lcm.alphas_cumprod, reference.alphas_cumprod)


def test_ddim_from_a_turbo_config_samples_from_pure_noise():
    # The Turbo config's "leading" spacing and rescale flag carried over: 4 steps from t = 750.
    turbo = KumoLCMScheduler.from_pretrained(BUILTIN_DIRS[True] / "scheduler")
    ddim = KumoDDIMScheduler.from_config(turbo.config)
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == [999, 749, 499, 249]
    assert torch.equal(ddim.alphas_cumprod, KumoDDIMScheduler().alphas_cumprod)
    assert ddim.config.timestep_spacing == "trailing"


def test_a_scheduler_config_of_its_own_class_loads_as_diffusers_does():
    lcm = KumoLCMScheduler.from_config(KumoLCMScheduler(original_inference_steps=25).config)
    assert lcm.config.original_inference_steps == 25  # nothing filtered for its own class
    assert KumoDDIMScheduler.from_config(KumoDDIMScheduler().config, timestep_spacing="leading").config[
        "timestep_spacing"
    ] == ("leading")


@pytest.mark.parametrize(
    "scheduler_class, needle",
    [
        (DDIMScheduler, "noise schedule"),  # drops the SNR shift: another schedule, silently
        (DPMSolverMultistepScheduler, "noise schedule"),
        (CogVideoXDPMScheduler, "step takes more"),  # failed with a TypeError at the first step
    ],
)
def test_a_scheduler_off_the_models_schedule_is_one_line_before_any_work(scheduler_class, needle):
    pipe = load(BUILTIN_DIRS[False])  # its full config: CogVideoXDPMScheduler then has the right schedule
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    with TextEncoderSpy(pipe) as spy, pytest.raises(KumoInputError, match=needle):
        run(pipe)
    assert spy.calls == 0


# ---------------------------------------------------------------------------- save / load


def test_save_pretrained_keeps_the_training_captions(tmp_path):
    # Lost on save: the reloaded copy no longer warned about words the model never saw.
    pipe = load(BUILTIN_DIRS[False])
    pipe.save_pretrained(tmp_path)
    again = KumoPipeline.from_pretrained(tmp_path)
    assert again.caption_vocabulary is not None
    assert again.caption_vocabulary == pipe.caption_vocabulary
    assert (tmp_path / "training_captions.txt").read_text() == pipe.training_captions


# ---------------------------------------------------------------------------- step callbacks


def test_a_step_callback_can_replace_the_prompt_embeds(pipe):
    # diffusers' convention; the returned prompt_embeds were ignored without a word.
    def zero_text(p, i, t, tensors):
        return {"prompt_embeds": torch.zeros_like(tensors["prompt_embeds"])}

    inputs = ["latents", "prompt_embeds"]
    plain = run(pipe, steps=3)
    swapped = run(pipe, steps=3, callback_on_step_end=zero_text, callback_on_step_end_tensor_inputs=inputs)
    same = run(pipe, steps=3, callback_on_step_end=lambda p, i, t, d: d, callback_on_step_end_tensor_inputs=inputs)
    assert not torch.allclose(plain, swapped, atol=1e-4)
    torch.testing.assert_close(same, plain, atol=0, rtol=0)
    assert pipe.num_timesteps == 3  # diffusers' public name, for callbacks


@pytest.mark.parametrize(
    "returned, needle",
    [
        (lambda d: {"latent": d["latents"]}, "returned 'latent', which it was not given"),
        (lambda d: {"latents": d["latents"][:, :1]}, "of the shape it was given"),
        (lambda d: {"latents": 0.0}, "of float"),
    ],
)
def test_a_step_callback_returning_what_cannot_be_used_is_one_line(pipe, returned, needle):
    with pytest.raises(KumoInputError, match=needle):
        run(pipe, callback_on_step_end=lambda p, i, t, d: returned(d))


# ---------------------------------------------------------------------------- LoRA scale per call


def test_attention_kwargs_scale_runs_a_lora_at_that_scale_for_one_call(fixtures_dir):
    pytest.importorskip("peft")
    from peft import LoraConfig

    pipe = load(fixtures_dir / "pipeline")
    base = run(pipe)
    pipe.transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    adapted = run(pipe)
    assert not torch.allclose(adapted, base, atol=1e-4)
    torch.testing.assert_close(run(pipe, attention_kwargs={"scale": 0.0}), base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(pipe), adapted)  # for that call only


@pytest.mark.parametrize("attention_kwargs", [{"bogus": 1}, {"scale": "half"}, [("scale", 1.0)]])
def test_bad_attention_kwargs_are_one_line_before_any_work(pipe, attention_kwargs):
    with TextEncoderSpy(pipe) as spy, pytest.raises(KumoInputError, match="attention_kwargs"):
        run(pipe, attention_kwargs=attention_kwargs)
    assert spy.calls == 0


# ---------------------------------------------------------------------------- offload, refusals


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("method", ["enable_model_cpu_offload", "enable_sequential_cpu_offload"])
def test_offload_without_a_gpu_is_one_line(pipe, method):
    # diffusers raised RuntimeError("... requires accelerator, but not found").
    with pytest.raises(KumoInputError, match=f"{method} moves each model to a GPU"):
        getattr(pipe, method)()
    with pytest.raises(KumoInputError, match="no CUDA GPU"):
        getattr(pipe, method)(device="cuda")


def test_image_guidance_without_an_image_is_refused(pipe):
    # It weighs the image branch: without an image it did nothing, silently (the server refuses it too).
    with TextEncoderSpy(pipe) as spy, pytest.raises(KumoInputError, match="needs an image or conditioning_frames"):
        run(pipe, image_guidance_scale=2.0)
    assert spy.calls == 0


def test_interpolation_takes_no_prompt_as_none_and_refuses_a_non_string():
    # prompt=None failed with AttributeError: 'NoneType' object has no attribute 'strip'.
    pipe = load(FRAMES_DIR)
    assert interpolation_guidance(pipe, None) == interpolation_guidance(pipe, "")
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    call = dict(num_inference_steps=1, generator=gen())
    out = interpolate_frames(pipe, frames, 4, prompt=None, **call)
    np.testing.assert_array_equal(out, interpolate_frames(pipe, frames, 4, prompt="", **dict(call, generator=gen())))
    with pytest.raises(KumoInputError, match="prompt must be a string"):
        interpolate_frames(pipe, frames, 4, prompt=["a", "b"])


# ---------------------------------------------------------------------------- video-to-audio


@pytest.fixture(scope="module")
def v2a():
    pipe = KumoV2APipeline.from_pretrained(V2A_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_v2a_return_dict_false_gives_the_outputs_fields(v2a):
    video = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    out = v2a(video, num_inference_steps=2, generator=gen())
    audios, sample_rate, mels = v2a(video, num_inference_steps=2, generator=gen(), return_dict=False)
    np.testing.assert_array_equal(audios[0], out.audios[0])
    assert sample_rate == out.sample_rate and torch.equal(mels, out.mels)


def test_v2a_from_pretrained_refuses_a_string_dtype():
    # diffusers warned and loaded float32; KumoPipeline.from_pretrained refuses it in one line.
    with pytest.raises(KumoInputError, match="torch_dtype='bfloat16'; pass a torch.dtype"):
        KumoV2APipeline.from_pretrained(V2A_DIR, torch_dtype="bfloat16")
