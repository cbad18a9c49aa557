"""The `kumo` command line: `kumo generate` and `kumo info`, run in-process through
`kumovideo.cli.main([...])` (and once as a subprocess), on the tiny fixture pipeline.

Every bad input must end with exit status 2 and exactly one stderr line
`kumo: error: ...` that names the problem; never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from safetensors import safe_open

from kumovideo.cli import main
from kumovideo.utils.video_io import read_video

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


PROMPT = "a red circle moves left on a black background"
SMALL = ["--frames", "9", "--height", "48", "--width", "64", "--steps", "2"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(fixtures_dir) -> Path:
    return fixtures_dir / "pipeline"


def copy_pipeline(src: Path, dst: Path) -> Path:
    """A writable copy of the (read-only) fixture pipeline folder."""
    shutil.copytree(src, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dst


def generate(*args: str) -> int:
    return main(["generate", *args])


# ---------------------------------------------------------------------------- success


def test_generate_writes_a_9_frame_mp4(model, tmp_path, capsys):
    """The issue's done-when command."""
    out = tmp_path / "x.mp4"
    rc = generate(
        PROMPT,
        "--model",
        str(model),
        "--frames",
        "9",
        "--height",
        "48",
        "--width",
        "64",
        "--steps",
        "4",
        "-o",
        str(out),
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    frames, fps = read_video(out)
    assert frames.shape == (9, 48, 64, 3) and frames.dtype.name == "uint8"
    assert fps == pytest.approx(8)
    # Says where it wrote and how long it took; shows a progress bar over the 4 steps.
    assert f"wrote {out}" in captured.out and " s" in captured.out.split(" in ")[-1]
    assert "4/4" in captured.err
    assert "kumo: decoding 9 frames of 64x48 with the VAE" in captured.err  # the decode has no bar of its own
    assert not list(tmp_path.glob(".*"))  # no temp file left beside the clip


@pytest.mark.parametrize("suffix", [".gif", ".webm"])
def test_generate_writes_gif_and_webm(model, tmp_path, capsys, suffix):
    out = tmp_path / f"clip{suffix}"
    rc = generate(PROMPT, "--model", str(model), *SMALL, "--fps", "12", "--seed", "3", "-o", str(out))
    assert rc == 0, capsys.readouterr().err
    frames, fps = read_video(out)
    assert frames.shape == (9, 48, 64, 3)
    assert fps == pytest.approx(12, rel=0.1)


def test_same_seed_same_clip(model, tmp_path, capsys):
    a, b = tmp_path / "a.gif", tmp_path / "b.gif"  # GIF: lossless palette, exact comparison is meaningful
    for out in (a, b):
        assert generate("a blue square", "--model", str(model), *SMALL, "--seed", "5", "-o", str(out)) == 0
    assert a.read_bytes() == b.read_bytes()


def test_guidance_at_most_one_works(model, tmp_path, capsys):
    out = tmp_path / "g.mp4"
    assert generate("a blue square", "--model", str(model), *SMALL, "--guidance", "1", "-o", str(out)) == 0
    assert read_video(out)[0].shape == (9, 48, 64, 3)


def test_renoise_sampler_defaults_to_four_unguided_steps(model, tmp_path, capsys, monkeypatch):
    from kumovideo.pipelines import KumoPipeline

    calls = []
    real_call = KumoPipeline.__call__
    monkeypatch.setattr(KumoPipeline, "__call__", lambda self, *a, **k: calls.append(k) or real_call(self, *a, **k))
    out = tmp_path / "flash.mp4"
    assert (
        generate(
            "a blue square",
            "--model",
            str(model),
            "--frames",
            "9",
            "--height",
            "48",
            "--width",
            "64",
            "--sampler",
            "renoise",
            "-o",
            str(out),
        )
        == 0
    )
    assert "4 steps" in capsys.readouterr().out
    assert calls[0]["num_inference_steps"] == 4 and calls[0]["guidance_scale"] == 1.0
    assert calls[0]["sampler"] == "renoise"


def test_help_and_version_do_not_load_torch():
    """`kumo --help` answers at once: the package imports torch, diffusers and transformers
    only when a command needs them (they take ~4 s on a laptop CPU)."""
    code = (
        "import sys; from kumovideo.cli import main\n"
        "try:\n    main(['generate', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print('heavy:', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout and "--frames" in result.stdout
    version = subprocess.run(
        [sys.executable, "-m", "kumovideo.cli", "--version"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert version.returncode == 0 and version.stdout.startswith("kumo (kumovideo) ")


def test_turbo_defaults_to_four_consistency_steps(model, tmp_path, capsys):
    out = tmp_path / "turbo.mp4"
    assert (
        generate(
            "a blue square",
            "--model",
            str(model),
            "--frames",
            "9",
            "--height",
            "48",
            "--width",
            "64",
            "--turbo",
            "-o",
            str(out),
        )
        == 0
    )
    assert "4 steps" in capsys.readouterr().out
    assert read_video(out)[0].shape == (9, 48, 64, 3)


def test_bf16_on_cpu(model, tmp_path, capsys):
    out = tmp_path / "bf16.mp4"
    assert generate("a blue square", "--model", str(model), *SMALL, "--dtype", "bf16", "-o", str(out)) == 0
    assert read_video(out)[0].shape == (9, 48, 64, 3)


def test_long_prompt_warns_truncated_and_succeeds(model, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    prompt = " ".join(["a red circle moves left on a black background while a blue square spins"] * 4)
    rc = generate(prompt, "--model", str(model), *SMALL, "-o", str(out))
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("kumo: warning:")]
    assert len(warnings) == 1 and "truncated" in warnings[0] and "text window of 16" in warnings[0], err
    # said in whole words as the prompt has them (the tokenizer's decode drops what it cannot read)
    assert "the model reads 'a red circle moves left on a', not 'black background while" in warnings[0], err
    assert "kumo: error" not in err
    assert read_video(out)[0].shape == (9, 48, 64, 3)


# ---------------------------------------------------------------------------- bad sizes


@pytest.mark.parametrize("frames, suggestion", [("8", "use 1 or 9"), ("10", "use 9 or 17"), ("2", "use 1 or 9")])
def test_frame_count_not_4k_plus_1(model, tmp_path, capsys, frames, suggestion):
    out = tmp_path / "x.mp4"
    rc = generate(PROMPT, "--model", str(model), "--frames", frames, "--height", "48", "--width", "64", "-o", str(out))
    assert rc == 2
    assert_one_line_error(capsys, f"num_frames={frames}", "4k+1", suggestion)
    assert not out.exists()


@pytest.mark.parametrize("frames", ["5", "13"])
def test_frame_count_with_an_even_number_of_latent_frames(model, tmp_path, capsys, frames):
    """4k+1, but (frames - 1) / 4 + 1 latent frames is even: the causal VAE cannot decode that."""
    rc = generate(
        PROMPT,
        "--model",
        str(model),
        "--frames",
        frames,
        "--height",
        "48",
        "--width",
        "64",
        "-o",
        str(tmp_path / "x.mp4"),
    )
    assert rc == 2
    assert_one_line_error(capsys, f"num_frames={frames}", "8k+1", "use")


@pytest.mark.parametrize("side, value", [("height", "40"), ("width", "50"), ("height", "8")])
def test_size_the_latent_patching_cannot_take(model, tmp_path, capsys, side, value):
    sizes = {"height": "48", "width": "64", side: value}
    rc = generate(
        PROMPT,
        "--model",
        str(model),
        "--frames",
        "9",
        "--height",
        sizes["height"],
        "--width",
        sizes["width"],
        "-o",
        str(tmp_path / "x.mp4"),
    )
    assert rc == 2
    assert_one_line_error(capsys, f"{side}={value}", "multiple of 16")


@pytest.mark.parametrize("flag", ["--steps", "--frames", "--fps"])
def test_non_positive_numbers(model, tmp_path, capsys, flag):
    assert generate(PROMPT, "--model", str(model), flag, "0", "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, flag, "positive")


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_guidance_rescale_outside_0_1(model, tmp_path, capsys, value):
    out = tmp_path / "x.mp4"
    assert generate(PROMPT, "--model", str(model), "--guidance-rescale", value, "-o", str(out)) == 2
    assert_one_line_error(capsys, f"--guidance-rescale {value}", "from 0 (off) to 1")
    assert not out.exists()


# ---------------------------------------------------------------------------- bad checkpoint folders


def test_missing_checkpoint_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-ckpt"
    assert generate(PROMPT, "--model", str(missing), "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, str(missing), "does not exist")


@pytest.mark.parametrize(
    "remove, named",
    [
        ("model_index.json", "model_index.json"),
        ("vae", "vae/"),
        ("tokenizer", "tokenizer/"),
        ("transformer/diffusion_pytorch_model.safetensors", "transformer/diffusion_pytorch_model.safetensors"),
        ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"),
        ("text_encoder/model.safetensors", "text_encoder/model.safetensors"),
        ("text_encoder/config.json", "text_encoder/config.json"),
        ("transformer/config.json", "transformer/config.json"),
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json"),
        ("tokenizer/spiece.model", "tokenizer/spiece.model"),
    ],
)
def test_partial_checkpoint_folder_names_the_missing_part(model, tmp_path, capsys, remove, named):
    ckpt = copy_pipeline(model, tmp_path / "ckpt")
    target = ckpt / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert generate(PROMPT, "--model", str(ckpt), *SMALL, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "missing", named)


@pytest.mark.parametrize("part", ["transformer", "vae", "text_encoder"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors_file(model, tmp_path, capsys, part, damage):
    ckpt = copy_pipeline(model, tmp_path / "ckpt")
    name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
    weights = ckpt / part / name
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    assert generate(PROMPT, "--model", str(ckpt), *SMALL, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, f"{part}/{name}", "not a valid safetensors file")


def test_corrupt_config_json(model, tmp_path, capsys):
    ckpt = copy_pipeline(model, tmp_path / "ckpt")
    (ckpt / "scheduler" / "scheduler_config.json").write_text("{ not json")
    assert generate(PROMPT, "--model", str(ckpt), *SMALL, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "scheduler_config.json", "not valid JSON")


def test_pickle_weights_are_refused(model, tmp_path, capsys):
    """Only safetensors are loaded: a .bin in place of the safetensors file is not read."""
    ckpt = copy_pipeline(model, tmp_path / "ckpt")
    te = ckpt / "text_encoder"
    from safetensors.torch import load_file

    torch.save(load_file(te / "model.safetensors"), te / "pytorch_model.bin")
    (te / "model.safetensors").unlink()
    assert generate(PROMPT, "--model", str(ckpt), *SMALL, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "text_encoder", "pytorch_model.bin", "safetensors only")


# ---------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("dtype", ["fp8", "float32", "int8"])
def test_unknown_dtype(model, tmp_path, capsys, dtype):
    assert generate(PROMPT, "--model", str(model), "--dtype", dtype, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, f"unknown dtype {dtype!r}", "fp32, bf16, fp16")


@pytest.mark.parametrize("device", ["tpu", "foo:0", "gpu"])
def test_unknown_device(model, tmp_path, capsys, device):
    assert generate(PROMPT, "--model", str(model), "--device", device, "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, repr(device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer; this machine has CUDA")
def test_cuda_device_without_gpu(model, tmp_path, capsys):
    assert generate(PROMPT, "--model", str(model), "--device", "cuda", "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "'cuda'", "no CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer; this machine has CUDA")
def test_cpu_offload_without_gpu(model, tmp_path, capsys):
    assert generate(PROMPT, "--model", str(model), "--cpu-offload", "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "--cpu-offload", "CUDA")


def test_output_folder_does_not_exist(model, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "folder" / "x.mp4"
    assert generate(PROMPT, "--model", str(model), *SMALL, "-o", str(out)) == 2
    assert_one_line_error(capsys, str(out.parent), "does not exist")
    assert not out.parent.exists()


def test_unsupported_output_suffix(model, tmp_path, capsys):
    assert generate(PROMPT, "--model", str(model), *SMALL, "-o", str(tmp_path / "x.avi")) == 2
    assert_one_line_error(capsys, "'.avi'", ".mp4")


def test_bad_input_as_a_subprocess_has_no_traceback(model, tmp_path):
    """`python -m kumovideo.cli`: the real process, real exit status, real stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kumovideo.cli",
            "generate",
            PROMPT,
            "--model",
            str(model),
            "--frames",
            "8",
            "--height",
            "48",
            "--width",
            "64",
            "-o",
            str(tmp_path / "x.mp4"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("kumo: error: num_frames=8"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------------- kumo info


def safetensors_parameters(folder: Path) -> int:
    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                total += f.get_tensor(key).numel()
    return total


def test_info_prints_components_and_parameter_counts(model, capsys):
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = {name: safetensors_parameters(model / name) for name in ("text_encoder", "vae", "transformer")}
    assert expected["transformer"] == 74_000  # the tiny MADiT; see tests/test_pipeline.py for the formula
    for name, count in expected.items():
        assert info["components"][name]["parameters"] == count
    assert info["components"]["tokenizer"]["parameters"] == info["components"]["scheduler"]["parameters"] == 0
    assert info["total_parameters"] == sum(expected.values())
    sizes = {
        name: sum(p.stat().st_size for p in (model / name).rglob("*") if p.is_file()) for name in info["components"]
    }
    assert {name: c["bytes"] for name, c in info["components"].items()} == sizes
    assert info["components"]["transformer"]["config"]["num_layers"] == 2

    assert main(["info", str(model)]) == 0
    table = capsys.readouterr().out
    for name, cls in [
        ("tokenizer", "T5Tokenizer"),
        ("text_encoder", "T5EncoderModel"),
        ("vae", "KumoAutoencoderKL"),
        ("transformer", "KumoTransformer3DModel"),
        ("scheduler", "KumoDDIMScheduler"),
    ]:
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert cls in row
    assert "74.0 K" in next(line for line in table.splitlines() if line.startswith("transformer"))
    assert "total" in table


def test_info_columns_line_up_with_long_class_names(capsys):
    from kumovideo.builtin import builtin_model_dir

    # The built-in model's scheduler class path is 57 characters: the size and parameter
    # columns of every row (and the total) still end where the header's do.
    assert main(["info", str(builtin_model_dir())]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()[1:] if " = " not in line]
    size_end = lines[0].index("size") + len("size")
    params_end = lines[0].index("params") + len("params")
    for line in lines[1:]:
        assert line[size_end - 1] != " " and line[size_end] == " " and line[params_end - 1] != " ", line


def test_info_on_a_partial_folder(model, tmp_path, capsys):
    ckpt = copy_pipeline(model, tmp_path / "ckpt")
    (ckpt / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(["info", str(ckpt)]) == 2
    assert_one_line_error(capsys, "missing", "vae/diffusion_pytorch_model.safetensors")


def test_info_on_a_missing_folder(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert_one_line_error(capsys, "does not exist")


@pytest.mark.parametrize("value", ["0", "-0.1"])
def test_step_cache_threshold_must_be_positive(model, tmp_path, capsys, value):
    out = tmp_path / "x.mp4"
    assert generate(PROMPT, "--model", str(model), *SMALL, "--step-cache", value, "-o", str(out)) == 2
    assert_one_line_error(capsys, "--step-cache must be a positive threshold")
    assert not out.exists()


def test_cpu_offload_and_another_offload_mode_conflict(model, tmp_path, capsys):
    assert (
        generate(
            PROMPT, "--model", str(model), *SMALL, "--cpu-offload", "--offload", "group", "-o", str(tmp_path / "x.mp4")
        )
        == 2
    )
    assert_one_line_error(capsys, "--cpu-offload is --offload model")


def test_offload_modes_need_a_gpu(model, tmp_path, capsys):
    assert (
        generate(
            PROMPT,
            "--model",
            str(model),
            *SMALL,
            "--offload",
            "sequential",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "x.mp4"),
        )
        == 2
    )
    assert_one_line_error(capsys, "--offload sequential needs a CUDA GPU")


# ---------------------------------------------------------------- checked before any work
# These use the shipped built-in model (no ../shared needed).


@pytest.fixture
def builtin_copy(tmp_path) -> Path:
    from kumovideo.builtin import BUILTIN_DIRS

    return copy_pipeline(BUILTIN_DIRS[False], tmp_path / "builtin")


def test_turbo_flag_on_a_base_checkpoint_samples_with_the_consistency_scheduler(tmp_path, capsys):
    from kumovideo.builtin import BUILTIN_DIRS

    out = tmp_path / "t.mp4"
    assert generate(PROMPT, "--model", str(BUILTIN_DIRS[False]), "--turbo", *SMALL[:6], "-o", str(out)) == 0
    assert "4 steps" in capsys.readouterr().out
    assert read_video(out)[0].shape == (9, 48, 64, 3)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "JSON object"),
        ('{"num_inference_steps": "lots"}', "num_inference_steps"),
        ('{"fps": -3}', "fps"),
        ('{"guidance_rescale": 2}', "guidance_rescale"),
        ('{"interpolation_image_guidance_scale": "strong"}', "interpolation_image_guidance_scale"),
    ],
)
def test_bad_kumo_defaults_json_is_named_before_generating(builtin_copy, tmp_path, capsys, content, needle):
    (builtin_copy / "kumo_defaults.json").write_text(content)
    out = tmp_path / "x.mp4"
    assert generate(PROMPT, "--model", str(builtin_copy), "-o", str(out)) == 2
    assert_one_line_error(capsys, "kumo_defaults.json", needle)
    assert not out.exists()


def test_config_that_does_not_fit_the_weights(builtin_copy, tmp_path, capsys):
    config = builtin_copy / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"attention_head_dim": 32', '"attention_head_dim": 16'))
    assert generate(PROMPT, "--model", str(builtin_copy), "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "transformer could not be loaded", "same save")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--guidance", "nan"], "--guidance nan"),
        (["--guidance", "inf"], "--guidance inf"),
        (["--step-cache", "nan"], "--step-cache"),
        (["--vae-on", "split"], "--vae-on"),
        (["--t5-on", "rank0"], "--t5-on"),
    ],
)
def test_flags_refused_before_loading(tmp_path, capsys, args, needle):
    out = tmp_path / "x.mp4"
    assert generate(PROMPT, *args, "-o", str(out)) == 2
    assert_one_line_error(capsys, needle)
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder no file can be created in")
def test_output_folder_that_cannot_be_written(capsys):
    assert generate(PROMPT, "-o", "/proc/clip.mp4") == 2
    assert_one_line_error(capsys, "cannot write to /proc")


def test_clip_too_large_for_memory_is_refused_before_denoising(tmp_path, capsys):
    assert generate(PROMPT, "--height", "16000", "--width", "16000", "-o", str(tmp_path / "x.mp4")) == 2
    assert_one_line_error(capsys, "16000x16000", "GiB")


def test_eval_checks_its_arguments_and_output_before_evaluating(tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("keep me")
    for args, needle in (
        (["--seed", "-1"], "--seed -1"),
        (["--steps", "-1"], "--steps -1"),
        (["--out", str(taken)], "existing file"),
        (["--device", "tpu"], "tpu"),
    ):
        assert main(["eval", "shapes", "--n", "2", *args]) == 2
        assert_one_line_error(capsys, needle)
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seed", "-5"], "--seed -5"),
        (["--size", "100000"], "from 32 to 1024"),
    ],
)
def test_render_refuses_before_creating_its_folder(tmp_path, capsys, args, needle):
    out = tmp_path / "clips"
    assert main(["shapes", "render", "--n", "1", "--out", str(out), *args]) == 2
    assert_one_line_error(capsys, needle)
    assert not out.exists()


def test_render_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["shapes", "render", "--n", "1", "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert_one_line_error(capsys, "is a file")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--flops-only", "--frames", "10"], "num_frames=10"),
        (["--flops-only", "--height", "50"], "height=50"),
        (["--flops-only", "--device", "gpu"], "unknown device"),
        (["--max-time", "-5"], "--max-time"),
    ],
)
def test_bench_checks_every_argument_even_with_flops_only(capsys, args, needle):
    assert main(["bench", *args]) == 2
    assert_one_line_error(capsys, needle)


def test_bench_compile_cache_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "cache").write_text("x")
    assert main(["bench", "--compile", "--compile-cache", str(tmp_path / "cache")]) == 2
    assert_one_line_error(capsys, "--compile-cache")
