"""Training at any aspect, several patch sizes and a motion score: bucketed batches have one
shape each, the coarse scale's timesteps move toward noise, motion scores come from the cache."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import write_config

from kumovideo.training.config import load_config
from kumovideo.training.data_sources import LatentSource, bucket_batch_size
from kumovideo.training.objectives import shift_timesteps
from kumovideo.training.runtime import setup_runtime
from kumovideo.training.train_dit import step_extras
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

BUCKETS = [(32, 32), (48, 32), (32, 64)]


@pytest.fixture(scope="module")
def bucketed_cache(vae_4x_2x, tmp_path_factory):
    from kumovideo.training.latent_cache import cache_shapes_latents

    out = tmp_path_factory.mktemp("bucketed")
    return cache_shapes_latents(
        vae_4x_2x, "tiny-vae", out, 12, 32, 9, 1000, batch_size=2, buckets=BUCKETS, motion_amounts=(0.5, 1.5)
    )


def config_for(tmp_path, latents, **run):
    stage = {"name": "clips", "steps": 10, "size": 32, "num_frames": 9, "batch_size": 4, "latents": str(latents)}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage], **run}
    return load_config(write_config(tmp_path / "dit.json", data))


def test_cache_records_each_bucket_and_motion(bucketed_cache):
    import json

    clips = json.loads(bucketed_cache.read_text())["clips"]
    sizes = [tuple(c["size"]) for c in clips]  # [H, W], batch k at bucket k mod 3
    assert sizes[:6] == [(32, 32), (32, 32), (32, 48), (32, 48), (64, 32), (64, 32)]
    assert [tuple(c["shape"][2:]) for c in clips[:6:2]] == [(8, 8), (8, 12), (16, 8)]  # the VAE's 4x
    for clip in clips:
        assert 0.5 <= clip["motion_amount"] <= 1.5
        assert clip["motion_score"] == pytest.approx(20 * clip["motion_amount"] * 2, rel=1e-3)  # 9 frames: 1 s


def test_every_bucketed_batch_has_one_shape_and_a_token_budget(bucketed_cache, vae_4x_2x, tmp_path):
    config = config_for(tmp_path, bucketed_cache)
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    seen = {}
    for step in range(12):
        drawn = source.draw(step, config.stages[0], torch.Generator().manual_seed(step))
        h, w = drawn.latents.shape[-2:]
        assert drawn.latents.shape[0] == drawn.batch_size == bucket_batch_size(4, 64, h * w)
        assert len(drawn.captions) == len(drawn.motion_scores) == drawn.batch_size
        assert all(score is not None for score in drawn.motion_scores)
        seen[(h, w)] = drawn.batch_size
    assert seen == {(8, 8): 4, (8, 12): 3, (16, 8): 2}  # all three buckets drawn, batches by area


def test_the_same_step_draws_the_same_batch(bucketed_cache, vae_4x_2x, tmp_path):
    config = config_for(tmp_path, bucketed_cache)
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    a = source.draw(5, config.stages[0], torch.Generator().manual_seed(5))
    b = source.draw(5, config.stages[0], torch.Generator().manual_seed(5))
    assert torch.equal(a.latents, b.latents) and a.captions == b.captions


def test_a_stage_that_renders_its_clips_takes_its_buckets_in_turn_with_motion(vae_4x_2x, tmp_path):
    """A DiT stage without `latents:` (the GPU kit's recipe, run the slow way) renders batch k at
    its k-th bucket, sized to the token budget, each clip with the motion score of its m."""
    stage = {"name": "clips", "steps": 10, "size": 32, "num_frames": 9, "batch_size": 4}
    stage |= {"buckets": "32x32,48x32,32x64", "motion_range": "0.5,1.5"}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage]}
    config = load_config(write_config(tmp_path / "dit.json", data))
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    shapes = []
    for step in range(4):
        drawn = source.draw(step, config.stages[0], torch.Generator().manual_seed(step))
        h, w = drawn.latents.shape[-2:]
        shapes.append((h, w, drawn.batch_size))
        assert drawn.latents.shape[0] == len(drawn.captions) == len(drawn.motion_scores) == drawn.batch_size
        assert all(20 * 0.5 * 2 <= score <= 20 * 1.5 * 2 for score in drawn.motion_scores)  # 9 frames: 1 s
    assert shapes == [(8, 8, 4), (8, 12, 3), (16, 8, 2), (8, 8, 4)]
    # without motion_range the clips have m = 1 and no score to condition on
    del data["stages"][0]["motion_range"]
    config = load_config(write_config(tmp_path / "dit.json", data))
    drawn = LatentSource(config, vae_4x_2x, setup_runtime("cpu")).draw(0, config.stages[0], torch.Generator())
    assert drawn.motion_scores == [None] * 4


def test_bucket_batch_size_is_a_multiple_of_the_ranks():
    assert bucket_batch_size(16, 64, 128, multiple=2) == 8
    assert bucket_batch_size(16, 64, 112, multiple=4) == 8
    assert bucket_batch_size(1, 64, 128, multiple=2) == 2  # never below one clip per rank


def test_time_shift_moves_timesteps_toward_noise():
    t = torch.arange(0, 1000, 50)
    shifted = shift_timesteps(t, 1000, 3.0)
    assert torch.equal(shift_timesteps(t, 1000, 1.0), t)
    assert (shifted >= t).all() and shifted[10] == 750  # u = 0.5 -> 0.75
    assert shifted.max() <= 999


def test_step_extras_draw_scales_where_the_latent_divides_and_drop_scores(tmp_path, bucketed_cache):
    config = config_for(tmp_path, bucketed_cache, multiscale_prob=0.5, motion_dropout=0.25)
    transformer = {"multiscale_patch_sizes": [4], "motion_conditioning": True}
    scales, scored = [], []
    for step in range(400):
        extras, patch = step_extras(config, transformer, step, torch.Size([5, 4, 8, 12]), [10.0, 20.0])
        scales.append(patch)
        scored.append("motion_score" in extras)
        if patch is not None:
            assert extras["patch_size"] == 4
    assert 0.4 < sum(p == 4 for p in scales) / 400 < 0.6
    assert 0.65 < sum(scored) / 400 < 0.85
    extras, patch = step_extras(config, transformer, 0, torch.Size([5, 4, 6, 8]), [10.0, None])
    assert patch is None and "motion_score" not in extras  # 6 does not divide by 4; a clip without score
    extras, _ = step_extras(config, {}, 0, torch.Size([5, 4, 8, 8]), [10.0])
    assert extras == {}  # a plain model gets neither


def test_step_extras_shift_positions_inside_the_extent(tmp_path, bucketed_cache):
    config = config_for(tmp_path, bucketed_cache, position_shift_prob=0.5, position_shift_extent=16)
    transformer = {"patch_size": 2}
    offsets = [step_extras(config, transformer, step, torch.Size([5, 4, 16, 28]), [None])[0] for step in range(400)]
    shifted = [e["position_offset"] for e in offsets if "position_offset" in e]
    assert 0.35 < len(shifted) / 400 < 0.55  # half the steps, less those drawn at (0, 0)
    assert {r for r, _ in shifted} <= set(range(9)) and {c for _, c in shifted} <= set(range(3))  # 8 + 8, 14 + 2
    assert len({r for r, _ in shifted}) == 9 and len({c for _, c in shifted}) == 3
    again = step_extras(config, transformer, 7, torch.Size([5, 4, 16, 28]), [None])[0]
    assert again == offsets[7]  # a function of the step: a resumed run draws the same
    full = step_extras(config, transformer, 3, torch.Size([5, 4, 32, 32]), [None])[0]
    assert "position_offset" not in full  # a frame as large as the extent has no room to move
    off = config_for(tmp_path, bucketed_cache)
    unshifted = [step_extras(off, transformer, s, torch.Size([5, 4, 8, 8]), [None])[0] for s in range(50)]
    assert all("position_offset" not in extras for extras in unshifted)  # off by default


def test_a_size_outside_the_trained_aspects_or_areas_warns_once_and_still_runs(caplog):
    import logging

    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    settings = dict(num_frames=9, num_inference_steps=1, output_type="latent", generator=torch.Generator())

    def warnings_for(height, width):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kumovideo"):
            latents = pipe("a red circle", height=height, width=width, **settings).frames
        assert tuple(latents.shape[-2:]) == (height // 8, width // 8)
        return [r.getMessage() for r in caplog.records if "this model was trained at" in r.getMessage()]

    assert warnings_for(32, 96) == []  # no aspect_range recorded: nothing to say
    pipe.sampling_defaults = {"aspect_range": [0.5, 2.0]}
    assert warnings_for(32, 64) == []  # 2:1, inside
    (message,) = warnings_for(32, 96)  # 3:1
    assert message.startswith("96x32 is 3.00:1, outside")
    # A scale it was not trained at: 128x128-scale buckets say nothing of 64x64 (area_range)
    pipe.sampling_defaults = {"aspect_range": [0.5, 2.0], "area_range": [2048, 4096]}
    assert warnings_for(64, 32) == warnings_for(48, 64) == []  # 2048 and 3072 pixels: inside
    (message,) = warnings_for(32, 32)
    assert message.startswith("32x32 is 1024 pixels a frame, outside the sizes this model was trained at (2048 ..")
    assert len(warnings_for(16, 96)) == 2  # 6:1 and 1536 pixels: both said


def test_a_cache_refuses_to_resume_with_another_vae(vae_4x_2x, bucketed_cache):
    from kumovideo.training.latent_cache import cache_shapes_latents
    from kumovideo.utils.errors import KumoInputError

    with pytest.raises(KumoInputError, match="encoded by the VAE tiny-vae, not other-vae"):
        cache_shapes_latents(
            vae_4x_2x,
            "other-vae",
            bucketed_cache.parent,
            16,
            32,
            9,
            1000,
            batch_size=2,
            buckets=BUCKETS,
            motion_amounts=(0.5, 1.5),
        )


def test_a_rendered_stage_shows_the_held_back_colour_in_its_share_of_clips(vae_4x_2x, tmp_path):
    """`held_back_share` (a VAE or decoder that must draw the colour a LoRA will teach): that
    share of a rendered stage's clips name cyan; a stage reading a cache cannot take it."""
    stage = {"name": "clips", "steps": 10, "size": 32, "num_frames": 9, "batch_size": 8, "held_back_share": 0.5}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage]}
    config = load_config(write_config(tmp_path / "dit.json", data))
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    captions = [c for step in range(4) for c in source.draw(step, config.stages[0], torch.Generator()).captions]
    assert 8 <= sum("cyan" in c for c in captions) <= 24  # 32 clips at 0.5
    plain = load_config(write_config(tmp_path / "plain.json", {**data, "stages": [{**stage, "held_back_share": 0}]}))
    base = LatentSource(plain, vae_4x_2x, setup_runtime("cpu")).draw(0, plain.stages[0], torch.Generator()).captions
    assert not any("cyan" in c for c in base)
    cached = {**stage, "latents": str(tmp_path / "index.json")}
    with pytest.raises(KumoInputError, match="held_back_share is for stages that render their clips"):
        load_config(write_config(tmp_path / "cached.json", {**data, "stages": [cached]}))
