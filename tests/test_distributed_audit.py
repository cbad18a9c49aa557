"""Scaling out, as a user with several processes meets it (CPU, gloo): ranks that were given
other random states still make rank 0's clip, a stray WORLD_SIZE is one line, a training
process group is torn down before the interpreter, and a DDP run resumed on another number
of processes says that its data changes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_distributed_generate import CALL, TOL, make_pipe
from tiny_runs import dit_config_file, tiny_dit_settings

from kumovideo.distributed.spawn import free_port, run_workers
from kumovideo.utils.errors import KumoInputError

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_thread_per_module")]

START = os.environ.get("KUMO_SPAWN_METHOD", "fork")  # fork: no re-import per worker
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


# ------------------------------------------------------------------------- generation


def _per_rank_seed_worker(rank, world, outdir):
    """What a multi-GPU script often does: seed each rank differently."""
    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

    pipe = ParallelKumoPipeline(make_pipe(), "cfg=2")
    given = pipe(**CALL, output_type="latent", generator=torch.Generator().manual_seed(rank)).frames
    torch.manual_seed(rank)  # no generator: torch's global RNG, seeded per rank
    global_rng = pipe(**CALL, output_type="latent").frames
    torch.save({"given": given, "global": global_rng}, Path(outdir) / f"rank{rank}.pt")


def test_ranks_seeded_differently_still_give_rank0s_clip(tmp_path):
    """Each rank steps its own copy of the latents; with other noise per rank they diverged
    silently and rank 0 decoded a mix. Now every rank takes rank 0's random state."""
    run_workers(_per_rank_seed_worker, 2, str(tmp_path), start_method=START)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    pipe = make_pipe()
    expected = pipe(**CALL, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    torch.manual_seed(0)
    expected_global = pipe(**CALL, output_type="latent").frames
    for rank in ranks:
        torch.testing.assert_close(rank["given"], expected, **TOL)
        torch.testing.assert_close(rank["global"], expected_global, **TOL)


# ------------------------------------------------------------------------- the launch environment


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 is set but MASTER_ADDR and MASTER_PORT not"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "do not fit together"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' in the environment is not a whole number"),
    ],
)
def test_a_stray_launch_environment_is_one_line(monkeypatch, env, needle):
    """A WORLD_SIZE left in a plain shell failed deep in init_process_group with a traceback."""
    from kumovideo.training.runtime import setup_runtime

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def never(*args, **kwargs):  # it would wait (30 min) for ranks that never come
        raise AssertionError("init_process_group reached")

    monkeypatch.setattr("torch.distributed.init_process_group", never)
    with pytest.raises(KumoInputError, match=needle) as caught:
        setup_runtime("cpu")
    assert "\n" not in str(caught.value)


_EXIT_SCRIPT = """
import atexit, os, time
import torch.distributed as dist
from kumovideo.training.runtime import setup_runtime

runtime = setup_runtime("cpu")
assert dist.is_initialized()
if runtime.rank == 0:
    time.sleep(1)  # rank 1 leaves first, as it does while rank 0 writes the export
    open(os.environ["DONE"], "w").write("written")
atexit._run_exitfuncs()  # what the interpreter runs before it finalizes
print(f"rank {runtime.rank} group alive after exit handlers: {dist.is_initialized()}")
"""


def test_training_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    """A gloo group left to interpreter finalization can abort the rank that finished first
    (SIGABRT), and torchrun then kills rank 0 while it still writes the export."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_EXIT_SCRIPT))
    done = tmp_path / "done.txt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    result = subprocess.run(
        [*cmd, str(script)], capture_output=True, text=True, env={**ENV, "DONE": str(done)}, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert done.read_text() == "written"
    assert result.stdout.count("group alive after exit handlers: False") == 2, result.stdout


# ------------------------------------------------------------------------- DDP resume


def _ddp_worker(rank, world, config_path, stop_after):
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    train_dit(load_config(config_path), setup_runtime("cpu"), stop_after=stop_after)


def test_ddp_resume_on_another_world_size_says_the_data_changes(fixtures_dir, tokenizer_dir, tmp_path, caplog, capsys):
    """Under DDP batch_size is per rank and batch `step` of rank r is fixed by (step, r,
    world size): resuming 2 ranks' checkpoint in 1 process trains examples again, silently
    until now. The checkpoint records its world size and the resume says it, once."""
    from kumovideo.training.config import load_config
    from kumovideo.training.runtime import setup_runtime
    from kumovideo.training.train_dit import train_dit

    settings = tiny_dit_settings(fixtures_dir, stage_steps=2, warmup_steps=1, checkpoint_every=2)
    path, out = dit_config_file(tmp_path, "ddp", settings, tokenizer_dir)
    run_workers(_ddp_worker, 2, path, 2, start_method=START)
    state = json.loads((out / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert state["world_size"] == 2
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="kumovideo.training.loop"):
        train_dit(load_config(path), setup_runtime("cpu"), resume=True, stop_after=3)
    warned = [r.getMessage() for r in caplog.records if "trained on 2 process(es), on 1" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0], caplog.text
    assert "(step 2)" in capsys.readouterr().out


def test_ulysses_refuses_a_bucket_whose_tokens_do_not_split_before_any_step():
    from types import SimpleNamespace

    from kumovideo.training.config import Stage, TrainConfig
    from kumovideo.training.preflight import check_latent_shapes

    class Source:  # one cache of 3 latent frames of 6x6 latents: 3 x 3 x 3 = 27 vision tokens (9 an image)
        def cache(self, path):
            return SimpleNamespace(index={}), [0]

        def buckets(self, path):
            return [((4, 3, 6, 6), [0])]

    transformer = SimpleNamespace(patch_size=2)
    vae = SimpleNamespace(
        scaling_factor=1.0, latent_channels=4, block_out_channels=(8, 8, 8, 8), temporal_compression_ratio=4
    )
    config = TrainConfig(
        stages=[Stage(name="s", steps=1, latents="cache", batch_size=1)], kind="dit", output_dir="unused"
    )
    check_latent_shapes(config, Source(), transformer, vae, ulysses=3)  # 27 splits over 3
    with pytest.raises(KumoInputError, match=r"27 vision tokens, which --ulysses 2 does not split"):
        check_latent_shapes(config, Source(), transformer, vae, ulysses=2)
    images = TrainConfig(
        stages=[Stage(name="s", steps=1, latents="cache", batch_size=1, image_prob=0.5)],
        kind="dit",
        output_dir="unused",
    )
    with pytest.raises(KumoInputError, match=r"1 latent frame\(s\) give 9 vision tokens, which --ulysses 27"):
        check_latent_shapes(images, Source(), transformer, vae, ulysses=27)


def test_a_stand_in_transformer_refuses_an_image_or_a_video_it_would_drop():
    """ParallelTransformer.forward passes x, text and t only: an image's `condition=` was
    dropped without a word, and a source video needs the VAE's encoder on every rank."""
    import numpy as np

    from kumovideo.models.transformer_kumo import expand_for_frame_conditioning
    from kumovideo.pipelines.factory import build_pipeline

    class StandIn(torch.nn.Module):  # what --parallel puts in the transformer's place
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        @property
        def dtype(self):
            return self.inner.dtype

        def forward(self, hidden_states, encoder_hidden_states, timestep, return_dict=False, **kwargs):
            return self.inner(hidden_states, encoder_hidden_states, timestep, return_dict=False)

    pipe = build_pipeline("kumo-tiny")
    pipe.transformer = StandIn(expand_for_frame_conditioning(pipe.transformer))
    pipe.set_progress_bar_config(disable=True)
    frames = np.zeros((9, 48, 64, 3), np.uint8)
    for kwargs in ({"image": frames[0]}, {"video": frames}):
        with pytest.raises(KumoInputError, match=r"conditioning frames \(image=\) and video= run in one process"):
            pipe("a red circle", num_inference_steps=1, **kwargs)
