"""One short bf16-autocast training run of each kind (vae, dit, turbo) on CUDA lowers the loss.

Through the command line, as a user runs it (`kumo train KIND --config FILE --device cuda`),
chained as the built-in model is made: the VAE run's export is the DiT run's VAE, and the
DiT run's exported pipeline is the Turbo run's teacher. Each config forces
mixed_precision "bf16" (bf16 autocast; "auto" means the same on CUDA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 20  # per run, batch 4: the loss of one step depends on its clips and timesteps, so the trend is
# judged on the mean of the first and the last WINDOW logged losses
WINDOW = 5


def train(kind: str, tmp: Path, settings: dict, device) -> list[float]:
    out = tmp / kind
    config = {
        "kind": kind,
        "output_dir": str(out),
        "preset": "kumo-tiny",
        "lr": 1e-3,
        "warmup_steps": 1,
        "log_every": 1,
        "checkpoint_every": 100,
        "mixed_precision": "bf16",
        **settings,
    }
    path = tmp / f"{kind}.json"
    path.write_text(json.dumps(config, indent=2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "kumovideo.cli", "train", kind, "--config", str(path), "--device", device.type]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (out / "loss_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("loss")]) for r in rows[1:]]
    assert len(losses) == STEPS and all(x == x and abs(x) < 1e6 for x in losses), losses
    return losses


def lowered(losses: list[float]) -> bool:
    return sum(losses[-WINDOW:]) < sum(losses[:WINDOW])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {"tmp": tmp_path_factory.mktemp("train")}


def stage(frames: int, **extra) -> dict:
    return {"name": "s", "steps": STEPS, "size": 32, "num_frames": frames, "batch_size": 4, **extra}


def test_vae_bf16_autocast_lowers_the_loss(runs, device, record_property):
    losses = train("vae", runs["tmp"], {"stages": [stage(9, crop=16, crop_frames=9)]}, device)
    record_property("losses", json.dumps([round(x, 5) for x in losses]))
    assert lowered(losses), losses
    runs["vae"] = runs["tmp"] / "vae" / "vae"


def test_dit_bf16_autocast_lowers_the_loss(runs, device, record_property):
    if "vae" not in runs:
        pytest.skip("needs the VAE run above")
    settings = {"vae": str(runs["vae"]), "transformer": {"max_text_seq_length": 24}, "stages": [stage(1)]}
    losses = train("dit", runs["tmp"], {**settings, "lr": 3e-3}, device)
    record_property("losses", json.dumps([round(x, 5) for x in losses]))
    assert lowered(losses), losses
    runs["teacher"] = runs["tmp"] / "dit" / "pipeline"


def test_turbo_bf16_autocast_lowers_the_loss(runs, device, record_property):
    if "teacher" not in runs:
        pytest.skip("needs the DiT run above")
    losses = train(
        "turbo", runs["tmp"], {"teacher": str(runs["teacher"]), "ladd": False, "stages": [stage(1)]}, device
    )
    record_property("losses", json.dumps([round(x, 5) for x in losses]))
    assert lowered(losses), losses
