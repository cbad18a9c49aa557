"""`kumo generate`: what is checked from the model folder's configs before any weights load,
the warnings a run that would silently misbehave gives, and VAE tiling that writes the size
asked for."""

from __future__ import annotations

import logging

import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli import main
from kumovideo.pipelines import KumoPipeline
from kumovideo.utils.video_io import read_video

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

PROMPT = "a red circle moves left on a black background"


@pytest.fixture
def no_weights(monkeypatch):
    """The test fails if a pipeline's weights start to load."""

    def refuse(cls, *args, **kwargs):
        raise AssertionError("the weights loaded before the check")

    monkeypatch.setattr(KumoPipeline, "from_pretrained", classmethod(refuse))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--turbo", "--steps", "51"], ["consistency (Turbo) sampling takes at most 50 steps"]),
        (["--steps", "1001"], ["num_inference_steps=1001", "1000 training timesteps"]),
        (["--frames", "10"], ["num_frames=10", "use 9 or 17"]),
        (["--height", "100"], ["height=100"]),
        (["--interpolate", "2", "--width", "224", "--height", "128"], ["would crop 224x128 keyframes", "(1:1)"]),
        (["--interpolate", "4", "--fps", "1000"], ["--fps 1000 interpolated x4 would be 4000 fps", "250 fps"]),
        (["--fps", "60", "-o", "GIF"], ["would run at 60 fps", "a GIF plays at most 50"]),
        (["--turbo", "--image", "FIRST"], ["--turbo and --image", "no Turbo distillation"]),
    ],
)
def test_clip_and_steps_are_checked_before_the_weights_load(args, needles, no_weights, tmp_path, capsys):
    out = tmp_path / ("x.gif" if "GIF" in args else "x.mp4")
    args = [a for a in args if a not in ("-o", "GIF")]
    if "FIRST" in args:  # a real first frame, so that what is refused is the pairing
        from PIL import Image

        Image.new("RGB", (128, 128)).save(tmp_path / "first.png")
        args[args.index("FIRST")] = str(tmp_path / "first.png")
    assert main(["generate", PROMPT, *args, "-o", str(out)]) == 2
    assert_one_line_error(capsys, *needles)
    assert not out.exists()


def test_a_clip_far_longer_than_the_model_makes_warns_first(no_weights, tmp_path, capsys):
    with pytest.raises(AssertionError, match="weights loaded"):
        main(["generate", PROMPT, "--frames", "161", "-o", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert "kumo: warning: 161 frames is 9x the 17 this model makes" in err and "41 latent frames" in err, err


def test_fp16_on_a_cpu_warns(no_weights, tmp_path, capsys):
    assert main(["generate", PROMPT, "--dtype", "fp16", "--frames", "10", "-o", str(tmp_path / "x.mp4")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("kumo: warning: --dtype fp16 on a CPU") and "bf16" in lines[0], lines
    assert lines[1].startswith("kumo: error: num_frames=10"), lines


def test_one_frame_is_one_frame(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--frames", "1", "--steps", "1", "-o", str(out)]) == 0
    assert "(1 frame, 128x128" in capsys.readouterr().out
    assert read_video(out)[0].shape == (1, 128, 128, 3)


def test_a_negative_prompt_without_guidance_warns(caplog):
    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny")
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_frames=1, height=48, width=64, num_inference_steps=1, output_type="latent")
    with caplog.at_level(logging.WARNING, logger="kumovideo.pipelines.pipeline_kumo"):
        pipe("a red circle", negative_prompt="a blue square", guidance_scale=2.0, **call)
        assert not [r for r in caplog.records if "negative prompt" in r.getMessage()]
        pipe("a red circle", negative_prompt="a blue square", guidance_scale=1.0, **call)
    said = [r.getMessage() for r in caplog.records if "negative prompt" in r.getMessage()]
    assert len(said) == 1 and "no effect at guidance_scale 1" in said[0], said


@pytest.mark.parametrize("latents", range(2, 65))
def test_tile_overlap_keeps_as_many_pixels_as_each_tile_steps(latents):
    """diffusers' CogVideoX tiled decode steps int(L (1 - f)) latents a tile and keeps S - int(S f)
    pixels of it; they agree at the factor chosen, and the published VAE's own ones are kept."""
    from kumovideo.pipelines.pipeline_kumo import exact_tile_overlap

    f = exact_tile_overlap(latents, 8, 1 / 6)
    assert int(latents * (1 - f)) * 8 == latents * 8 - int(latents * 8 * f)
    assert 0 < f < 1


def test_published_tile_overlaps_are_kept():
    from kumovideo.pipelines.pipeline_kumo import exact_tile_overlap

    assert exact_tile_overlap(30, 8, 1 / 6) == pytest.approx(1 / 6)  # 480 px: tiles of 240
    assert exact_tile_overlap(45, 8, 1 / 5) == pytest.approx(1 / 5)  # 720 px: tiles of 360


def test_vae_tiling_decodes_the_size_asked_for():
    """It wrote 138x144 frames for 128x128 with the built-in VAE (tiles of 4 latents)."""
    pipe = KumoPipeline.from_pretrained(builtin_model_dir())
    latents = torch.randn(1, pipe.vae.config.latent_channels, 3, 16, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = pipe.vae.decode(latents).sample.clamp(-1, 1)
        pipe.enable_vae_tiling()
        tiled = pipe.vae.decode(latents).sample.clamp(-1, 1)
    assert tiled.shape == whole.shape == (1, 3, 9, 128, 224)
    assert (tiled - whole).abs().mean() < 0.1  # the same picture, up to the tiles' seams


def test_the_cli_says_each_warning_once_and_every_error(capsys):
    """A command's repeated warning is one line; a server's repeated failure is not hidden."""
    from kumovideo.cli import _configure_logging

    _configure_logging()
    log = logging.getLogger("kumovideo.serve.app")
    for _ in range(2):
        log.warning("a size this model was not trained at")
        log.error("error answering GET /v1/videos")
    assert capsys.readouterr().err.splitlines() == [
        "kumo: warning: a size this model was not trained at",
        "kumo: error: error answering GET /v1/videos",
        "kumo: error: error answering GET /v1/videos",
    ]
