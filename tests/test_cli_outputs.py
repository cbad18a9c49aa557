"""What the commands say about the files they read and write: --image of 16 and 32 bits a
sample, `kumo info` of a video-to-audio folder, a V2A folder given as a text-to-video model,
and output paths under a file or in a folder that takes no files (one shared check)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from cli_checks import assert_one_line_error

from kumovideo.builtin import builtin_v2a_dir
from kumovideo.cli import main
from kumovideo.pipelines.conditioning import load_image
from kumovideo.pipelines.loading import check_checkpoint_folder
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.video_io import write_video

PROMPT = "a red circle moves left on a black background"


def write_png(path: Path, samples: np.ndarray, pix_fmt: str) -> Path:
    """A PNG of uint16 samples (gray16be, rgb48be), by FFmpeg's PNG encoder."""
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = samples.shape[1], samples.shape[0], pix_fmt
    encoder.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(samples, format=pix_fmt)
    path.write_bytes(b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)]))
    return path


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    # PIL opens it as I;16, and convert("RGB") clipped every value over 255: a white image.
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    image = load_image(write_png(tmp_path / "grey16.png", ramp, "gray16be"))
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert (image[..., 0] == image[..., 2]).all()


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = np.zeros((16, 24, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 40000, np.arange(24, dtype=np.uint16) * 2700, 65535
    image = load_image(write_png(tmp_path / "rgb16.png", rgb, "rgb48be"))
    assert np.abs(image.astype(int) - np.round(rgb / 257)).max() <= 1


def test_32_bit_grey_is_scaled_by_the_depth_that_holds_it(tmp_path):
    from PIL import Image

    wide = np.array([[0, 2**31 - 1]], np.int32)  # a 32-bit TIFF (mode I)
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    assert load_image(tmp_path / "wide.tif")[0, :, 0].tolist() == [0, 127]  # half of 2**32 - 1
    sixteen = np.array([[0, 40000]], np.int32)  # values of a 16-bit PGM, which PIL opens as I too
    assert load_image(Image.fromarray(sixteen))[0, :, 0].tolist() == [0, 156]


def test_image_that_is_a_folder_says_so(tmp_path, capsys):
    with pytest.raises(KumoInputError, match=f"image {tmp_path} is a folder; pass a PNG or JPEG file"):
        load_image(tmp_path)
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--image", str(tmp_path), "-o", str(out)]) == 2
    assert_one_line_error(capsys, "is a folder")
    assert not out.exists()


def test_kumo_info_describes_a_video_to_audio_folder(capsys):
    folder = builtin_v2a_dir()
    assert main(["info", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "KumoV2APipeline" in text and "KumoV2AModel" in text and "n_mels = 96" in text
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["components"]) == ["denoiser", "scheduler"]
    assert info["components"]["denoiser"]["parameters"] > 1_000_000
    assert info["total_parameters"] == info["components"]["denoiser"]["parameters"]
    assert info["components"]["scheduler"]["config"]["prediction_type"] == "v_prediction"


def test_a_video_to_audio_folder_as_a_text_to_video_model_says_what_it_is(tmp_path, capsys):
    # It said "model_index.json does not name the tokenizer component".
    message = "holds a video-to-audio model (KumoV2APipeline), not a text-to-video one; use it with kumo v2a"
    with pytest.raises(KumoInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_checkpoint_folder(builtin_v2a_dir())
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--model", str(builtin_v2a_dir()), "-o", str(out)]) == 2
    assert_one_line_error(capsys, message)
    assert not out.exists()


@pytest.fixture
def clip(tmp_path):
    return write_video(np.zeros((9, 48, 64, 3), np.uint8), tmp_path / "clip.mp4", fps=8)


def commands(clip: Path, output: Path) -> dict[str, list[str]]:
    """Each command that writes a video, with its output at `output`."""
    return {
        "generate": ["generate", PROMPT, "-o", str(output)],
        "interpolate": ["interpolate", str(clip), "--factor", "2", "-o", str(output)],
        "v2a": ["v2a", str(clip), "-o", str(output)],
    }


@pytest.mark.parametrize("command", ["generate", "interpolate", "v2a"])
def test_an_output_under_a_file_says_it_is_a_file(clip, tmp_path, capsys, command):
    # It said "output folder afile does not exist".
    (tmp_path / "afile").write_text("not a folder")
    for output in (tmp_path / "afile" / "x.mp4", tmp_path / "afile" / "deeper" / "x.mp4"):
        assert main(commands(clip, output)[command]) == 2
        line = assert_one_line_error(capsys, f"{tmp_path / 'afile'} is a file, not a folder")
        assert "does not exist" not in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder no file can be created in")
@pytest.mark.parametrize("command", ["generate", "interpolate", "v2a"])
def test_an_output_in_a_folder_that_takes_no_files_says_so(clip, capsys, command):
    # It said "cannot write to /proc (No such file or directory)", of a folder that is there.
    assert main(commands(clip, Path("/proc/x.mp4"))[command]) == 2
    line = assert_one_line_error(capsys, "cannot write to /proc: the folder takes no new files")
    assert "No such file" not in line


def test_a_float_tiff_is_scaled_from_its_range(tmp_path):
    from PIL import Image

    # A float TIFF (mode F) in [0, 1]: PIL's convert("RGB") rounded it to 0 and 1, a black image.
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    image = load_image(tmp_path / "unit.tif")
    np.testing.assert_array_equal(image[..., 1], np.round(ramp * 255).astype(np.uint8))
    # Floats past 1 are read as the smallest integer depth that holds them; NaN is black.
    wide = np.array([[0.0, 127.5, 255.0, np.nan]], np.float32)
    assert load_image(Image.fromarray(wide, mode="F"))[0, :, 0].tolist() == [0, 128, 255, 0]
