"""Video-to-video (SDEdit): `pipe(..., video=, strength=)` and `kumo generate --video`, on the
built-in model at a few steps."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli import main
from kumovideo.pipelines import KumoPipeline
from kumovideo.pipelines.video_to_video import strength_start
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import read_video, write_video

SOURCE = "a red circle moves left on a black background"
REMIX = "a blue circle moves left on a black background"


@pytest.fixture(scope="module")
def pipe():
    pipe = KumoPipeline.from_pretrained(builtin_model_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt, steps=6, seed=3, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, generator=generator, output_type="np", **kwargs).frames[0]


@pytest.fixture(scope="module")
def source(pipe) -> np.ndarray:
    return (run(pipe, SOURCE) * 255).round().astype(np.uint8)


def test_strength_picks_the_last_share_of_the_steps():
    assert strength_start(50, 0.8) == 10 and strength_start(50, 0.6) == 20 and strength_start(50, 1.0) == 0
    assert strength_start(4, 0.1) == 3  # at least one step runs: none would return the source's noise


def test_strength_one_is_text_to_video(pipe, source):
    # The zero-terminal-SNR schedule's first timestep is pure noise: nothing of the source is left.
    np.testing.assert_allclose(run(pipe, REMIX, video=source, strength=1.0), run(pipe, REMIX), atol=1e-5)


def test_lower_strength_keeps_more_of_the_source_and_takes_the_new_colour(pipe, source):
    outs = {strength: run(pipe, REMIX, video=source, strength=strength) for strength in (0.3, 0.6, 1.0)}
    distance = {strength: np.abs(out - source / 255.0).mean() for strength, out in outs.items()}
    assert distance[0.3] < distance[0.6] < distance[1.0], distance
    np.testing.assert_array_equal(outs[0.6], run(pipe, REMIX, video=source, strength=0.6))  # same seed, same clip
    # The circle turns blue: where the source's object is red, the remix's is bluer than red.
    out = outs[0.6]
    red = (source[..., 0] > 150) & (source[..., 2] < 100)
    assert red.sum() > 100
    assert out[red][:, 2].mean() > out[red][:, 0].mean(), (out[red].mean(0), source[red].mean(0))


def test_other_sizes_are_fitted_and_forms_agree(pipe, source, caplog):
    wide = np.concatenate([source, source], axis=2)  # (F, 128, 256, 3): centre-cropped back
    with caplog.at_level(logging.WARNING):
        fitted = run(pipe, REMIX, steps=2, video=wide, strength=0.5)
    assert "resized and centre-cropped" in caplog.text
    assert fitted.shape == (17, 128, 128, 3)
    as_tensor = torch.from_numpy(source).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_array_equal(
        run(pipe, REMIX, steps=2, video=as_tensor, strength=0.5),
        run(pipe, REMIX, steps=2, video=list(source), strength=0.5),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 0.5}, "needs a source video"),
        ({"video": "SOURCE", "strength": 0.0}, "must be in (0, 1]"),
        ({"video": "SOURCE", "strength": float("nan")}, "must be in (0, 1]"),
        ({"video": "SHORT"}, "has 9 frames and the clip needs 17"),
        ({"video": np.zeros((17, 32, 32, 3), np.float32)}, "must be uint8 (F, H, W, 3)"),
        ({"video": "/nonexistent/clip.mp4"}, "not found"),
    ],
)
def test_bad_video_to_video_input_is_refused(pipe, source, kwargs, message):
    kwargs = {**kwargs}
    if isinstance(kwargs.get("video"), str) and kwargs["video"] in ("SOURCE", "SHORT"):
        kwargs["video"] = source if kwargs["video"] == "SOURCE" else source[:9]
    with pytest.raises(KumoInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(pipe, REMIX, steps=2, **kwargs)


def test_kumo_generate_video(tmp_path, capsys, source):
    clip = write_video(source, tmp_path / "src.mp4", fps=8)
    out = tmp_path / "remix.mp4"
    argv = ["generate", REMIX, "--video", str(clip), "--strength", "0.5", "--steps", "8", "-o", str(out)]
    assert main(argv) == 0
    assert "4 of 8 steps, remade from" in capsys.readouterr().out
    frames, fps = read_video(out)
    assert frames.shape == (17, 128, 128, 3) and fps == 8
    for extra, needles in [
        (["--strength", "2"], ["strength=2.0 must be in (0, 1]"]),
        (["--frames", "25"], [f"--video {clip} has 17 frames and the clip needs 25"]),
    ]:
        assert main(["generate", REMIX, "--video", str(clip), *extra, "-o", str(tmp_path / "x.mp4")]) == 2
        assert_one_line_error(capsys, *needles)
    assert main(["generate", REMIX, "--strength", "0.5", "-o", str(tmp_path / "x.mp4")]) == 2
    assert_one_line_error(capsys, "needs a source video")
    assert main(["generate", REMIX, "--video", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert_one_line_error(capsys, "--video", "none.mp4 not found")
    assert not (tmp_path / "x.mp4").exists()


def test_the_checkpoints_video_strength_is_the_default(pipe, source, monkeypatch, tmp_path):
    from kumovideo.pipelines.loading import read_sampling_defaults

    ran = []

    def count(p, i, t, tensors):
        ran.append(int(t))
        return {}

    monkeypatch.setattr(pipe, "sampling_defaults", {**pipe.sampling_defaults, "video_strength": 0.5})
    run(pipe, REMIX, video=source, callback_on_step_end=count)
    assert len(ran) == 3  # half of 6 steps
    (tmp_path / "kumo_defaults.json").write_text('{"video_strength": 1.5}')
    with pytest.raises(KumoInputError, match="video_strength"):
        read_sampling_defaults(tmp_path)
