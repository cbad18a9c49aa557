"""Model CPU offload, group offload and sequential offload give the latents of no offload;
VAE slicing decodes the same frames and tiling stays within its bound."""

import pytest
import torch
from gpu_helpers import TILING_BOUND, latents_of, need_cuda, rel, tiny_pipe

from kumovideo.perf import apply_memory_mode


@pytest.mark.parametrize("mode", ["model", "group", "sequential"])
def test_offload_gives_the_same_latents(device, fp32_exact, mode, record_property):
    need_cuda(f"{mode} offload")
    ref = latents_of(tiny_pipe(device)).cpu()
    pipe = tiny_pipe(device)
    apply_memory_mode(pipe, mode, device=device)
    out = latents_of(pipe).cpu()
    record_property("max_abs_diff", float((out - ref).abs().max()))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_vae_slicing_and_tiling(device, fp32_exact, record_property):
    pipe = tiny_pipe(device)
    g = torch.Generator().manual_seed(0)
    # Two videos at the published 480x720 (latent 60x90), decoded whole, per video, and in the
    # published VAE's default tiles, 240x360 (the tiny VAE's own defaults differ; diffusers'
    # tile arithmetic is exact for 480x720 in 240x360 tiles, not for every size).
    latents = torch.randn(2, 2, pipe.vae.config.latent_channels, 60, 90, generator=g).to(device)
    with torch.no_grad():
        ref = pipe.decode_latents(latents)
        pipe.enable_vae_slicing()
        sliced = pipe.decode_latents(latents)
        pipe.disable_vae_slicing()
        pipe.enable_vae_tiling(tile_sample_min_height=240, tile_sample_min_width=360)
        tiled = pipe.decode_latents(latents)
    record_property("slicing_rel_l2", rel(sliced, ref))
    record_property("tiling_rel_l2", rel(tiled, ref))
    assert tiled.shape == ref.shape == sliced.shape
    torch.testing.assert_close(sliced, ref, atol=1e-5, rtol=1e-4)
    assert rel(tiled, ref) < TILING_BOUND
