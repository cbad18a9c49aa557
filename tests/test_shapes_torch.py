"""The batched torch renderer (kumovideo/data/shapes_torch.py) against the numpy one:
the same frames, pixel for pixel, on the CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kumovideo.data import shapes_torch as st
from kumovideo.data import shapes_world as sw
from kumovideo.training.shapes_batches import shapes_batch


def _examples(seed: int, n: int, size: int, frames: int) -> list[sw.ClipSpec]:
    return [sw.sample_example(seed, i, size=size, num_frames=frames)[0] for i in range(n)]


@pytest.mark.parametrize("size,frames", [(128, 17), (64, 17), (32, 9)])
def test_batch_render_equals_render_clip(size, frames):
    specs = _examples(7, 16, size, frames)
    assert {len(s.objects) for s in specs} == {1, 2}
    assert {o.shape for s in specs for o in s.objects} == set(sw.SHAPES)
    got = st.render_clips(specs).numpy()
    want = np.stack([sw.render_clip(s) for s in specs])
    assert got.shape == want.shape == (16, frames, size, size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_every_shape_and_motion_at_the_frame_edges():
    """Large growing shapes reach the borders, where coverage is partial."""
    objects = [
        sw.ObjectSpec(colour, shape, "large", motion, (40.5, 70.25))
        for colour, shape, motion in zip(sw.COLOURS, sw.SHAPES * 2, sw.MOTIONS)
    ]
    specs = [sw.ClipSpec("gray", (obj,), size=128, num_frames=17) for obj in objects]
    specs.append(sw.ClipSpec("navy", (objects[0], dataclasses.replace(objects[2], start_center=(99.0, 30.0)))))
    np.testing.assert_array_equal(st.render_clips(specs).numpy(), np.stack([sw.render_clip(s) for s in specs]))


def test_vae_input_is_what_shapes_batch_gives():
    videos, captions = shapes_batch(1000, 3, 4, 0, 1, 64, 17)
    table, texts = st.example_table(1000, range(12, 16), 64, 17)
    assert texts == captions
    torch.testing.assert_close(st.to_vae_input(st.render_table(table)), videos, rtol=0, atol=0)


def test_one_frame_clips_and_mixed_batches():
    still = dataclasses.replace(_examples(3, 1, 64, 17)[0], num_frames=1)
    np.testing.assert_array_equal(st.render_clips([still]).numpy()[0], sw.render_clip(still))
    table = st.spec_table(_examples(3, 4, 64, 17))
    whole = st.render_table(table).numpy()
    np.testing.assert_array_equal(st.render_table(table.select([2, 0])).numpy(), whole[[2, 0]])
    with pytest.raises(ValueError, match="one size"):
        st.spec_table(_examples(3, 1, 64, 17) + _examples(3, 1, 128, 17))
