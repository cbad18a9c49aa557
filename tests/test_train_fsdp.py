"""`kumo train dit --fsdp` on CPU (gloo): 2 FSDP ranks (also as one Ulysses group) train
to the same weights as one process on the same global batch, and their sharded
checkpoint resumes in one process.

A stage's `batch_size` is the global batch under --fsdp (split over the data-parallel
ranks, random draws made once and sliced), so the same config file trained by 1 or 2
processes sees the same data and the same noise. The reference is the ordinary
(non-FSDP) trainer in this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import dit_config_file, tiny_dit_settings

from kumovideo.distributed.spawn import run_workers

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_thread_per_module")]

START = os.environ.get("KUMO_SPAWN_METHOD", "fork")  # fork: no re-import per worker
PARTS = ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")


def make_run(tmp: Path, name: str, fixtures_dir: Path, tokenizer_dir: Path) -> tuple[Path, Path]:
    # 2 steps a stage at batch 2: one clip per rank of 2.
    settings = tiny_dit_settings(fixtures_dir, stage_steps=2, warmup_steps=1, checkpoint_every=2)
    return dit_config_file(tmp, name, settings, tokenizer_dir)


def _fsdp_worker(rank, world, config_path, stop_after, ulysses=1):
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    train_dit(load_config(config_path), setup_runtime("cpu"), fsdp=True, stop_after=stop_after, ulysses=ulysses)


def log_rows(out: Path) -> list[dict]:
    lines = (out / "loss_log.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def assert_close_pipelines(ref: Path, out: Path) -> None:
    for part in PARTS:
        a, b = load_file(str(ref / "pipeline" / part)), load_file(str(out / "pipeline" / part))
        assert a.keys() == b.keys(), part
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=2e-5, rtol=1e-4, msg=f"{part}: {key}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fixtures_dir, tokenizer_dir) -> Path:
    """The ordinary trainer, one process, the same config (global batch 2)."""
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    path, out = make_run(tmp_path_factory.mktemp("ref"), "ref", fixtures_dir, tokenizer_dir)
    train_dit(load_config(path), setup_runtime("cpu"))
    return out


@pytest.mark.parametrize("ulysses", [1, 2], ids=["fsdp", "fsdp-ulysses2"])
def test_two_fsdp_ranks_equal_one_process(reference, fixtures_dir, tokenizer_dir, tmp_path, ulysses):
    """ulysses=1: each rank one clip of the batch; ulysses=2: both ranks the whole batch,
    the vision tokens split between them."""
    path, out = make_run(tmp_path, "fsdp", fixtures_dir, tokenizer_dir)
    run_workers(_fsdp_worker, 2, path, None, ulysses, start_method=START)
    # Sharded DCP checkpoints at 2 and 4 (keep 2), complete, no temp folders left.
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-0000002", "step-0000004"], names
    assert all((out / "checkpoints" / n / ".metadata").exists() for n in names)
    # The export is the ordinary pipeline folder with whole (EMA) weights.
    assert_close_pipelines(reference, out)
    # The log holds the global batch's loss and gradient norm, as the one process logged them.
    rows, ref_rows = log_rows(out), log_rows(reference)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    for key in ("loss", "grad_norm"):
        assert [float(r[key]) for r in rows] == pytest.approx([float(r[key]) for r in ref_rows], rel=1e-5), key
    assert [r["frames"] for r in rows] == [r["frames"] for r in ref_rows]


def test_two_rank_checkpoint_resumes_in_one_process(reference, fixtures_dir, tokenizer_dir, tmp_path, capsys):
    """Stopped after step 3 on 2 ranks (checkpoint at 2): `--fsdp --resume` in this
    process (a process group of one) redoes step 3, finishes and exports the same weights."""
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    path, out = make_run(tmp_path, "resumed", fixtures_dir, tokenizer_dir)
    run_workers(_fsdp_worker, 2, path, 3, start_method=START)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002"]
    assert not (out / "pipeline").exists()
    capsys.readouterr()
    train_dit(load_config(path), setup_runtime("cpu"), resume=True, fsdp=True)
    assert "(step 2)" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()  # the group of one is gone again
    assert_close_pipelines(reference, out)

    # The ordinary trainer refuses the sharded checkpoint in one line.
    from kumovideo.cli import main

    assert main(["train", "dit", "--config", str(path), "--device", "cpu", "--resume"]) == 2
    assert "resume it with --fsdp" in capsys.readouterr().err

    # A sharded checkpoint of another architecture: one line, not DCP's per-rank report.
    import json

    other = json.loads(path.read_text())
    other["preset"] = "kumo-builtin"
    path.write_text(json.dumps(other))
    assert main(["train", "dit", "--config", str(path), "--device", "cpu", "--resume", "--fsdp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kumo: error: checkpoint ") and "different model or config" in err, err
    assert err.count("\n") == 1 and len(err) < 500, err


def test_ulysses_needs_fsdp_and_dit(tmp_path, capsys):
    from kumovideo.cli import main

    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "kind": "vae",
                "output_dir": str(tmp_path / "o"),
                "stages": [{"name": "s", "steps": 1, "size": 32, "num_frames": 9}],
            }
        )
    )
    assert main(["train", "vae", "--config", str(path), "--fsdp"]) == 2
    assert "--fsdp applies to `kumo train dit` only" in capsys.readouterr().err
    assert main(["train", "vae", "--config", str(path), "--ulysses", "2"]) == 2
    assert "--ulysses applies to `kumo train dit --fsdp` only" in capsys.readouterr().err
