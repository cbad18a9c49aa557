"""`kumo eval motion` (does the motion score change the motion?) and the any-aspect and
Lumina flags of `kumo eval shapes`."""

import builtins
import json
import shutil

import numpy as np
import pytest

from kumovideo.builtin import LUMINA_DIR, builtin_model_dir, is_trained
from kumovideo.cli import main
from kumovideo.cli.eval_motion import spearman
from kumovideo.pipelines import KumoPipeline

pytestmark = pytest.mark.skipif(not is_trained(), reason="the built-in model is not in this build")


def read_results(out_dir) -> dict:
    return json.loads((out_dir / "results.json").read_text())


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]


@pytest.fixture(scope="module")
def lumina_model(tmp_path_factory):
    """A copy of the built-in Lumina model (motion conditioning, multi-scale patching, its
    kumo_defaults naming a motion_score_range, as configs/builtin-lumina-128.yaml exports it)."""
    folder = tmp_path_factory.mktemp("lumina") / "model"
    shutil.copytree(LUMINA_DIR, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert config["motion_conditioning"] and config["multiscale_patch_sizes"] == [4]
    return folder


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Every KumoPipeline call's keyword arguments and generator seeds (the call then runs)."""
    calls = []
    original = KumoPipeline.__call__

    def recording(self, prompt, **kwargs):
        calls.append({**kwargs, "prompt": prompt, "seeds": [g.initial_seed() for g in kwargs["generator"]]})
        return original(self, prompt, **kwargs)

    monkeypatch.setattr(KumoPipeline, "__call__", recording)
    return calls


# ------------------------------------------------------------------------------ eval motion
def test_eval_motion_reference_renders_rank_with_their_scores(tmp_path, capsys):
    out = tmp_path / "motion"
    assert main(["eval", "motion", "--reference", "render", "--n", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Spearman(score, measured m)" in printed and "none" in printed
    results = read_results(out)
    summary = results["summary"]
    assert summary["spearman"] > 0.9 and summary["per_caption_spearman_mean"] > 0.9
    assert summary["scores"] == [10.0, 15.0, 20.0, 25.0, 30.0] and summary["scores_from"] == "model"  # its range
    assert summary["n"] == 4 and summary["clips"] == 24 and summary["spearman_clips"] == 20
    for row in summary["per_score"]:  # the built-in models' score: 20 m at 17 frames, 8 fps
        assert row["motion_amount_mean"] == pytest.approx(row["score"] / 20, abs=0.1)
        assert row["n"] == 4 and 0 <= row["match_rate"] <= 1
    assert summary["no_score"]["motion_amount_mean"] == pytest.approx(1.0, abs=0.1)
    assert summary["no_score"]["match_rate"] == 1.0  # m = 1: v1's thresholds
    seen = set((LUMINA_DIR / "training_captions.txt").read_text().splitlines())  # its default model
    captions = {clip["caption"] for clip in results["clips"]}
    assert len(captions) == 4 and not captions & seen
    assert not any("stays still" in text or " and " in text for text in captions)
    assert (out / "contact_sheet.png").stat().st_size > 1000


def test_eval_motion_refuses_a_model_without_motion_conditioning(tmp_path, capsys):
    out = tmp_path / "motion"
    plain = builtin_model_dir()  # the 128x128 base: trained without motion scores
    assert main(["eval", "motion", "--model", str(plain), "--n", "2", "--out", str(out)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("kumo: error: "), lines
    assert "motion_conditioning: true" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "scores, complaint",
    [("10,x", "comma-separated"), ("20,20", "two of them different"), ("10,-5", ">= 0"), ("10,nan", ">= 0")],
)
def test_eval_motion_refuses_bad_scores(tmp_path, capsys, scores, complaint):
    out = tmp_path / "motion"
    assert main(["eval", "motion", "--reference", "render", "--scores", scores, "--out", str(out)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and complaint in lines[0], lines


@pytest.mark.parametrize(
    "recorded, complaint",
    [([20.0, 20.0], "0 <= low < high; fix it or pass --scores"), ([30.0, 10.0], "low <= high; fix or remove it")],
)
def test_eval_motion_refuses_a_range_it_cannot_spread_scores_over(tmp_path, capsys, recorded, complaint):
    folder = tmp_path / "model"
    shutil.copytree(LUMINA_DIR, folder)
    defaults = json.loads((folder / "kumo_defaults.json").read_text())
    (folder / "kumo_defaults.json").write_text(json.dumps({**defaults, "motion_score_range": recorded}))
    out = tmp_path / "motion"
    assert main(["eval", "motion", "--model", str(folder), "--n", "2", "--out", str(out)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("kumo: error: ") and complaint in lines[0], lines
    assert not out.exists()


def test_eval_motion_generates_each_caption_at_every_score_with_one_seed(tmp_path, lumina_model, pipeline_calls):
    out = tmp_path / "motion"
    argv = ["eval", "motion", "--model", str(lumina_model), "--n", "2", "--steps", "1", "--batch-size", "2"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    assert [call.get("motion_score") for call in pipeline_calls] == [10.0, 15.0, 20.0, 25.0, 30.0, None]
    assert "motion_score" not in pipeline_calls[-1]  # no score: the unconditioned default
    assert all(
        call["seeds"] == [2024, 2025] and call["prompt"] == pipeline_calls[0]["prompt"] for call in pipeline_calls
    )
    summary = read_results(out)["summary"]
    assert summary["scores_from"] == "model" and summary["steps"] == 1 and summary["clips"] == 12
    assert summary["spearman"] is None or -1 <= summary["spearman"] <= 1
    pipeline_calls.clear()
    assert main([*argv, "--scores", "12,28", "--out", str(tmp_path / "scores")]) == 0
    assert [call.get("motion_score") for call in pipeline_calls] == [12.0, 28.0, None]


def test_eval_motion_guidance_goes_with_every_score_and_not_the_unscored_clips(
    tmp_path, lumina_model, pipeline_calls, capsys
):
    out = tmp_path / "guided"
    argv = ["eval", "motion", "--model", str(lumina_model), "--n", "1", "--steps", "1", "--scores", "15,25"]
    assert main([*argv, "--negative-motion-score", "10", "--negative-motion-end", "0.5", "--out", str(out)]) == 0
    guided = [
        (c.get("motion_score"), c.get("negative_motion_score"), c.get("negative_motion_end")) for c in pipeline_calls
    ]
    assert guided == [(15.0, 10.0, 0.5), (25.0, 10.0, 0.5), (None, None, None)]
    assert "negative motion score 10 for 0.5 of the steps" in capsys.readouterr().out
    summary = read_results(out)["summary"]
    assert (summary["negative_motion_score"], summary["negative_motion_end"]) == (10.0, 0.5)
    for extra, complaint in (
        (["--negative-motion-end", "0.5"], "needs a negative motion score"),
        (["--negative-motion-score", "10", "--guidance", "1"], "has none"),
        (["--negative-motion-score", "10", "--reference", "render"], "generated clips only"),
    ):
        assert main([*argv, *extra, "--out", str(tmp_path / "refused")]) == 2
        lines = error_lines(capsys)
        assert len(lines) == 1 and complaint in lines[0], lines
    assert not (tmp_path / "refused").exists()


def test_eval_motion_clamps_a_negative_outside_the_range_once(tmp_path, lumina_model, pipeline_calls, capsys):
    out = tmp_path / "clamped"
    argv = ["eval", "motion", "--model", str(lumina_model), "--n", "1", "--steps", "1", "--scores", "15,25"]
    assert main([*argv, "--negative-motion-score", "3", "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "outside the range" in line]
    expected = (
        "kumo: warning: negative motion score 3 is outside the range this model was trained on (10 to 30); using 10"
    )
    assert warnings == [expected]  # once, not once a batch
    assert [c.get("negative_motion_score") for c in pipeline_calls] == [10.0, 10.0, None]
    assert read_results(out)["summary"]["negative_motion_score"] == 10.0


def test_spearman_falls_back_to_numpy_ranks_without_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    x = [10.0] * 4 + [20.0] * 4 + [30.0] * 4
    y = list(np.repeat([0.5, 1.0, 1.5], 4) + rng.normal(0, 0.3, 12))
    with_scipy = spearman(x, y)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    rho, p = spearman(x, y)
    assert rho == pytest.approx(with_scipy[0]) and p is None and with_scipy[1] is not None
    assert spearman([1, 2], [3, 4]) == (None, None) and spearman([1, 2, 3], [5, 5, 5]) == (None, None)


# ------------------------------------------------------------------------------ eval shapes
def test_eval_shapes_reference_renders_at_any_aspect(tmp_path, capsys):
    out = tmp_path / "wide"
    argv = ["eval", "shapes", "--reference", "render", "--width", "112", "--height", "64", "--n", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "at 112x64" in capsys.readouterr().out
    results = read_results(out)
    summary = results["summary"]
    assert summary["match_rate"] == 1.0 and (summary["width"], summary["height"]) == (112, 64)
    assert summary["multiscale"] is False and summary["motion_score"] is None
    assert all(clip["objects"][0]["displacement"] is not None for clip in results["clips"])
    tall = tmp_path / "tall"
    assert (
        main(
            [
                "eval",
                "shapes",
                "--reference",
                "render",
                "--width",
                "64",
                "--height",
                "112",
                "--n",
                "2",
                "--out",
                str(tall),
            ]
        )
        == 0
    )
    assert read_results(tall)["summary"]["match_rate"] == 1.0


@pytest.mark.parametrize(
    "flags, complaint",
    [
        (["--width", "100"], "--width 100 is not a ShapesWorld frame side"),
        (["--width", "288"], "outside the aspect ratios"),  # 288x128: 2.25:1
        (["--turbo", "--motion-score", "20"], "no motion_conditioning"),  # Turbo: distilled before them
        (["--turbo", "--multiscale"], "multiscale_patch_sizes"),
        (["--multiscale-split", "0.5"], "needs --multiscale"),
        (["--multiscale", "--multiscale-split", "1.5"], "in (0, 1]"),
        (["--reference", "render", "--motion-score", "20"], "leave out with --reference"),
    ],
)
def test_eval_shapes_refuses_bad_frame_and_lumina_flags(tmp_path, capsys, flags, complaint):
    out = tmp_path / "eval"
    assert main(["eval", "shapes", "--n", "2", *flags, "--out", str(out)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("kumo: error: ") and complaint in lines[0], lines
    assert not out.exists()


def test_eval_shapes_passes_lumina_flags_only_when_given(tmp_path, lumina_model, pipeline_calls):
    argv = ["eval", "shapes", "--model", str(lumina_model), "--n", "2", "--steps", "1", "--json"]
    out = tmp_path / "lumina"
    flags = ["--multiscale", "--multiscale-split", "0.25", "--motion-score", "25", "--width", "192"]
    assert main([*argv, *flags, "--out", str(out)]) == 0
    (call,) = pipeline_calls
    assert call["multiscale"] is True and call["multiscale_split"] == 0.25 and call["motion_score"] == 25.0
    assert (call["width"], call["height"]) == (192, 128)
    summary = read_results(out)["summary"]
    assert summary["multiscale"] is True and summary["multiscale_split"] == 0.25 and summary["motion_score"] == 25.0
    assert (summary["width"], summary["height"]) == (192, 128)
    pipeline_calls.clear()
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert not {"multiscale", "multiscale_split", "motion_score"} & set(pipeline_calls[0])
    assert (pipeline_calls[0]["width"], pipeline_calls[0]["height"]) == (128, 128)


def test_eval_shapes_warns_of_an_untrained_size_once_not_once_a_batch(tmp_path, lumina_model, pipeline_calls, capsys):
    """Each batch calls the pipeline, which warns of a size outside the model's area_range; the
    command prints the line once, and a second command in the same process prints it again."""
    argv = ["eval", "shapes", "--model", str(lumina_model), "--n", "2", "--batch-size", "1", "--steps", "1"]
    expected = (
        "kumo: warning: 112x64 is 7168 pixels a frame, outside the sizes this model was trained at (16384 .. "
        "32768, its kumo_defaults.json area_range); the clip may not follow the prompt"
    )
    for run in ("first", "second"):
        assert main([*argv, "--width", "112", "--height", "64", "--json", "--out", str(tmp_path / run)]) == 0
        assert [line for line in error_lines(capsys) if "outside the sizes" in line] == [expected]
    assert len(pipeline_calls) == 4  # two batches a command: each called the pipeline
