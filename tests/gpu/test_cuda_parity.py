"""The parity fixtures (tests/test_parity.py) on CUDA in fp32, within the CPU tolerances.

The fixtures are read from ../shared/fixtures/kumovideo or $KUMO_SHARED; on the device
`scripts/gpu/check.sh` points KUMO_SHARED at the copy `make gpu-wheels` puts in .whl/shared.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kumovideo import KumoDDIMScheduler, KumoLCMScheduler, KumoPipeline, KumoTransformer3DModel
from kumovideo.pipelines import load_vae

ATOL = RTOL = 1e-4  # tests/test_parity.py's

pytestmark = pytest.mark.usefixtures("fp32_exact")


@pytest.mark.parametrize("case", ["a", "b"])
def test_transformer_matches_original_on_cuda(fixtures_dir, device, case, record_property):
    model = KumoTransformer3DModel.from_pretrained(fixtures_dir / "transformer").eval().to(device)
    io = load_file(fixtures_dir / "transformer_io.safetensors")
    with torch.no_grad():
        out = model(
            io[f"{case}.hidden_states"].to(device),
            io[f"{case}.encoder_hidden_states"].to(device),
            io[f"{case}.timestep"].to(device),
        ).sample.cpu()
    record_property("max_abs_diff", float((out - io[f"{case}.output"]).abs().max()))
    torch.testing.assert_close(out, io[f"{case}.output"], atol=ATOL, rtol=RTOL)


def test_vae_decode_matches_original_on_cuda(fixtures_dir, device, record_property):
    vae = load_vae(fixtures_dir / "vae").eval().to(device)
    io = load_file(fixtures_dir / "vae_io.safetensors")
    with torch.no_grad():
        decoded = vae.decode(io["z"].to(device)).sample.cpu()
    record_property("max_abs_diff", float((decoded - io["decoded"]).abs().max()))
    torch.testing.assert_close(decoded, io["decoded"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", ["ddim_cfg", "lcm_turbo"])
def test_pipeline_matches_original_on_cuda(fixtures_dir, device, case, record_property):
    spec = json.loads((fixtures_dir / "pipeline_cases.json").read_text())[case]
    io = load_file(fixtures_dir / "pipeline_io.safetensors")
    pipe = KumoPipeline.from_pretrained(fixtures_dir / "pipeline")
    pipe.scheduler = (
        KumoLCMScheduler.from_pretrained(fixtures_dir / "scheduler_lcm")
        if case == "lcm_turbo"
        else KumoDDIMScheduler.from_pretrained(fixtures_dir / "pipeline" / "scheduler")
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    keys = ("prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "num_frames")
    kwargs = {k: spec[k] for k in (*keys, "max_sequence_length")}
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(spec["seed"]), output_type="latent").frames
    latents = latents.cpu()
    record_property("latents_max_abs_diff", float((latents - io[f"{case}.latents"]).abs().max()))
    torch.testing.assert_close(latents, io[f"{case}.latents"], atol=ATOL, rtol=RTOL)

    frames = pipe(**kwargs, generator=torch.Generator().manual_seed(spec["seed"]), output_type="np").frames[0]
    frames_uint8 = (frames * 255).round().clip(0, 255).astype(np.uint8)
    expected = io[f"{case}.frames_uint8"].numpy()
    assert frames_uint8.shape == expected.shape
    assert np.abs(frames_uint8.astype(int) - expected.astype(int)).max() <= 1
