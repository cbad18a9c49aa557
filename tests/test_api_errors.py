"""The Python API refuses mistakes with a KumoInputError that names them, before the
denoiser runs (a mistake found after minutes of work, or deep inside torch with an
unrelated message, is what these guard against). Uses the shipped built-in model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kumovideo import KumoPipeline
from kumovideo.builtin import BUILTIN_DIRS
from kumovideo.distributed.mesh import parse_parallel
from kumovideo.pipelines import frames_to_uint8
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import write_video

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SMALL = dict(height=64, width=64, num_frames=9, num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe():
    pipe = KumoPipeline.from_pretrained(BUILTIN_DIRS[False], torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def denoiser_calls(pipe, monkeypatch):
    """How many times the transformer ran during a call."""
    calls = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    return calls


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(negative_prompt=["x", "y"]), "2 negative prompts for 1 prompt"),
        (dict(negative_prompt=5), "negative_prompt must be"),
        (dict(num_videos_per_prompt=0), "num_videos_per_prompt=0"),
        (dict(num_videos_per_prompt=1.5), "num_videos_per_prompt=1.5"),
        (dict(generator=[torch.Generator()] * 3), "list of 3 items for 1 video"),
        (dict(generator=0), "generator must be a torch.Generator"),
        (dict(latents=torch.zeros(1, 3, 8, 8, 8, dtype=torch.int64)), "floating-point"),
        (dict(latents=np.zeros((1, 3, 8, 8, 8), dtype=np.float32)), "floating-point torch.Tensor"),
        (dict(guidance_scale=math.nan), "guidance_scale=nan"),
        (dict(guidance_scale=math.inf), "guidance_scale=inf"),
        (dict(guidance_scale="6"), "guidance_scale='6'"),
        (dict(guidance_rescale="0.5"), "guidance_rescale='0.5'"),
        (dict(max_sequence_length=0), "max_sequence_length=0"),
        (dict(callback_on_step_end=5), "callback_on_step_end must be callable"),
        (dict(callback_on_step_end_tensor_inputs=["foo"]), "callback_on_step_end_tensor_inputs"),
        (dict(callback_on_step_end_tensor_inputs="latents"), "callback_on_step_end_tensor_inputs"),
        (dict(num_inference_steps=2.0), "num_inference_steps=2.0"),
        (dict(num_inference_steps=5000), "more than the model's 1000"),
        (dict(height=64.0), "height=64.0"),
    ],
)
def test_bad_call_arguments_are_refused_before_denoising(pipe, denoiser_calls, kwargs, needle):
    with pytest.raises(KumoInputError, match=None) as info:
        pipe("a red circle moves left on a black background", **{**SMALL, **kwargs})
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert denoiser_calls == []


def test_a_callback_must_return_a_dict_or_none(pipe):
    with pytest.raises(KumoInputError, match="returned a list"):
        pipe("a red circle", **SMALL, callback_on_step_end=lambda *a: [1])
    seen = []
    pipe("a red circle", **SMALL, output_type="latent", callback_on_step_end=lambda p, i, t, v: seen.append(i))
    assert seen == [0, 1]  # None is fine: nothing replaced


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(torch_dtype="float16"), "torch_dtype='float16'"),
        (dict(transformer=None), "transformer=None"),
        (dict(scheduler="lcm"), "scheduler='lcm'"),
    ],
)
def test_from_pretrained_refuses_arguments_that_are_not_what_they_should_be(kwargs, needle):
    with pytest.raises(KumoInputError) as info:
        KumoPipeline.from_pretrained(BUILTIN_DIRS[False], **kwargs)
    assert needle in str(info.value)


def test_from_pretrained_needs_a_path():
    with pytest.raises(KumoInputError, match="not int"):
        KumoPipeline.from_pretrained(123)


@pytest.mark.parametrize(
    "frames, needle",
    [
        (np.zeros((2, 3, 8, 8), dtype=np.float32), "np (F, H, W, 3)"),
        (torch.zeros(1, 2, 3, 8, 8), "torch (F, 3, H, W)"),
        (None, "not NoneType"),
    ],
)
def test_frames_to_uint8_refuses_what_is_not_one_video(frames, needle):
    with pytest.raises(KumoInputError) as info:
        frames_to_uint8(frames)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "frames, fps, needle",
    [
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), 8, "hold no picture"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), 0, "fps=0"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), math.nan, "fps=nan"),
        (np.zeros((2, 8, 8, 3), dtype=np.float32), 8, "frames_to_uint8"),
    ],
)
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_video_refuses_bad_frames_and_rates_and_writes_nothing(tmp_path, frames, fps, needle, suffix):
    out = tmp_path / f"clip{suffix}"
    with pytest.raises(KumoInputError) as info:
        write_video(frames, out, fps=fps)
    assert needle in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec, needle", [(2, "pass a string"), ({"cfg": 2.5}, "cfg=2.5 is not an integer")])
def test_parse_parallel_refuses_other_types(spec, needle):
    with pytest.raises(KumoInputError) as info:
        parse_parallel(spec)
    assert needle in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer; this machine has CUDA")
@pytest.mark.parametrize("device, needle", [("cuda", "no CUDA GPU"), ("gpu", "unknown device")])
def test_moving_to_a_device_this_machine_lacks(pipe, device, needle):
    with pytest.raises(KumoInputError, match=needle):
        pipe.to(device)
    assert pipe.device.type == "cpu"
    assert pipe.to("cpu") is pipe


@pytest.mark.parametrize(
    "kwargs, needle", [(dict(cfg=5), "cfg=5"), (dict(ulysses=0), "ulysses=0"), (dict(cfg=1.5), "cfg=1.5")]
)
def test_parallel_config_built_directly_is_checked_too(kwargs, needle):
    from kumovideo.distributed.mesh import ParallelConfig

    with pytest.raises(KumoInputError, match=needle):
        ParallelConfig(**kwargs)
