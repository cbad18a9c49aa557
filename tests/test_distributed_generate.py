"""Distributed generation on CPU (gloo, 2 and 4 processes) equals single-process
generation, for every supported layout; bad degrees are refused before any work; the
counted FLOPs and bytes of `kumovideo.distributed.scaling` match a real run.

The pipelines are the tiny preset with the transformer's weights perturbed (the DiT
zero-init would make the denoiser output zeros and the comparison empty).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kumovideo.distributed.mesh import ParallelConfig, parse_parallel, validate_parallel
from kumovideo.distributed.spawn import run_workers
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.timeout(300)

START = os.environ.get("KUMO_SPAWN_METHOD", "fork")  # fork: no re-import per worker, seconds instead of a minute
TOL = dict(atol=1e-4, rtol=1e-4)

CALL = dict(
    prompt="a red circle",
    negative_prompt="blurry",
    height=48,
    width=64,
    num_frames=9,
    num_inference_steps=3,
    guidance_scale=4.0,
)

# name: (world, parallel, text_encoder_on, vae_on, heads, call overrides)
CASES = {
    "cfg2": (2, "cfg=2", "all", "rank0", 2, {}),
    "u2-t5rank0-vaeall": (2, "ulysses=2", "rank0", "all", 2, {}),
    "cfg2-vaesplit": (2, "cfg=2", "all", "split", 2, {}),
    "u2-noguidance-renoise": (2, "ulysses=2", "all", "rank0", 2, dict(guidance_scale=1.0, sampler="renoise")),
    "cfg2-u2-t5rank0-vaesplit": (4, "ulysses=2,cfg=2", "rank0", "split", 2, {}),
    "u4": (4, "ulysses=4", "all", "rank0", 4, {}),
}


def make_pipe(heads: int = 2, tiling: bool = False):
    from kumovideo.models.transformer_kumo import MADIT_PRESETS, KumoTransformer3DModel
    from kumovideo.pipelines import KumoPipeline
    from kumovideo.pipelines.factory import build_pipeline

    pipe = build_pipeline("kumo-tiny", seed=0)
    if heads != pipe.transformer.config.num_attention_heads:
        torch.manual_seed(0)
        transformer = KumoTransformer3DModel(
            **{
                **MADIT_PRESETS["kumo-tiny"],
                "num_attention_heads": heads,
                "attention_head_dim": 32 // heads,
                "text_embed_dim": pipe.text_encoder.config.d_model,
                "in_channels": 4,
                "out_channels": 4,
            }
        )
        pipe = KumoPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, transformer, pipe.scheduler)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    # Several tiles at 48x64: 'split' deals them out; its reference is the tiled decode in one process.
    pipe.vae.enable_tiling(tile_sample_min_height=24, tile_sample_min_width=32)
    if not tiling:
        pipe.vae.disable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(pipe_call, overrides):
    call = {**CALL, **overrides}
    latents = pipe_call(**call, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    frames = pipe_call(**call, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    return latents, frames


def reference(case):
    _, _, _, vae_on, heads, overrides = CASES[case]
    return run_case(make_pipe(heads, tiling=vae_on == "split"), overrides)


# ------------------------------------------------------------------------- workers


def _generate_worker(rank, world, cases, outdir):
    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

    for case in cases:
        _, spec, te, vae_on, heads, overrides = CASES[case]
        pipe = ParallelKumoPipeline(
            make_pipe(heads, tiling=vae_on == "split"), spec, text_encoder_on=te, vae_on=vae_on
        )
        latents, frames = run_case(pipe, overrides)
        holds_video = rank == 0 or vae_on == "all"
        assert (frames is not None) == holds_video, (case, rank)
        if holds_video:
            torch.save({"latents": latents, "frames": frames}, Path(outdir) / f"{case}.rank{rank}.pt")


def _refusal_worker(rank, world, outdir):
    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

    pipe = ParallelKumoPipeline(make_pipe(), "ulysses=2")
    encoded = []
    pipe.pipe.encode_prompt = lambda *a, **k: encoded.append(1)  # must never be reached
    with pytest.raises(KumoInputError, match="does not divide the 45 vision tokens"):
        pipe(**{**CALL, "width": 80})  # 3 latent frames x 3 x 5 patches = 45 tokens
    pipe = ParallelKumoPipeline(make_pipe(), "cfg=2")
    pipe.pipe.encode_prompt = lambda *a, **k: encoded.append(1)
    with pytest.raises(KumoInputError, match="guidance is off"):
        pipe(**{**CALL, "guidance_scale": 1.0})
    assert not encoded


def test_head_count_is_checked_when_the_pipeline_is_built():
    from kumovideo.distributed.mesh import ParallelContext
    from kumovideo.distributed.parallel_pipeline import ParallelKumoPipeline

    with pytest.raises(KumoInputError, match="does not divide the model's 2 attention heads"):
        ParallelKumoPipeline(make_pipe(), ParallelContext(ParallelConfig(ulysses=4)))


def _cost_worker(rank, world, spec, outdir):
    """Count FLOPs and bytes of one parallel denoiser call; compare with the scaling model."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from kumovideo.distributed.mesh import build_mesh
    from kumovideo.distributed.parallel_pipeline import ParallelTransformer
    from kumovideo.distributed.scaling import StepShape, comm_bytes_per_rank, flops_per_rank, total
    from kumovideo.distributed.ulysses import count_comm

    config = parse_parallel(spec)
    pipe = make_pipe(2)
    tconf = pipe.transformer.config
    x = torch.randn(2, 3, 4, 6, 8)  # guidance batch [negative; positive], latent 3 x 6 x 8
    text = torch.randn(2, tconf.max_text_seq_length, tconf.text_embed_dim)
    t = torch.tensor([500, 500])
    denoiser = ParallelTransformer(pipe.transformer, build_mesh(config))
    # The math SDPA backend decomposes into matmuls the counter sees (CPU flash attention is not counted).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as flops, count_comm() as comm:
        out = denoiser(x, text, t)[0]
    shape = StepShape.from_config(tconf, 3, 6, 8, prompts=1, guidance=True)
    assert flops.get_total_flops() == pytest.approx(total(flops_per_rank(shape, config.ulysses, config.cfg)), rel=1e-9)
    predicted = comm_bytes_per_rank(shape, config.ulysses, config.cfg, elem=4)
    assert set(comm.bytes) == set(predicted)
    for kind, nbytes in predicted.items():
        assert comm.bytes[kind] == pytest.approx(nbytes, rel=1e-9), kind
    expected = pipe.transformer(x, text, t).sample
    torch.testing.assert_close(out, expected, **TOL)


# ------------------------------------------------------------------------- tests


def test_parse_parallel():
    assert parse_parallel("ulysses=2,cfg=2") == ParallelConfig(cfg=2, ulysses=2)
    assert parse_parallel("cfg=2") == ParallelConfig(cfg=2, ulysses=1)
    assert parse_parallel(" ulysses = 4 ") == ParallelConfig(ulysses=4)
    assert parse_parallel(None) == parse_parallel("none") == ParallelConfig()
    for bad, message in [
        ("cfg=3", "guidance has two branches"),
        ("tp=2", "keys ulysses and cfg"),
        ("ulysses=two", "not an integer"),
        ("ulysses=0", "at least 1"),
        ("cfg=2,cfg=2", "given twice"),
    ]:
        with pytest.raises(KumoInputError, match=message):
            parse_parallel(bad)


def test_validate_parallel_messages():
    # kumo-2.6b at 480x720x41: 30 heads, 11 x 30 x 45 = 14850 vision tokens.
    ok = dict(num_heads=30, num_vision_tokens=14850, guidance=True)
    validate_parallel(ParallelConfig(cfg=2, ulysses=3), world_size=6, **ok)
    with pytest.raises(
        KumoInputError, match=r"does not divide the model's 30 attention heads.*1, 2, 3, 5, 6, 10, 15, 30"
    ):
        validate_parallel(ParallelConfig(ulysses=4), world_size=4, **ok)
    with pytest.raises(KumoInputError, match="does not divide the 14849 vision tokens"):
        validate_parallel(
            ParallelConfig(ulysses=2), world_size=2, num_heads=30, num_vision_tokens=14849, guidance=True
        )
    with pytest.raises(KumoInputError, match="needs 4 process"):
        validate_parallel(ParallelConfig(cfg=2, ulysses=2), world_size=2, **ok)
    with pytest.raises(KumoInputError, match="guidance is off"):
        validate_parallel(ParallelConfig(cfg=2), world_size=2, num_heads=30, num_vision_tokens=14850, guidance=False)


def _compare(cases, outdir):
    for case in cases:
        ref_latents, ref_frames = reference(case)
        world, _, _, vae_on, _, _ = CASES[case]
        ranks = range(world) if vae_on == "all" else [0]
        for rank in ranks:
            got = torch.load(Path(outdir) / f"{case}.rank{rank}.pt")
            torch.testing.assert_close(got["latents"], ref_latents, **TOL, msg=f"{case} latents, rank {rank}")
            torch.testing.assert_close(got["frames"], ref_frames, **TOL, msg=f"{case} frames, rank {rank}")
        assert ref_latents.abs().mean() > 0.1  # a real signal, not zeros


def test_generation_2_processes_equals_single_process(tmp_path):
    cases = [c for c, v in CASES.items() if v[0] == 2]
    run_workers(_generate_worker, 2, cases, tmp_path, start_method=START)
    _compare(cases, tmp_path)


def test_generation_4_processes_equals_single_process(tmp_path):
    cases = [c for c, v in CASES.items() if v[0] == 4]
    run_workers(_generate_worker, 4, cases, tmp_path, start_method=START)
    _compare(cases, tmp_path)


def test_bad_degrees_are_refused_before_any_work(tmp_path):
    run_workers(_refusal_worker, 2, tmp_path, start_method=START)


@pytest.mark.parametrize("spec,world", [("ulysses=2", 2), ("cfg=2", 2), ("ulysses=2,cfg=2", 4)])
def test_counted_flops_and_bytes_match_a_real_run(spec, world, tmp_path):
    run_workers(_cost_worker, world, spec, tmp_path, start_method=START)


def test_split_tiles_cover_the_reference_tiling():
    """The tiny VAE at 48x64 with 24x32 tiles decodes in several tiles (so 'split' splits)."""
    vae = make_pipe(tiling=True).vae
    h, w = 48 // 8, 64 // 8
    tiles = len(range(0, h, int(vae.tile_latent_min_height * (1 - vae.tile_overlap_factor_height)))) * len(
        range(0, w, int(vae.tile_latent_min_width * (1 - vae.tile_overlap_factor_width)))
    )
    assert tiles >= 4


# ------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    make_pipe().save_pretrained(folder)
    return folder


def test_cli_refuses_bad_degrees_before_loading(tiny_folder, tmp_path, monkeypatch, capsys):
    from kumovideo.cli import main

    loaded = []
    monkeypatch.setattr("kumovideo.pipelines.KumoPipeline.from_pretrained", lambda *a, **k: loaded.append(1))
    out = str(tmp_path / "clip.mp4")
    base = ["generate", "a red circle", "-o", out, "--model", str(tiny_folder), "--device", "cpu"]
    for extra, env, message in [
        (["--parallel", "ulysses=2"], {}, "needs 2 process(es) (ulysses x cfg), but 1 were started"),
        (
            ["--parallel", "ulysses=4"],
            {"RANK": "0", "WORLD_SIZE": "4"},
            "does not divide the model's 2 attention heads",
        ),
        (
            ["--parallel", "ulysses=2", "--width", "80"],
            {"RANK": "0", "WORLD_SIZE": "2"},
            "does not divide the 45 vision tokens",
        ),
        (["--parallel", "cfg=2", "--guidance", "1"], {"RANK": "0", "WORLD_SIZE": "2"}, "guidance is off"),
        (["--parallel", "cfg=3"], {}, "use cfg=1 or cfg=2"),
        (
            ["--parallel", "ulysses=2", "--step-cache", "0.05"],
            {"RANK": "0", "WORLD_SIZE": "2"},
            "--step-cache does not combine with --parallel ulysses>1",
        ),
    ]:
        for key in ("RANK", "WORLD_SIZE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert not loaded


def test_cli_under_torchrun_writes_once(tiny_folder, tmp_path):
    """`torchrun --nproc-per-node 2 -m kumovideo.cli generate ... --parallel cfg=2`: rank 0 writes the file."""
    out = tmp_path / "clip.mp4"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_port()),
        "-m",
        "kumovideo.cli",
        "generate",
        "a red circle",
        "-o",
        str(out),
        "--model",
        str(tiny_folder),
        "--device",
        "cpu",
        "--steps",
        "2",
        "--frames",
        "9",
        "--height",
        "48",
        "--width",
        "64",
        "--guidance",
        "4",
        "--parallel",
        "cfg=2",
        "--vae-on",
        "split",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.exists() and out.stat().st_size > 0
    assert done.stdout.count("wrote ") == 1, done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp files left behind


def _port():
    from kumovideo.distributed.spawn import free_port

    return free_port()


# ------------------------------------------------------------------------- CPU waiting and threads


class _Work:
    """Stands in for a torch.distributed Work: completes after `polls` polls."""

    def __init__(self, polls: int, error: Exception | None = None):
        self.polls, self.error, self.waited = polls, error, False

    def is_completed(self) -> bool:
        self.polls -= 1
        return self.polls <= 0

    def wait(self):
        self.waited = True
        if self.error:
            raise self.error


def test_spin_wait_polls_then_waits_and_raises_what_the_collective_raised(monkeypatch):
    from kumovideo.distributed import ulysses

    x = torch.zeros(2)
    monkeypatch.setenv("KUMO_SPIN_WAIT", "1")
    work = _Work(polls=5)
    ulysses.wait_for(work, x)
    assert work.polls == 0 and work.waited  # polled until complete, then wait() (which raises errors)
    with pytest.raises(RuntimeError, match="peer closed"):
        ulysses.wait_for(_Work(polls=1, error=RuntimeError("peer closed")), x)
    # A work that never reports completion (gloo's point-to-point works don't) is not
    # polled forever: after SPIN_SECONDS the caller blocks in wait().
    monkeypatch.setattr(ulysses, "SPIN_SECONDS", 0.01)
    never = _Work(polls=10**9)
    ulysses.wait_for(never, x)
    assert never.waited
    monkeypatch.setenv("KUMO_SPIN_WAIT", "0")
    blocking = _Work(polls=5)
    ulysses.wait_for(blocking, x)
    assert blocking.polls == 5 and blocking.waited  # not polled at all


def test_spin_wait_only_when_the_node_has_a_core_per_rank(monkeypatch):
    from kumovideo.distributed import ulysses
    from kumovideo.perf.fast_paths import usable_cores

    monkeypatch.setenv("KUMO_SPIN_WAIT", "auto")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable_cores()))
        assert ulysses.spin_wait_enabled(torch.zeros(1))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable_cores() + 1))  # oversubscribed: block
        assert not ulysses.spin_wait_enabled(torch.zeros(1))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("KUMO_SPIN_WAIT", "sometimes")
    with pytest.raises(KumoInputError, match="KUMO_SPIN_WAIT='sometimes'; use auto, 0 or 1"):
        ulysses.spin_wait_enabled(torch.zeros(1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_workers_know_it():
    from kumovideo.distributed.mesh import is_forked_child

    assert not is_forked_child()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports and leaves at once
        os.write(write, b"1" if is_forked_child() else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


def test_rank0_decodes_with_the_threads_of_the_idle_ranks(monkeypatch):
    from types import SimpleNamespace

    from kumovideo.distributed import mesh
    from kumovideo.distributed.parallel_pipeline import rank0_takes_idle_cores
    from kumovideo.perf.fast_paths import usable_cores

    ctx = SimpleNamespace(device=torch.device("cpu"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        with rank0_takes_idle_cores(ctx):
            assert torch.get_num_threads() == min(2, usable_cores())
        assert torch.get_num_threads() == 1  # given back
        monkeypatch.setattr(mesh, "_forked_child", True)  # forked: OpenMP would hang, nothing changes
        with rank0_takes_idle_cores(ctx):
            assert torch.get_num_threads() == 1
        monkeypatch.setattr(mesh, "_forked_child", False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE")  # not launched by torchrun: nothing changes
        with rank0_takes_idle_cores(ctx):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
