"""ShapesWorld v1: renderer, captions, dataset, judge and the `kumo shapes` command.

Everything is checked against the spec (shapes-world.md); all tests are CPU and small.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from kumovideo.data import shapes_world as sw
from kumovideo.evaluation import shapes_judge as sj
from kumovideo.utils.video_io import read_video, write_video

# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def _caption_from_parsed(parsed: dict) -> str:
    """Format a parse_caption-style dict back into a caption (through ClipSpec)."""
    objects = tuple(
        sw.ObjectSpec(obj["colour"], obj["shape"], obj["size"] or "small", obj["motion"], (0.0, 0.0))
        for obj in parsed["objects"]
    )
    name_size = len(objects) == 1 and parsed["objects"][0]["size"] is not None
    return sw.caption(sw.ClipSpec(parsed["background"], objects, name_size=name_size))


def _with_changed(text: str, attribute: str, rng: np.random.Generator) -> str:
    """The caption with one attribute (background, colour, shape or motion) changed."""
    parsed = sw.parse_caption(text)
    if attribute == "background":
        parsed["background"] = str(rng.choice([b for b in sw.BACKGROUNDS if b != parsed["background"]]))
        return _caption_from_parsed(parsed)
    pools = {"colour": list(sw.COLOURS), "shape": list(sw.SHAPES), "motion": list(sw.MOTIONS)}
    target = parsed["objects"][int(rng.integers(len(parsed["objects"])))]
    taken = {obj["colour"] for obj in parsed["objects"]}  # two objects never share a colour
    choices = [v for v in pools[attribute] if v != target[attribute] and (attribute != "colour" or v not in taken)]
    target[attribute] = str(rng.choice(choices))
    return _caption_from_parsed(parsed)


def _red_object_alpha(shape: str, motion: str, size: int = 128, num_frames: int = 17):
    """Render one large red object on black; return its spec and per-pixel coverage (F, S, S).

    It starts half its travel before the middle (plus a quarter pixel, so edges fall
    between pixel centres), so it passes the middle halfway through the clip.
    """
    dir_x, dir_y = sw.MOTION_DIRECTIONS[motion]
    half_travel = sw.TRAVEL * size / 2
    start = (size / 2 - dir_x * half_travel + 0.25, size / 2 - dir_y * half_travel + 0.25)
    obj = sw.ObjectSpec("red", shape, "large", motion, start)
    spec = sw.ClipSpec("black", (obj,), size, num_frames)
    frames = sw.render_clip(spec)
    return obj, frames[..., 0].astype(np.float64) / sw.COLOURS["red"][0]


# ----------------------------------------------------------------------------------------
# The world's constants and geometry
# ----------------------------------------------------------------------------------------


def test_palettes_sizes_and_motions_follow_the_spec():
    assert sw.BACKGROUNDS == {
        "black": (0, 0, 0),
        "gray": (110, 110, 110),
        "navy": (20, 30, 80),
        "forest": (20, 70, 30),
    }
    assert sw.COLOURS == {
        "red": (230, 40, 40),
        "green": (60, 200, 70),
        "blue": (50, 100, 240),
        "yellow": (245, 215, 40),
        "white": (240, 240, 240),
        "purple": (170, 70, 210),
    }
    # v1.1: the held-back colour, apart from the palette base models are trained on.
    assert sw.HELD_BACK_COLOURS == {"cyan": (40, 220, 220)} and sw.HELD_BACK == "cyan"
    assert sw.ALL_COLOURS == {**sw.COLOURS, "cyan": (40, 220, 220)}
    assert sw.SHAPES == ("circle", "square", "triangle")
    assert sw.SIZES == {"small": 0.10, "large": 0.16}
    assert set(sw.MOTIONS) == {
        "moves left",
        "moves right",
        "moves up",
        "moves down",
        "stays still",
        "grows",
        "shrinks",
    }
    assert sw.TRAVEL == 0.40
    assert sw.RADIUS_SCALES == {"grows": (0.7, 1.5), "shrinks": (1.5, 0.7)}


@pytest.mark.parametrize("shape", sw.SHAPES)
@pytest.mark.parametrize("motion", sw.MOTIONS)
def test_rendered_centre_and_size_move_as_the_spec_says(shape, motion):
    size = 128
    obj, alpha = _red_object_alpha(shape, motion, size)
    radius = sw.SIZES["large"] * size
    dir_x, dir_y = sw.MOTION_DIRECTIONS[motion]
    scales = sw.RADIUS_SCALES.get(motion, (1.0, 1.0))
    # Area of a shape of radius r: circle pi r^2, square (2r)^2, triangle (2r)(2r)/2.
    area_factor = {"circle": math.pi, "square": 4.0, "triangle": 2.0}[shape]
    coords = np.arange(size) + 0.5
    for frame, t, scale in ((0, 0.0, scales[0]), (-1, 1.0, scales[1])):
        a = alpha[frame]
        area = a.sum()
        centroid_x = (a.sum(0) * coords).sum() / area
        centroid_y = (a.sum(1) * coords).sum() / area
        r = radius * scale
        expected_x = obj.start_center[0] + dir_x * sw.TRAVEL * size * t
        expected_y = obj.start_center[1] + dir_y * sw.TRAVEL * size * t
        if shape == "triangle":
            expected_y += r / 3.0  # a triangle's centroid is 2/3 of the way from apex to base
        assert centroid_x == pytest.approx(expected_x, abs=0.25)
        assert centroid_y == pytest.approx(expected_y, abs=0.25)
        assert area == pytest.approx(area_factor * r * r, rel=0.02)
        # The bounding box is 2r wide and 2r tall for every shape.
        assert (a.max(0) > 0.5).sum() == pytest.approx(2 * r, abs=1.01)
        assert (a.max(1) > 0.5).sum() == pytest.approx(2 * r, abs=1.01)


def test_triangle_points_up_and_colours_are_exact():
    obj, alpha = _red_object_alpha("triangle", "stays still")
    rows = np.flatnonzero(alpha[0].max(1) > 0.5)
    widths = (alpha[0] > 0.5).sum(1)
    assert widths[rows[0]] <= 3 and widths[rows[-1]] >= 2 * sw.SIZES["large"] * 128 - 1
    frames = sw.render_clip(sw.ClipSpec("navy", (obj,), 128, 17))
    assert tuple(frames[0, 0, 0]) == sw.BACKGROUNDS["navy"]
    assert tuple(frames[0, 70, 64]) == sw.COLOURS["red"]  # inside, away from the edges
    # Anti-aliased: some edge pixels are blends, neither background nor object colour.
    assert ((alpha > 0.05) & (alpha < 0.95)).any()


def test_render_clip_shape_dtype_and_speed():
    spec = sw.sample_clip_spec(np.random.default_rng(0), size=128, num_frames=17, num_objects=2)
    frames = sw.render_clip(spec)
    assert frames.shape == (17, 128, 128, 3) and frames.dtype == np.uint8
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        sw.render_clip(spec)
        timings.append(time.perf_counter() - start)
    # The spec target is well under 50 ms; best-of-5 keeps a busy CI machine from flaking.
    assert min(timings) < 0.05


@pytest.mark.parametrize("size", [64, 128])
def test_objects_stay_in_frame_apart_and_never_share_colour(size):
    rng = np.random.default_rng(size)
    for _ in range(300):
        spec = sw.sample_clip_spec(rng, size=size, num_frames=17)
        assert spec.size == size and spec.num_frames == 17 and len(spec.objects) in (1, 2)
        tracks = [sw.object_track(obj, size, 17) for obj in spec.objects]
        for cx, cy, r in tracks:
            assert np.all(cx - r >= 0) and np.all(cx + r <= size)
            assert np.all(cy - r >= 0) and np.all(cy + r <= size)
        if len(spec.objects) == 2:
            assert spec.objects[0].colour != spec.objects[1].colour
            (ax, ay, ar), (bx, by, br) = tracks
            overlap_x = np.abs(ax - bx) < ar + br
            overlap_y = np.abs(ay - by) < ar + br
            assert not np.any(overlap_x & overlap_y), "bounding boxes overlap in some frame"


def test_sample_options():
    rng = np.random.default_rng(1)
    specs = [sw.sample_clip_spec(rng, size=64, num_objects=1, name_size=True) for _ in range(20)]
    assert all(len(s.objects) == 1 and s.name_size for s in specs)
    specs = [sw.sample_clip_spec(rng, size=64, num_objects=2, name_size=True) for _ in range(20)]
    assert all(len(s.objects) == 2 and not s.name_size for s in specs)  # never named for two
    seen = {len(sw.sample_clip_spec(rng, size=64).objects) for _ in range(50)}
    assert seen == {1, 2}
    with pytest.raises(ValueError, match="4k\\+1"):
        sw.sample_clip_spec(rng, size=64, num_frames=16)
    with pytest.raises(ValueError, match="multiple of 16"):
        sw.sample_clip_spec(rng, size=100)


def test_default_draws_are_those_before_the_held_back_colour():
    """Captured before cyan existed: every base stream (training, caches, the evaluation's
    captions) is byte-identical with it, and include=None is the default draw."""
    assert [sw.sample_example(1000, i, 32, 9)[1] for i in range(4)] == [
        "a blue circle moves down and a white circle moves down on a navy background",
        "a green square shrinks and a purple circle moves up on a black background",
        "a red triangle grows and a blue square stays still on a forest background",
        "a white circle moves right on a black background",
    ]
    spec = sw.sample_clip_spec(np.random.default_rng(7), size=64, num_objects=2)
    assert [(o.colour, o.shape, o.size, o.motion) for o in spec.objects] == [
        ("yellow", "square", "large", "grows"),
        ("white", "circle", "small", "moves up"),
    ]
    assert spec.objects[0].start_center == (44.4318586627876, 15.535229335942326)
    assert spec == sw.sample_clip_spec(np.random.default_rng(7), size=64, num_objects=2, include=None)
    rng = np.random.default_rng(3)
    assert not any("cyan" in sw.caption(sw.sample_clip_spec(rng, size=32, num_frames=1)) for _ in range(500))


@pytest.mark.parametrize("num_objects", [1, 2])
def test_include_gives_exactly_one_object_of_that_colour(num_objects):
    rng = np.random.default_rng(num_objects)
    places = []
    for _ in range(200):
        spec = sw.sample_clip_spec(rng, size=64, num_objects=num_objects, include="cyan")
        colours = [obj.colour for obj in spec.objects]
        assert colours.count("cyan") == 1 and len(colours) == num_objects
        assert set(colours) - {"cyan"} <= set(sw.COLOURS)  # the other from the base palette
        places.append(colours.index("cyan"))
        for cx, cy, r in (sw.object_track(obj, 64, 17) for obj in spec.objects):
            assert np.all(cx - r >= 0) and np.all(cx + r <= 64) and np.all(cy - r >= 0) and np.all(cy + r <= 64)
    assert set(places) == set(range(num_objects))  # two objects: cyan first or second
    # A base colour may be asked for too; the other object then never repeats it.
    for _ in range(50):
        spec = sw.sample_clip_spec(rng, size=64, num_objects=2, include="red")
        assert sorted(obj.colour == "red" for obj in spec.objects) == [False, True]
    with pytest.raises(ValueError, match="unknown colour 'pink'.*cyan"):
        sw.sample_clip_spec(rng, size=64, include="pink")


# ----------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------


def test_caption_examples_from_the_spec():
    for text in (
        "a red circle moves left on a black background",
        "a large yellow triangle grows on a navy background",
        "a white square stays still and a blue circle moves up on a gray background",
    ):
        assert _caption_from_parsed(sw.parse_caption(text)) == text
    assert sw.parse_caption("a large yellow triangle grows on a navy background") == {
        "background": "navy",
        "objects": [{"colour": "yellow", "shape": "triangle", "size": "large", "motion": "grows"}],
    }


def test_held_back_captions_follow_the_grammar_and_render_in_the_spec_rgb():
    text = "a cyan square moves up on a black background"  # the spec's example
    assert sw.parse_caption(text)["objects"] == [
        {"colour": "cyan", "shape": "square", "size": None, "motion": "moves up"}
    ]
    rng = np.random.default_rng(4)
    spec = sw.clip_spec_from_caption(text, rng, size=64)
    assert sw.caption(spec) == text
    (obj,) = spec.objects
    cx, cy, _ = sw.object_track(obj, 64, 17)
    frames = sw.render_clip(spec)
    assert all(tuple(frames[t, int(cy[t]), int(cx[t])]) == (40, 220, 220) for t in range(17))
    with pytest.raises(ValueError, match="share a colour"):
        sw.parse_caption("a cyan circle grows and a cyan square moves up on a gray background")
    for _ in range(100):
        spec = sw.sample_clip_spec(rng, size=64, include="cyan")
        assert sw.caption(sw.clip_spec_from_caption(sw.caption(spec), rng, size=64)) == sw.caption(spec)


def test_caption_round_trip_for_random_specs():
    rng = np.random.default_rng(2)
    for _ in range(500):
        spec = sw.sample_clip_spec(rng, size=64)
        text = sw.caption(spec)
        parsed = sw.parse_caption(text)
        assert parsed["background"] == spec.background
        assert len(parsed["objects"]) == len(spec.objects)
        for named, obj in zip(parsed["objects"], spec.objects):
            assert (named["colour"], named["shape"], named["motion"]) == (obj.colour, obj.shape, obj.motion)
            assert named["size"] == (obj.size if spec.name_size else None)
        # caption(name_size=...) overrides the spec; two-object captions never name sizes.
        named_text = sw.caption(spec, name_size=True)
        assert (" small " in named_text or " large " in named_text) == (len(spec.objects) == 1)
        # A clip drawn for the caption has the same caption.
        assert sw.caption(sw.clip_spec_from_caption(text, rng, size=64)) == text


@pytest.mark.parametrize(
    "bad",
    [
        "A red circle moves left on a black background",  # not lowercase
        "a red circle moves left on a black background.",  # trailing period
        "a pink circle moves left on a black background",  # unknown colour
        "a red hexagon moves left on a black background",  # unknown shape
        "a red circle spins on a black background",  # unknown motion
        "a red circle moves left on a white background",  # white is not a background
        "a red circle moves left",  # no background
        "a medium red circle moves left on a black background",  # unknown size
        "a large red circle moves left and a blue square grows on a gray background",  # sized pair
        "a red circle moves left and a red square grows on a gray background",  # shared colour
        "a red circle moves left and a blue square grows and a green circle shrinks on a gray background",
        "red circle moves left on a black background",  # missing article
        "a red  circle moves left on a black background",  # double space
        "a circle red moves left on a black background",  # wrong order
        "",
    ],
)
def test_parse_caption_rejects_text_outside_the_grammar(bad):
    with pytest.raises(ValueError, match="grammar|share a colour"):
        sw.parse_caption(bad)


def test_parse_caption_error_says_what_is_wrong():
    with pytest.raises(ValueError, match="unknown words \\['pink'\\]"):
        sw.parse_caption("a pink circle moves left on a black background")
    with pytest.raises(ValueError, match="never name sizes"):
        sw.parse_caption("a large red circle moves left and a blue square grows on a gray background")
    with pytest.raises(ValueError, match="must be a string"):
        sw.parse_caption(None)


# ----------------------------------------------------------------------------------------
# Determinism and the dataset
# ----------------------------------------------------------------------------------------


def test_same_seed_same_clips():
    specs_a = [sw.sample_clip_spec(np.random.default_rng(7), size=64) for _ in range(3)]
    specs_b = [sw.sample_clip_spec(np.random.default_rng(7), size=64) for _ in range(3)]
    assert specs_a == specs_b
    assert np.array_equal(sw.render_clip(specs_a[0]), sw.render_clip(specs_b[0]))
    assert sw.sample_clip_spec(np.random.default_rng(8), size=64) != specs_a[0]
    first = [item["caption"] for item in sw.ShapesWorldDataset(size=32, num_frames=5, seed=3, length=6)]
    again = [item["caption"] for item in sw.ShapesWorldDataset(size=32, num_frames=5, seed=3, length=6)]
    other = [item["caption"] for item in sw.ShapesWorldDataset(size=32, num_frames=5, seed=4, length=6)]
    assert first == again and first != other


def test_dataset_items_and_still_images():
    videos = list(sw.ShapesWorldDataset(size=32, num_frames=5, seed=0, length=4))
    assert len(videos) == 4 == len(sw.ShapesWorldDataset(size=32, num_frames=5, length=4))
    for item in videos:
        assert item["video"].shape == (5, 3, 32, 32) and item["video"].dtype == torch.float32
        assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0
        sw.parse_caption(item["caption"])
    # Images are the first frame of the same example's clip, with the same caption.
    images = list(sw.ShapesWorldDataset(size=32, num_frames=5, seed=0, length=4, image_prob=1.0))
    for image, video in zip(images, videos):
        assert image["video"].shape == (1, 3, 32, 32)
        assert image["caption"] == video["caption"]
        assert torch.equal(image["video"][0], video["video"][0])
    mixed = list(sw.ShapesWorldDataset(size=32, num_frames=5, seed=0, length=40, image_prob=0.5))
    assert 5 < sum(item["video"].shape[0] == 1 for item in mixed) < 35


def test_dataset_shards_across_ranks():
    full = [item["caption"] for item in sw.ShapesWorldDataset(size=32, num_frames=5, seed=5, length=10)]
    shards = []
    for rank in range(2):
        dataset = sw.ShapesWorldDataset(size=32, num_frames=5, seed=5, length=10, rank=rank, world_size=2)
        shards.append([item["caption"] for item in dataset])
    assert shards[0] == full[0::2] and shards[1] == full[1::2]


def test_dataset_shards_across_dataloader_workers():
    dataset = sw.ShapesWorldDataset(size=32, num_frames=5, seed=6, length=8)
    full = [item["caption"] for item in dataset]
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    from_workers = [item["caption"] for item in loader]
    # Every example exactly once, none repeated between the two workers.
    assert sorted(from_workers) == sorted(full) and len(from_workers) == 8


def test_infinite_dataset_keeps_going():
    stream = iter(sw.ShapesWorldDataset(size=32, num_frames=1, seed=0))
    assert [next(stream)["video"].shape for _ in range(3)] == [(1, 3, 32, 32)] * 3
    with pytest.raises(TypeError):
        len(sw.ShapesWorldDataset(size=32, num_frames=5))


# ----------------------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_judge_accepts_ground_truth(size):
    rng = np.random.default_rng(100 + size)
    results = []
    for _ in range(100):
        spec = sw.sample_clip_spec(rng, size=size)
        results.append(sj.judge_clip(sw.render_clip(spec), sw.caption(spec)))
    summary = sj.summarise(results)
    print(f"judge acceptance on ground truth at {size} px: {summary['match_rate']:.2%}")
    assert summary["match_rate"] >= 0.98, summary
    assert summary["one_object"]["n"] + summary["two_objects"]["n"] == 100


@pytest.mark.parametrize("attribute", ["background", "colour", "shape", "motion"])
def test_judge_rejects_clips_of_a_different_caption(attribute):
    rng = np.random.default_rng({"background": 1, "colour": 2, "shape": 3, "motion": 4}[attribute])
    for _ in range(25):
        text = sw.caption(sw.sample_clip_spec(rng, size=64))
        wrong = _with_changed(text, attribute, rng)
        frames = sw.render_clip(sw.clip_spec_from_caption(wrong, rng, size=64))
        result = sj.judge_clip(frames, text)
        assert not result.match, (text, wrong)
        if attribute == "background":
            assert not result.background_ok
            continue
        # The object whose attribute changed is the one the judge must fault.
        original, changed = sw.parse_caption(text)["objects"], sw.parse_caption(wrong)["objects"]
        index = next(i for i, (a, b) in enumerate(zip(original, changed)) if a[attribute] != b[attribute])
        assert not getattr(result.objects[index], f"{attribute}_ok"), (text, wrong, result.objects[index])


def test_judge_survives_video_compression(tmp_path):
    rng = np.random.default_rng(9)
    for index in range(8):
        spec = sw.sample_clip_spec(rng, size=64)
        path = tmp_path / f"clip_{index}.mp4"
        write_video(sw.render_clip(spec), path)
        decoded, fps = read_video(path)
        assert fps == 8
        assert decoded.shape == (17, 64, 64, 3)
        assert sj.judge_clip(decoded, sw.caption(spec)).match


def test_judge_measurements_and_still_images():
    rng = np.random.default_rng(0)
    text = "a large blue square moves right on a gray background"
    frames = sw.render_clip(sw.clip_spec_from_caption(text, rng, size=128))
    result = sj.judge_clip(frames, text)
    assert result.match and result.background_measured == "gray"
    (obj,) = result.objects
    assert obj.measured_shape == "square" and obj.measured_motion == "moves right"
    assert obj.displacement[0] == pytest.approx(0.40, abs=0.02) and abs(obj.displacement[1]) < 0.02
    assert obj.area_ratio == pytest.approx(1.0, abs=0.05)
    assert obj.measured_size == "large" and obj.size_ok
    # A still image matches any motion phrase (it is the clip's first frame).
    assert sj.judge_clip(frames[0], text).match
    assert sj.judge_clip(frames[:1], "a large blue square grows on a gray background").match
    # An empty frame has no object.
    empty = np.zeros_like(frames)
    result = sj.judge_clip(empty, "a red circle grows on a black background")
    assert not result.match and result.background_ok and not result.objects[0].colour_ok


def test_judge_rejects_bad_input():
    frames = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="grammar"):
        sj.judge_clip(frames, "a red blob on black")
    with pytest.raises(ValueError, match="uint8"):
        sj.judge_clip(frames.astype(np.float32), "a red circle grows on a black background")
    with pytest.raises(ValueError, match="at least 8"):  # v1.1 judges any aspect, but not a sliver
        sj.judge_clip(np.zeros((5, 6, 32, 3), dtype=np.uint8), "a red circle grows on a black background")


def test_summarise_counts_per_attribute():
    rng = np.random.default_rng(11)
    one = sw.clip_spec_from_caption("a small red circle grows on a black background", rng, size=64)
    two = sw.clip_spec_from_caption("a red circle grows and a blue square moves up on a navy background", rng, size=64)
    results = [
        sj.judge_clip(sw.render_clip(one), sw.caption(one)),
        sj.judge_clip(sw.render_clip(two), "a red circle grows and a blue triangle moves up on a navy background"),
    ]
    summary = sj.summarise(results)
    assert summary["n"] == 2 and summary["match_rate"] == 0.5
    assert summary["one_object"] == {"n": 1, "match_rate": 1.0}
    assert summary["two_objects"] == {"n": 1, "match_rate": 0.0}
    assert summary["attributes"]["background"] == 1.0
    assert summary["attributes"]["shape"] == pytest.approx(2 / 3)
    assert summary["attributes"]["size"] == 1.0  # only the one caption that names a size
    assert sj.summarise([])["match_rate"] is None


@pytest.mark.parametrize("shape", sw.SHAPES)
def test_judge_knows_the_held_back_colour(shape):
    """Cyan renders match their captions, one object or two; another colour where cyan is
    named does not."""
    rng = np.random.default_rng(sw.SHAPES.index(shape))
    for motion in sw.MOTIONS:
        one = f"a cyan {shape} {motion} on a navy background"
        two = f"a green circle stays still and a cyan {shape} {motion} on a gray background"
        for text in (one, two):
            frames = sw.render_clip(sw.clip_spec_from_caption(text, rng, size=64))
            result = sj.judge_clip(frames, text)
            assert result.match, (text, result.objects)
            cyan = next(obj for obj in result.objects if obj.colour == "cyan")
            assert cyan.measured_shape == shape and cyan.measured_motion == motion
    blue = sw.render_clip(sw.clip_spec_from_caption(f"a blue {shape} grows on a black background", rng, size=64))
    result = sj.judge_clip(blue, f"a cyan {shape} grows on a black background")
    assert not result.match and not result.objects[0].colour_ok


def test_contact_sheet(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(12)
    specs = [sw.sample_clip_spec(rng, size=64) for _ in range(3)]
    path = sj.contact_sheet([sw.render_clip(s) for s in specs], [sw.caption(s) for s in specs], tmp_path / "sheet.png")
    image = Image.open(path)
    assert image.width >= 5 * 64 and image.height >= 3 * 64
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temporary file left


# ----------------------------------------------------------------------------------------
# The `kumo shapes render` command
# ----------------------------------------------------------------------------------------


def test_cli_render_writes_clip_and_caption_pairs(tmp_path, capsys):
    from kumovideo.cli import main

    out = tmp_path / "clips"
    status = main(["shapes", "render", "--n", "3", "--out", str(out), "--size", "32", "--frames", "5", "--seed", "1"])
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [f"clip_{i:05d}.{ext}" for i in range(3) for ext in ("mp4", "txt")]
    assert str(out) in capsys.readouterr().out
    for index in range(3):
        text = (out / f"clip_{index:05d}.txt").read_text().strip()
        spec, expected = sw.sample_example(1, index, 32, 5)
        assert text == expected
        sw.parse_caption(text)
        frames, fps = read_video(out / f"clip_{index:05d}.mp4")
        assert frames.shape == (5, 32, 32, 3) and fps == 8


def test_cli_render_held_back_clips_each_show_cyan_once(tmp_path, capsys):
    from kumovideo.cli import main

    out = tmp_path / "clips"
    argv = ["shapes", "render", "--n", "4", "--out", str(out), "--size", "32", "--frames", "5", "--held-back"]
    assert main(argv) == 0
    assert "each with the held-back colour cyan" in capsys.readouterr().out
    for index in range(4):
        text = (out / f"clip_{index:05d}.txt").read_text().strip()
        assert text == sw.sample_example(0, index, 32, 5, include="cyan")[1]
        assert [obj["colour"] for obj in sw.parse_caption(text)["objects"]].count("cyan") == 1


@pytest.mark.parametrize(
    "arguments, complaint",
    [
        (["--frames", "16"], "4k+1"),
        (["--size", "100"], "multiple of 16"),
        (["--size", "0"], "multiple of 16"),
        (["--n", "0"], "--n"),
        (["--out", "IS_A_FILE"], "existing file"),
    ],
)
def test_cli_render_rejects_bad_input(tmp_path, capsys, arguments, complaint):
    from kumovideo.cli import main

    existing_file = tmp_path / "file.txt"
    existing_file.write_text("not a folder")
    argv = ["shapes", "render", "--n", "2", "--out", str(tmp_path / "out"), *arguments]
    argv = [str(existing_file) if arg == "IS_A_FILE" else arg for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kumo: error:") and complaint in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
