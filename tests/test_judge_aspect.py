"""The ShapesWorld judge at any aspect (spec v1.1: left/right against W, up/down against H) and
its measured motion amount m."""

import numpy as np
import pytest

from kumovideo.data import shapes_world as sw
from kumovideo.evaluation import shapes_judge as sj

FRAMES = [(112, 64), (64, 112)]
OPPOSITE = {
    "moves left": "moves right",
    "moves right": "moves left",
    "moves up": "moves down",
    "moves down": "moves up",
}
TURNED = {"moves left": "moves up", "moves right": "moves down", "moves up": "moves right", "moves down": "moves left"}


def render(text: str, frame: tuple[int, int], rng, m: float = 1.0) -> np.ndarray:
    width, height = frame
    spec = sw.clip_spec_from_caption(text, rng, min(frame), 17, width=width, height=height, motion_amount=m)
    return sw.render_clip(spec)


@pytest.mark.parametrize("frame", FRAMES)
def test_judge_matches_true_captions_of_non_square_clips(frame):
    width, height = frame
    rng = np.random.default_rng(width * 7 + height)
    results = []
    for _ in range(30):
        spec = sw.sample_clip_spec(rng, size=min(frame), width=width, height=height)
        frames = sw.render_clip(spec)
        assert frames.shape == (17, height, width, 3)
        results.append(sj.judge_clip(frames, sw.caption(spec)))
    assert sj.summarise(results)["match_rate"] == 1.0, [r for r in results if not r.match]


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("motion", list(OPPOSITE))
def test_judge_rejects_wrong_directions_and_measures_travel_against_its_own_side(frame, motion):
    rng = np.random.default_rng(len(motion) + frame[0])
    text = f"a large red square {motion} on a black background"
    frames = render(text, frame, rng)
    result = sj.judge_clip(frames, text)
    (obj,) = result.objects
    assert result.match and obj.measured_motion == motion
    dir_x, dir_y = sw.MOTION_DIRECTIONS[motion]
    # 0.40 of W for left/right, 0.40 of H for up/down: a fraction of its own side either way.
    assert obj.displacement[0] == pytest.approx(0.40 * dir_x, abs=0.02)
    assert obj.displacement[1] == pytest.approx(0.40 * dir_y, abs=0.02)
    for wrong in (OPPOSITE[motion], TURNED[motion], "stays still", "grows"):
        judged = sj.judge_clip(frames, text.replace(motion, wrong))
        assert not judged.match and not judged.objects[0].motion_ok, (motion, wrong)


@pytest.mark.parametrize("frame", FRAMES)
def test_non_square_shapes_sizes_and_backgrounds(frame):
    rng = np.random.default_rng(3)
    for shape in sw.SHAPES:
        for size in sw.SIZES:
            text = f"a {size} yellow {shape} stays still on a navy background"
            result = sj.judge_clip(render(text, frame, rng), text)
            (obj,) = result.objects
            assert result.match and obj.measured_shape == shape and obj.size_ok, (text, obj)
            # r is relative to S = min(W, H), not to either side.
            assert obj.radius == pytest.approx(sw.SIZES[size], abs=0.02)
    frames = render("a red circle grows on a gray background", frame, rng)
    assert not sj.judge_clip(frames, "a red circle grows on a black background").background_ok
    assert not sj.judge_clip(frames, "a red square grows on a gray background").objects[0].shape_ok


def test_judge_refuses_frames_under_8_pixels_on_a_side():
    with pytest.raises(ValueError, match="at least 8 px"):
        sj.judge_clip(np.zeros((5, 6, 32, 3), dtype=np.uint8), "a red circle grows on a black background")
    assert sj.judge_clip(np.zeros((5, 32, 48, 3), dtype=np.uint8), "a red circle grows on a black background")


@pytest.mark.parametrize("frame", [(64, 64), *FRAMES])
@pytest.mark.parametrize("motion", ["moves left", "moves right", "moves up", "moves down", "grows", "shrinks"])
def test_measured_motion_amount_is_within_0_1_of_the_rendered_m(frame, motion):
    rng = np.random.default_rng(11)
    for shape in sw.SHAPES:
        for m in (0.5, 1.0, 1.5):
            text = f"a small green {shape} {motion} on a black background"
            obj = sj.judge_clip(render(text, frame, rng, m), text).objects[0]
            assert obj.motion_amount == pytest.approx(m, abs=0.1), (text, frame, m, obj)


def test_motion_amount_is_none_for_still_objects_still_images_and_missing_objects():
    rng = np.random.default_rng(5)
    text = "a large white circle stays still on a black background"
    assert sj.judge_clip(render(text, (64, 64), rng), text).objects[0].motion_amount is None
    moving = "a large white circle moves up on a black background"
    frames = render(moving, (64, 112), rng)
    assert sj.judge_clip(frames[:1], moving).objects[0].motion_amount is None
    assert sj.judge_clip(frames, moving.replace("white", "red")).objects[0].motion_amount is None
    # The wrong way is a negative amount: travel along the named direction.
    assert sj.judge_clip(frames, moving.replace("up", "down")).objects[0].motion_amount == pytest.approx(-1, abs=0.1)


def test_motion_amount_of_inverts_the_spec_formulas():
    for m in (0.5, 1.0, 1.5):
        first, last = sw.radius_scales("grows", m)
        assert sj.motion_amount_of("grows", (0, 0), (last / first) ** 2) == pytest.approx(m)
        first, last = sw.radius_scales("shrinks", m)
        assert sj.motion_amount_of("shrinks", (0, 0), (last / first) ** 2) == pytest.approx(m)
        assert sj.motion_amount_of("moves up", (0.01, -0.4 * m), 1.0) == pytest.approx(m)
    assert sj.motion_amount_of("stays still", (0.0, 0.0), 1.0) is None


def test_contact_sheet_keeps_a_non_square_clips_aspect(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    wide = render("a red square stays still on a black background", (112, 64), rng)
    path = sj.contact_sheet([wide], ["wide"], tmp_path / "sheet.png", frames_per_clip=1)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    tile = sheet[4 : 4 + 112, 4 : 4 + 112]
    # The frame fills 112 x 64 of the 112 x 112 tile; below it the sheet stays white.
    assert (tile[:64] != 255).any(-1).mean() > 0.9 and (tile[64:] == 255).all()
