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


def _examples(seed: int, n: int, size: int, frames: int, **v11) -> list[sw.ClipSpec]:
    return [sw.sample_example(seed, i, size=size, num_frames=frames, **v11)[0] for i in range(n)]


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


def test_held_back_colour_renders_as_render_clip_draws_it():
    specs = _examples(5, 8, 64, 17, include="cyan")
    assert {len(s.objects) for s in specs} == {1, 2} and all("cyan" in {o.colour for o in s.objects} for s in specs)
    frames = st.render_clips(specs).numpy()
    np.testing.assert_array_equal(frames, np.stack([sw.render_clip(s) for s in specs]))
    assert (frames == np.array(sw.HELD_BACK_COLOURS["cyan"], np.uint8)).all(-1).any()


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


@pytest.mark.parametrize(
    "width,height,frames,amounts",
    [(48, 32, 9, None), (32, 64, 5, None), (48, 32, 9, (0.5, 1.5)), (32, 64, 5, (0.5, 1.5)), (64, 64, 9, (0.5, 1.5))],
)
def test_v11_frames_and_motion_amounts_equal_render_clip(width, height, frames, amounts):
    """W x H frames and a motion amount per clip (ShapesWorld v1.1), as `render_clip` draws them."""
    size = min(width, height)
    table, texts = st.example_table(5, range(20, 40), size, frames, width=width, height=height, motion_amounts=amounts)
    specs = _examples(5, 40, size, frames, width=width, height=height, motion_amounts=amounts)[20:]
    assert texts == [sw.caption(s) for s in specs]
    assert {len(s.objects) for s in specs} == {1, 2}
    assert {o.shape for s in specs for o in s.objects} == set(sw.SHAPES)
    assert (table.size, table.width, table.height, table.num_frames) == (size, width, height, frames)
    got = st.render_table(table).numpy()
    want = np.stack([sw.render_clip(s) for s in specs])
    assert got.shape == want.shape == (20, frames, height, width, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(st.render_clips(specs[:3]).numpy(), want[:3])
    video = st.to_vae_input(st.render_table(table.select([0])))
    assert video.shape == (1, 3, frames, height, width)


def test_v11_shapes_at_the_frame_edges():
    """Large growing and moving shapes at the borders of wide and tall frames, at the
    smallest and largest motion amounts."""
    specs = []
    for m, (width, height) in [(0.5, (64, 32)), (1.5, (64, 32)), (1.5, (32, 64)), (0.5, (32, 64))]:
        for shape, motion in zip(sw.SHAPES * 3, sw.MOTIONS):
            obj = sw.ObjectSpec("red", shape, "large", motion, (width - 6.5, 5.25))
            other = sw.ObjectSpec("blue", sw.SHAPES[len(specs) % 3], "small", "grows", (4.0, height - 3.75))
            specs.append(sw.ClipSpec("forest", (obj, other), 32, 9, width=width, height=height, motion_amount=m))
    for group in (specs[:14], specs[14:]):
        want = np.stack([sw.render_clip(s) for s in group])
        np.testing.assert_array_equal(st.render_clips(group).numpy(), want)


def test_table_motion_amounts_are_the_specs():
    specs = _examples(11, 8, 32, 5, width=64, height=32, motion_amounts=(0.5, 1.5))
    table, _ = st.example_table(11, range(8), 32, 5, width=64, height=32, motion_amounts=(0.5, 1.5))
    amounts = [s.motion_amount for s in specs]
    assert len(set(amounts)) == 8 and all(0.5 <= m <= 1.5 for m in amounts)
    assert table.motion_amount.shape == (8,)
    np.testing.assert_array_equal(table.motion_amount, amounts)
    np.testing.assert_array_equal(table.select([5, 1]).motion_amount, [amounts[5], amounts[1]])
    np.testing.assert_array_equal(table.select(np.arange(8) % 2 == 0).motion_amount, amounts[::2])
    assert [sw.motion_score_of(m, 5) for m in table.motion_amount] == [sw.motion_score_of(m, 5) for m in amounts]
    v1, _ = st.example_table(11, range(4), 32, 5)
    np.testing.assert_array_equal(v1.motion_amount, np.ones(4))
    assert (v1.width, v1.height) == (32, 32)


def test_a_batch_has_one_frame_size():
    wide = _examples(3, 1, 32, 5, width=64, height=32)
    tall = _examples(3, 1, 32, 5, width=32, height=64)
    with pytest.raises(ValueError, match="one size"):
        st.spec_table(wide + tall)
    with pytest.raises(ValueError, match="one size"):
        st.spec_table(wide + _examples(3, 1, 32, 5))
