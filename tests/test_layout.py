"""Regional prompts on box tracks (kumovideo.pipelines.layout): the boxes' form, the latent
map, the composer's views and composite, the ShapesWorld planner, and the pipeline and CLI
on the built-in model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli import main
from kumovideo.data.shapes_world import boxes_apart, clip_spec_from_caption, plan_object_boxes
from kumovideo.geometry import ClipGeometry
from kumovideo.pipelines import KumoPipeline
from kumovideo.pipelines.layout import (
    Region,
    RegionComposer,
    check_regions,
    clip_seeds,
    layout_prompts,
    region_map,
)
from kumovideo.utils.errors import KumoInputError

TWO = "a red triangle moves right and a green circle stays still on a forest background"
GEOMETRY = ClipGeometry(spatial=8, temporal=4, patch=2, latent_channels=8)


def test_regions_take_dicts_with_boxes_in_frame_fractions_and_name_what_is_wrong():
    (layout,) = check_regions([{"prompt": "a", "box": [0, 0, 0.5, 0.5], "end_box": [0.5, 0.5, 1, 1]}], 1, 5)
    np.testing.assert_allclose(
        layout[0].boxes[[0, 2, 4]], [[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1, 1]]
    )
    assert check_regions([{"prompt": "a", "box": [0, 0, 1, 1]}], 3, 2)[2][0].prompt == "a"  # one layout, every prompt
    bad = [
        ([{"prompt": "a", "box": [0.5, 0, 0.2, 1]}], "0 <= x0 < x1"),
        ([{"prompt": "a", "box": [0, 0, 1.5, 1]}], "0 <= x0 < x1"),
        ([{"prompt": "a", "box": [0, 0, 1]}], "[x0, y0, x1, y1]"),
        ([{"prompt": "a", "box": [0, 0, 10**400, 1]}], "too large for a float"),
        ([{"prompt": "", "box": [0, 0, 1, 1]}], '"prompt"'),
        ([{"prompt": "a", "box": [0, 0, 1, 1], "where": 1}], "unknown keys where"),
        ([[{"prompt": "a", "box": [0, 0, 1, 1]}]] * 2, "2 layouts for 1 prompts"),
        ([], "non-empty list"),
    ]
    for regions, words in bad:
        with pytest.raises(KumoInputError, match=words.replace("[", r"\[").replace("]", r"\]")):
            check_regions(regions, 1, 5)


def test_region_map_snaps_boxes_to_tokens_and_follows_a_moving_box():
    # 64x64 pixels, 9 frames: 3 latent frames of 8x8 latent pixels, 4x4 tokens of 16 pixels
    moving = check_regions([{"prompt": "a", "box": [0, 0, 0.2, 0.2], "end_box": [0.75, 0, 0.95, 0.2]}], 1, 9)[0]
    owner = region_map(moving, GEOMETRY, 9, 64, 64)
    assert owner.shape == (3, 1, 8, 8)
    first, last = owner[0, 0] == 0, owner[2, 0] == 0
    assert first[:2, :2].all() and first.sum() == 4 * 4  # one token of 2x2 latent pixels... widened to 2x2 tokens
    assert last[:2, -2:].all() and not last[:, :2].any()  # the box has moved right
    assert (owner[:, 0, 4:] == -1).all()  # nothing below the box
    # Two boxes touching one token: the token goes to the nearer centre.
    two = [Region("a", np.array([[0.0, 0.0, 0.55, 1.0]])), Region("b", np.array([[0.45, 0.0, 1.0, 1.0]]))]
    owner = region_map(two, GEOMETRY, 1, 64, 64)[0, 0]
    assert (owner[:, :4] == 0).all() and (owner[:, 4:] == 1).all()


def composer_of(maps, counts, fill_until=500.0):
    alphas = torch.linspace(0.999, 0.001, 1000)
    return RegionComposer(maps, counts, alphas, fill_until)


def test_composer_hides_other_regions_and_composes_each_pixel_from_its_region():
    maps = torch.full((2, 1, 1, 4, 4), -1)
    maps[0, :, :, :, :2] = 0  # clip 0: region 0 left, region 1 top right
    maps[0, :, :, :2, 2:] = 1  # clip 1: no layout
    composer = composer_of(maps, [2, 0])
    x = torch.randn(2, 1, 3, 4, 4)
    assert torch.equal(composer.branch_inputs(x, torch.tensor(900)), x.repeat(2, 1, 1, 1, 1))  # first step: all of x
    v = torch.randn(4, 1, 3, 4, 4)  # branch-major: (branch 0: clips 0, 1), (branch 1: clips 0, 1)
    out = composer.combine(v, x, torch.tensor(900))
    assert torch.equal(out[0, ..., :2], v[0, ..., :2])  # region 0 from branch 0
    assert torch.equal(out[0, ..., :2, 2:], v[2, ..., :2, 2:])  # region 1 from branch 1
    torch.testing.assert_close(out[0, ..., 2:, 2:], (v[0] + v[2])[..., 2:, 2:] / 2)  # outside: their mean
    torch.testing.assert_close(out[1], (v[1] + v[3]) / 2)  # no layout: its pads, both its whole prompt
    # Later steps: branch 0 sees region 1 filled with the background, branch 1 region 0; the
    # clip without a layout is seen whole. In the fill steps (t above fill_until) each branch
    # sees only its own region.
    late = composer.branch_inputs(x, torch.tensor(300)).unflatten(0, (2, 2))
    assert torch.equal(late[0, 0, ..., :2], x[0, ..., :2]) and not torch.equal(
        late[0, 0, ..., :2, 2:], x[0, ..., :2, 2:]
    )
    assert torch.equal(late[1, 0, ..., :2, 2:], x[0, ..., :2, 2:]) and not torch.equal(
        late[1, 0, ..., :2], x[0, ..., :2]
    )
    assert torch.equal(late[0, 0, ..., 2:, 2:], x[0, ..., 2:, 2:])  # outside: seen as it is
    assert torch.equal(late[:, 1], x[1:].expand(2, -1, -1, -1, -1))
    early = composer.branch_inputs(x, torch.tensor(800)).unflatten(0, (2, 2))
    assert not torch.equal(early[0, 0, ..., 2:, 2:], x[0, ..., 2:, 2:])  # only its own region is x
    assert torch.equal(early[0, 0, ..., :2], x[0, ..., :2])


def test_planner_places_two_large_objects_apart_inside_the_frame_and_skips_one_object():
    rng = np.random.default_rng(0)
    plan = plan_object_boxes(TWO, rng, 128, 128, 17)
    assert [clause for clause, _ in plan] == [
        "a red triangle moves right on a forest background",
        "a green circle stays still on a forest background",
    ]
    for _, boxes in plan:
        assert boxes.shape == (17, 4) and (boxes >= 0).all() and (boxes <= 1).all()
        assert np.allclose(boxes[:, 2] - boxes[:, 0], 2 * 0.16)  # large: r = 0.16 S
    right = plan[0][1]
    assert right[-1, 0] - right[0, 0] == pytest.approx(0.40)  # moves right by 0.4 W
    # apart in every frame (the spec's rule, on the boxes themselves)
    a, b = plan[0][1], plan[1][1]
    apart = (a[:, 2] <= b[:, 0]) | (b[:, 2] <= a[:, 0]) | (a[:, 3] <= b[:, 1]) | (b[:, 3] <= a[:, 1])
    assert apart.all()
    assert plan_object_boxes("a red circle moves left on a black background", rng, 128, 128, 17) is None
    assert plan_object_boxes("a cat playing the piano", rng, 128, 128, 17) is None
    spec = clip_spec_from_caption(TWO, np.random.default_rng(1))
    assert boxes_apart(*spec.objects, 128, 17)  # the rule the planner reuses


def test_seeds_and_branch_prompts():
    gens = [torch.Generator().manual_seed(s) for s in (5, 9)]
    assert clip_seeds(gens, 2) == [5, 9] and clip_seeds(gens[1], 3) == [9, 10, 11]
    layouts = [[Region("r0", np.zeros((1, 4))), Region("r1", np.zeros((1, 4)))], []]
    assert layout_prompts(layouts, ["p", "q"], 1) == ["r0", "q", "r1", "q"]


@pytest.fixture(scope="module")
def pipe():
    pipe = KumoPipeline.from_pretrained(builtin_model_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt, steps=8, seed=3, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, generator=generator, output_type="np", **kwargs).frames[0]


def test_builtin_model_plans_two_object_captions_and_leaves_one_object_alone(pipe):
    assert pipe.sampling_defaults["layout"] == "kumovideo.data.shapes_world:plan_object_boxes"
    planned, plain = run(pipe, TWO), run(pipe, TWO, layout=False)
    assert np.abs(planned - plain).mean() > 0.01  # the layout changes the clip
    np.testing.assert_array_equal(planned, run(pipe, TWO))  # same seed, same layout, same clip
    assert not np.array_equal(planned, run(pipe, TWO, seed=4))
    one = "a red circle moves left on a black background"
    np.testing.assert_array_equal(run(pipe, one), run(pipe, one, layout=False))  # nothing to lay out


def test_regions_draw_each_prompt_inside_its_box(pipe):
    regions = [
        {"prompt": "a red square stays still on a black background", "box": [0.05, 0.3, 0.4, 0.7]},
        {"prompt": "a blue square stays still on a black background", "box": [0.6, 0.3, 0.95, 0.7]},
    ]
    caption = "a red square stays still and a blue square stays still on a black background"
    frames = run(pipe, caption, steps=20, regions=regions)
    left, right = frames[:, :, :64], frames[:, :, 64:]
    redness = lambda part: float((part[..., 0] - part[..., 2]).mean())  # noqa: E731
    assert redness(left) > 0.05 and redness(right) < -0.05, (redness(left), redness(right))


def test_batches_mix_layouts_and_plain_prompts(pipe):
    one = "a red circle moves left on a black background"
    generators = [torch.Generator().manual_seed(s) for s in (3, 3)]
    both = pipe([TWO, one], num_inference_steps=8, generator=generators, output_type="np").frames
    np.testing.assert_allclose(both[0], run(pipe, TWO), atol=5e-4)  # batched matmuls round differently
    np.testing.assert_allclose(both[1], run(pipe, one), atol=5e-4)  # batched matmuls round differently


def test_layout_refusals_are_one_line(pipe):
    image = np.zeros((128, 128, 3), np.uint8)
    regions = [{"prompt": "a", "box": [0, 0, 1, 1]}]
    with pytest.raises(KumoInputError, match="conditioning frames"):
        run(pipe, TWO, regions=regions, image=image)
    with pytest.raises(KumoInputError, match="True, False or None"):
        run(pipe, TWO, layout="yes")
    saved = pipe.sampling_defaults.pop("layout")
    try:
        with pytest.raises(KumoInputError, match="names none"):
            run(pipe, TWO, layout=True)
    finally:
        pipe.sampling_defaults["layout"] = saved


def test_cli_regions_file_and_no_layout(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    out = str(tmp_path / "x.mp4")
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps([{"prompt": "a red circle stays still on a black background", "box": [0, 0, 0.5, 0.5]}])
    )
    cases = [
        ('[{"prompt": "a", "box": [0, 0, 2, 1]}]', [str(bad)], "0 <= x0 < x1"),
        ("[{", [str(bad)], "is not JSON"),
        (None, [str(tmp_path / "no.json")], "cannot be read"),
        (None, [str(good), "--no-layout"], "give one of them"),
    ]
    for text, flags, needle in cases:
        if text is not None:
            bad.write_text(text)
        assert main(["generate", TWO, "-o", out, "--regions", *flags]) == 2
        assert_one_line_error(capsys, needle)
    assert not (tmp_path / "x.mp4").exists()


def test_checkpoint_names_its_planner_inside_kumovideo(tmp_path):
    from kumovideo.pipelines.layout import resolve_planner
    from kumovideo.pipelines.loading import read_sampling_defaults

    assert resolve_planner("kumovideo.data.shapes_world:plan_object_boxes") is plan_object_boxes
    for name in ("os:system", "kumovideo.data.shapes_world", "kumovideo.nowhere:plan", "kumovideo.data:nothing"):
        with pytest.raises(KumoInputError, match="layout"):
            resolve_planner(name)
    (tmp_path / "kumo_defaults.json").write_text(json.dumps({"layout": "os:system"}))
    with pytest.raises(KumoInputError, match="layout is 'os:system'"):
        read_sampling_defaults(tmp_path)


def test_eval_no_layout_is_for_generated_clips(tmp_path, capsys):
    args = ["eval", "shapes", "--n", "2", "--reference", "vae", "--no-layout", "--out", str(tmp_path / "e")]
    assert main(args) == 2
    assert_one_line_error(capsys, "--no-layout", "--reference")


def test_builtin_turbo_names_the_planner_too(tmp_path):
    from kumovideo.pipelines.loading import read_sampling_defaults

    for turbo in (False, True):
        assert (
            read_sampling_defaults(builtin_model_dir(turbo))["layout"]
            == "kumovideo.data.shapes_world:plan_object_boxes"
        )
    # Turbo's few steps decide the layout in a larger share of them (docs/turbo.md)
    assert read_sampling_defaults(builtin_model_dir(True))["layout_fill"] == 0.6
    assert "layout_fill" not in read_sampling_defaults(builtin_model_dir())
    (tmp_path / "kumo_defaults.json").write_text('{"layout_fill": 1}')
    with pytest.raises(KumoInputError, match="layout_fill"):
        read_sampling_defaults(tmp_path)


def test_a_checkpoints_layout_fill_sets_the_steps_that_decide_the_layout(pipe, monkeypatch):
    ran = []

    def spy(maps, counts, alphas, fill_until, patch):
        ran.append(float(fill_until))
        return RegionComposer(maps, counts, alphas, fill_until, patch)

    monkeypatch.setattr("kumovideo.pipelines.pipeline_kumo.RegionComposer", spy)
    run(pipe, TWO, steps=10)
    monkeypatch.setattr(pipe, "sampling_defaults", {**pipe.sampling_defaults, "layout_fill": 0.6})
    run(pipe, TWO, steps=10)
    assert ran[1] < ran[0]  # 6 of 10 steps decide it instead of 4: the switch comes at a lower t


def test_composer_centres_each_region_in_its_branch_and_drops_wrapped_pixels_outside():
    """While the layout is decided, each branch sees its region at the frame's centre (the
    model's first predictions, at zero SNR, put an object where objects are on average),
    whole tokens of shift; rolled back, a pixel that wrapped round the frame's edge does not
    count outside the boxes. Later steps see the frame as it is."""
    maps = torch.full((1, 1, 1, 8, 8), -1)
    maps[..., :2, :2] = 0  # top left
    maps[..., 6:, 6:] = 1  # bottom right
    composer = composer_of(maps, [2])
    assert composer.shifts[:, 0].tolist() == [[4, 4], [-4, -4]]
    x = torch.randn(1, 1, 3, 8, 8)
    views = composer.branch_inputs(x, torch.tensor(999))
    assert torch.equal(views[0], torch.roll(x[0], (4, 4), dims=(-2, -1)))  # region 0 now at rows/cols 4-5
    assert torch.equal(views[1], torch.roll(x[0], (-4, -4), dims=(-2, -1)))
    u = torch.randn(2, 1, 3, 8, 8)  # what each branch predicts, in the frame's own coordinates
    v = torch.stack([torch.roll(u[0], (4, 4), dims=(-2, -1)), torch.roll(u[1], (-4, -4), dims=(-2, -1))])
    out = composer.combine(v, x, torch.tensor(999))[0]
    assert torch.equal(out[..., :2, :2], u[0, ..., :2, :2]) and torch.equal(out[..., 6:, 6:], u[1, ..., 6:, 6:])
    assert torch.equal(out[..., 2, 3], u[0, ..., 2, 3])  # only branch 0 held it unwrapped
    assert torch.equal(out[..., 5, 4], u[1, ..., 5, 4])  # only branch 1
    torch.testing.assert_close(out[..., 0, 7], (u[0, ..., 0, 7] + u[1, ..., 0, 7]) / 2)  # neither: both
    # After the first steps (t <= fill_until) nothing is rolled: each branch's own region is
    # where it is in x, and outside the boxes every branch counts.
    late = composer.branch_inputs(x, torch.tensor(300))
    assert torch.equal(late[0][..., :2, :2], x[0, ..., :2, :2])
    assert torch.equal(late[1][..., 6:, 6:], x[0, ..., 6:, 6:])
    assert torch.equal(late[0][..., 2:6, 2:6], x[0, ..., 2:6, 2:6])  # between the boxes: x itself
    out = composer.combine(u, x, torch.tensor(300))[0]
    assert torch.equal(out[..., :2, :2], u[0, ..., :2, :2]) and torch.equal(out[..., 6:, 6:], u[1, ..., 6:, 6:])
    torch.testing.assert_close(out[..., 2, 3], (u[0, ..., 2, 3] + u[1, ..., 2, 3]) / 2)
