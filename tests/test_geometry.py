"""Clip <-> latent <-> token geometry (kumovideo.geometry) and everything that asks it.

The arithmetic is checked against the published model's numbers (480x720x41 -> latents
11 x 60 x 90, 14850 vision tokens). Then a VAE with other compression factors, a tiny
random-weight diffusers AutoencoderKLCogVideoX with 3 down blocks (4x spatial) and 2x
temporal compression, goes through the pipeline (latent shape, decoded frame count, the
refusals' suggested sizes), the FLOP count, the parallel cost model and the latent
encoder's index, none of which may assume the published VAE's 8x / 4x.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from kumovideo.geometry import DEFAULT_GEOMETRY, ClipGeometry, vae_compression
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

PROMPT = "a red circle"


# ---------------------------------------------------------------------------- the arithmetic


def test_the_published_models_numbers():
    g = DEFAULT_GEOMETRY
    assert (g.spatial, g.temporal, g.patch, g.latent_channels) == (8, 4, 2, 16)
    assert g.latent_size(41, 480, 720) == (11, 60, 90)
    assert g.latent_shape(2, 41, 480, 720) == (2, 11, 16, 60, 90)
    assert g.latent_tokens(11, 60, 90) == g.tokens(41, 480, 720) == 11 * 30 * 45 == 14850
    assert g.clip_size(11, 60, 90) == (41, 480, 720)
    assert g.sample_clip({"sample_frames": 41, "sample_height": 60, "sample_width": 90}) == (41, 480, 720)
    assert g.side_multiple == 16 and g.frame_step == 8


def test_latent_frames_and_num_frames_round_trip():
    for g in (DEFAULT_GEOMETRY, ClipGeometry(spatial=4, temporal=2)):
        for latent in range(1, 12):
            assert g.latent_frames(g.num_frames(latent)) == latent
        for frames in range(1, 60):
            kept = g.encodable_frames(frames)
            assert kept <= frames and (kept - 1) % g.temporal == 0 and g.latent_frames(kept) == g.latent_frames(frames)
        assert g.encodable_frames(0) == 0
    # 4x: 1 + 4k frames per latent frame count; the valid clips have an odd count of those.
    assert [DEFAULT_GEOMETRY.num_frames(n) for n in (1, 2, 3, 11)] == [1, 5, 9, 41]
    assert [f for f in range(1, 42) if DEFAULT_GEOMETRY.is_valid_frames(f)] == [1, 9, 17, 25, 33, 41]


def test_nearest_values():
    g = DEFAULT_GEOMETRY
    assert g.nearest_frames(40) == (33, 41) and g.nearest_frames(41) == (41, 49) and g.nearest_frames(0) == (1, 9)
    assert g.nearest_sides(470) == (464, 480) and g.nearest_sides(3) == (16, 32)
    assert g.is_valid_side(480) and not g.is_valid_side(472) and not g.is_valid_side(0)
    with pytest.raises(KumoInputError, match=r"^num_frames=40 is not 4k\+1 .*; use 33 or 41$"):
        g.check_clip(40, 480, 720)
    with pytest.raises(KumoInputError, match=r"^num_frames=37 gives 10 latent frames.*8k\+1\); use 33 or 41$"):
        g.check_clip(37, 480, 720)
    with pytest.raises(
        KumoInputError, match=r"^width=700 is not a multiple of 16 \(VAE 8x times patch 2\); use 688 or 704$"
    ):
        g.check_clip(41, 480, 700)
    g.check_clip(41, 480, 720)


def test_what_the_encoder_takes_and_what_round_trips():
    """The encoder takes 4k+1 frames and sides of whole latent pixels (`kumo data encode`);
    a clip that decodes back to itself needs 8k+1 frames and whole patches."""
    for g, encodable, valid in (
        (DEFAULT_GEOMETRY, (1, 5, 13, 17), (1, 9, 17, 41)),
        (ClipGeometry(spatial=4, temporal=2), (1, 3, 7, 9), (1, 5, 9, 13)),
    ):
        assert all(g.is_encodable_frames(n) for n in encodable) and all(g.is_valid_frames(n) for n in valid)
        assert not any(g.is_encodable_frames(n) for n in (0, 2, g.temporal + 2))
        assert not g.is_valid_frames(g.temporal + 1) and g.is_encodable_frames(g.temporal + 1)
        assert g.is_encodable_side(g.spatial * 3) and not g.is_encodable_side(g.spatial * 3 + 1)
        assert g.encodable_frames(2 * g.temporal + 2) == 2 * g.temporal + 1


def test_compression_comes_from_the_vae_config():
    assert vae_compression({"block_out_channels": (128, 256, 256, 512), "temporal_compression_ratio": 4}) == (8, 4)
    assert vae_compression({"block_out_channels": (8, 16)}) == (2, 4)
    g = ClipGeometry.from_configs(
        {"block_out_channels": (8, 8, 16), "temporal_compression_ratio": 2, "latent_channels": 4}, {"patch_size": 1}
    )
    assert g == ClipGeometry(spatial=4, temporal=2, patch=1, latent_channels=4)
    with pytest.raises(KumoInputError, match="no block_out_channels"):
        vae_compression({"latent_channels": 4})


# ---------------------------------------------------------------------------- a 4x / 2x VAE


@pytest.fixture(scope="module")
def vae(vae_4x_2x):
    return vae_4x_2x


@pytest.fixture(scope="module")
def pipe(vae):
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.factory import build_text_encoder, build_transformer
    from kumovideo.schedulers import KumoDDIMScheduler

    torch.manual_seed(0)
    tokenizer, text_encoder = build_text_encoder("kumo-tiny")
    transformer = build_transformer("kumo-tiny", text_encoder, vae)  # sample size 6 x 8 latent, 9 frames
    pipe = KumoPipeline(tokenizer, text_encoder, vae, transformer, KumoDDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_pipeline_takes_its_geometry_from_the_vae(pipe):
    assert pipe.geometry == ClipGeometry(spatial=4, temporal=2, patch=2, latent_channels=4)
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (4, 2)
    assert pipe.default_clip() == {"height": 24, "width": 32, "num_frames": 9}  # 6 x 8 latent x 4, not x 8


def test_latents_and_decoded_clip_have_the_vaes_shape(pipe):
    seen = []
    call = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    latents = pipe(
        PROMPT, **call, output_type="latent", callback_on_step_end=lambda p, i, t, v: seen.append(v["latents"].shape)
    ).frames
    # 9 frames / 2x in time: 5 latent frames (the published VAE's arithmetic would say 3); 24 x 32 / 4x.
    assert latents.shape == (1, 5, 4, 6, 8) == pipe.geometry.latent_shape(1, 9, 24, 32)
    assert seen == [latents.shape] * 2
    frames = pipe(PROMPT, **call, output_type="pt").frames
    assert frames.shape == (1, 9, 3, 24, 32)
    other = pipe(PROMPT, height=32, width=40, num_frames=5, **call, output_type="pt").frames
    assert other.shape == (1, 5, 3, 32, 40)


@pytest.mark.parametrize(
    "size, message",
    [
        (dict(num_frames=8), r"^num_frames=8 is not 2k\+1 \(the VAE compresses time 2x\); use 5 or 9$"),
        (dict(num_frames=7), r"^num_frames=7 gives 4 latent frames, .* \(num_frames = 4k\+1\); use 5 or 9$"),
        (dict(height=36), r"^height=36 is not a multiple of 8 \(VAE 4x times patch 2\); use 32 or 40$"),
        (dict(width=4), r"^width=4 is not a multiple of 8 \(VAE 4x times patch 2\); use 8 or 16$"),
    ],
)
def test_refusals_suggest_the_vaes_sizes(pipe, size, message):
    with pytest.raises(KumoInputError, match=message):
        pipe(PROMPT, **{"height": 24, "width": 32, "num_frames": 9, **size}, num_inference_steps=1)


def test_given_latents_must_have_the_vaes_shape(pipe):
    with pytest.raises(KumoInputError, match=r"latents have shape \(1, 3, 4, 3, 4\), expected \(1, 5, 4, 6, 8\)"):
        pipe(PROMPT, latents=torch.zeros(1, 3, 4, 3, 4), num_inference_steps=1, output_type="latent")


def test_flop_count_and_cost_model_follow_the_geometry(pipe):
    from kumovideo.distributed.scaling import table
    from kumovideo.perf.flops import count_model_flops, measured_flops

    g = pipe.geometry
    latent = g.latent_size(9, 32, 40)
    assert latent == (5, 8, 10)
    count = count_model_flops(pipe.transformer, *latent, batch=2)
    assert count.vision_tokens == g.tokens(9, 32, 40) == 5 * 4 * 5
    x = torch.randn(g.latent_shape(2, 9, 32, 40))
    text = torch.randn(2, pipe.max_sequence_length, pipe.transformer.config.text_embed_dim)
    with sdpa_kernel(SDPBackend.MATH):  # QK^T and AV as matmuls, so that torch's counter sees them
        assert measured_flops(pipe.transformer, x, text, torch.tensor([10, 10])) == count.total
    tconf = dict(pipe.transformer.config)
    shape, _ = table(tconf, 9, 32, 40, None, 150.0, 2, geometry=g)
    assert shape.vision_len == count.vision_tokens


def test_the_latent_encoder_follows_the_vae(vae, tmp_path):
    from kumovideo.data.pipeline.encode import frames_for_vae, new_index

    g = ClipGeometry.from_configs(vae.config)
    assert [frames_for_vae(n, 49, g) for n in (1, 2, 3, 4, 8, 100)] == [1, 1, 3, 3, 7, 49]
    index = new_index(vae, "tiny-vae")
    assert (index["vae"]["spatial_compression"], index["vae"]["temporal_compression"]) == (4, 2)
    assert index["vae"]["latent_channels"] == 4
