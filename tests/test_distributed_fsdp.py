"""FSDP2 training on CPU (gloo): equals single-process training; DCP checkpoints written
by 2 ranks resume on 1 and on 4.

The model is the tiny MADiT with every weight perturbed (the DiT zero-init would leave
half of the network without gradient at step 0); the loss is the v-prediction MSE on a
fixed random batch of 4 clips; AdamW. Each worker recomputes the single-process
reference itself (it is cheap and deterministic) and compares.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from kumovideo.distributed.spawn import run_workers

pytestmark = pytest.mark.timeout(240)

START = os.environ.get("KUMO_SPAWN_METHOD", "fork")  # fork: no re-import per worker, seconds instead of a minute
GLOBAL_BATCH = 4
STEPS = 3
LR = 1e-3
ATOL = 2e-5


def make_model():
    from kumovideo.models import madit_from_preset

    torch.manual_seed(0)
    model = madit_from_preset("kumo-tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def batch(step: int):
    """Deterministic (x_t, text, t, v_target) for a training step, global batch."""
    g = torch.Generator().manual_seed(100 + step)
    x0 = torch.randn(GLOBAL_BATCH, 3, 4, 6, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    text = torch.randn(GLOBAL_BATCH, 16, 24, generator=g)
    t = torch.randint(0, 1000, (GLOBAL_BATCH,), generator=g)
    a = torch.linspace(0.999, 0.001, 1000)[t].view(-1, 1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    return x_t, text, t, v


def train(model, optimizer, steps, shard=slice(None), forward=None):
    forward = forward or (lambda m, x, c, t: m(x, c, t).sample)
    losses = []
    for step in steps:
        x_t, text, t, v = (b[shard] for b in batch(step))
        loss = torch.nn.functional.mse_loss(forward(model, x_t, text, t), v)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def reference(steps):
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = train(model, optimizer, steps)
    return model.state_dict(), losses


def assert_params_close(model_sd, ref_sd):
    assert set(model_sd) == set(ref_sd)
    for name, ref in ref_sd.items():
        torch.testing.assert_close(model_sd[name].float(), ref.float(), atol=ATOL, rtol=1e-4, msg=name)


def full_params(model):
    from kumovideo.distributed.fsdp import full_state_dict

    return full_state_dict(model)


# ------------------------------------------------------------------------- workers


def _fsdp_training_worker(rank, world, _):
    from kumovideo.distributed.fsdp import shard_model, training_mesh
    from kumovideo.distributed.ulysses import sequence_parallel_forward

    ref_sd, ref_losses = reference(range(STEPS))

    # 1. Data parallel: each rank half of the batch.
    tm = training_mesh(ulysses=1, device_type="cpu")
    model = shard_model(make_model(), tm.fsdp_mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    per = GLOBAL_BATCH // tm.dp_size
    train(model, optimizer, range(STEPS), slice(tm.dp_rank * per, (tm.dp_rank + 1) * per))
    sd = full_params(model)
    if rank == 0:
        assert_params_close(sd, ref_sd)

    # 2. FSDP + Ulysses sequence parallel: both ranks the whole batch, tokens split.
    tm = training_mesh(ulysses=world, device_type="cpu")

    def ulysses_run_matches_reference(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
        losses = train(
            model,
            optimizer,
            range(STEPS),
            forward=lambda m, x, c, t: sequence_parallel_forward(m, x, c, t, tm.ulysses_group),
        )
        assert losses == pytest.approx(ref_losses, rel=1e-5)
        sd = full_params(model)
        if rank == 0:
            assert_params_close(sd, ref_sd)

    ulysses_run_matches_reference(shard_model(make_model(), tm.fsdp_mesh))

    # 3. The same with gradient checkpointing: Ulysses installed for good (the recompute runs in backward).
    from kumovideo.distributed.ulysses import enable_ulysses

    model = make_model()
    model.enable_gradient_checkpointing()
    with pytest.raises(ValueError, match="enable_ulysses"):
        sequence_parallel_forward(model, *batch(0)[:3], tm.ulysses_group)
    enable_ulysses(model, tm.ulysses_group)
    ulysses_run_matches_reference(shard_model(model, tm.fsdp_mesh))

    # 4. bf16 mixed precision runs and trains (not bit-comparable: parameters gathered in bf16).
    model = shard_model(make_model(), training_mesh(device_type="cpu").fsdp_mesh, mixed_precision="bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = train(model, optimizer, range(STEPS), slice(rank * 2, rank * 2 + 2))
    assert all(math.isfinite(x) for x in losses)
    assert next(model.parameters()).dtype == torch.float32  # fp32 master weights


def _write_checkpoint_worker(rank, world, directory):
    from kumovideo.distributed.fsdp import save_sharded, shard_model, training_mesh

    tm = training_mesh(device_type="cpu")
    model = shard_model(make_model(), tm.fsdp_mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    per = GLOBAL_BATCH // world
    train(model, optimizer, range(STEPS - 1), slice(rank * per, (rank + 1) * per))
    save_sharded({"model": model, "optimizer": optimizer, "step": STEPS - 1, "note": "two ranks"}, directory)


def _resume_worker(rank, world, directory, ulysses):
    from kumovideo.distributed.fsdp import load_sharded, shard_model, training_mesh
    from kumovideo.distributed.ulysses import sequence_parallel_forward

    ref_sd, _ = reference(range(STEPS))
    tm = training_mesh(ulysses=ulysses, device_type="cpu")
    model = shard_model(make_model(), tm.fsdp_mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    state = load_sharded({"model": model, "optimizer": optimizer, "step": 0, "note": ""}, directory)
    assert state["step"] == STEPS - 1 and state["note"] == "two ranks"
    per = GLOBAL_BATCH // tm.dp_size
    train(
        model,
        optimizer,
        range(state["step"], STEPS),
        slice(tm.dp_rank * per, (tm.dp_rank + 1) * per),
        forward=lambda m, x, c, t: sequence_parallel_forward(m, x, c, t, tm.ulysses_group),
    )
    sd = full_params(model)
    if rank == 0:
        assert_params_close(sd, ref_sd)


# ------------------------------------------------------------------------- tests


def test_fsdp_training_equals_single_process():
    """2 ranks: FSDP data parallel, FSDP + Ulysses, and a bf16 mixed-precision smoke run."""
    run_workers(_fsdp_training_worker, 2, None, start_method=START)


def test_checkpoint_from_2_ranks_resumes_on_1_and_4(tmp_path):
    """Train 2 steps on 2 ranks, save with DCP; resume for the 3rd step on 1 process (plain
    model, no process group) and on 4 (FSDP x Ulysses 2): both equal 3 uninterrupted steps."""
    from kumovideo.distributed.fsdp import load_sharded

    ckpt = tmp_path / "ckpt"
    run_workers(_write_checkpoint_worker, 2, ckpt, start_method=START)
    assert (ckpt / ".metadata").exists()
    assert not (tmp_path / ".ckpt.tmp").exists()

    # 1 process, no process group, unsharded model.
    ref_sd, _ = reference(range(STEPS))
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    state = load_sharded({"model": model, "optimizer": optimizer, "step": 0, "note": ""}, ckpt)
    assert state["step"] == STEPS - 1
    train(model, optimizer, range(state["step"], STEPS))
    assert_params_close(model.state_dict(), ref_sd)

    # 4 ranks: FSDP over 4, Ulysses groups of 2 (2 data shards).
    run_workers(_resume_worker, 4, ckpt, 2, start_method=START)


def test_load_sharded_names_a_missing_checkpoint(tmp_path):
    from kumovideo.distributed.fsdp import load_sharded

    with pytest.raises(FileNotFoundError, match="no sharded checkpoint"):
        load_sharded({"model": torch.nn.Linear(2, 2)}, tmp_path / "nothing")


def test_ulysses_refuses_every_feature_it_does_not_carry_in_one_line():
    """`sequence_parallel_forward` passes x_t, text and t only: a run that needs more is refused
    before any step, every such feature named at once, whether the config or the initial
    transformer's own config brings it."""
    from kumovideo.training.config import TrainConfig
    from kumovideo.training.train_dit import check_ulysses_features
    from kumovideo.utils.errors import KumoInputError

    plain = TrainConfig(kind="dit", output_dir="unused", stages=[])
    check_ulysses_features(plain, {"multiscale_patch_sizes": None, "motion_conditioning": False})
    lumina = {"multiscale_patch_sizes": [4], "motion_conditioning": True}
    with pytest.raises(KumoInputError) as info:
        check_ulysses_features(plain, lumina)
    assert str(info.value) == "multi-scale patches, motion conditioning do not run under --ulysses yet; drop --ulysses"
    contrast = TrainConfig(
        kind="dit", output_dir="unused", stages=[], binding_contrast_weight=0.1, position_shift_prob=0.5
    )
    with pytest.raises(KumoInputError, match="^binding_contrast_weight, position_shift_prob do not run"):
        check_ulysses_features(contrast, {})
    coarse_never_drawn = TrainConfig(kind="dit", output_dir="unused", stages=[], multiscale_prob=0.0)
    check_ulysses_features(coarse_never_drawn, lumina | {"motion_conditioning": False})
