"""Training follows the VAE it is given: the latents a DiT (or Turbo) step trains on, and
the frames a latent cache must hold, come from the VAE's own compression
(`ClipGeometry`), not from the published VAE's 8x spatial / 4x temporal.

The VAE here compresses 4x in space (3 down blocks) and 2x in time, so a 9-frame clip is
5 latent frames, where the published VAE's arithmetic would say 3.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import write_config

from kumovideo.geometry import DEFAULT_GEOMETRY, ClipGeometry
from kumovideo.training.config import load_config
from kumovideo.training.runtime import setup_runtime
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

STAGE = {"name": "clips", "steps": 1, "size": 32, "num_frames": 9, "batch_size": 2}


@pytest.fixture(scope="module")
def vae(vae_4x_2x):
    return vae_4x_2x


def dit_config(tmp_path, stage: dict):
    path = write_config(tmp_path / "dit.json", {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage]})
    return load_config(path)


@pytest.mark.parametrize("cached", [False, True], ids=["on-the-fly", "latent-cache"])
def test_dit_batches_have_the_latent_shape_of_the_vae(vae, cached, tmp_path):
    from kumovideo.training.data_sources import LatentSource
    from kumovideo.training.latent_cache import cache_shapes_latents

    geometry = ClipGeometry.from_configs(vae.config)
    assert (geometry.spatial, geometry.temporal) == (4, 2)
    stage = dict(STAGE)
    if cached:
        stage["latents"] = str(cache_shapes_latents(vae, "tiny-vae", tmp_path / "cache", 4, 32, 9, 1000, batch_size=2))
    config = dit_config(tmp_path, stage)
    source = LatentSource(config, vae, setup_runtime("cpu"))
    latents, captions = source.batch(0, config.stages[0], torch.Generator().manual_seed(0))
    assert tuple(latents.shape) == geometry.latent_shape(2, 9, 32, 32) == (2, 5, 4, 8, 8)
    assert latents.shape[1] != DEFAULT_GEOMETRY.latent_frames(9)  # 3: what a hard-coded 4x would train on
    assert len(captions) == 2


def test_latent_cache_frames_are_counted_with_the_caches_vae(tmp_path):
    """A cache written by a 2x-temporal VAE needs 5 latent frames for 9 frames: 3 are refused."""
    from kumovideo.training.preflight import check_latent_caches

    index = tmp_path / "index.json"
    vae = {"scaling_factor": 1.0, "temporal_compression": 2, "spatial_compression": 4}
    clip = {"id": "a", "caption": "a red circle", "shape": [4, 3, 8, 8]}
    index.write_text(json.dumps({"format": "kumovideo-latents", "vae": vae, "clips": [clip], "shards": []}))
    config = dit_config(tmp_path, {**STAGE, "latents": str(index)})
    with pytest.raises(KumoInputError, match="num_frames=9 needs 5 latent frames, but .* holds clips of 3"):
        check_latent_caches(config)
    clip["shape"][1] = 5
    index.write_text(json.dumps({"format": "kumovideo-latents", "vae": vae, "clips": [clip], "shards": []}))
    check_latent_caches(config)
