"""The built-in model's training kit (scripts/gpu/train_builtin.sh, docs/gpu.md) rehearsed
on the CPU at toy size (--tiny: the shipped model at 32x32x9, a few steps), so it cannot
rot before a device is lent: a short run leaves its checkpoint in $OUT in parts within
what the device brings back, a pipeline.tgz and results.json; a second run resumes from
those parts; a part that fails loses no results; the loop's wall clock checkpoints and
stops on time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "gpu"))

import train_builtin as kit  # noqa: E402

from kumovideo.training.config import Stage, TrainConfig  # noqa: E402
from kumovideo.training.loop import TrainState, WallClock, train  # noqa: E402
from kumovideo.training.runtime import Runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20

pytestmark = pytest.mark.timeout(240)


def run_kit(out: Path, work: Path, *args: str):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    command = ["bash", "scripts/gpu/train_builtin.sh", "--tiny", "--out", str(out), "--work", str(work), *args]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    return proc, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-kit")
    proc, results = run_kit(root / "out1", root / "work1", "--stop-after", "4")
    return proc, results, root


def checkpoint_files(files) -> list[str]:
    return sorted(name for name in files if name.startswith("ckpt-"))


def test_a_short_run_leaves_its_checkpoint_and_pipeline_within_the_device_limits(first_run, tmp_path):
    proc, results, root = first_run
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    parts = results["parts"]
    assert {name: part["status"] for name, part in parts.items()} == {
        "env": "skipped",
        "train": "ok",
        "train-eager": "skipped",
        "finish": "ok",
    }
    train = parts["train"]["result"]
    assert train["stopped"] == {**train["stopped"], "step": 4, "why": "--stop-after"}
    assert train["data"]["clips"] > 0 and train["sizing"]["train_flops_per_step"] > 0
    assert [c["step"] for c in train["checkpoints"]] == [2, 4]  # checkpoint_every 2 in --tiny
    # What comes back from a device: at most 8 files of 16 MiB, 64 MiB in all; the
    # checkpoint of the real model (3.6M parameters) in parts, only the newest kept, small
    # enough to travel back to a fresh machine beside the repository and the wheels.
    files = results["out_files"]
    step, packed = kit.newest_packed(root / "out1")
    assert step == 4 and checkpoint_files(files) == [p.name for p in packed]
    assert len(files) <= 8 and max(files.values()) <= 16 * MiB and sum(files.values()) <= 64 * MiB
    assert sum(files[p.name] for p in packed) <= 24 * MiB
    assert results["out_limits"] is None
    # The pipeline folder, in the kumo-shapes layout, loads with the trained clip size.
    finish = parts["finish"]["result"]
    assert finish["export"]["file"] == "pipeline.tgz" and finish["eval"]["n"] == 4
    with tarfile.open(root / "out1" / "pipeline.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "pipeline"
    assert {"model_index.json", "kumo_defaults.json", "training_captions.txt", "vae", "transformer"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert (config["sample_height"], config["sample_width"], config["sample_frames"]) == (4, 4, 9)
    assert config["text_positions"] is True  # the recipe's `transformer:` settings reach the exported model
    cached = (root / "work1" / "run" / "cache_captions.txt").read_text().split("\n")
    assert set(cached) - {""} <= set((folder / "training_captions.txt").read_text().split("\n"))
    # the recipe's two_object_share (0.8) reaches the kit's cache: ShapesWorld's own stream is half and half
    two = [" and " in text for text in cached if text]
    assert sum(two) / len(two) > 0.65, f"{sum(two)} of {len(two)} cached captions name two objects"
    assert proc.stdout.startswith("train_builtin CPU rehearsal")


def test_a_second_run_resumes_from_the_parts_and_a_crash_loses_no_results(first_run):
    _, first, root = first_run
    out = root / "out2"
    args = ("--resume-from", str(root / "out1"), "--rehearse-crash", "--eval-n", "0")
    proc, results = run_kit(out, root / "work2", *args)
    assert proc.returncode == 1
    train = results["parts"]["train"]
    assert train["status"] == "failed" and "rehearsed crash" in (out / "log.txt").read_text()
    # Its JSON up to the crash is kept: where it resumed, and the checkpoint it packed.
    assert train["result"]["resumed_from"]["step"] == 4 and train["result"]["start_step"] == 4
    assert [c["step"] for c in train["result"]["checkpoints"]] == [6]
    assert checkpoint_files(results["out_files"]) == [p.name for p in kit.newest_packed(out)[1]]
    assert kit.newest_packed(out)[0] == 6 and train["result"]["train"]["rows"][0]["step"] == 5
    # The finish part still exports what the crashed part left.
    finish = results["parts"]["finish"]
    assert finish["status"] == "ok" and finish["result"]["export"]["checkpoint"] == "step-0000006"


def test_the_lumina_recipe_trains_its_buckets_scales_and_motion(tmp_path):
    """configs/builtin-lumina-128-gpu.yaml at toy size: a latent cache per bucket with motion
    scores, steps on every bucket (the token-budget batch), the multi-scale and motion model
    exported, and the widest bucket judged beside the square."""
    config = "configs/builtin-lumina-128-gpu.yaml"
    proc, results = run_kit(
        tmp_path / "out", tmp_path / "work", "--config", config, "--stop-after", "3", "--eval-n", "2"
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    train = results["parts"]["train"]["result"]
    data = train["data"]
    assert set(data["buckets"]) == {"32x32", "64x32", "32x64"} and data["motion_amounts"] == [0.5, 1.5]
    assert {k: v["latent_shape"][-2:] for k, v in data["buckets"].items()} == {
        "32x32": [4, 4],
        "64x32": [4, 8],
        "32x64": [8, 4],
    }
    assert train["stopped"]["step"] == 3 and train["compile"] == "off"
    finish = results["parts"]["finish"]["result"]
    assert finish["eval"]["n"] == 2 and finish["eval_wide"]["n"] == 2
    assert (finish["eval_wide"]["clip"]["width"], finish["eval_wide"]["clip"]["height"]) == (64, 32)
    with tarfile.open(tmp_path / "out" / "pipeline.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    exported = json.loads((tmp_path / "pipeline" / "transformer" / "config.json").read_text())
    assert exported["multiscale_patch_sizes"] == [4] and exported["motion_conditioning"] is True


def test_a_lumina_step_draws_its_bucket_at_the_token_budget_with_scores_and_scales():
    """make_loss_fn on tiny caches: step k trains bucket k of the list at its token-budget batch,
    hands the transformer the clips' motion scores, and a coarse step's patch size."""
    from diffusers import DDIMScheduler

    from kumovideo.training.config import load_config

    config = load_config(
        REPO / "configs" / "builtin-lumina-128-gpu.yaml",
        {
            "stages": [
                {
                    "name": "s",
                    "steps": 9,
                    "size": 32,
                    "num_frames": 9,
                    "batch_size": 4,
                    "buckets": "32x32,64x32",
                    "motion_range": "0.5,1.5",
                }
            ],
            "caption_dropout": 0.0,
        },
    )
    caches = {}
    for width, height in ((32, 32), (64, 32)):
        mean = torch.zeros(6, 2, 4, height // 8, width // 8)
        ids = torch.ones(6, 3, dtype=torch.long)
        caches[(width, height)] = kit.LatentCache(mean, mean, ids, ids[0], ["c"] * 6, 1.0, torch.arange(6.0))
    seen = []

    def transformer(x, text, t, return_dict=False, **extras):
        seen.append((tuple(x.shape), extras.get("patch_size"), extras.get("motion_score")))
        return (x * 0 + torch.zeros((), requires_grad=True),)

    state = TrainState(modules={}, param_groups=[])
    state.wrapped = {"transformer": transformer}
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    text_encoder = lambda ids: (torch.zeros(ids.shape[0], 3, 8),)  # noqa: E731
    transformer_config = {"multiscale_patch_sizes": [4], "motion_conditioning": True}
    loss_fn = kit.make_loss_fn(config, caches, state, text_encoder, scheduler, runtime, transformer_config, 8)
    for step in range(8):
        loss_fn(step)
    shapes = [shape for shape, _, _ in seen]
    assert shapes[0::2] == [(4, 2, 4, 4, 4)] * 4 and shapes[1::2] == [(2, 2, 4, 4, 8)] * 4
    assert {patch for _, patch, _ in seen} == {None, 4}  # both scales drawn
    scored = [score for _, _, score in seen if score is not None]
    assert scored and all(len(score) in (2, 4) and float(score.max()) <= 5 for score in scored)


def test_only_a_complete_set_of_parts_is_resumed(tmp_path):
    for name in ("ckpt-step0000002.part1of2", "ckpt-step0000002.part2of2", "ckpt-step0000004.part1of2"):
        (tmp_path / name).write_bytes(b"x")
    step, parts = kit.newest_packed(tmp_path)
    assert step == 2 and [p.name for p in parts] == ["ckpt-step0000002.part1of2", "ckpt-step0000002.part2of2"]
    assert kit.room_left(tmp_path, [MiB] * 3) is None
    assert "files" in kit.room_left(tmp_path, [MiB] * 4)
    assert "a file" in kit.room_left(tmp_path, [17 * MiB])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "bytes" in kit.room_left(empty, [11 * MiB] * 6)


def test_the_wall_clock_checkpoints_by_time_and_stops_on_time(tmp_path):
    config = TrainConfig(
        kind="dit", output_dir=str(tmp_path), stages=[Stage("s", steps=1000)], warmup_steps=1, log_every=1000
    )
    model = torch.nn.Linear(2, 1)
    saved = []
    clock = WallClock(checkpoint_every_s=0.0, on_checkpoint=lambda s, p: saved.append(p))

    def loss_fn(step):
        clock.stop_at = clock.stop_at or time.time() + 0.3  # from the first step on (the EMA's import comes before)
        time.sleep(0.01)
        return model(torch.ones(1, 2)).pow(2).mean(), {}

    state = TrainState(modules={"m": model})
    metrics = train(config, Runtime(0, 1, 0, torch.device("cpu")), state, loss_fn, clock=clock)
    last = metrics["step"]
    assert 1 < last < 1000 and clock.out_of_time()
    assert saved[-1] == tmp_path / "checkpoints" / f"step-{last:07d}" and saved[-1].is_dir()
    assert len(saved) == last  # checkpoint_every_s=0: after every step


def test_travel_slims_the_tree_for_the_device_and_restores_it(tmp_path):
    """scripts/gpu/travel.sh: `slim` takes the built-in folders the kits do not read out of
    what travels (index and exclude only, files kept), `restore` puts the index back."""
    repo = tmp_path / "repo"
    (repo / "scripts" / "gpu").mkdir(parents=True)
    (repo / "scripts" / "gpu" / "travel.sh").write_bytes((REPO / "scripts" / "gpu" / "travel.sh").read_bytes())
    for name in ("kumo-shapes", "kumo-shapes-frames", "kumo-shapes-lumina", "kumo-shapes-turbo", "kumo-shapes-v2a"):
        (repo / "kumovideo" / "builtin" / name).mkdir(parents=True)
        (repo / "kumovideo" / "builtin" / name / "weights.bin").write_bytes(b"w" * 1000)

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "all")
    before = git("ls-files")

    def travel(action: str) -> str:
        done = subprocess.run(["bash", "scripts/gpu/travel.sh", action], cwd=repo, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    travel("slim")
    kept = git("ls-files").split()
    assert kept == [  # the two the kits read: the base and the Lumina recipe's init_from
        "kumovideo/builtin/kumo-shapes-lumina/weights.bin",
        "kumovideo/builtin/kumo-shapes/weights.bin",
        "scripts/gpu/travel.sh",
    ]
    assert git("ls-files", "--others", "--exclude-standard") == ""  # hidden, so they do not travel untracked
    assert (repo / "kumovideo" / "builtin" / "kumo-shapes-frames" / "weights.bin").exists()
    assert "already slim" in travel("slim")
    travel("restore")
    assert git("ls-files") == before
    assert git("status", "--porcelain") == ""
