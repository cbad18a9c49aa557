"""Motion conditioning (Lumina-Video's motion score, SVD's motion bucket) in MADiT: the score's
embedding is added to the timestep embedding, starts at zero, is checked and clamped by the
pipeline, and `kumo generate --motion-score` refuses models without it in one line."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from cli_checks import assert_one_line_error
from tiny_runs import CallKwargs, perturbed, tiny_pipeline_pair

from kumovideo.cli import main
from kumovideo.models.transformer_kumo import KumoTransformer3DModel, expand_for_multiscale, madit_from_preset
from kumovideo.pipelines.loading import read_sampling_defaults
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

C = 4  # kumo-tiny latent channels


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, 3, C, 6, 8, generator=g),
        torch.randn(batch, 16, 24, generator=g),
        torch.tensor([900, 10]),
    )


def wake_motion(model: KumoTransformer3DModel, seed: int = 5) -> KumoTransformer3DModel:
    """The motion embedding as training would leave it: its zero last layer moved."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.motion_embedding.linear_2.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def base() -> KumoTransformer3DModel:
    return perturbed(madit_from_preset("kumo-tiny"))


@pytest.fixture(scope="module")
def motion(base) -> KumoTransformer3DModel:
    return expand_for_multiscale(base, None, motion_conditioning=True).eval()


def run(model, **kwargs) -> torch.Tensor:
    x, text, t = inputs()
    with torch.no_grad():
        return model(x, text, t, **kwargs).sample


def test_motion_modules_exist_only_when_asked_and_start_at_zero():
    plain = madit_from_preset("kumo-tiny")
    assert not hasattr(plain, "motion_embedding")
    fresh = madit_from_preset("kumo-tiny", motion_conditioning=True)
    extra = sorted(set(fresh.state_dict()) - set(plain.state_dict()))
    assert extra == [f"motion_embedding.linear_{i}.{w}" for i in (1, 2) for w in ("bias", "weight")]
    assert not fresh.motion_embedding.linear_2.weight.any() and not fresh.motion_embedding.linear_2.bias.any()
    assert fresh.motion_embedding.linear_1.weight.std() > 0


def test_the_expanded_model_ignores_the_score_until_its_last_layer_moves(base, motion):
    assert motion.config.motion_conditioning and not motion.config.multiscale_patch_sizes
    reference = run(base)
    torch.testing.assert_close(run(motion), reference, atol=0, rtol=0)
    torch.testing.assert_close(run(motion, motion_score=25.0), reference, atol=0, rtol=0)
    import copy

    trained = wake_motion(copy.deepcopy(motion))
    torch.testing.assert_close(run(trained), reference, atol=0, rtol=0)  # no score: nothing added
    low, high = run(trained, motion_score=5.0), run(trained, motion_score=40.0)
    assert not torch.allclose(low, reference) and not torch.allclose(low, high)
    # one number = the same number for every clip of the batch
    torch.testing.assert_close(run(trained, motion_score=torch.tensor([5.0, 5.0])), low, atol=0, rtol=0)
    per_clip = run(trained, motion_score=torch.tensor([5.0, 40.0]))
    torch.testing.assert_close(per_clip[0], low[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(per_clip[1], high[1], atol=1e-6, rtol=1e-6)


def test_the_score_trains_its_embedding(motion):
    import copy

    model = wake_motion(copy.deepcopy(motion)).train()
    x, text, t = inputs()
    model(x, text, t, motion_score=torch.tensor([3.0, 30.0])).sample.square().mean().backward()
    assert model.motion_embedding.linear_1.weight.grad.abs().sum() > 0


def test_scores_are_refused_by_a_model_without_motion_and_checked_for_shape(base, motion):
    with pytest.raises(KumoInputError, match="not trained with a motion score") as info:
        run(base, motion_score=10.0)
    assert "\n" not in str(info.value)
    with pytest.raises(KumoInputError, match="3 values for a batch of 2"):
        run(motion, motion_score=torch.tensor([1.0, 2.0, 3.0]))


def test_motion_and_scales_together_and_saved(base, tmp_path):
    both = wake_motion(expand_for_multiscale(base, [4], motion_conditioning=True)).eval()
    x, text, t = torch.randn(2, 3, C, 8, 8), torch.randn(2, 16, 24), torch.tensor([900, 10])
    with torch.no_grad():
        coarse = both(x, text, t, patch_size=4, motion_score=12.0).sample
    assert coarse.shape == x.shape
    both.save_pretrained(tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["motion_conditioning"] is True and saved["multiscale_patch_sizes"] == [4]
    loaded = KumoTransformer3DModel.from_pretrained(tmp_path / "t", use_safetensors=True).eval()
    torch.testing.assert_close(loaded.motion_embedding.linear_2.weight, both.motion_embedding.linear_2.weight)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, text, t, patch_size=4, motion_score=12.0).sample, coarse)


# ------------------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def pipes():
    """(tiny pipeline without motion conditioning, one with it, its embedding trained-looking)."""
    return tiny_pipeline_pair(lambda t: wake_motion(expand_for_multiscale(t, None, motion_conditioning=True)))


def sample(pipe, **kwargs):
    settings = dict(height=48, width=64, num_frames=9, num_inference_steps=2, output_type="latent")
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**settings, **kwargs}).frames


def test_the_score_goes_to_every_guidance_branch(pipes):
    _, moving = pipes
    with CallKwargs(moving.transformer, "motion_score") as scores:
        sample(moving, motion_score=15.0, guidance_scale=4.0)
    assert scores == [[15.0, 15.0]] * 2  # [unconditional, conditional] at each step
    with CallKwargs(moving.transformer, "motion_score") as scores:
        sample(moving, motion_score=15.0, guidance_scale=1.0, num_videos_per_prompt=2)
    assert scores == [[15.0, 15.0]] * 2  # no guidance: one branch, two videos
    with CallKwargs(moving.transformer, "motion_score") as scores:
        sample(moving)
    assert scores == [None, None]


def test_the_score_changes_the_clip(pipes):
    plain, moving = pipes
    still, fast, none = sample(moving, motion_score=2.0), sample(moving, motion_score=40.0), sample(moving)
    assert not torch.allclose(still, fast)
    torch.testing.assert_close(none, sample(plain), atol=0, rtol=0)  # no score: the base model's clip


def test_a_score_outside_the_recorded_range_is_clamped_with_a_warning(pipes, caplog):
    _, moving = pipes
    moving.sampling_defaults = {"motion_score_range": [10.0, 30.0]}
    try:
        assert moving.motion_score_range == (10.0, 30.0)
        with (
            CallKwargs(moving.transformer, "motion_score") as scores,
            caplog.at_level(logging.WARNING, logger="kumovideo"),
        ):
            clamped = sample(moving, motion_score=55.0)
        assert scores[0] == [30.0, 30.0]
        assert any("outside the range this model was trained on" in r.getMessage() for r in caplog.records)
        torch.testing.assert_close(clamped, sample(moving, motion_score=30.0), atol=0, rtol=0)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kumovideo"):
            sample(moving, motion_score=20.0)
        assert not [r for r in caplog.records if "outside the range" in r.getMessage()]
    finally:
        moving.sampling_defaults = {}


@pytest.mark.parametrize(
    "which, score, needle",
    [
        ("plain", 10.0, "not trained with a motion score"),
        ("moving", float("nan"), "must be a finite number"),
        ("moving", "fast", "must be a finite number"),
    ],
)
def test_bad_scores_are_refused_before_any_work(pipes, which, score, needle):
    pipe = dict(zip(("plain", "moving"), pipes))[which]
    with CallKwargs(pipe.transformer, "motion_score") as scores, pytest.raises(KumoInputError) as info:
        sample(pipe, motion_score=score)
    assert needle in str(info.value) and "\n" not in str(info.value) and scores == []


def test_kumo_defaults_range_is_checked(tmp_path):
    for bad in ([30, 10], [1], "10-30", [0, float("inf")]):
        (tmp_path / "kumo_defaults.json").write_text(json.dumps({"motion_score_range": bad}))
        with pytest.raises(KumoInputError, match="motion_score_range"):
            read_sampling_defaults(tmp_path)
    (tmp_path / "kumo_defaults.json").write_text(json.dumps({"motion_score_range": [10, 30.5]}))
    assert read_sampling_defaults(tmp_path) == {"motion_score_range": [10, 30.5]}


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def motion_folder(pipes, tmp_path_factory):
    _, moving = pipes
    folder = tmp_path_factory.mktemp("motion") / "pipe"
    moving.sampling_defaults = {"num_inference_steps": 2, "guidance_scale": 2.0, "motion_score_range": [10.0, 30.0]}
    try:
        moving.save_pretrained(folder)
    finally:
        moving.sampling_defaults = {}
    return folder


def test_cli_motion_score_on_a_model_without_it_is_one_line(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    args = ["generate", "a", "--model", str(fixtures_dir / "pipeline"), "--motion-score", "20", "-o", str(out)]
    assert main(args) == 2
    assert_one_line_error(capsys, "not trained with a motion score", "drop --motion-score")
    assert not out.exists()


def test_cli_refuses_before_loading_weights(tmp_path, capsys, monkeypatch):
    from kumovideo.builtin import builtin_model_dir
    from kumovideo.pipelines import KumoPipeline

    def refuse(cls, *args, **kwargs):
        raise AssertionError("the weights loaded before the check")

    monkeypatch.setattr(KumoPipeline, "from_pretrained", classmethod(refuse))
    base = str(builtin_model_dir())  # the base: no motion conditioning
    assert main(["generate", "a", "--model", base, "--motion-score", "5", "-o", str(tmp_path / "x.mp4")]) == 2
    assert_one_line_error(capsys, "not trained with a motion score")


@pytest.mark.parametrize(
    "extra, needle",
    [(["--motion-score", "nan"], "is not a number"), (["--motion-score", "3", "--parallel", "cfg=2"], "--parallel")],
)
def test_cli_bad_motion_flags_are_one_line(tmp_path, capsys, extra, needle):
    assert main(["generate", "a", "-o", str(tmp_path / "x.mp4"), *extra]) == 2
    assert_one_line_error(capsys, needle)


def test_cli_clamps_an_out_of_range_score_with_a_warning(motion_folder, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    args = ["generate", "a red circle", "--model", str(motion_folder), "--motion-score", "50", "-o", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("kumo: warning: motion score")]
    assert warnings == [
        "kumo: warning: motion score 50 is outside the range this model was trained on (10 to 30); using 30"
    ]
    assert out.exists()


# ------------------------------------------------------------------------------ motion guidance


def test_motion_guidance_tells_the_negative_branch_the_low_score_for_its_steps(pipes):
    _, moving = pipes
    with CallKwargs(moving.transformer, "motion_score") as scores:
        sample(moving, motion_score=25.0, negative_motion_score=5.0, guidance_scale=4.0, num_inference_steps=4)
    assert scores == [[5.0, 25.0]] * 4  # [negative prompt, prompt] at every step (default end: all)
    with CallKwargs(moving.transformer, "motion_score") as scores:
        sample(
            moving,
            motion_score=25.0,
            negative_motion_score=5.0,
            negative_motion_end=0.5,
            guidance_scale=4.0,
            num_inference_steps=4,
            num_videos_per_prompt=2,
        )
    assert scores == [[5.0, 5.0, 25.0, 25.0]] * 2 + [[25.0] * 4] * 2  # the first half of the steps, two videos


def test_motion_guidance_moves_the_clip_and_equal_scores_change_nothing(pipes):
    _, moving = pipes
    plain = sample(moving, motion_score=25.0, guidance_scale=4.0)
    guided = sample(moving, motion_score=25.0, negative_motion_score=5.0, guidance_scale=4.0)
    assert not torch.allclose(plain, guided)
    same = sample(moving, motion_score=25.0, negative_motion_score=25.0, guidance_scale=4.0)
    torch.testing.assert_close(same, plain, atol=0, rtol=0)


def test_motion_guidance_end_defaults_to_the_checkpoints(pipes):
    _, moving = pipes
    moving.sampling_defaults = {"negative_motion_end": 0.25}
    try:
        with CallKwargs(moving.transformer, "motion_score") as scores:
            sample(moving, motion_score=25.0, negative_motion_score=5.0, guidance_scale=4.0, num_inference_steps=4)
    finally:
        moving.sampling_defaults = {}
    assert scores == [[5.0, 25.0]] + [[25.0, 25.0]] * 3


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"negative_motion_score": 5.0, "guidance_scale": 4.0}, "needs a motion score"),
        ({"motion_score": 25.0, "negative_motion_score": 5.0, "guidance_scale": 1.0}, "has none"),
        ({"motion_score": 25.0, "negative_motion_end": 0.5, "guidance_scale": 4.0}, "needs a negative motion score"),
        ({"motion_score": 25.0, "negative_motion_score": float("inf")}, "must be a finite number"),
        ({"motion_score": 25.0, "negative_motion_score": 5.0, "negative_motion_end": 0.0}, "in (0, 1]"),
    ],
)
def test_bad_motion_guidance_is_refused_before_any_work(pipes, kwargs, needle):
    _, moving = pipes
    with CallKwargs(moving.transformer, "motion_score") as scores, pytest.raises(KumoInputError) as info:
        sample(moving, **{"guidance_scale": 4.0, **kwargs})
    assert needle in str(info.value) and "\n" not in str(info.value) and scores == []


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--negative-motion-score", "5"], "needs a motion score"),
        (["--motion-score", "20", "--negative-motion-end", "0.5"], "needs a negative motion score"),
        (["--motion-score", "20", "--negative-motion-score", "5", "--guidance", "1"], "has none"),
        (["--motion-score", "20", "--negative-motion-score", "nan"], "must be a finite number"),
    ],
)
def test_cli_bad_motion_guidance_is_one_line(tmp_path, capsys, extra, needle):
    out = tmp_path / "x.mp4"
    assert main(["generate", "a", "-o", str(out), *extra]) == 2
    assert_one_line_error(capsys, needle)
    assert not out.exists()


def test_cli_motion_guidance_against_the_models_default_guidance(motion_folder, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    args = ["generate", "a red circle", "--model", str(motion_folder), "--motion-score", "20", "-o", str(out)]
    assert main([*args, "--negative-motion-score", "3", "--negative-motion-end", "0.5"]) == 0
    err = capsys.readouterr().err  # the negative is clamped into the recorded range like the score
    assert (
        "kumo: warning: negative motion score 3 is outside the range this model was trained on (10 to 30); using 10"
        in err
    )
    assert out.exists()
    (motion_folder / "kumo_defaults.json").write_text(json.dumps({"guidance_scale": 1.0}))
    try:  # the model's default guidance has no negative branch: refused before the weights load
        assert main([*args, "--negative-motion-score", "10", "-o", str(tmp_path / "y.mp4")]) == 2
        assert_one_line_error(capsys, "has none")
    finally:
        (motion_folder / "kumo_defaults.json").write_text(
            json.dumps({"num_inference_steps": 2, "guidance_scale": 2.0, "motion_score_range": [10.0, 30.0]})
        )
