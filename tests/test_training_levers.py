"""Issue 18's training levers: Min-SNR-gamma loss weighting, and the two-object share of a
ShapesWorld latent cache's batches."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import write_config

from kumovideo.data.shapes_world import parse_caption
from kumovideo.training.config import load_config
from kumovideo.training.data_sources import LatentSource
from kumovideo.training.objectives import v_prediction_loss
from kumovideo.training.runtime import setup_runtime
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def shapes_cache(vae_4x_2x, tmp_path_factory):
    from kumovideo.training.latent_cache import cache_shapes_latents

    return cache_shapes_latents(
        vae_4x_2x, "tiny-vae", tmp_path_factory.mktemp("levers"), 16, 32, 9, 1000, batch_size=4
    )


def dit_config(tmp_path, stage_extra=None, **run):
    stage = {"name": "clips", "steps": 10, "size": 32, "num_frames": 9, "batch_size": 8, **(stage_extra or {})}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage], **run}
    return load_config(write_config(tmp_path / "dit.json", data))


def test_min_snr_weights_each_example_by_min_snr_gamma_over_snr_plus_one():
    pred, target = torch.zeros(3, 2, 4), torch.ones(3, 2, 4) * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    alpha_bar = torch.tensor([0.0, 0.5, 0.99])  # SNR 0 (the zero-terminal step), 1, 99
    assert v_prediction_loss(pred, target) == pytest.approx((1 + 4 + 9) / 3)
    weighted = v_prediction_loss(pred, target, alpha_bar, snr_gamma=5.0)
    # weights 0, 1/2, 5/100: the pure-noise step counts nothing, the nearly clean one little
    assert weighted.item() == pytest.approx((0 * 1 + 0.5 * 4 + 0.05 * 9) / 3)


def test_snr_gamma_is_for_dit_runs_only(tmp_path):
    vae = {"kind": "vae", "output_dir": str(tmp_path / "out"), "snr_gamma": 5.0, "stages": [{"name": "s", "steps": 1}]}
    with pytest.raises(KumoInputError, match="snr_gamma weights the DiT loss; leave it out of vae runs"):
        load_config(write_config(tmp_path / "vae.json", vae))
    with pytest.raises(KumoInputError, match="snr_gamma=0 must be a number > 0"):
        dit_config(tmp_path, snr_gamma=0)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_two_object_share_draws_batches_of_that_mix(shapes_cache, vae_4x_2x, tmp_path, share):
    config = dit_config(tmp_path, {"latents": str(shapes_cache), "two_object_share": share})
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    counts = set()
    for step in range(4):
        drawn = source.draw(step, config.stages[0], torch.Generator().manual_seed(step))
        counts |= {len(parse_caption(c)["objects"]) for c in drawn.captions}
    assert counts == ({2} if share else {1})


def test_two_object_share_left_out_draws_as_before(shapes_cache, vae_4x_2x, tmp_path):
    mixed = dit_config(tmp_path, {"latents": str(shapes_cache)})
    drawn = LatentSource(mixed, vae_4x_2x, setup_runtime("cpu")).draw(0, mixed.stages[0], torch.Generator())
    assert {len(parse_caption(c)["objects"]) for c in drawn.captions} == {1, 2}  # the cache's own mix


def test_a_stage_that_renders_its_clips_draws_the_two_object_share_too(vae_4x_2x, tmp_path):
    config = dit_config(tmp_path, {"two_object_share": 1.0})
    drawn = LatentSource(config, vae_4x_2x, setup_runtime("cpu")).draw(0, config.stages[0], torch.Generator())
    assert {len(parse_caption(c)["objects"]) for c in drawn.captions} == {2}


def test_sample_example_draws_the_object_count_by_the_share():
    from kumovideo.data.shapes_world import sample_example

    plain = [sample_example(5, i)[1] for i in range(16)]
    assert [sample_example(5, i, two_object_share=None)[1] for i in range(16)] == plain  # the stream as ever
    assert {len(parse_caption(c)["objects"]) for c in plain} == {1, 2}
    for share, count in ((0.0, 1), (1.0, 2)):
        drawn = [sample_example(5, i, two_object_share=share)[1] for i in range(16)]
        assert {len(parse_caption(c)["objects"]) for c in drawn} == {count}


def test_two_object_share_is_for_dit_runs_only(tmp_path):
    stage = {"name": "s", "steps": 1, "two_object_share": 0.8}
    vae = {"kind": "vae", "output_dir": str(tmp_path / "out"), "stages": [stage]}
    with pytest.raises(KumoInputError, match="two_object_share mixes a DiT stage's clips; leave it out of vae runs"):
        load_config(write_config(tmp_path / "vae.json", vae))


def test_two_object_share_refuses_a_cache_of_other_captions(shapes_cache, vae_4x_2x, tmp_path):
    import json
    import shutil

    folder = tmp_path / "foreign"
    shutil.copytree(shapes_cache.parent, folder)
    index = json.loads((folder / "index.json").read_text())
    index["clips"][0]["caption"] = "a cat playing the piano"
    (folder / "index.json").write_text(json.dumps(index))
    config = dit_config(tmp_path, {"latents": str(folder / "index.json"), "two_object_share": 0.5})
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    with pytest.raises(
        KumoInputError, match="holds a caption outside ShapesWorld's grammar .'a cat playing the piano'"
    ):
        source.draw(0, config.stages[0], torch.Generator())


def test_two_object_share_refuses_a_cache_without_two_object_clips(shapes_cache, vae_4x_2x, tmp_path):
    import json
    import shutil

    folder = tmp_path / "one-object"
    shutil.copytree(shapes_cache.parent, folder)
    index = json.loads((folder / "index.json").read_text())
    single = next(c["caption"] for c in index["clips"] if len(parse_caption(c["caption"])["objects"]) == 1)
    for clip in index["clips"]:
        clip["caption"] = single
    (folder / "index.json").write_text(json.dumps(index))
    stage = {"latents": str(folder / "index.json")}
    for share in (0.0, None):  # a share the cache can serve draws
        config = dit_config(tmp_path, {**stage, "two_object_share": share})
        LatentSource(config, vae_4x_2x, setup_runtime("cpu")).draw(0, config.stages[0], torch.Generator())
    config = dit_config(tmp_path, {**stage, "two_object_share": 0.5})
    source = LatentSource(config, vae_4x_2x, setup_runtime("cpu"))
    with pytest.raises(KumoInputError, match=r"two_object_share 0.5: latent cache .* has no two-object clip to draw"):
        source.draw(0, config.stages[0], torch.Generator())
