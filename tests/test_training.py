"""Training: `kumo train vae|dit` on CI-sized configs (kumo-tiny, 32x32, a few steps).

What is checked is what a user of the trainers relies on: a few steps make the model
better on data it never trained on (measured on a fixed batch, not read off the noisy
training log), the exported folders load and carry what the next stage needs, a run
stopped (or `kill -9`-ed) and resumed ends on exactly the weights of an uninterrupted
run, checkpoints on disk are always complete, and a bad config is one `kumo: error:`
line with exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_checks import assert_one_line_error
from data_synth import tiny_vae
from safetensors.torch import load_file
from tiny_runs import dit_config_file, tiny_dit_settings, write_config

from kumovideo.cli import main
from kumovideo.training import checkpointing
from kumovideo.training.checkpointing import list_checkpoints, load_checkpoint, save_checkpoint
from kumovideo.training.config import load_config
from kumovideo.training.loop import stage_lr_schedule
from kumovideo.training.objectives import diffuse, sample_timesteps
from kumovideo.training.runtime import setup_runtime
from kumovideo.training.shapes_batches import shapes_batch

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 4242  # a ShapesWorld stream neither trainer draws from


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {len(different)} tensors differ, e.g. {different[:3]}"


def assert_same_optimizer_state(a: Path, b: Path) -> None:
    sa = torch.load(a, map_location="cpu", weights_only=True)
    sb = torch.load(b, map_location="cpu", weights_only=True)
    assert sa["lr_scheduler"] == sb["lr_scheduler"]
    ga, gb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert ga.keys() == gb.keys()
    for key in ga:
        for name in ga[key]:
            assert torch.equal(torch.as_tensor(ga[key][name]), torch.as_tensor(gb[key][name])), (key, name)


# ------------------------------------------------------------------------------- VAE

VAE_CONFIG = {
    "kind": "vae",
    "preset": "kumo-tiny",
    "lr": 1e-3,
    "warmup_steps": 1,
    "log_every": 1,
    "checkpoint_every": 4,
    "stages": [
        {
            "name": "clips",
            "steps": 12,
            "size": 32,
            "num_frames": 9,
            "batch_size": 2,
            "crop": 16,
            "crop_frames": 9,
            "image_prob": 0.25,
        }
    ],
}


def vae_config(tmp: Path, name: str, **overrides):
    out = tmp / name
    out.mkdir(parents=True, exist_ok=True)
    return load_config(write_config(tmp / f"{name}.json", VAE_CONFIG), {"output_dir": str(out), **overrides})


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """One uninterrupted 12-step VAE run: the reference for the tests below."""
    from kumovideo.training.train_vae import train_vae

    tmp = tmp_path_factory.mktemp("vae")
    config = vae_config(tmp, "full")
    train_vae(config, setup_runtime("cpu"))
    return config


@torch.no_grad()
def reconstruction_loss(vae, videos: torch.Tensor) -> float:
    """MSE + L1 of whole clips through encode (posterior mean) and decode: deterministic."""
    vae.eval()
    reconstruction = vae.decode(vae.encode(videos).latent_dist.mean).sample
    return (F.mse_loss(reconstruction, videos) + F.l1_loss(reconstruction, videos)).item()


def test_vae_steps_reduce_held_out_reconstruction_loss(vae_run):
    from kumovideo.pipelines.factory import build_vae
    from kumovideo.pipelines.loading import load_vae

    videos, _ = shapes_batch(HELD_OUT_SEED, 0, 4, 0, 1, 32, 9)  # whole clips, never trained on
    torch.manual_seed(vae_run.seed)  # train_vae's initial weights
    before = reconstruction_loss(build_vae("kumo-tiny"), videos)
    after = reconstruction_loss(load_vae(Path(vae_run.output_dir) / "vae"), videos)
    assert after < 0.8 * before, (before, after)

    rows = (Path(vae_run.output_dir) / "loss_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "stage", "loss"]
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 13))


def test_vae_export_loads_with_scaling_factor_and_psnr(vae_run):
    from kumovideo.pipelines.loading import load_vae
    from kumovideo.training.train_vae import HELD_OUT_SEED_OFFSET, held_out_psnr

    folder = Path(vae_run.output_dir) / "vae"
    vae = load_vae(folder).eval()
    # The scaling factor is 1 / std of the trained VAE's latents (unit variance for the DiT).
    videos, _ = shapes_batch(vae_run.data_seed + HELD_OUT_SEED_OFFSET, 1, 16, 0, 1, 32, 9)
    with torch.no_grad():
        std = vae.encode(videos).latent_dist.mean.std().item()
    assert vae.config.scaling_factor == pytest.approx(1 / std, rel=1e-4)
    report = json.loads((folder / "eval.json").read_text())
    assert report["size"] == 32 and report["num_frames"] == 9 and report["clips"] == 16
    assert math.isfinite(report["held_out_psnr_db"]) and report["held_out_psnr_db"] > 8
    assert report["held_out_psnr_db"] == pytest.approx(held_out_psnr(vae, vae_run.data_seed, 32, 9), abs=1e-3)
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_vae_stop_and_resume_is_bit_exact(vae_run, tmp_path, capsys):
    from kumovideo.training.train_vae import train_vae

    config = vae_config(tmp_path, "resumed")
    out = Path(config.output_dir)
    train_vae(config, setup_runtime("cpu"), stop_after=6)  # checkpoint at 4; steps 5-6 are redone
    assert [p.name for p in list_checkpoints(out)] == ["step-0000004"]
    assert not (out / "vae").exists()  # a stopped run exports nothing
    capsys.readouterr()
    train_vae(config, setup_runtime("cpu"), resume=True)
    assert "resumed from" in capsys.readouterr().out

    ref = Path(vae_run.output_dir)
    assert_same_tensors(
        tensors_of(ref / "vae/diffusion_pytorch_model.safetensors"),
        tensors_of(out / "vae/diffusion_pytorch_model.safetensors"),
        "exported VAE",
    )
    for name in ("vae.safetensors", "ema.safetensors"):
        assert_same_tensors(
            tensors_of(ref / "checkpoints/step-0000012" / name),
            tensors_of(out / "checkpoints/step-0000012" / name),
            name,
        )
    assert_same_optimizer_state(
        ref / "checkpoints/step-0000012/optimizer.pt", out / "checkpoints/step-0000012/optimizer.pt"
    )


def test_vae_stage_world_settings_read_as_a_string_or_a_list():
    """`buckets` and `motion_range` take `kumo train cache-latents`' comma form or a YAML list."""
    from kumovideo.training.config import Stage, stage_frames, stage_motion_amounts

    as_text = Stage(name="s", steps=1, buckets="128x128, 224x128", motion_range="0.5,1.5")
    as_list = Stage(name="s", steps=1, buckets=["128x128", "224x128"], motion_range=[0.5, 1.5])
    for stage in (as_text, as_list):
        assert stage_frames(stage) == [(128, 128), (224, 128)]
        assert stage_motion_amounts(stage) == (0.5, 1.5)


def test_vae_decoder_run_renders_its_buckets_and_keeps_the_latent_space(vae_run, tmp_path, monkeypatch):
    """A decoder-only stage with aspect buckets and a motion range: each batch renders at its
    bucket's frame (in turn), the encoder and the scaling factor (what the DiTs trained on
    these latents expect) stay as they were, the decoder learns, and the export is fp16."""
    from kumovideo.training import train_vae as train_vae_module

    start = Path(vae_run.output_dir) / "vae"
    rendered = []
    real_batch = train_vae_module.shapes_batch_v11

    def recording_batch(*args):
        videos, captions, amounts = real_batch(*args)
        rendered.append((tuple(videos.shape[-2:]), videos.shape[2], amounts))
        return videos, captions, amounts

    monkeypatch.setattr(train_vae_module, "shapes_batch_v11", recording_batch)
    stage = {**VAE_CONFIG["stages"][0], "steps": 4, "image_prob": 0.0}
    stage.update(buckets="32x32, 48x32", motion_range=[0.5, 1.5])
    config = vae_config(
        tmp_path, "decoder", init_from=str(start), train_encoder=False, stages=[stage], export_fp16=True
    )
    train_vae_module.train_vae(config, setup_runtime("cpu"))

    assert [size for size, _, _ in rendered] == [(32, 32), (32, 48), (32, 32), (32, 48)]  # (H, W) in turn
    amounts = [m for _, _, batch in rendered for m in batch]
    assert all(0.5 <= m <= 1.5 for m in amounts) and len(set(amounts)) > 1
    before, after = (
        tensors_of(start / "diffusion_pytorch_model.safetensors"),
        tensors_of(Path(config.output_dir) / "vae/diffusion_pytorch_model.safetensors"),
    )
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert all(t.dtype == torch.float16 for t in after.values())  # export_fp16: half the size on disk
    assert encoder and all(torch.equal(before[k].half(), after[k]) for k in encoder)
    assert any(not torch.equal(before[k].half(), after[k]) for k in decoder)
    saved = json.loads((Path(config.output_dir) / "vae/config.json").read_text())
    assert saved["scaling_factor"] == json.loads((start / "config.json").read_text())["scaling_factor"]


# ------------------------------------------------------------------------------- DiT


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory, fixtures_dir, tokenizer_dir):
    """One uninterrupted 16-step DiT run (8 image steps, 8 video steps): the reference."""
    from kumovideo.training.train_dit import train_dit

    tmp = tmp_path_factory.mktemp("dit")
    path, _ = dit_config_file(tmp, "full", tiny_dit_settings(fixtures_dir), tokenizer_dir)
    config = load_config(path)
    train_dit(config, setup_runtime("cpu"))
    return config


@torch.no_grad()
def fixed_v_loss(components: dict, batch: dict) -> float:
    """The v-prediction loss on a fixed batch (same latents, noise, timesteps, captions)."""
    transformer, text_encoder = components["transformer"], components["text_encoder"]
    tokenizer = components["tokenizer"]
    transformer.eval()
    text_encoder.eval()
    ids = tokenizer(
        batch["captions"],
        padding="max_length",
        max_length=transformer.config.max_text_seq_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    alphas = components["scheduler"].alphas_cumprod.float()
    x_t, v = diffuse(batch["latents"], batch["noise"], alphas[batch["t"]])
    v_pred = transformer(x_t, text_encoder(ids)[0], batch["t"], return_dict=False)[0]
    return F.mse_loss(v_pred.float(), v).item()


def fixed_dit_batch(vae, num_frames: int, clips: int = 8, sample: bool = True) -> dict:
    """Held-out clips encoded as training encodes them, (mean + std * noise) * scaling
    (or the posterior mean alone), with the posterior noise, the diffusion noise and the
    timesteps all fixed."""
    videos, captions = shapes_batch(HELD_OUT_SEED, 0, clips, 0, 1, 32, num_frames)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        posterior = vae.encode(videos).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=g)
        latents = (posterior.mean + (posterior.std * noise if sample else 0)) * vae.config.scaling_factor
    latents = latents.permute(0, 2, 1, 3, 4).contiguous()  # (B, F, C, h, w)
    return {
        "latents": latents,
        "captions": captions,
        "noise": torch.randn(latents.shape, generator=g),
        "t": torch.linspace(20, 980, clips).long(),
    }


def test_dit_steps_reduce_v_loss_on_a_fixed_batch(vae_run, fixtures_dir, tokenizer_dir, tmp_path):
    """On the VAE trained above (the fixture VAE has random weights: its latents are
    nearly all posterior noise, which no DiT can learn to predict)."""
    from kumovideo.pipelines.loading import load_pipeline_components
    from kumovideo.training.components import build_components
    from kumovideo.training.train_dit import train_dit

    settings = tiny_dit_settings(fixtures_dir)
    settings = {**settings, "lr": 3e-3, "checkpoint_every": 100, "vae": str(Path(vae_run.output_dir) / "vae")}
    path, out = dit_config_file(tmp_path, "learns", settings, tokenizer_dir)
    config = load_config(path)
    initial = build_components(config)  # same seed: the weights the run starts from
    train_dit(config, setup_runtime("cpu"))
    trained = load_pipeline_components(out / "pipeline")  # the EMA weights
    for frames in (1, 9):
        batch = fixed_dit_batch(initial["vae"], frames)
        before, after = fixed_v_loss(initial, batch), fixed_v_loss(trained, batch)
        assert after < 0.96 * before, (frames, before, after)
        # The clips' posterior means: the structure the DiT has to learn, without the VAE's noise.
        clean = fixed_dit_batch(initial["vae"], frames, sample=False)
        before, after = fixed_v_loss(initial, clean), fixed_v_loss(trained, clean)
        assert after < 0.9 * before, (frames, before, after)


def test_dit_logs_image_and_video_steps(dit_run):
    rows = [r.split(",") for r in (Path(dit_run.output_dir) / "loss_log.csv").read_text().splitlines()]
    header = rows[0]
    assert header[:4] == ["step", "stage", "loss", "grad_norm"]
    frames = [int(r[header.index("frames")]) for r in rows[1:]]
    stages = [r[1] for r in rows[1:]]
    assert stages == ["images"] * 8 + ["video"] * 8
    # Stage 2 trains on 3-latent-frame clips, and on stills for ~30% of its steps (image_prob).
    assert set(frames[:8]) == {1} and set(frames[8:]) == {1, 3}, frames
    assert all(math.isfinite(float(r[2])) for r in rows[1:])


def test_dit_initial_weights_depend_only_on_the_seed(dit_run):
    """Two builds from one config in one process start from the same weights, whatever
    the process's RNG did in between (a resumed or repeated run relies on it)."""
    from kumovideo.training.components import build_components

    a = build_components(dit_run)
    torch.randn(1000)
    b = build_components(dit_run)
    for name in ("transformer", "text_encoder"):
        assert_same_tensors(a[name].state_dict(), b[name].state_dict(), name)


def test_dit_stop_and_resume_is_bit_exact(dit_run, fixtures_dir, tokenizer_dir, tmp_path, capsys):
    from kumovideo.training.train_dit import train_dit

    path, out = dit_config_file(tmp_path, "resumed", tiny_dit_settings(fixtures_dir), tokenizer_dir)
    config = load_config(path)
    train_dit(config, setup_runtime("cpu"), stop_after=10)  # checkpoints at 4 and 8, across the stage change
    assert [p.name for p in list_checkpoints(out)] == ["step-0000004", "step-0000008"]
    assert not (out / "pipeline").exists()
    capsys.readouterr()
    leftover = out / "checkpoints" / ".step-0000012.tmp-killed"  # what a save killed mid-write leaves
    leftover.mkdir()
    (leftover / "state.json").write_text("{}")
    train_dit(config, setup_runtime("cpu"), resume=True)
    assert "(step 8)" in capsys.readouterr().out
    assert_same_dit_run(Path(dit_run.output_dir), out)
    assert not leftover.exists()
    # steps 9-10 ran twice (before the stop and after the resume) but are logged once
    steps = [int(line.split(",")[0]) for line in (out / "loss_log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 17))


def assert_same_dit_run(ref: Path, out: Path) -> None:
    for part in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert_same_tensors(tensors_of(ref / "pipeline" / part), tensors_of(out / "pipeline" / part), part)
    last = "checkpoints/step-0000016"
    for name in ("transformer.safetensors", "text_encoder.safetensors", "ema.safetensors"):
        assert_same_tensors(tensors_of(ref / last / name), tensors_of(out / last / name), name)
    assert_same_optimizer_state(ref / last / "optimizer.pt", out / last / "optimizer.pt")


def fresh_dit_modules(config):
    """Freshly built transformer + text encoder, optimizer and LR schedule, as train_dit makes them."""
    from kumovideo.training.components import build_components

    c = build_components(config)
    modules = {"transformer": c["transformer"], "text_encoder": c["text_encoder"]}
    optimizer = torch.optim.AdamW(
        [{"params": list(c["transformer"].parameters())}, {"params": list(c["text_encoder"].parameters())}],
        lr=config.lr,
    )
    return modules, optimizer, stage_lr_schedule(optimizer, config)


def test_dit_kill_9_then_resume(dit_run, fixtures_dir, tokenizer_dir, tmp_path):
    """`kill -9` a `kumo train dit` that checkpoints every step, after its first checkpoint
    and (usually) in the middle of writing the next: every `step-*` folder left is complete
    and loads, temp folders are never listed, and --resume ends on the uninterrupted weights."""
    from kumovideo.training.train_dit import train_dit

    settings = {**tiny_dit_settings(fixtures_dir), "checkpoint_every": 1, "keep_checkpoints": 3}
    path, out = dit_config_file(tmp_path, "killed", settings, tokenizer_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kumovideo.cli", "train", "dit", "--config", str(path), "--device", "cpu"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    folder = out / "checkpoints"
    names: list[str] = []
    try:
        # Once step-0000001 is there, kill as soon as a later save is under way (a temp
        # folder appears; it is there for the few ms a save takes), or after 0.5 s.
        deadline, first = time.monotonic() + 180, None
        while proc.poll() is None and time.monotonic() < deadline:
            names = os.listdir(folder) if folder.exists() else []
            if first is None and any(n.startswith("step-") for n in names):
                first = time.monotonic()
            if first is not None and (any(n.startswith(".") for n in names) or time.monotonic() - first > 0.5):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")[-2000:]
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed:\n{stderr}"
    assert not (out / "pipeline").exists()

    on_disk = sorted(p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    listed = list_checkpoints(out)
    assert on_disk and listed == on_disk, (on_disk, listed)
    assert not [p for p in listed if p.name.startswith(".")]
    config = load_config(path)
    for ckpt in listed:
        assert sorted(p.name for p in ckpt.iterdir()) == [
            "ema.safetensors",
            "optimizer.pt",
            "state.json",
            "text_encoder.safetensors",
            "transformer.safetensors",
        ]
        modules, optimizer, schedule = fresh_dit_modules(config)
        step, ema, state = load_checkpoint(ckpt, modules, optimizer, schedule)
        assert step == int(ckpt.name.split("-")[1]) == state["step"]
        assert ema is not None and int(ema["__optimization_step__"]) == step
        assert schedule.last_epoch == step

    # A temp folder (what a kill mid-save leaves) is never listed, even one holding state.json.
    fake = out / "checkpoints" / f".step-{999:07d}.tmp-x"
    fake.mkdir()
    (fake / "state.json").write_text('{"step": 999}')
    assert list_checkpoints(out) == listed

    train_dit(config, setup_runtime("cpu"), resume=True)
    assert_same_dit_run(Path(dit_run.output_dir), out)


def test_checkpoint_pruning_interrupted_never_leaves_a_listed_partial_checkpoint(tmp_path, monkeypatch):
    """Old checkpoints are pruned after each save; a kill in the middle of deleting one must
    not leave a folder that `list_checkpoints` calls complete but that cannot be loaded."""
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, {"m": module}, None, optimizer, schedule, keep=2)

    real_rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # deletes the weights, then the process dies
        os.unlink(Path(path) / "m.safetensors")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, {"m": module}, None, optimizer, schedule, keep=2)
    monkeypatch.setattr(checkpointing.shutil, "rmtree", real_rmtree)
    for ckpt in list_checkpoints(tmp_path):
        load_checkpoint(ckpt, {"m": torch.nn.Linear(2, 2)}, optimizer, schedule)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000003"]


def test_dit_trains_from_a_latent_cache(fixtures_dir, tokenizer_dir, tmp_path):
    from kumovideo.pipelines.loading import load_vae
    from kumovideo.training.latent_cache import cache_shapes_latents
    from kumovideo.training.train_dit import train_dit

    vae = load_vae(fixtures_dir / "vae")
    index_path = cache_shapes_latents(
        vae, str(fixtures_dir / "vae"), tmp_path / "cache", num_clips=8, size=32, num_frames=9, seed=1000, batch_size=4
    )
    index = json.loads(index_path.read_text())
    assert len(index["clips"]) == 8 and all(c["shape"] == [4, 3, 4, 4] for c in index["clips"])
    assert index["vae"]["scaling_factor"] == pytest.approx(vae.config.scaling_factor)
    # The cache holds the posterior the on-the-fly path would have encoded.
    videos, captions = shapes_batch(1000, 1, 4, 0, 1, 32, 9)
    with torch.no_grad():
        mean = vae.encode(videos).latent_dist.mean
    assert [c["caption"] for c in index["clips"][4:]] == captions
    shard = load_file(str(tmp_path / "cache" / index["clips"][5]["shard"]))
    torch.testing.assert_close(shard[f"{index['clips'][5]['id']}/mean"].float(), mean[1], atol=2e-3, rtol=2e-3)

    settings = {
        **tiny_dit_settings(fixtures_dir),
        "checkpoint_every": 100,
        "stages": [
            {"name": "cached-video", "steps": 3, "num_frames": 9, "batch_size": 2, "latents": str(index_path)},
            {"name": "cached-images", "steps": 2, "num_frames": 1, "batch_size": 2, "latents": str(index_path)},
        ],
    }
    path, out = dit_config_file(tmp_path, "cached", settings, tokenizer_dir)
    metrics = train_dit(load_config(path), setup_runtime("cpu"))
    assert math.isfinite(metrics["loss"])
    rows = [r.split(",") for r in (out / "loss_log.csv").read_text().splitlines()]
    header = rows[0]
    assert [int(r[header.index("frames")]) for r in rows[1:]] == [3, 3, 3, 1, 1]
    assert (out / "pipeline" / "model_index.json").exists()


def test_cache_latents_held_back_share_draws_about_that_share_of_cyan_clips(fixtures_dir, tmp_path):
    """--held-back-share P: about P of the clips show cyan (each decided by its own seeded
    draw), exactly one object each; the other clips are the base cache's, clip for clip."""
    from kumovideo.training.shapes_batches import has_held_back

    for share in (0.25, 0.5):
        assert abs(sum(has_held_back(1000, i, share) for i in range(4000)) / 4000 - share) < 0.03
    assert not any(has_held_back(1000, i, 0.0) for i in range(100))
    assert all(has_held_back(1000, i, 1.0) for i in range(100))

    common = ["train", "cache-latents", "--vae", str(fixtures_dir / "vae"), "--size", "32", "--frames", "1"]
    common += ["--num-clips", "64", "--batch-size", "16"]
    assert main([*common, "--out", str(tmp_path / "cyan"), "--held-back-share", "0.5"]) == 0
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    cyan_index = json.loads((tmp_path / "cyan" / "index.json").read_text())
    base_index = json.loads((tmp_path / "base" / "index.json").read_text())
    assert cyan_index["source"]["held_back_share"] == 0.5 and "held_back_share" not in base_index["source"]
    cyan, base = ([c["caption"] for c in index["clips"]] for index in (cyan_index, base_index))
    shows = ["cyan" in text.split() for text in cyan]
    assert abs(sum(shows) - 32) <= 12 and shows == [has_held_back(1000, i, 0.5) for i in range(64)]  # 3 sd of 64 x 0.5
    assert all(text.split().count("cyan") == 1 for text in cyan if "cyan" in text)
    assert [c for c, s in zip(cyan, shows) if not s] == [b for b, s in zip(base, shows) if not s]
    assert not any("cyan" in text for text in base)


def test_holdout_captions_are_never_trained_on_and_stay_unseen_for_eval(fixtures_dir, tokenizer_dir, tmp_path):
    """With `holdout_captions: true` no batch holds a held-out caption, the exported
    training_captions.txt lists none of them, and a fine-tune started from that folder
    (`init_from`) still counts the first run's captions as seen."""
    from kumovideo.cli.eval import eval_captions
    from kumovideo.data.shapes_world import is_held_out
    from kumovideo.pipelines.loading import load_vae
    from kumovideo.training.data_sources import LatentSource, training_captions
    from kumovideo.training.latent_cache import cache_shapes_latents
    from kumovideo.training.train_dit import train_dit

    vae = load_vae(fixtures_dir / "vae")
    index_path = cache_shapes_latents(
        vae,
        str(fixtures_dir / "vae"),
        tmp_path / "cache",
        num_clips=48,
        size=32,
        num_frames=1,
        seed=1000,
        batch_size=16,
    )
    cached = [c["caption"] for c in json.loads(index_path.read_text())["clips"]]
    held = {c for c in cached if is_held_out(c)}
    assert held and len(held) < len(set(cached)) / 2  # about 1 in 8: this stream has some

    stage = {"name": "cached", "steps": 2, "num_frames": 1, "size": 32, "batch_size": 4, "latents": str(index_path)}
    settings = {
        **tiny_dit_settings(fixtures_dir),
        "holdout_captions": True,
        "checkpoint_every": 100,
        "stages": [stage],
    }
    path, out = dit_config_file(tmp_path, "holdout", settings, tokenizer_dir)
    config = load_config(path)
    source = LatentSource(config, vae, setup_runtime("cpu"))
    drawn = set()
    for step in range(40):
        drawn.update(source.batch(step, config.stages[0], torch.Generator().manual_seed(step))[1])
    assert drawn and not drawn & held
    assert drawn == set(cached) - held  # every other clip is still used

    train_dit(config, setup_runtime("cpu"))
    listed = set((out / "pipeline" / "training_captions.txt").read_text().splitlines())
    assert listed == set(cached) - held
    # The evaluation's captions avoid everything listed, so held-out ones can be drawn.
    assert not set(eval_captions(16, 2024, 32, 1, listed)) & listed
    # `kumo train export` of the last checkpoint: the same EMA weights and the same caption list.
    assert main(["train", "export", "--config", str(path), "--out", str(tmp_path / "export"), "--threads", "1"]) == 0
    assert set((tmp_path / "export" / "training_captions.txt").read_text().splitlines()) == listed
    assert_same_tensors(
        tensors_of(out / "pipeline/transformer/diffusion_pytorch_model.safetensors"),
        tensors_of(tmp_path / "export/transformer/diffusion_pytorch_model.safetensors"),
        "export",
    )

    finetune = load_config(
        write_config(
            tmp_path / "finetune.json",
            {
                **settings,
                "output_dir": str(tmp_path / "finetune"),
                "init_from": str(out / "pipeline"),
                "holdout_captions": False,
                "stages": [{**stage, "latents": None}],
            },
        )
    )
    assert training_captions(finetune) == listed
    student = dataclasses.replace(finetune, init_from=None, teacher=str(out / "pipeline"))
    assert training_captions(student) == listed  # a distilled student has seen its teacher's captions


def test_cubic_timesteps_follow_the_report_formula():
    """t = (1 - (u/T)^3) T, u uniform: P(t <= x) = 1 - (1 - x/T)^(1/3), so the q-quantile
    is T (1 - (1 - q)^3): median 875, mean 750 for T = 1000."""
    T = 1000
    t = sample_timesteps(200_000, T, "cubic", torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= T - 1
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        expected = T * (1 - (1 - q) ** 3)
        assert float(torch.quantile(t.float(), q)) == pytest.approx(expected, abs=4), q
    assert float(t.float().mean()) == pytest.approx(T * 0.75 - 0.5, abs=2)  # floor() shifts the mean by ~0.5
    uniform = sample_timesteps(200_000, T, "uniform", torch.Generator().manual_seed(0))
    assert float(torch.quantile(uniform.float(), 0.5)) == pytest.approx(500, abs=5)
    with pytest.raises(ValueError):
        sample_timesteps(4, T, "lognormal", torch.Generator())


def test_stage_lr_warms_up_then_holds_or_cosine_decays_to_lr_end(tmp_path):
    """Stage 0 holds the run's lr after warm-up; stage 1 decays from its own lr to lr_end on
    a cosine (half-way: the mean of the two); the curve is a function of the step alone."""
    data = {
        "kind": "dit",
        "output_dir": str(tmp_path / "out"),
        "preset": "kumo-tiny",
        "lr": 1e-3,
        "warmup_steps": 4,
        "stages": [{**GOOD_STAGE, "steps": 10}, {**GOOD_STAGE, "steps": 11, "lr": 5e-4, "lr_end": 1e-4}],
    }
    config = load_config(write_config(tmp_path / "config.json", data))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = stage_lr_schedule(optimizer, config)
    lrs = []
    for _ in range(config.total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[3] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(5e-4) and lrs[15] == pytest.approx(3e-4) and lrs[20] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "the decay must be monotone"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("builtin-*.yaml")), ids=lambda p: p.name)
def test_committed_configs_load_and_validate(path):
    """Every training config in configs/ (how the built-in model was trained) parses and validates."""
    config = load_config(path)
    assert config.kind in ("vae", "dit", "turbo", "v2a") and config.total_steps > 0
    if config.kind == "turbo":
        assert config.teacher, path


def test_a_config_with_extra_still_loads_and_says_the_new_keys(tmp_path, caplog):
    """Configs written before `vae`, `export_fp16`, ... were keys of their own held them under `extra:`."""
    settings = {"vae": "runs/v", "export_fp16": True, "sampling_defaults": {"fps": 8}, "target_decay": 0.9}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [GOOD_STAGE], "extra": settings}
    logger = logging.getLogger("kumovideo")  # the CLI stops it propagating to the root (and caplog)
    logger.addHandler(caplog.handler)
    try:
        config = load_config(write_config(tmp_path / "old.json", data))
    finally:
        logger.removeHandler(caplog.handler)
    assert {key: getattr(config, key) for key in settings} == settings
    # One warning (seen twice when run alone: no CLI has stopped "kumovideo" propagating to caplog's root yet)
    [message] = {record.getMessage() for record in caplog.records}
    assert "extra.vae -> vae" in message and "extra.target_decay -> target_decay" in message


# ----------------------------------------------------------------------- config errors


GOOD_STAGE = {"name": "s", "steps": 1, "size": 32, "num_frames": 9, "batch_size": 1}


@pytest.mark.parametrize(
    "command, change, needles",
    [
        ("dit", {"learning_rate": 1e-3}, ["unknown key(s) learning_rate"]),
        ("dit", {"stages": [{**GOOD_STAGE, "frames": 9}]}, ["stage 0", "unknown key(s) frames"]),
        ("dit", {"stages": [{"name": "s", "size": 32}]}, ["stage 0", "steps"]),
        ("dit", {"stages": None}, ["has no stages"]),
        ("dit", {"stages": []}, ["has no stages"]),
        ("dit", {"stages": [GOOD_STAGE, {**GOOD_STAGE, "num_frames": 8}]}, ["stage 1", "num_frames=8", "8k+1"]),
        ("vae", {"kind": "vae", "stages": [{**GOOD_STAGE, "crop_frames": 4}]}, ["crop_frames=4", "8k+1"]),
        ("dit", {"stages": [{**GOOD_STAGE, "size": 40}]}, ["size=40", "multiple of 16"]),
        ("dit", {"stages": [{**GOOD_STAGE, "steps": 0}]}, ["stage 0", "steps=0", "an integer >= 1"]),
        ("dit", {"stages": [{**GOOD_STAGE, "timestep_sampling": "logit"}]}, ["timestep_sampling='logit'"]),
        ("dit", {"mixed_precision": "fp16"}, ["mixed_precision='fp16'"]),
        (
            "dit",
            {"stages": [{**GOOD_STAGE, "lr_end": 1.0}]},
            ["stage 0", "lr_end=1.0", "between 0 and the stage's lr"],
        ),
        ("dit", {"holdout_captions": True}, ["stage 0", "holdout_captions", "latents"]),
        ("dit", {"kind": "gan"}, ["kind='gan'"]),
        ("vae", {}, ["is a 'dit' config", "kumo train dit"]),
        ("turbo", {}, ["is a 'dit' config"]),
        ("dit", {}, ["needs a trained VAE", "set `vae:`"]),
        ("dit", {"extra": {}}, ["needs a trained VAE", "set `vae:`"]),
        ("dit", {"extra": {"vea": "v"}}, ["unknown key(s) extra.vea", "vae, transformer"]),
        ("dit", {"transformer": {"layers": 2}}, ["transformer has unknown key(s) layers", "num_layers"]),
        ("dit", {"transformer": {"position_grid": 0}}, ["transformer position_grid=0", "positive whole number"]),
        ("dit", {"transformer": {"stretch_conditioning": True}}, ["stretch_conditioning needs a position_grid"]),
        ("dit", {"sampling_defaults": {"fps": 0}}, ["sampling_defaults.fps=0", "frames per second >= 1"]),
        ("dit", {"sampling_defaults": {"lowercase_prompts": 1}}, ["sampling_defaults.lowercase_prompts=1", "true or"]),
        ("dit", {"sampling_defaults": {"steps": 4}}, ["sampling_defaults has unknown key(s) steps", "fps"]),
        ("dit", {"export_fp16": "yes"}, ["export_fp16='yes'", "true or false"]),
        ("dit", {"ladd_layers": [-1]}, ["ladd_layers=[-1]", "block indices"]),
        ("dit", {"target_decay": 1.5}, ["target_decay=1.5", "in [0, 1]"]),
        ("dit", {"seed": 99999999999999999999}, ["seed 99999999999999999999 is too large", "2**63 - 1"]),
        ("turbo", {"kind": "turbo"}, ["needs `teacher:`"]),
        ("vae", {"kind": "vae", "output_dir": None}, ["output_dir"]),
        (
            "dit",
            {"stages": [{**GOOD_STAGE, "latents": "cache/index.json", "buckets": "32x32"}]},
            ["stage 0", "buckets is for stages that render their clips", "latent cache"],
        ),
        (
            "turbo",
            {"kind": "turbo", "teacher": "t", "stages": [{**GOOD_STAGE, "motion_range": "0.5,1.5"}]},
            ["motion_range is for"],
        ),
        ("vae", {"kind": "vae", "stages": [{**GOOD_STAGE, "buckets": "32x20"}]}, ["stage 0", "video size 20"]),
        ("vae", {"kind": "vae", "stages": [{**GOOD_STAGE, "held_back_share": 1.5}]}, ["held_back_share=1.5"]),
        ("dit", {"lora": {"rank": 4}}, ["a LoRA adapts a trained model", "init_from"]),
        ("vae", {"kind": "vae", "stages": [{**GOOD_STAGE, "buckets": "32-32"}]}, ["buckets '32-32'", "WxH"]),
        ("vae", {"kind": "vae", "stages": [{**GOOD_STAGE, "buckets": ["32x32", "32-32"]}]}, ["'32x32,32-32'", "WxH"]),
        (
            "vae",
            {"kind": "vae", "stages": [{**GOOD_STAGE, "size": 64, "buckets": ["64x64", "64x32"], "crop": 48}]},
            ["crop=48", "smallest side (32)"],
        ),
        (
            "dit",
            {"stages": [{**GOOD_STAGE, "buckets": "32x64", "crop": 48}]},
            ["stage 0", "crop=48", "smallest side (32)"],
        ),
        (
            "vae",
            {"kind": "vae", "stages": [{**GOOD_STAGE, "size": 64, "buckets": "64x32", "crop": 48}]},
            ["crop=48", "smallest side (32)"],
        ),
        (
            "vae",
            {"kind": "vae", "stages": [{**GOOD_STAGE, "motion_range": "1.5,0.5"}]},
            ["stage 0", "motion_range '1.5,0.5'", "LO must not exceed HI"],
        ),
    ],
)
def test_train_config_errors_exit_2_with_one_line(command, change, needles, tmp_path, capsys):
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "preset": "kumo-tiny", "stages": [GOOD_STAGE]}
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = write_config(tmp_path / "config.json", data)
    assert main(["train", command, "--config", str(path), "--device", "cpu"]) == 2
    assert_one_line_error(capsys, *needles)


def test_a_config_that_extends_another_replaces_only_the_keys_it_sets(tmp_path):
    """A trial config names what it changes; the rest (stages included) comes from its base."""
    base = {"kind": "dit", "output_dir": "runs/base", "lr": 1e-4, "ema_decay": 0.99, "stages": [GOOD_STAGE]}
    write_config(tmp_path / "base.json", base)
    (tmp_path / "trials").mkdir()
    trial = {"extends": "../base.json", "output_dir": "runs/trial", "lr": 5e-5}
    config = load_config(write_config(tmp_path / "trials" / "trial.json", trial))
    assert (config.output_dir, config.lr, config.ema_decay) == ("runs/trial", 5e-5, 0.99)
    assert [stage.name for stage in config.stages] == ["s"]
    # a chain: the nearest file wins; the stages list is replaced whole, not merged
    longer = {**GOOD_STAGE, "name": "long", "steps": 5}
    write_config(tmp_path / "trials" / "second.json", {"extends": "trial.json", "stages": [longer]})
    config = load_config(tmp_path / "trials" / "second.json")
    assert (config.lr, config.total_steps, [s.name for s in config.stages]) == (5e-5, 5, ["long"])
    # command-line overrides still come last
    assert load_config(tmp_path / "trials" / "trial.json", {"lr": 2e-5}).lr == 2e-5


@pytest.mark.parametrize(
    "extends, needle",
    [
        ("missing.json", "extends missing.json, which does not exist"),
        ("a.json", "makes a cycle"),
        (7, "must be the path of another config file"),
    ],
)
def test_a_bad_extends_exits_2_with_one_line(tmp_path, capsys, extends, needle):
    write_config(tmp_path / "b.json", {"extends": "a.json", "kind": "dit", "stages": [GOOD_STAGE]})
    path = write_config(tmp_path / "a.json", {"extends": extends if extends != "a.json" else "b.json"})
    assert main(["train", "dit", "--config", str(path), "--device", "cpu"]) == 2
    assert_one_line_error(capsys, needle)


def test_train_config_file_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", "dit", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert_one_line_error(capsys, "missing.yaml", "does not exist")

    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: dit\nstages: [\n  {name: a\n")
    assert main(["train", "dit", "--config", str(bad)]) == 2
    assert_one_line_error(capsys, "bad.yaml", "does not parse")

    listed = tmp_path / "list.yaml"
    listed.write_text("- kind: dit\n")
    assert main(["train", "dit", "--config", str(listed)]) == 2
    assert_one_line_error(capsys, "must hold a mapping")

    good = write_config(
        tmp_path / "good.json", {"kind": "vae", "output_dir": str(tmp_path / "o"), "stages": [GOOD_STAGE]}
    )
    assert main(["train", "vae", "--config", str(good), "--set", "lr"]) == 2
    assert_one_line_error(capsys, "--set 'lr' is not KEY=VALUE")
    assert main(["train", "vae", "--config", str(good), "--set", "lrate=1e-3"]) == 2
    assert_one_line_error(capsys, "unknown key(s) lrate")
    assert main(["train", "vae", "--config", str(good), "--fsdp"]) == 2
    assert_one_line_error(capsys, "--fsdp applies to `kumo train dit` only")
    assert main(["train", "vae", "--config", str(good), "--threads", "0"]) == 2
    assert_one_line_error(capsys, "--threads must be at least 1")
    assert (
        main(["train", "cache-latents", "--vae", str(tmp_path / "v"), "--out", str(tmp_path / "c"), "--threads", "0"])
        == 2
    )
    assert_one_line_error(capsys, "--threads must be at least 1")
    assert main(["train", "export", "--config", str(good), "--out", str(tmp_path / "e"), "--threads", "0"]) == 2
    assert_one_line_error(capsys, "--threads must be at least 1")
    assert main(["train", "export", "--config", str(good), "--out", str(tmp_path / "e")]) == 2
    assert_one_line_error(capsys, "kumo train export takes a dit, turbo or v2a config, not 'vae'")
    # A VAE folder without config.json, and one with pickled weights only (never loaded).

    (tmp_path / "v").mkdir()
    assert main(["train", "cache-latents", "--vae", str(tmp_path / "v"), "--out", str(tmp_path / "c")]) == 2
    assert_one_line_error(capsys, "is not a VAE folder (no config.json)")
    tiny_vae().save_pretrained(tmp_path / "v", safe_serialization=False)
    assert main(["train", "cache-latents", "--vae", str(tmp_path / "v"), "--out", str(tmp_path / "c")]) == 2
    assert_one_line_error(capsys, "has no .safetensors weights")
    assert not (tmp_path / "e").exists()
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()  # nothing started


def test_a_fine_tune_gains_the_position_grid_its_config_names_and_refuses_a_bad_one(dit_run):
    """`transformer: {position_grid: G, stretch_conditioning: true}` over an init_from folder
    rebuilds its MADiT with them; a grid of 0 or a stretch without any grid is refused, never
    silently left out."""
    import dataclasses

    from kumovideo.training.components import build_components

    folder = str(Path(dit_run.output_dir) / "pipeline")
    tuned = dataclasses.replace(
        dit_run, init_from=folder, transformer={"position_grid": 8, "stretch_conditioning": True}
    )
    config = build_components(tuned)["transformer"].config
    assert config.position_grid == 8 and config.stretch_conditioning
    for bad, message in (
        ({"position_grid": 0}, "position_grid=0"),
        ({"stretch_conditioning": True}, "needs a position_grid"),
    ):
        with pytest.raises(ValueError, match=message):
            build_components(dataclasses.replace(dit_run, init_from=folder, transformer=bad))
