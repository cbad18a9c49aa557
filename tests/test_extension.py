"""Extension (kumovideo.pipelines.extension, `kumo extend`): the clip kept exactly, the new
frames made segment by segment from the last frame so far, and the CLI's refusals; on a
random tiny model with conditioning frames (9-frame 48x64 clips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.cli import main
from kumovideo.models.transformer_kumo import expand_for_frame_conditioning
from kumovideo.pipelines.extension import context_frames, extend_frames, segment_frames
from kumovideo.pipelines.factory import build_pipeline
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import read_video, write_video


@pytest.fixture(scope="module")
def frames_pipe(tmp_path_factory):
    pipe = build_pipeline("kumo-tiny")
    pipe.transformer = expand_for_frame_conditioning(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    pipe.folder = tmp_path_factory.mktemp("frames") / "pipe"
    pipe.save_pretrained(pipe.folder)
    return pipe


def source_clip(n: int = 5) -> np.ndarray:
    clip = np.zeros((n, 48, 64, 3), np.uint8)
    for i in range(n):  # a square moving right, a different frame each time
        clip[i, 16:32, 4 + 6 * i : 20 + 6 * i] = (230, 40, 40)
    return clip


class KnownFramesSpy:
    """The pipeline, with each call's known frames (`conditioning_frames`) recorded."""

    def __init__(self, pipe):
        self.pipe, self.known = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.known.append({i: f.copy() for i, f in kwargs["conditioning_frames"].items()})
        return self.pipe(*args, **kwargs)


def test_segments_cover_the_added_frames(frames_pipe):
    assert segment_frames(frames_pipe, 8) == (1, 9)  # a 9-frame segment from the last frame adds 8
    assert segment_frames(frames_pipe, 9) == (2, 9)
    assert segment_frames(frames_pipe, 1) == (1, 9)
    assert segment_frames(frames_pipe, 8, context=5) == (2, 9)  # from 5 known frames, 4 new a segment
    with pytest.raises(KumoInputError, match="at least one frame"):
        segment_frames(frames_pipe, 0)
    with pytest.raises(KumoInputError, match="leaves no new frames"):
        segment_frames(frames_pipe, 4, context=9)  # the tiny model makes 9-frame clips
    assert (context_frames(17), context_frames(4), context_frames(1), context_frames(9, 1)) == (5, 3, 1, 1)
    with pytest.raises(KumoInputError, match="odd number"):
        context_frames(9, 4)


def test_the_source_is_kept_and_each_segment_starts_at_the_last_frames(frames_pipe):
    source = source_clip()
    spy = KnownFramesSpy(frames_pipe)
    kwargs = {"context": 1, "num_inference_steps": 2}
    out = extend_frames(spy, source, 12, "a red square moves right", torch.Generator().manual_seed(0), **kwargs)
    assert out.shape == (5 + 12, 48, 64, 3)
    np.testing.assert_array_equal(out[:5], source)
    assert len(spy.known) == 2  # 12 frames: two 9-frame segments (8 + 4 of the second's 8)
    np.testing.assert_array_equal(spy.known[0][0], source[-1])
    np.testing.assert_array_equal(spy.known[1][0], out[5 + 8 - 1])  # the first segment's last frame
    # The default: the last 5 frames, given at the segment's frames 0, 2 and 4; 4 new a segment.
    spy = KnownFramesSpy(frames_pipe)
    out = extend_frames(
        spy, source, 6, "a red square moves right", torch.Generator().manual_seed(0), num_inference_steps=2
    )
    assert out.shape == (5 + 6, 48, 64, 3) and len(spy.known) == 2
    assert sorted(spy.known[0]) == [0, 2, 4]
    for slot, frame in zip((0, 2, 4), (0, 2, 4)):
        np.testing.assert_array_equal(spy.known[0][slot], source[frame])
        np.testing.assert_array_equal(spy.known[1][slot], out[4 + frame])  # the 5 frames before the second
    again = extend_frames(
        frames_pipe, source, 6, "a red square moves right", torch.Generator().manual_seed(0), num_inference_steps=2
    )
    np.testing.assert_array_equal(out, again)  # same seed, same clip


def test_a_model_without_conditioning_frames_or_an_odd_size_is_refused(frames_pipe):
    plain = build_pipeline("kumo-tiny")
    with pytest.raises(KumoInputError, match="conditioning frames"):
        extend_frames(plain, source_clip(), 4, "p")
    with pytest.raises(KumoInputError, match="width=60 is not a multiple of 16"):
        extend_frames(frames_pipe, source_clip()[:, :, :60], 4, "p")


def test_kumo_extend(frames_pipe, tmp_path, capsys):
    clip = write_video(source_clip(), tmp_path / "in.mp4", fps=8)
    out = tmp_path / "longer.mp4"
    model = ["--model", str(frames_pipe.folder), "--steps", "1"]
    assert (
        main(["extend", str(clip), "--prompt", "a red square moves right", "--seconds", "1", "-o", str(out), *model])
        == 0
    )
    assert "5 + 8 frames, 8 fps" in capsys.readouterr().out
    frames, fps = read_video(out)
    assert frames.shape == (13, 48, 64, 3) and fps == 8
    plain = tmp_path / "plain"
    build_pipeline("kumo-tiny").save_pretrained(plain)
    for argv, needles in [
        (["--prompt", " ", *model], ["--prompt is empty"]),
        (["--prompt", "p", "--seconds", "0", *model], ["--seconds 0"]),
        (["--prompt", "p", "--seconds", "nan", *model], ["--seconds nan"]),
        (["--prompt", "p", "--model", str(plain)], ["not trained with conditioning frames"]),
    ]:
        assert main(["extend", str(clip), *argv, "-o", str(tmp_path / "x.mp4")]) == 2
        assert_one_line_error(capsys, *needles)
    assert main(["extend", str(clip), "--prompt", "p", "-o", str(clip), *model]) == 2
    assert_one_line_error(capsys, "same file as INPUT")
    assert not (tmp_path / "x.mp4").exists()


def test_kumo_extend_context(frames_pipe, tmp_path, capsys):
    clip = write_video(source_clip(9), tmp_path / "in.mp4", fps=8)  # 9 frames: a context of 9 is all there
    model = ["--model", str(frames_pipe.folder), "--steps", "1", "--prompt", "p", "--seconds", "1"]
    for context, needle in [("4", "context=4 must be an odd number"), ("9", "leaves no new frames")]:
        assert main(["extend", str(clip), *model, "--context", context, "-o", str(tmp_path / "x.mp4")]) == 2
        assert_one_line_error(capsys, needle)
    assert main(["extend", str(clip), *model, "--context", "1", "-o", str(tmp_path / "one.mp4")]) == 0
    assert read_video(tmp_path / "one.mp4")[0].shape[0] == 9 + 8
