"""ShapesWorld v1.1's frame size (any aspect) and motion amount, against the spec's numbers."""

import numpy as np
import pytest

from kumovideo.data.shapes_world import (
    ClipSpec,
    ObjectSpec,
    clip_spec_from_caption,
    object_track,
    render_clip,
    render_sound,
    sample_clip_spec,
    sample_example,
)
from kumovideo.utils.errors import KumoInputError


def test_wide_clip_renders_w_by_h_and_sizes_follow_the_short_side():
    rng = np.random.default_rng(0)
    spec = clip_spec_from_caption("a large red square stays still on a black background", rng, 64, 17, width=112)
    frames = render_clip(spec)
    assert frames.shape == (17, 64, 112, 3)
    assert spec.frame == (112, 64) and spec.size == 64
    red = (frames[0] == (230, 40, 40)).all(-1)
    side = red.any(0).sum()  # a square of r = 0.16 S is 2r = 20.5 px wide, fully covered ~20 px
    assert 19 <= side <= 21


@pytest.mark.parametrize("motion, axis, side", [("moves right", 0, 112), ("moves down", 1, 64)])
@pytest.mark.parametrize("m", [0.5, 1.0, 1.5])
def test_travel_is_0_4_m_of_its_own_side(motion, axis, side, m):
    obj = ObjectSpec("red", "circle", "small", motion, (20.0, 15.0))
    track = object_track(obj, (112, 64), 17, motion_amount=m)
    assert track[axis][-1] - track[axis][0] == pytest.approx(0.40 * m * side)


@pytest.mark.parametrize("m", [0.5, 1.5])
def test_growth_is_0_7_to_0_7_plus_0_8_m(m):
    obj = ObjectSpec("red", "circle", "large", "grows", (32.0, 32.0))
    _, _, radius = object_track(obj, 64, 17, motion_amount=m)
    r = 0.16 * 64
    assert radius[0] == pytest.approx(0.7 * r) and radius[-1] == pytest.approx((0.7 + 0.8 * m) * r)


def test_every_placed_clip_stays_inside_a_portrait_frame_at_the_largest_amount():
    rng = np.random.default_rng(3)
    for _ in range(40):
        spec = sample_clip_spec(rng, 64, 17, width=64, height=128, motion_amount=1.5)
        for obj in spec.objects:
            cx, cy, r = object_track(obj, spec.frame, 17, spec.motion_amount)
            assert (cx - r >= -1e-6).all() and (cx + r <= 64 + 1e-6).all()
            assert (cy - r >= -1e-6).all() and (cy + r <= 128 + 1e-6).all()


def test_glide_scales_with_the_motion_amount():
    obj = ObjectSpec("red", "circle", "large", "moves up", (32.0, 50.0))
    sounds = [render_sound(ClipSpec("black", (obj,), 64, 17, motion_amount=m)) for m in (0.5, 1.5)]
    last = [np.abs(np.fft.rfft(s[-4000:])).argmax() * 16000 / 4000 for s in sounds]
    # 220 Hz * 2^(2m/12): 232.9 Hz at m = 0.5, 261.6 Hz at m = 1.5 (FFT bins of 4 Hz)
    assert abs(last[0] - 232.9) <= 4 and abs(last[1] - 261.6) <= 4


def test_default_stream_is_v1_and_motion_amounts_vary_when_asked():
    v1, _ = sample_example(7, 3, 64, 17)
    assert v1.motion_amount == 1.0 and v1.frame == (64, 64)
    amounts = {sample_example(7, i, 64, 17, motion_amounts=(0.5, 1.5))[0].motion_amount for i in range(20)}
    assert len(amounts) == 20 and all(0.5 <= m <= 1.5 for m in amounts)


def test_bad_aspect_and_amount_are_one_line_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(KumoInputError, match="1:2 .. 2:1"):
        sample_clip_spec(rng, 64, 17, width=144)
    with pytest.raises(KumoInputError, match=r"\[0.5, 1.5\]"):
        sample_clip_spec(rng, 64, 17, motion_amount=2.0)
