"""MADiT's optional `position_grid`: a side longer than the grid of positions the model was
trained on reads positions interpolated into that grid (Position Interpolation, per spatial
axis) instead of extrapolated ones. Sizes within the grid are untouched, no weight is added,
and original configs keep their outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from kumovideo.models.transformer_kumo import (
    KumoTransformer3DModel,
    madit_from_preset,
    multiscale_sincos_table,
    with_position_grid,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed(model: KumoTransformer3DModel) -> KumoTransformer3DModel:
    """Every weight nudged (a fresh MADiT predicts zero: zero gates and heads)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def inputs(model, height: int, width: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, model.config.in_channels, height, width, generator=g)
    text = torch.randn(1, model.config.max_text_seq_length, model.config.text_embed_dim, generator=g)
    return x, text, torch.tensor([400])


def test_an_interpolated_side_spans_the_grid_and_the_other_side_is_untouched():
    # 14 columns into a grid of 8: column j sits at native position j * 8 / 14, inside 0..7.
    plain = multiscale_sincos_table(32, 1, 8, 8, 1, 1.875, 1.0).reshape(8, 8, 32)
    wide = multiscale_sincos_table(32, 1, 8, 14, 1, 1.875, 1.0, stretch=(1.0, 8 / 14)).reshape(8, 14, 32)
    torch.testing.assert_close(wide[:, 0], plain[:, 0])  # the first column and every row's positions
    torch.testing.assert_close(
        wide[:, 7], multiscale_sincos_table(32, 1, 8, 1, 1, 1.875, 1.0, offset=(0, 4)), atol=0, rtol=0
    )  # 7*8/14 = 4


def test_sizes_within_the_grid_are_the_plain_model_and_longer_sides_read_other_positions(tmp_path):
    plain = perturbed(madit_from_preset("kumo-tiny"))
    gridded = with_position_grid(plain, 4)  # kumo-tiny patch 2: 4 patches = 8 latent pixels a side
    assert gridded.config.position_grid == 4 and with_position_grid(gridded, 4) is gridded
    assert set(gridded.state_dict()) == set(plain.state_dict())  # the key adds no weight
    with torch.no_grad():
        square = inputs(plain, 8, 8)
        torch.testing.assert_close(gridded(*square).sample, plain(*square).sample, atol=0, rtol=0)
        wide = inputs(plain, 8, 14)
        assert (gridded(*wide).sample - plain(*wide).sample).abs().max() > 1e-3

    gridded.save_pretrained(tmp_path)  # the key travels with the checkpoint
    loaded = KumoTransformer3DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.position_grid == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(*wide).sample, gridded(*wide).sample)


def test_a_coarse_scale_reads_the_same_interpolated_positions():
    model = perturbed(madit_from_preset("kumo-tiny", multiscale_patch_sizes=[4], position_grid=4))
    x, text, t = inputs(model, 8, 16)  # 8 native columns into 4: every position halved
    native = model.embed(x, text, t)[0]
    coarse = model.embed(x, text, t, patch_size=4)[0]
    assert native.shape[1] == 2 * 4 * 8 and coarse.shape[1] == 2 * 2 * 4
    assert model.position_stretch(8, 16) == (1.0, 0.5)


@pytest.mark.parametrize("grid", [0, -2, 2.5, "8"])
def test_a_position_grid_that_is_not_a_positive_whole_number_is_refused(grid):
    with pytest.raises(ValueError, match="position_grid=.* must be a positive whole number"):
        madit_from_preset("kumo-tiny", position_grid=grid)


def test_the_probe_reads_the_long_side_of_wide_and_tall_frames():
    """scripts/position_loss.py: the profile runs along the long side (columns of a wide latent,
    rows of a tall one), per native patch, and compares the patches past the grid with as many
    at the start."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from position_loss import long_side_profile, mirrored_ratio

    wide = torch.ones(3, 16, 28)  # (N, h, w) of a 224x128 latent: 14 patches along w
    wide[:, :, 16:] = 3.0  # the last 6 patches (12 latent columns) past an 8-patch grid
    profile = long_side_profile(wide, 224, 128, patch=2)
    assert profile.shape == (14,) and profile[:8].eq(1).all() and profile[8:].eq(3).all()
    assert mirrored_ratio(profile, 8) == (1.0, 3.0, 3.0)

    tall = wide.transpose(1, 2)  # a 128x224 latent: the same loss along its rows
    torch.testing.assert_close(long_side_profile(tall, 128, 224, patch=2), profile)
    assert mirrored_ratio(long_side_profile(torch.ones(2, 16, 16), 128, 128, patch=2), 8) is None


def test_stretch_conditioning_starts_as_the_model_without_it_and_needs_a_grid():
    gridded = with_position_grid(perturbed(madit_from_preset("kumo-tiny")), 4)
    told = with_position_grid(gridded, 4, stretch_conditioning=True).eval()
    assert told.config.stretch_conditioning and with_position_grid(told, 4) is told
    wide = inputs(gridded, 8, 14)
    with torch.no_grad():
        torch.testing.assert_close(told(*wide).sample, gridded(*wide).sample, atol=0, rtol=0)  # zero last layer
        for p in told.stretch_embedding.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        square, stretched = inputs(gridded, 8, 8), inputs(gridded, 14, 8)
        base = told.embed(*square)[2]  # the timestep embedding, told each frame's packing
        assert (told.embed(*wide)[2] - base).abs().max() > 1e-4
        assert (told.embed(*stretched)[2] - told.embed(*wide)[2]).abs().max() > 1e-4  # rows vs columns
    with pytest.raises(ValueError, match="stretch_conditioning needs a position_grid"):
        madit_from_preset("kumo-tiny", stretch_conditioning=True)
