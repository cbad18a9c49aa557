"""Parity with the original KumoVideo implementation, through the public API.

The fixtures in ../shared/fixtures/kumovideo were recorded from the original (CPU, fp32,
random weights). They pin the weight names, the positional table, the block order, the
schedulers' maths and the order in which the noise is drawn.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kumovideo import AutoencoderKLCogVideoX, KumoDDIMScheduler, KumoLCMScheduler, KumoPipeline, KumoTransformer3DModel
from kumovideo.pipelines import load_vae

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def transformer(fixtures_dir):
    return KumoTransformer3DModel.from_pretrained(fixtures_dir / "transformer").eval()


@pytest.mark.parametrize("case", ["a", "b"])
def test_transformer_matches_original(fixtures_dir, transformer, case):
    io = load_file(fixtures_dir / "transformer_io.safetensors")
    with torch.no_grad():
        out = transformer(
            io[f"{case}.hidden_states"], io[f"{case}.encoder_hidden_states"], io[f"{case}.timestep"]
        ).sample
    torch.testing.assert_close(out, io[f"{case}.output"], atol=ATOL, rtol=RTOL)


def test_transformer_loads_every_original_weight(fixtures_dir, transformer):
    saved = load_file(fixtures_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert set(saved) == set(transformer.state_dict())


def test_vae_decode_matches_original(fixtures_dir):
    vae = load_vae(fixtures_dir / "vae").eval()
    assert isinstance(vae, AutoencoderKLCogVideoX)
    assert vae.config.scaling_factor == pytest.approx(1.15258426)
    io = load_file(fixtures_dir / "vae_io.safetensors")
    with torch.no_grad():
        decoded = vae.decode(io["z"]).sample
    torch.testing.assert_close(decoded, io["decoded"], atol=ATOL, rtol=RTOL)


def test_ddim_scheduler_matches_original(fixtures_dir):
    io = load_file(fixtures_dir / "scheduler_io.safetensors")
    scheduler = KumoDDIMScheduler.from_pretrained(fixtures_dir / "scheduler_ddim")
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), io["ddim.alphas_cumprod"], atol=1e-7, rtol=0)
    for steps in (50, 8, 4):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == io[f"ddim.timesteps_{steps}"].tolist()
    scheduler.set_timesteps(8)
    for t in (999, 874, 749):  # each step recorded from the same starting sample
        prev = scheduler.step(io[f"ddim.model_output_{t}"], t, io["ddim.sample"]).prev_sample
        torch.testing.assert_close(prev, io[f"ddim.prev_sample_{t}"], atol=ATOL, rtol=RTOL)


def test_consistency_scheduler_chain_matches_original(fixtures_dir):
    io = load_file(fixtures_dir / "scheduler_io.safetensors")
    scheduler = KumoLCMScheduler.from_pretrained(fixtures_dir / "scheduler_lcm")
    for steps in (8, 4):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == io[f"lcm.timesteps_{steps}"].tolist()
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(7)
    sample = io["lcm.sample"]
    for i, t in enumerate(scheduler.timesteps):
        out = scheduler.step(io[f"lcm.model_output_{i}"], t, sample, generator=generator)
        torch.testing.assert_close(out.denoised, io[f"lcm.denoised_{i}"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.prev_sample, io[f"lcm.prev_sample_{i}"], atol=ATOL, rtol=RTOL)
        sample = out.prev_sample


@pytest.fixture(scope="module")
def pipeline(fixtures_dir):
    return KumoPipeline.from_pretrained(fixtures_dir / "pipeline")


@pytest.mark.parametrize("case", ["ddim_cfg", "lcm_turbo"])
def test_pipeline_matches_original(fixtures_dir, pipeline, case):
    spec = json.loads((fixtures_dir / "pipeline_cases.json").read_text())[case]
    io = load_file(fixtures_dir / "pipeline_io.safetensors")
    pipeline.scheduler = (
        KumoLCMScheduler.from_pretrained(fixtures_dir / "scheduler_lcm")
        if case == "lcm_turbo"
        else KumoDDIMScheduler.from_pretrained(fixtures_dir / "pipeline" / "scheduler")
    )
    kwargs = {
        k: spec[k]
        for k in (
            "prompt",
            "negative_prompt",
            "guidance_scale",
            "num_inference_steps",
            "height",
            "width",
            "num_frames",
            "max_sequence_length",
        )
    }

    latents = pipeline(**kwargs, generator=torch.Generator().manual_seed(spec["seed"]), output_type="latent").frames
    torch.testing.assert_close(latents, io[f"{case}.latents"], atol=ATOL, rtol=RTOL)

    frames = pipeline(**kwargs, generator=torch.Generator().manual_seed(spec["seed"]), output_type="np").frames[0]
    frames_uint8 = (frames * 255).round().clip(0, 255).astype(np.uint8)
    expected = io[f"{case}.frames_uint8"].numpy()
    assert frames_uint8.shape == expected.shape
    assert np.abs(frames_uint8.astype(int) - expected.astype(int)).max() <= 1


def test_pipeline_round_trips_through_save_pretrained(fixtures_dir, pipeline, tmp_path):
    pipeline.scheduler = KumoDDIMScheduler.from_pretrained(fixtures_dir / "pipeline" / "scheduler")
    pipeline.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["transformer"][0].startswith("kumovideo") and index["transformer"][1] == "KumoTransformer3DModel"
    assert index["vae"] == ["diffusers", "AutoencoderKLCogVideoX"]
    reloaded = KumoPipeline.from_pretrained(tmp_path / "saved")
    kwargs = dict(
        prompt="a red circle", num_frames=9, height=32, width=32, num_inference_steps=2, output_type="latent"
    )
    a = pipeline(**kwargs, generator=torch.Generator().manual_seed(3)).frames
    b = reloaded(**kwargs, generator=torch.Generator().manual_seed(3)).frames
    torch.testing.assert_close(a, b, atol=0, rtol=0)
