"""Interpolation (kumovideo.pipelines.interpolation, `kumo interpolate`): window arithmetic,
keyframes kept exactly, output length, all windows in one call, and the CLI's refusals."""

from __future__ import annotations

import numpy as np
import pytest
from cli_checks import assert_one_line_error

from kumovideo.cli import main
from kumovideo.models.transformer_kumo import expand_for_frame_conditioning
from kumovideo.pipelines.factory import build_pipeline
from kumovideo.pipelines.interpolation import interpolate_frames, window_span, window_starts
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.numbers import check_interpolated_fps
from kumovideo.utils.video_io import read_video, write_video


@pytest.mark.parametrize(
    "num_keyframes, factor, starts",
    [
        (5, 4, [0]),  # one whole window: 4 intervals at x4 (17 frames)
        (17, 4, [0, 4, 8, 12]),
        (9, 4, [0, 4]),
        (7, 4, [0, 2]),  # 6 intervals: the last window shifted back, overlapping
        (17, 2, [0, 8]),
        (9, 2, [0]),
        (5, 2, [0]),  # shorter than a window (8 intervals at x2): one partial window
        (2, 4, [0]),
    ],
)
def test_window_starts(num_keyframes, factor, starts):
    span = window_span(17, factor)
    assert span == 16 // factor
    assert window_starts(num_keyframes, span) == starts
    assert starts[-1] + min(span, num_keyframes - 1) == num_keyframes - 1  # the last window ends on the last keyframe


@pytest.fixture(scope="module")
def tiny_frames_pipe(tmp_path_factory):
    """A random kumo-tiny pipeline (9-frame 48x64 clips) that takes conditioning frames."""
    pipe = build_pipeline("kumo-tiny")
    pipe.transformer = expand_for_frame_conditioning(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("frames") / "pipe"
    pipe.save_pretrained(folder)
    pipe.folder = folder
    return pipe


class CallSpy:
    """The pipeline, with each call's conditioning frames, steps and guidance recorded."""

    def __init__(self, pipe):
        self.pipe, self.calls, self.steps, self.guidance = pipe, [], [], []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs["conditioning_frames"])
        self.steps.append(kwargs["num_inference_steps"])
        self.guidance.append((kwargs["guidance_scale"], kwargs["image_guidance_scale"]))
        return self.pipe(*args, **kwargs)


@pytest.mark.parametrize("num_keyframes", [5, 17, 9])
@pytest.mark.parametrize("factor", [2, 4])
def test_interpolate_keeps_keyframes_and_batches_windows(tiny_frames_pipe, num_keyframes, factor, one_thread):
    rng = np.random.default_rng(num_keyframes)
    frames = rng.integers(0, 256, (num_keyframes, 48, 64, 3), dtype=np.uint8)
    spy = CallSpy(tiny_frames_pipe)
    out = interpolate_frames(spy, frames, factor, num_inference_steps=1)
    assert out.shape == (factor * (num_keyframes - 1) + 1, 48, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[::factor], frames)  # the input frames, exactly
    (conditions,) = spy.calls  # every window in one pipeline call
    span = window_span(9, factor)  # the tiny model's clip: 9 frames
    starts = window_starts(num_keyframes, span)
    assert len(conditions) == len(starts)
    for start, known in zip(starts, conditions):
        assert sorted(known) == list(range(0, factor * min(span, num_keyframes - 1 - start) + 1, factor))
        for index, image in known.items():
            assert np.array_equal(image, frames[start + index // factor])


def test_keyframes_of_another_size_run_at_the_models_size_and_come_back_at_theirs(
    tiny_frames_pipe, one_thread, caplog
):
    """A model interpolates where it was trained: 96x128 keyframes (the model's 48x64 aspect)
    are scaled down for it and the in-betweens scaled back; another aspect is centre-cropped
    to the model's size, and so is the output."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 96, 128, 3), dtype=np.uint8)
    spy = CallSpy(tiny_frames_pipe)
    out = interpolate_frames(spy, frames, 4, num_inference_steps=1)
    assert out.shape == (17, 96, 128, 3)
    assert np.array_equal(out[::4], frames)  # the input keyframes, exactly
    (conditions,) = spy.calls
    assert all(image.shape == (48, 64, 3) for known in conditions for image in known.values())
    square = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    caplog.clear()
    with caplog.at_level("WARNING", logger="kumovideo.pipelines.interpolation"):
        assert interpolate_frames(tiny_frames_pipe, square, 4, num_inference_steps=1).shape == (17, 48, 64, 3)
    notes = [r.getMessage() for r in caplog.records if "centre-cropped" in r.getMessage()]
    assert len(notes) == 1, notes  # one line for the clip, not one per keyframe


def test_interpolation_steps_default_from_the_checkpoint(tiny_frames_pipe, one_thread, monkeypatch):
    """Without steps, interpolation runs the checkpoint's `interpolation_steps`, else its
    text-to-video default; given steps win."""
    frames = np.random.default_rng(1).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    spy = CallSpy(tiny_frames_pipe)
    monkeypatch.setattr(tiny_frames_pipe, "sampling_defaults", {"num_inference_steps": 3, "interpolation_steps": 2})
    interpolate_frames(spy, frames, 4)
    interpolate_frames(spy, frames, 4, num_inference_steps=1)
    monkeypatch.setattr(tiny_frames_pipe, "sampling_defaults", {"num_inference_steps": 3})
    interpolate_frames(spy, frames, 4)
    assert spy.steps == [2, 1, 3]


def test_interpolation_guidance_default_from_the_checkpoint(tiny_frames_pipe, one_thread, monkeypatch):
    """Without a prompt there is no text guidance; with one, the checkpoint's
    `interpolation_guidance_scale` (strong guidance pulls the in-betweens off the keyframes),
    else its text-to-video guidance; image guidance is the checkpoint's
    `interpolation_image_guidance_scale`, else none; a given scale wins."""
    frames = np.random.default_rng(2).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    spy = CallSpy(tiny_frames_pipe)
    defaults = {"guidance_scale": 4.0, "interpolation_guidance_scale": 1.5, "interpolation_image_guidance_scale": 2.0}
    monkeypatch.setattr(tiny_frames_pipe, "sampling_defaults", defaults)
    prompt = "a red circle moves left"
    interpolate_frames(spy, frames, 4, num_inference_steps=1)
    interpolate_frames(spy, frames, 4, prompt=prompt, num_inference_steps=1)
    interpolate_frames(
        spy, frames, 4, prompt=prompt, guidance_scale=3.0, image_guidance_scale=1.0, num_inference_steps=1
    )
    monkeypatch.setattr(tiny_frames_pipe, "sampling_defaults", {"guidance_scale": 4.0})
    interpolate_frames(spy, frames, 4, prompt=prompt, num_inference_steps=1)
    assert spy.guidance == [(1.0, 2.0), (1.5, 2.0), (3.0, 1.0), (4.0, None)]


def test_interpolate_refusals(tiny_frames_pipe):
    frames = np.zeros((5, 48, 64, 3), np.uint8)
    with pytest.raises(KumoInputError, match="use 2 or 4"):
        interpolate_frames(tiny_frames_pipe, frames, 3)
    with pytest.raises(KumoInputError, match="at least 2 frames"):
        interpolate_frames(tiny_frames_pipe, frames[:1], 2)
    with pytest.raises(KumoInputError, match="uint8"):
        interpolate_frames(tiny_frames_pipe, frames.astype(np.float32), 2)
    plain = build_pipeline("kumo-tiny")
    with pytest.raises(KumoInputError, match="not trained with conditioning frames"):
        interpolate_frames(plain, frames, 2)


def test_kumo_interpolate_writes_factor_frames_at_factor_fps(tiny_frames_pipe, tmp_path, capsys, one_thread):
    clip = tmp_path / "in.mp4"
    write_video(np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8), clip, fps=8)
    out = tmp_path / "out.mp4"
    args = ["interpolate", str(clip), "--factor", "2", "-o", str(out), "--model", str(tiny_frames_pipe.folder)]
    assert main([*args, "--steps", "1"]) == 0
    frames, fps = read_video(out)
    assert len(frames) == 9 and fps == 16
    assert "5 -> 9 frames" in capsys.readouterr().out


def test_kumo_interpolate_of_an_8_fps_gif_writes_factor_times_8_fps(tiny_frames_pipe, tmp_path, one_thread):
    # The GIF's 12 cs delays read back as 8.33 fps, so x4 wrote 33 fps.
    clip = write_video(np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8), tmp_path / "in.gif")
    out = tmp_path / "out.mp4"
    args = ["interpolate", str(clip), "--factor", "4", "-o", str(out), "--model", str(tiny_frames_pipe.folder)]
    assert main([*args, "--steps", "1"]) == 0
    frames, fps = read_video(out)
    assert len(frames) == 9 and fps == 32


def test_kumo_interpolate_refuses_a_rate_it_cannot_write(tiny_frames_pipe, tmp_path, capsys):
    model = ["--model", str(tiny_frames_pipe.folder)]
    fast = write_video(np.zeros((3, 48, 64, 3), np.uint8), tmp_path / "fast.mp4", fps=300)
    assert main(["interpolate", str(fast), "--factor", "4", "-o", str(tmp_path / "o.mp4"), *model]) == 2
    assert_one_line_error(capsys, "300 interpolated x4 would be 1200 fps, over the 1000 fps limit", "at most 250")
    # A GIF plays at most 50 fps: 16 fps x4 is refused before the model runs, not after.
    clip = write_video(np.zeros((3, 48, 64, 3), np.uint8), tmp_path / "in.mp4", fps=16)
    assert main(["interpolate", str(clip), "--factor", "4", "-o", str(tmp_path / "o.gif"), *model]) == 2
    assert_one_line_error(capsys, "o.gif would run at 64 fps", "at most 50")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.mp4", "in.mp4"]


def test_kumo_interpolate_refuses_to_write_over_its_input(tiny_frames_pipe, tmp_path, capsys):
    # The keyframes are the user's only copy: -o on the input (or a hard link to it) is refused.
    clip = write_video(np.zeros((3, 48, 64, 3), np.uint8), tmp_path / "in.mp4", fps=8)
    before = clip.read_bytes()
    (tmp_path / "link.mp4").hardlink_to(clip)
    model = ["--model", str(tiny_frames_pipe.folder)]
    for target in (clip, tmp_path / "link.mp4"):
        assert main(["interpolate", str(clip), "--factor", "2", "-o", str(target), *model]) == 2
        assert_one_line_error(capsys, f"-o {target} is the same file as INPUT", "choose another output")
    assert clip.read_bytes() == before


def test_the_interpolated_rate_rule_is_shared():
    assert check_interpolated_fps(250, 4) == 1000
    with pytest.raises(KumoInputError, match=r"^--fps 1000 interpolated x4 would be 4000 fps"):
        check_interpolated_fps(1000, 4, "--fps")


def test_kumo_interpolate_refuses_in_one_line_and_writes_nothing(tiny_frames_pipe, tmp_path, capsys):
    good = tmp_path / "in.mp4"
    write_video(np.zeros((5, 48, 64, 3), np.uint8), good, fps=8)
    single = tmp_path / "one.gif"
    write_video(np.zeros((1, 48, 64, 3), np.uint8), single, fps=8)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    plain = tmp_path / "plain"
    build_pipeline("kumo-tiny").save_pretrained(plain)
    out = tmp_path / "out.mp4"
    model = ["--model", str(tiny_frames_pipe.folder)]
    for argv, needles in [
        ([str(good), "--factor", "3", *model], ["use 2 or 4"]),
        ([str(tmp_path / "missing.mp4"), "--factor", "2", *model], ["not found"]),
        ([str(text), "--factor", "2", *model], ["cannot be decoded"]),
        ([str(single), "--factor", "2", *model], ["at least 2"]),
        ([str(good), "--factor", "2", "--guidance", "nan", *model], ["--guidance nan", "not a number"]),
        ([str(good), "--factor", "2", "--image-guidance", "nan", *model], ["--image-guidance nan", "not a number"]),
        ([str(good), "--factor", "2", "--model", str(plain)], ["not trained with conditioning frames"]),
    ]:
        assert main(["interpolate", *argv, "-o", str(out)]) == 2
        assert_one_line_error(capsys, *needles)
        assert not out.exists()


def test_eval_interpolate_refuses_a_scale_that_is_not_a_number(tiny_frames_pipe, tmp_path, capsys):
    for flag in ("--guidance", "--image-guidance"):
        argv = ["eval", "interpolate", "--model", str(tiny_frames_pipe.folder), flag, "nan"]
        assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
        assert_one_line_error(capsys, f"{flag} nan", "not a number")
        assert not (tmp_path / "eval").exists()


def test_eval_interpolate_reports_the_blend_and_the_vae_ceiling(tiny_frames_pipe, tmp_path, capsys, one_thread):
    import json

    from kumovideo.cli.eval_frames import _renders, vae_clip_round_trip
    from kumovideo.evaluation.frames_metrics import in_between, linear_blend, psnr

    out = tmp_path / "eval"
    argv = ["eval", "interpolate", "--model", str(tiny_frames_pipe.folder), "--n", "2", "--steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "the ceiling" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    first = results["clips"][0]
    # The figures are of the in-between frames of the rendered clip, recomputed here.
    render = _renders([first["caption"]], tiny_frames_pipe.default_clip(), 2024)[0]
    between = in_between(len(render), 4)
    assert first["blend_psnr"] == pytest.approx(psnr(linear_blend(render[::4], 4)[between], render[between]))
    ceiling = vae_clip_round_trip(tiny_frames_pipe.vae, render)
    assert ceiling.shape == render.shape and ceiling.dtype == np.uint8
    assert first["vae_in_between_psnr"] == pytest.approx(psnr(ceiling[between], render[between]))
    assert results["summary"]["vae_in_between_psnr"] is not None
    # Each clip's caption goes with its keyframes (at the model's guidance); --no-caption drops it.
    assert (
        results["summary"]["captions"]
        and results["summary"]["guidance"] == tiny_frames_pipe.default_sampling()["guidance_scale"]
    )
    assert main([*argv, "--no-caption", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert not summary["captions"] and summary["guidance"] == 1.0 and summary["image_guidance"] is None
