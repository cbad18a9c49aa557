"""`kumo eval` and `kumo train` on input that used to be taken without a word: one line, exit 2,
before any model loads."""

from __future__ import annotations

import pytest
from cli_checks import assert_one_line_error

from kumovideo.builtin import V2A_DIR
from kumovideo.cli import main


@pytest.mark.parametrize(
    "args, needles",
    [
        (["interpolate", "--base-model", "somewhere"], ["--base-model makes the keyframes of --keyframes generate"]),
        (["interpolate", "--no-caption", "--keyframes", "generate"], ["--no-caption does not go with --keyframes"]),
        (["i2v", "--model", str(V2A_DIR)], ["holds a video-to-audio model", "not a text-to-video one"]),
        (["interpolate", "--model", str(V2A_DIR)], ["holds a video-to-audio model", "not a text-to-video one"]),
        # made at the edge of the range, reported at the score asked (Spearman ranked them apart)
        (["motion", "--scores", "10,50"], ["--scores 50 is outside the range this model was trained on (10 to 30)"]),
        (["motion", "--reference", "render", "--scores", "1,100"], ["--scores 1 is outside the scores ShapesWorld"]),
        # references are rendered, never sampled: these flags did nothing
        (["shapes", "--reference", "render", "--steps", "3"], ["--steps: for generated clips only"]),
        (["sound", "--reference", "vocoder", "--guidance", "3"], ["--guidance: for generated soundtracks only"]),
    ],
)
def test_eval_flags_that_would_do_nothing_or_name_the_wrong_model(args, needles, tmp_path, capsys):
    assert main(["eval", *args, "--n", "2", "--out", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys, *needles)
    assert not (tmp_path / "out").exists()


def test_train_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "vae|dit|turbo|v2a|export|cache-latents|bind-text" in text
