"""Fine-tuning a trained pipeline on a latent cache, as a user with their own footage does
(docs/training.md): what such a run keeps from its base, what it refuses before its first
step, and that it is the same run every time. On kumo-tiny, 32x32 clips, a step or three."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from safetensors.torch import load_file

from kumovideo.cli import main
from kumovideo.pipelines import KumoPipeline
from kumovideo.pipelines.factory import build_pipeline

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

BASE_DEFAULTS = {"guidance_scale": 3.0, "fps": 12, "lowercase_prompts": True}


@pytest.fixture(scope="module")
def base_and_cache(tmp_path_factory) -> Path:
    """A kumo-tiny base folder with sampling defaults, and a 4-clip 32x32 latent cache of it."""
    from kumovideo.training.latent_cache import cache_shapes_latents

    tmp = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    pipe = build_pipeline("kumo-tiny")
    with torch.no_grad():  # as if trained: zero-initialised gates would pass an adapter no gradient
        for param in pipe.transformer.parameters():
            param.add_(0.05 * torch.randn_like(param))
    pipe.save_pretrained(tmp / "base")
    (tmp / "base" / "kumo_defaults.json").write_text(json.dumps(BASE_DEFAULTS))
    cache_shapes_latents(pipe.vae, "vae", tmp / "cache", 4, 32, 9, seed=1, batch_size=4)
    return tmp


def run_config(tmp: Path, base: Path, latents: Path, **overrides) -> str:
    settings = {
        "kind": "dit",
        "output_dir": str(tmp / "run"),
        "init_from": str(base),
        "train_text_encoder": False,
        "lr": 1e-2,
        "warmup_steps": 1,
        "checkpoint_every": 100,
        "stages": [{"name": "s", "steps": 2, "size": 32, "num_frames": 9, "batch_size": 2, "latents": str(latents)}],
        **overrides,
    }
    path = tmp / "run.json"
    path.write_text(json.dumps(settings))
    return str(path)


def test_a_lora_run_is_the_same_run_every_time(base_and_cache, tmp_path):
    """The adapter's A matrices start random: seeded from the config, whatever the process did
    before. `latents:` names the cache's folder (the docs allow it; the export read it as a file)."""
    lora = {"rank": 4, "alpha": 8, "target_modules": ["to_q", "to_v"]}
    weights = []
    for i, state in enumerate((1, 2)):
        torch.manual_seed(state)  # the process's RNG, which the run must not depend on
        run = tmp_path / f"r{i}"
        run.mkdir()
        config = run_config(run, base_and_cache / "base", base_and_cache / "cache", lora=lora)
        assert main(["train", "dit", "--config", config]) == 0
        weights.append(load_file(str(run / "run" / "lora" / "pytorch_lora_weights.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)


def test_a_fine_tune_keeps_its_base_sampling_defaults(base_and_cache, tmp_path):
    """Steps, guidance, fps and prompt lowercasing come from the base unless the config says
    otherwise, key by key (without them a fine-tune of the built-in model sampled at guidance 6
    and stopped lowercasing prompts)."""
    config = run_config(tmp_path, base_and_cache / "base", base_and_cache / "cache", sampling_defaults={"fps": 8})
    assert main(["train", "dit", "--config", config]) == 0
    pipeline = tmp_path / "run" / "pipeline"
    assert json.loads((pipeline / "kumo_defaults.json").read_text()) == {**BASE_DEFAULTS, "fps": 8}
    pipe = KumoPipeline.from_pretrained(pipeline)
    assert pipe.default_sampling()["guidance_scale"] == 3.0
    assert pipe.normalize_prompt("A Red Circle") == "a red circle"
    # Exported folders are readable by others, as any file the user writes (mkdtemp's are private).
    mask = os.umask(0)
    os.umask(mask)
    assert pipeline.stat().st_mode & 0o777 == 0o777 & ~mask
    weights = next(pipeline.glob("transformer/*.safetensors"))
    assert weights.stat().st_mode & 0o777 == 0o666 & ~mask


def _cache_copy(base_and_cache: Path, tmp_path: Path, change) -> Path:
    cache = Path(shutil.copytree(base_and_cache / "cache", tmp_path / "cache"))
    index = json.loads((cache / "index.json").read_text())
    change(index)
    (cache / "index.json").write_text(json.dumps(index))
    return cache


def _scale_vae(index: dict) -> None:
    index["vae"]["scaling_factor"] *= 3


@pytest.mark.parametrize(
    "what, needles",
    [
        ("patch", ["clips of 40x40 pixels (5x5 latents)", "2x2 patches", "multiples of 16 px"]),
        ("vae", ["encoded by a VAE with scaling_factor", "this run's VAE has", "kumo data encode --vae"]),
    ],
)
def test_clips_the_model_cannot_train_on_are_refused_before_the_first_step(
    what, needles, base_and_cache, tmp_path, capsys
):
    if what == "patch":  # a clip encoded at its own size: 40 px sides give latents a patch of 2 cannot cut
        from kumovideo.data.pipeline.encode import LatentShardWriter

        vae = KumoPipeline.from_pretrained(base_and_cache / "base").vae
        cache = tmp_path / "cache"
        writer = LatentShardWriter(cache, vae, "vae", shard_size=2)
        with torch.no_grad():
            posterior = vae.encode(torch.rand(2, 3, 9, 40, 40) * 2 - 1).latent_dist
        for i in range(2):
            meta = {"caption": "a red circle", "fps": 8, "num_frames": 9, "size": [40, 40], "motion_score": None}
            writer.add(f"clip-{i}", posterior.mean[i], posterior.std[i], meta)
        writer.flush()
    else:
        cache = _cache_copy(base_and_cache, tmp_path, _scale_vae)
    capsys.readouterr()
    assert main(["train", "dit", "--config", run_config(tmp_path, base_and_cache / "base", cache)]) == 2
    assert_one_line_error(capsys, *needles)
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))


def _long_captions(index: dict) -> None:
    for clip in index["clips"]:
        clip["caption"] = "A Colourful Textured Scene Pans Slowly Across The Frame, Then Cuts To Another " * 2


def test_captions_longer_than_the_text_window_warn_once(base_and_cache, tmp_path, capsys):
    """Training truncates captions to the text window as generation does; generation says so
    per prompt, and a run says so once (kumo-tiny's byte tokenizer reads every character)."""
    cache = _cache_copy(base_and_cache, tmp_path, _long_captions)
    assert main(["train", "dit", "--config", run_config(tmp_path, base_and_cache / "base", cache)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kumo: warning:")]
    assert len(warnings) == 1, warnings
    assert "1 of 1 captions are longer than the text window of 16 tokens" in warnings[0]


def test_captions_the_builtin_tokenizer_cannot_read_warn_once(caplog):
    """The built-in model's vocabulary is ShapesWorld's lowercase words: capitals and most
    punctuation train as <unk>."""
    from transformers import T5Tokenizer

    from kumovideo.builtin import builtin_model_dir
    from kumovideo.training.text import warn_unreadable_captions

    tokenizer = T5Tokenizer.from_pretrained(builtin_model_dir() / "tokenizer")
    captions = ["a red circle moves left on a black background"] * 3 + ["A Red Circle, Moving"]
    with caplog.at_level("WARNING"):
        warn_unreadable_captions(tokenizer, captions, 24, "latent cache c")
    assert [r.getMessage() for r in caplog.records] == [
        "latent cache c: 1 of 2 captions hold characters this tokenizer cannot read, which train as <unk> "
        "(e.g. 'A Red Circle, Moving'); a model with another vocabulary reads them"
    ]


@pytest.mark.parametrize(
    "path, text",
    [
        ("pipeline/NOTES.md", "my notes\n"),  # a folder of the export's name, not an export
        ("lora/pytorch_lora_weights.safetensors", "an earlier LoRA run's adapter\n"),
        ("loss_log.csv", "old,log\n1,2\n"),  # no run of kumo train wrote it
    ],
)
def test_a_new_run_never_replaces_what_its_output_dir_holds(path, text, base_and_cache, tmp_path, capsys):
    kept = tmp_path / "run" / path
    kept.parent.mkdir(parents=True)
    kept.write_text(text)
    config = run_config(tmp_path, base_and_cache / "base", base_and_cache / "cache")
    assert main(["train", "dit", "--config", config]) == 2
    assert_one_line_error(capsys, "another output_dir")
    assert kept.read_text() == text
    assert sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*")) == sorted(
        {path, Path(path).parent.as_posix()} - {"."}
    )


def test_atomic_directory_removes_what_a_killed_writer_left(tmp_path):
    """`kill -9` during an export leaves its hidden temp folder; the next write of that folder
    removes it (and only folders whose writer is dead: a live one's stays)."""
    from kumovideo.utils.atomic import atomic_directory

    dead = tmp_path / ".pipeline.tmp-113t4h_h"  # the name before pids were written
    dead_pid = tmp_path / ".pipeline.tmp-999999999-abc"
    live = tmp_path / f".pipeline.tmp-{os.getpid()}-xyz"
    other = tmp_path / ".vae.tmp-999999999-abc"  # another target's
    for folder in (dead, dead_pid, live, other):
        (folder / "x").mkdir(parents=True)
    with atomic_directory(tmp_path / "pipeline") as tmp:
        (tmp / "model_index.json").write_text("{}")
    assert not dead.exists() and not dead_pid.exists()
    assert live.exists() and other.exists()
    assert (tmp_path / "pipeline" / "model_index.json").is_file()


def test_a_resume_with_other_settings_says_which(base_and_cache, tmp_path, capsys):
    """--resume may change a run's settings (to extend it, say), but not without a word."""
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    config = run_config(tmp_path, base_and_cache / "base", base_and_cache / "cache", checkpoint_every=1)
    train_dit(load_config(config), setup_runtime("cpu"), stop_after=1)  # a run stopped after its first step
    recorded = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert recorded["lr"] == 1e-2 and recorded["stages"][0]["steps"] == 2
    capsys.readouterr()
    assert main(["train", "dit", "--config", config, "--resume", "--set", "lr=0.005", "--set", "seed=3"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("kumo: warning: resuming")]
    assert len(warnings) == 1 and "other than its checkpoints were trained with" in warnings[0], err
    assert warnings[0].endswith("lr 0.01 -> 0.005; seed 0 -> 3"), warnings
