"""`kumo train` on bad input: one `kumo: error:` line naming what is wrong, exit status 2,
checked before any model or data work, and nothing created, replaced or truncated on disk.

The runs here are the smallest there are (kumo-tiny, 32x32 stills, a step or two), so
that what is checked is the user's view of a command: its exit status, its one line and
the files it leaves behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error as one_line_error
from tiny_runs import write_config

from kumovideo.cli import main
from kumovideo.training.checkpointing import checkpoint_kind, list_checkpoints
from kumovideo.training.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

STILLS = {"name": "stills", "steps": 2, "size": 32, "num_frames": 1, "batch_size": 1}
VAE = {
    "kind": "vae",
    "preset": "kumo-tiny",
    "warmup_steps": 1,
    "log_every": 1,
    "checkpoint_every": 1,
    "stages": [STILLS],
}
DIT = {"kind": "dit", "preset": "kumo-tiny", "stages": [STILLS]}
TURBO = {"kind": "turbo", "preset": "kumo-tiny", "teacher": "teacher-pipeline", "stages": [STILLS]}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def config_file(tmp: Path, base: dict, **changes) -> Path:
    data = {**base, "output_dir": str(tmp / "out"), **changes}
    return write_config(tmp / "config.json", data)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished 2-step VAE run, started with --resume on a fresh folder (as scripts do):
    (output_dir, what it printed on stderr)."""
    tmp = tmp_path_factory.mktemp("vae-run")
    path = config_file(tmp, VAE)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["train", "vae", "--config", str(path), "--device", "cpu", "--resume"]) == 0
    return tmp / "out", stderr.getvalue()


@pytest.fixture
def run_copy(vae_run, tmp_path) -> Path:
    """A copy of the finished VAE run that a test may point commands at."""
    return Path(shutil.copytree(vae_run[0], tmp_path / "run"))


# ------------------------------------------------------------------ config values


@pytest.mark.parametrize(
    "base, changes, extra_args, needles",
    [
        (VAE, {"lr": "fast"}, [], ["lr='fast'", "a number > 0"]),
        (VAE, {}, ["--set", "lr=abc"], ["lr='abc'", "a number > 0"]),
        (VAE, {"lr": -0.001}, [], ["lr=-0.001", "a number > 0"]),
        (VAE, {"preset": "nope"}, [], ["preset='nope'", "kumo-tiny"]),
        (VAE, {"checkpoint_every": 0}, [], ["checkpoint_every=0", "an integer >= 1"]),
        (VAE, {"log_every": 0}, [], ["log_every=0", "an integer >= 1"]),
        (VAE, {"seed": -1}, [], ["seed=-1", "an integer >= 0"]),
        (VAE, {"ema_decay": 2}, [], ["ema_decay=2", "in [0, 1]"]),
        (VAE, {"betas": [0.9, 1.5]}, [], ["betas=[0.9, 1.5]", "[0, 1)"]),
        (VAE, {}, ["--set", "stages=5"], ["stages=5", "list of stages"]),
        (VAE, {}, ["--set", "output_dir=5"], ["output_dir=5", "must be a path"]),
        (VAE, {"stages": [{**STILLS, "crop": 12}]}, [], ["stage 0", "crop=12", "multiple of 8"]),
        (VAE, {"stages": [{**STILLS, "size": 16}]}, [], ["stage 0", "size=16", "an integer >= 32"]),
        (VAE, {"stages": [{**STILLS, "crop_frames": 9}]}, [], ["stage 0", "crop_frames=9", "num_frames=1"]),
        (VAE, {"gradient_checkpointing": "yes"}, [], ["gradient_checkpointing='yes'", "true or false"]),
        (DIT, {"caption_dropout": 1.5}, [], ["caption_dropout=1.5", "in [0, 1]"]),
        (DIT, {"stages": [STILLS, {**STILLS, "image_prob": 2}]}, [], ["stage 1", "image_prob=2", "in [0, 1]"]),
        (DIT, {"stages": [{**STILLS, "batch_size": 2.5}]}, [], ["stage 0", "batch_size=2.5", "an integer >= 1"]),
        (TURBO, {"num_ddim_steps": 0}, [], ["num_ddim_steps=0", "in [1, 1000]"]),
        (TURBO, {"distill_loss": "banana"}, [], ["distill_loss='banana'", "huber or l2"]),
    ],
)
def test_bad_config_values_are_one_line_naming_the_key(base, changes, extra_args, needles, tmp_path, capsys):
    path = config_file(tmp_path, base, **changes)
    assert main(["train", base["kind"], "--config", str(path), "--device", "cpu", *extra_args]) == 2
    one_line_error(capsys, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no output_dir started


def test_yaml_exponents_read_as_text_still_load_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"kind: vae\noutput_dir: {tmp_path / 'out'}\nlr: 1e-3\nstages: [{{name: s, steps: 1}}]\n")
    config = load_config(path)
    assert config.lr == 0.001 and isinstance(config.lr, float)


def test_config_that_is_a_folder(tmp_path, capsys):
    assert main(["train", "vae", "--config", str(tmp_path)]) == 2
    one_line_error(capsys, str(tmp_path), "is a folder")


# ------------------------------------------------------------- devices and output_dir


@pytest.mark.parametrize(
    "device, needles", [("gpu", ["unknown device 'gpu'"]), ("cuda", ["no CUDA GPU", "--device cpu"])]
)
@pytest.mark.parametrize("command", ["vae", "cache-latents"])
def test_unusable_devices(command, device, needles, tmp_path, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    if command == "vae":
        args = ["train", "vae", "--config", str(config_file(tmp_path, VAE))]
    else:
        args = ["train", "cache-latents", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "out")]
    assert main([*args, "--device", device]) == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["out", "out/sub"])
def test_output_dir_that_is_a_file(where, tmp_path, capsys):
    (tmp_path / "out").write_text("a user's file\n")
    path = config_file(tmp_path, VAE)
    assert main(["train", "vae", "--config", str(path), "--device", "cpu", "--output-dir", str(tmp_path / where)]) == 2
    one_line_error(capsys, "output_dir", "is a file" if where == "out/sub" else "is an existing file")
    assert (tmp_path / "out").read_text() == "a user's file\n"


# --------------------------------------------------------------- existing runs, --resume


def test_resume_on_a_fresh_folder_says_it_starts_at_step_0(vae_run):
    out, stderr = vae_run
    assert f"no checkpoint found in {out}; training starts at step 0" in stderr
    assert "Traceback" not in stderr
    assert [p.name for p in list_checkpoints(out)] == ["step-0000001", "step-0000002"]
    assert checkpoint_kind(out / "checkpoints/step-0000002") == "vae"
    assert json.loads((out / "checkpoints/step-0000002/state.json").read_text())["kind"] == "vae"  # recorded


def test_a_run_with_checkpoints_is_not_restarted_without_resume(run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    path = config_file(tmp_path, VAE)
    assert main(["train", "vae", "--config", str(path), "--device", "cpu", "--output-dir", str(run_copy)]) == 2
    one_line_error(capsys, str(run_copy), "--resume", "another output_dir")
    assert snapshot(run_copy) == before  # loss log and checkpoints untouched


@pytest.mark.parametrize("resume", [False, True])
def test_a_finished_run_whose_checkpoints_were_deleted_keeps_its_export(run_copy, tmp_path, capsys, resume):
    import shutil

    shutil.rmtree(run_copy / "checkpoints")
    assert (run_copy / "vae" / "config.json").is_file()  # the run's export
    before = snapshot(run_copy)
    path = config_file(tmp_path, VAE, output_dir=str(run_copy))
    assert main(["train", "vae", "--config", str(path), "--device", "cpu"] + (["--resume"] if resume else [])) == 2
    one_line_error(capsys, str(run_copy), "holds vae/ (a finished run's export", "another output_dir")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    "command, base, changes, needles",
    [
        # Another architecture of the same kind: the weights do not fit.
        (
            "vae",
            VAE,
            {"preset": "kumo-builtin"},
            ["different model or config", "first mismatch: ", "fresh output_dir"],
        ),
        # Another kind of run: refused before anything is built.
        ("dit", DIT, {}, ["different model or config", "a vae run", "dit config"]),
    ],
)
def test_resume_of_a_checkpoint_from_another_model(command, base, changes, needles, run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    path = config_file(tmp_path, base, **changes, output_dir=str(run_copy))
    assert main(["train", command, "--config", str(path), "--device", "cpu", "--resume"]) == 2
    line = one_line_error(capsys, *needles)
    assert len(line) < 400, line  # the first mismatching key at most, not the whole state dict
    assert snapshot(run_copy) == before


# ------------------------------------------------------------ what a config points at


def latent_index(clips: list[dict]) -> str:
    return json.dumps({"format": "kumovideo-latents", "vae": {"scaling_factor": 1.0}, "clips": clips, "shards": []})


@pytest.mark.parametrize(
    "index_text, needles",
    [
        (None, ["stage 0 (stills) latents", "not found", "cache-latents"]),
        ('{"clips": [', ["stage 0 (stills) latents", "does not parse"]),
        ('{"clips": []}', ["is not a kumovideo latent index"]),
        (latent_index([]), ["holds no clip to train on"]),
        (
            latent_index([{"id": "a", "caption": "x", "shape": [4, 1, 2, 2]}]),
            ["num_frames=9", "needs 3 latent frames", "holds clips of 1"],
        ),
    ],
)
def test_dit_latent_caches_are_checked_before_anything_is_built(index_text, needles, tmp_path, capsys):
    index = tmp_path / "cache" / "index.json"
    if index_text is not None:
        index.parent.mkdir()
        index.write_text(index_text)
    stage = {**STILLS, "num_frames": 9, "latents": str(index)}
    path = config_file(tmp_path, DIT, stages=[stage], transformer={"max_text_seq_length": 24})
    assert main(["train", "dit", "--config", str(path), "--device", "cpu"]) == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "out").exists()  # no tokenizer learned into it


def test_missing_teacher_says_to_set_teacher_in_the_config(tmp_path, capsys):
    path = config_file(tmp_path, TURBO, teacher=str(tmp_path / "no-such-pipeline"))
    assert main(["train", "turbo", "--config", str(path), "--device", "cpu"]) == 2
    line = one_line_error(capsys, "no-such-pipeline", "set `teacher:` in the config")
    assert "--model" not in line  # `kumo train` has no such flag
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- cache-latents


def truncated_vae(folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"w": torch.zeros(64, 64)}, str(folder / "diffusion_pytorch_model.safetensors"))
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # an interrupted copy
    return folder


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--batch-size", "0"], ["--batch-size must be at least 1, got 0"]),
        (["--seed", "-1"], ["--seed must be at least 0, got -1"]),
        (["--seed", "99999999999999999999"], ["--seed 99999999999999999999 is too large", "2**63 - 1"]),
        (["--num-clips", "0"], ["--num-clips must be at least 1, got 0"]),
        (["--num-clips", "-1"], ["--num-clips must be at least 1, got -1"]),
        (["--size", "16"], ["--size must be at least 32"]),
        (["--held-back-share", "1.5"], ["--held-back-share 1.5 is too large; use at most 1"]),
        (["--held-back-share", "-0.25"], ["--held-back-share -0.25: pass a share of the clips from 0 (none) to 1"]),
        (["--held-back-share", "nan"], ["--held-back-share nan: pass a share"]),
        (["--device", "gpu"], ["unknown device 'gpu'"]),
        (["--truncated-vae"], ["diffusion_pytorch_model.safetensors is truncated"]),
        (["--out-is-a-file"], ["--out", "is an existing file"]),
    ],
)
def test_cache_latents_refuses_bad_input_and_leaves_no_out_folder(args, needles, tmp_path, capsys):
    vae, out = tmp_path / "vae", tmp_path / "cache"
    if args == ["--truncated-vae"]:
        args = []
        truncated_vae(vae)
    if args == ["--out-is-a-file"]:
        args = []
        out.write_text("a user's file\n")
    assert main(["train", "cache-latents", "--vae", str(vae), "--out", str(out), "--num-clips", "2", *args]) == 2
    one_line_error(capsys, *needles)
    assert not out.is_dir()
    if out.exists():
        assert out.read_text() == "a user's file\n"


def test_cache_latents_resumes_only_with_the_same_clips_and_batch(fixtures_dir, tmp_path, capsys):
    vae, out = fixtures_dir / "vae", tmp_path / "cache"
    common = ["train", "cache-latents", "--vae", str(vae), "--out", str(out), "--size", "32", "--frames", "1"]
    assert main([*common, "--num-clips", "2", "--batch-size", "2"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main([*common, "--num-clips", "4", "--batch-size", "3"]) == 2
    one_line_error(capsys, "holds 2 clips", "--batch-size")
    assert main([*common, "--num-clips", "4", "--batch-size", "2", "--seed", "7"]) == 2
    one_line_error(capsys, "already caches other clips", "--seed")
    assert main([*common, "--num-clips", "4", "--batch-size", "2", "--held-back-share", "0.5"]) == 2
    one_line_error(capsys, "already caches other clips", "--held-back-share")
    assert snapshot(out) == before


# ------------------------------------------------------------------------ export


def test_export_help_documents_overwrite(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "export", "--help"])
    assert exit_.value.code == 0
    assert "--overwrite" in capsys.readouterr().out


# (A folder replaced with --overwrite: test_export_overwrite_replaces_a_folder.)
@pytest.mark.parametrize("existing, overwrite", [("folder", False), ("file", False), ("file", True)])
def test_export_never_silently_replaces_existing_out(existing, overwrite, tmp_path, capsys):
    target = tmp_path / "precious"
    if existing == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("mine\n")
    else:
        target.write_text("mine\n")
    path = config_file(tmp_path, DIT)
    args = ["train", "export", "--config", str(path), "--out", str(target)] + (["--overwrite"] if overwrite else [])
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    one_line_error(capsys, "--out", str(target), "--overwrite" if existing == "folder" else "is an existing file")
    assert (target / "notes.txt" if existing == "folder" else target).read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no .precious.old-* left behind


@pytest.mark.parametrize("recorded", [True, False], ids=["kind-recorded", "kind-from-files"])
def test_export_of_a_checkpoint_of_another_kind(recorded, run_copy, tmp_path, capsys):
    checkpoint = run_copy / "checkpoints/step-0000002"
    if not recorded:  # checkpoints written before state.json recorded the kind
        state = json.loads((checkpoint / "state.json").read_text())
        del state["kind"]
        (checkpoint / "state.json").write_text(json.dumps(state))
    path = config_file(tmp_path, DIT)
    assert (
        main(
            [
                "train",
                "export",
                "--config",
                str(path),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "export"),
            ]
        )
        == 2
    )
    one_line_error(capsys, "a vae run", "dit config", "export it with the config of the run that wrote it")
    assert not (tmp_path / "export").exists()


def test_export_overwrite_replaces_a_folder(fixtures_dir, tokenizer_dir, tmp_path, capsys):
    from tiny_runs import dit_config_file

    settings = {
        **DIT,
        "stages": [{**STILLS, "steps": 1}],
        "checkpoint_every": 1,
        "vae": str(fixtures_dir / "vae"),
        "transformer": {"max_text_seq_length": 24},
    }
    path, out = dit_config_file(tmp_path, "dit", settings, tokenizer_dir)
    assert main(["train", "dit", "--config", str(path), "--device", "cpu"]) == 0
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    capsys.readouterr()
    assert main(["train", "export", "--config", str(path), "--out", str(target)]) == 2
    one_line_error(capsys, "already exists and is not empty", "--overwrite")
    assert (target / "notes.txt").read_text() == "mine\n"

    assert main(["train", "export", "--config", str(path), "--out", str(target), "--overwrite"]) == 0
    assert (target / "model_index.json").exists() and not (target / "notes.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old folder left
