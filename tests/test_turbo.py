"""KumoVideo-Turbo: `kumo train turbo` (latent consistency distillation, optional LADD),
the consistency scheduler's boundary conditions, and the re-noising few-step sampler.

The teacher is a tiny pipeline made the way a user makes one: `train_dit` for a few steps
on the fixture VAE, exported. The distillation loss is measured on a fixed batch (same
latents, noise, grid points, captions) with an implementation of LCM's Algorithm 1 written
here from the paper, independent of the trainer's.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model
from tiny_runs import write_config

from kumovideo.schedulers import KumoLCMScheduler, kumo_alphas_cumprod
from kumovideo.schedulers.sampling import renoise_timesteps, sample_renoise, v_to_x0
from kumovideo.training.config import load_config
from kumovideo.training.runtime import setup_runtime
from kumovideo.training.shapes_batches import shapes_batch

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


HELD_OUT_SEED = 4242


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, fixtures_dir) -> Path:
    """A tiny base pipeline: 6 DiT steps on the fixture VAE, exported (text window 24)."""
    from kumovideo.training.text import shapes_caption_corpus, train_t5_tokenizer
    from kumovideo.training.train_dit import train_dit

    tmp = tmp_path_factory.mktemp("teacher")
    train_t5_tokenizer(shapes_caption_corpus(2000, seed=1000), tmp / "dit" / "tokenizer")
    path = write_config(
        tmp / "dit.json",
        {
            "kind": "dit",
            "output_dir": str(tmp / "dit"),
            "preset": "kumo-tiny",
            "lr": 1e-3,
            "warmup_steps": 2,
            "checkpoint_every": 100,
            "vae": str(fixtures_dir / "vae"),
            "transformer": {"max_text_seq_length": 24},
            "stages": [{"name": "images", "steps": 6, "size": 32, "num_frames": 1, "batch_size": 2}],
        },
    )
    train_dit(load_config(path), setup_runtime("cpu"))
    return tmp / "dit" / "pipeline"


def turbo_config(tmp: Path, name: str, teacher: Path, **settings):
    data = {
        "kind": "turbo",
        "output_dir": str(tmp / name),
        "teacher": str(teacher),
        "preset": "kumo-tiny",
        "lr": 1e-3,
        "warmup_steps": 2,
        "log_every": 1,
        "checkpoint_every": 4,
        "ladd": False,
        "stages": [
            {"name": "images", "steps": 6, "size": 32, "num_frames": 1, "batch_size": 2},
            {"name": "video", "steps": 6, "size": 32, "num_frames": 9, "batch_size": 2, "image_prob": 0.3},
        ],
        **settings,
    }
    return load_config(write_config(tmp / f"{name}.json", data))


@pytest.fixture(scope="module")
def turbo_run(tmp_path_factory, teacher):
    """An uninterrupted 12-step distillation (no LADD): the reference run."""
    from kumovideo.training.train_turbo import train_turbo

    config = turbo_config(tmp_path_factory.mktemp("turbo"), "full", teacher)
    metrics = train_turbo(config, setup_runtime("cpu"))
    return config, metrics


# ------------------------------------------------------------------ distillation loss


def boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, scale: float = 10.0):
    """LCM's c_skip(t) = s^2 / ((10 t)^2 + s^2), c_out(t) = 10 t / sqrt((10 t)^2 + s^2)."""
    st = t.double() * scale
    return sigma_data**2 / (st**2 + sigma_data**2), st / (st**2 + sigma_data**2).sqrt()


def f_consistency(model, x, t, text, alphas):
    """f(x, t) = c_skip x + c_out x0(x, t), x0 from the model's v: sqrt(a) x - sqrt(1 - a) v."""
    v = model(x, text, t, return_dict=False)[0].double()
    a = alphas[t].view(-1, 1, 1, 1, 1)
    c_skip, c_out = (c.view(-1, 1, 1, 1, 1) for c in boundary_scalings(t))
    return c_skip * x.double() + c_out * (a.sqrt() * x.double() - (1 - a).sqrt() * v)


@torch.no_grad()
def distillation_loss(student, target, teacher, batch: dict, guidance: float = 4.0, k: int = 20) -> float:
    """LCM Algorithm 1's loss, pseudo-Huber (c = 0.001): d(f_student(x_tn, t_n), f_target(x_prev, t_prev)),
    x_prev one guided DDIM step of the teacher from t_n to t_n - k (x_prev itself at t_prev < 0)."""
    alphas = kumo_alphas_cumprod()  # float64
    x0, noise, t_n, text, empty = batch["latents"], batch["noise"], batch["t"], batch["text"], batch["empty"]
    a_n = alphas[t_n].view(-1, 1, 1, 1, 1)
    x_t = (a_n.sqrt() * x0 + (1 - a_n).sqrt() * noise).float()
    v_u = teacher(x_t, empty.expand_as(text), t_n, return_dict=False)[0].double()
    v_c = teacher(x_t, text, t_n, return_dict=False)[0].double()
    v_w = v_u + guidance * (v_c - v_u)
    x0_hat = a_n.sqrt() * x_t - (1 - a_n).sqrt() * v_w
    eps_hat = a_n.sqrt() * v_w + (1 - a_n).sqrt() * x_t
    t_prev = t_n - k
    a_p = torch.where(t_prev >= 0, alphas[t_prev.clamp(min=0)], torch.ones_like(alphas[t_prev])).view(-1, 1, 1, 1, 1)
    x_prev = a_p.sqrt() * x0_hat + (1 - a_p).sqrt() * eps_hat
    goal = f_consistency(target, x_prev.float(), t_prev.clamp(min=0), text, alphas)
    goal = torch.where((t_prev < 0).view(-1, 1, 1, 1, 1), x_prev, goal)
    out = f_consistency(student, x_t, t_n, text, alphas)
    c = 0.001
    return float((torch.sqrt((out - goal) ** 2 + c**2) - c).mean())


def fixed_turbo_batch(components: dict, num_frames: int, clips: int = 10) -> dict:
    vae, tokenizer, text_encoder = components["vae"], components["tokenizer"], components["text_encoder"]
    videos, captions = shapes_batch(HELD_OUT_SEED, 0, clips, 0, 1, 32, num_frames)
    g = torch.Generator().manual_seed(0)
    max_len = components["transformer"].config.max_text_seq_length
    with torch.no_grad():
        posterior = vae.encode(videos).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=g)
        latents = (posterior.mean + posterior.std * noise) * vae.config.scaling_factor
        ids = tokenizer(
            captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids
        empty = tokenizer([""], padding="max_length", max_length=max_len, return_tensors="pt").input_ids
        text, empty = text_encoder(ids)[0], text_encoder(empty)[0]
    latents = latents.permute(0, 2, 1, 3, 4).contiguous()
    grid = torch.arange(999, -1, -20)  # the 50-step DDIM grid, 999 ... 19
    return {
        "latents": latents.double(),
        "noise": torch.randn(latents.shape, generator=g).double(),
        "t": grid[torch.linspace(0, len(grid) - 1, clips).long()],
        "text": text,
        "empty": empty,
    }


def test_distillation_reduces_the_consistency_loss_on_a_fixed_batch(turbo_run, teacher):
    from kumovideo.pipelines.loading import load_pipeline_components

    config, metrics = turbo_run
    base = load_pipeline_components(teacher)
    turbo = load_pipeline_components(Path(config.output_dir) / "pipeline")
    teacher_net = base["transformer"].float().eval()
    # The EMA target network f_theta^- at the end of the run, from the last checkpoint.
    target = copy.deepcopy(teacher_net)
    load_model(target, str(Path(config.output_dir) / "checkpoints/step-0000012/target.safetensors"))
    student = turbo["transformer"].eval()
    assert not all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), teacher_net.state_dict().values()))
    for frames in (1, 9):
        batch = fixed_turbo_batch(base, frames)
        before = distillation_loss(teacher_net, teacher_net, teacher_net, batch)  # the student starts as the teacher
        after = distillation_loss(student, target, teacher_net, batch)
        after_vs_teacher = distillation_loss(student, teacher_net, teacher_net, batch)
        # Against the run's own (moving) target, and against the teacher's fixed one.
        assert after < 0.85 * before and after_vs_teacher < 0.95 * before, (frames, before, after, after_vs_teacher)

    # Cross-check: the loss the trainer logged at step 1 (student = target = teacher) is this
    # file's loss on the batch the trainer drew for step 0.
    from kumovideo.training.data_sources import LatentSource
    from kumovideo.training.runtime import step_generator

    g = step_generator(config.seed, 0, 0)
    latents, captions = LatentSource(config, base["vae"], setup_runtime("cpu")).batch(0, config.stages[0], g)
    idx = torch.randint(0, 50, (latents.shape[0],), generator=g)
    noise = torch.randn(latents.shape, generator=g)
    batch = fixed_turbo_batch(base, 1)
    max_len = teacher_net.config.max_text_seq_length
    ids = base["tokenizer"](
        captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        text = base["text_encoder"](ids)[0]
    batch.update(latents=latents.double(), noise=noise.double(), t=torch.arange(999, -1, -20)[idx], text=text)
    rows = [r.split(",") for r in (Path(config.output_dir) / "loss_log.csv").read_text().splitlines()]
    logged = float(rows[1][rows[0].index("consistency")])
    assert distillation_loss(teacher_net, teacher_net, teacher_net, batch) == pytest.approx(logged, rel=1e-3)

    # The exported Turbo pipeline: the distilled transformer with the consistency scheduler.
    assert isinstance(turbo["scheduler"], KumoLCMScheduler)
    assert turbo["scheduler"].config.original_inference_steps == 50
    rows = (Path(config.output_dir) / "loss_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["step", "stage", "loss", "grad_norm", "consistency"]
    assert len(rows) == 13 and math.isfinite(metrics["consistency"])


def test_turbo_stop_and_resume_is_bit_exact(turbo_run, teacher, tmp_path, capsys):
    """The target network follows the student by EMA every step: a resumed run must
    restore it (it is checkpointed) and end on the uninterrupted run's weights."""
    from kumovideo.training.train_turbo import train_turbo

    reference, _ = turbo_run
    config = turbo_config(tmp_path, "resumed", teacher)
    train_turbo(config, setup_runtime("cpu"), stop_after=7)  # checkpoint at 4, across the stage change
    capsys.readouterr()
    train_turbo(config, setup_runtime("cpu"), resume=True)
    assert "(step 4)" in capsys.readouterr().out
    ref, out = Path(reference.output_dir), Path(config.output_dir)
    part = "pipeline/transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(ref / part)), load_file(str(out / part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("student.safetensors", "target.safetensors", "ema.safetensors"):
        a = load_file(str(ref / "checkpoints/step-0000012" / name))
        b = load_file(str(out / "checkpoints/step-0000012" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_export_of_the_last_turbo_checkpoint_is_the_finished_turbo(turbo_run, tmp_path):
    """`kumo train export` of a Turbo run's last checkpoint gives the folder the run itself
    exported: the EMA student with the consistency scheduler."""
    from kumovideo.cli import main

    config, _ = turbo_run
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "kind": "turbo",
                "output_dir": config.output_dir,
                "teacher": config.teacher,
                "preset": "kumo-tiny",
                "stages": [{"name": "video", "steps": 12, "size": 32, "num_frames": 9, "batch_size": 2}],
            }
        )
    )
    assert main(["train", "export", "--config", str(path), "--out", str(tmp_path / "export"), "--threads", "1"]) == 0
    part = "transformer/diffusion_pytorch_model.safetensors"
    a = load_file(str(Path(config.output_dir) / "pipeline" / part))
    b = load_file(str(tmp_path / "export" / part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scheduler = json.loads((tmp_path / "export/scheduler/scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "KumoLCMScheduler"


def test_ladd_step_runs_with_finite_losses(teacher, tmp_path):
    from kumovideo.training.train_turbo import train_turbo

    config = turbo_config(
        tmp_path,
        "ladd",
        teacher,
        ladd=True,
        checkpoint_every=1,
        stages=[{"name": "video", "steps": 2, "size": 32, "num_frames": 9, "batch_size": 2}],
    )
    metrics = train_turbo(config, setup_runtime("cpu"), stop_after=1)
    for key in ("loss", "consistency", "d_loss", "g_loss"):
        assert math.isfinite(metrics[key]), (key, metrics)
    # At init the heads are random: the hinge loss is near its 2.0 of an undecided discriminator.
    assert 0 < metrics["d_loss"] < 4
    total = metrics["consistency"] + config.ladd_weight * metrics["g_loss"] + metrics["d_loss"]
    assert metrics["loss"] == pytest.approx(total, rel=1e-4)
    # Stopped runs export nothing; the step-1 checkpoint holds the discriminator's heads.
    out = Path(config.output_dir)
    assert not (out / "pipeline").exists()
    heads = load_file(str(out / "checkpoints/step-0000001/discriminator.safetensors"))
    assert heads and all(k.startswith("heads.") for k in heads)


def test_exported_turbo_scheduler_keeps_the_teachers_noise_schedule(teacher, tmp_path):
    """The student is distilled on the teacher's schedule (its betas and SNR shift); the
    exported consistency scheduler must sample on that same schedule."""
    from kumovideo.pipelines.loading import load_pipeline_components
    from kumovideo.training.train_turbo import train_turbo

    shifted = tmp_path / "teacher"
    shutil.copytree(teacher, shifted)
    settings = json.loads((shifted / "scheduler/scheduler_config.json").read_text())
    (shifted / "scheduler/scheduler_config.json").write_text(
        json.dumps({**settings, "snr_shift_scale": 2.0, "beta_end": 0.02})
    )
    config = turbo_config(
        tmp_path,
        "shifted",
        shifted,
        stages=[{"name": "images", "steps": 1, "size": 32, "num_frames": 1, "batch_size": 1}],
    )
    train_turbo(config, setup_runtime("cpu"))
    scheduler = load_pipeline_components(Path(config.output_dir) / "pipeline")["scheduler"]
    assert isinstance(scheduler, KumoLCMScheduler) and scheduler.config.snr_shift_scale == 2.0
    assert scheduler.config.beta_end == 0.02
    expected = kumo_alphas_cumprod(beta_end=0.02, snr_shift_scale=2.0)
    torch.testing.assert_close(scheduler.alphas_cumprod, expected.to(scheduler.alphas_cumprod.dtype))
    # ... and the distillation targets were built on it too (the grid the student learnt).
    from kumovideo.training.train_turbo import distillation_scheduler

    teacher_parts = load_pipeline_components(shifted)
    torch.testing.assert_close(distillation_scheduler(teacher_parts, config).alphas_cumprod, scheduler.alphas_cumprod)


# ------------------------------------------------------------- consistency scheduler


def test_boundary_condition_at_t0_is_the_identity():
    scheduler = KumoLCMScheduler()
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(0)
    assert c_skip == pytest.approx(1.0, abs=1e-12) and c_out == pytest.approx(0.0, abs=1e-12)
    # ... and the model's estimate takes over fast: c_skip < 1e-4 from t = 10 on.
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(torch.tensor([10, 250, 999]))
    assert bool((c_skip < 1e-4).all()) and bool((c_out > 0.9999).all())


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_last_consistency_step_returns_the_model_estimate(num_steps):
    """At the last step of a chain no noise is added: prev_sample == denoised ==
    c_skip(t) x + c_out(t) (sqrt(a_t) x - sqrt(1 - a_t) v) for the v-prediction model."""
    scheduler = KumoLCMScheduler()
    scheduler.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        prev, denoised = scheduler.step(v, t, x, generator=g, return_dict=False)
        a = scheduler.alphas_cumprod[t].double()
        c_skip, c_out = boundary_scalings(torch.tensor(int(t)))
        expected = c_skip * x + c_out * (a.sqrt() * x - (1 - a).sqrt() * v)
        torch.testing.assert_close(denoised, expected, rtol=1e-6, atol=1e-7)  # scalings in float32
        if i == num_steps - 1:
            assert torch.equal(prev, denoised)
        else:  # re-noised to the next timestep of the chain
            assert not torch.allclose(prev, denoised)
        x = prev
    assert int(scheduler.timesteps[0]) == 999  # a chain starts from pure noise (zero terminal SNR)


# ------------------------------------------------------------------ re-noise sampler


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_renoise_sampler_with_a_perfect_oracle_returns_the_data(num_steps):
    """With model_fn giving the exact v for a known x0 (eps recovered from x_t), every
    step's x0 estimate is x0, so the sampler returns x0 whatever the noise."""
    alphas = kumo_alphas_cumprod()
    assert float(alphas[999]) == 0.0  # zero terminal SNR: x_999 is pure noise, the oracle's v there is -x0
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, 4, generator=g)
    seen = []

    def oracle(x_t, t):
        a = alphas[t].float()
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        seen.append((int(t), a.item()))
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    timesteps = renoise_timesteps(num_steps)
    out = sample_renoise(
        oracle, torch.randn(x0.shape, generator=g), timesteps, alphas, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)
    assert [t for t, _ in seen] == timesteps.tolist() and seen[0][0] == 999
    # The oracle's v at t = 999 is exactly -x0.
    torch.testing.assert_close(oracle(torch.randn(x0.shape, generator=g), torch.tensor(999)), -x0)


def test_renoise_timesteps_and_v_to_x0():
    assert renoise_timesteps(1).tolist() == [999]
    assert renoise_timesteps(2).tolist() == [999, 499]
    assert renoise_timesteps(4).tolist() == [999, 749, 499, 249]
    a = torch.tensor(0.3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(v_to_x0(v, x_t, a), x0)
