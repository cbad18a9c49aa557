"""KumoPipeline behaviour: guidance, batching, seeding, output types, memory switches,
samplers, callbacks, and the size presets.

Runs on the tiny fixture pipeline (../shared/fixtures/kumovideo/pipeline: 2-layer MADiT,
tiny VAE, tiny T5) at 48x64, 9 frames: latents (B, 3, 4, 6, 8). Each test takes well
under a few seconds on one CPU core.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from kumovideo import KumoLCMScheduler, KumoPipeline, madit_from_preset
from kumovideo.models import count_parameters
from kumovideo.pipelines import frames_to_uint8
from kumovideo.pipelines.factory import build_pipeline
from kumovideo.schedulers.sampling import renoise_timesteps
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


SIZE = dict(height=48, width=64, num_frames=9)
LATENT_SHAPE = (3, 4, 6, 8)  # (F_lat, C, h, w) for 48x64x9 with the tiny VAE
PROMPT = "a red circle moves left on a black background"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe(fixtures_dir):
    pipe = KumoPipeline.from_pretrained(fixtures_dir / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt=PROMPT, seed=0, steps=2, output_type="latent", **kwargs):
    kwargs.setdefault("generator", gen(seed))
    return pipe(prompt, num_inference_steps=steps, output_type=output_type, **SIZE, **kwargs).frames


class TransformerBatchSpy:
    """Records the batch size of every transformer call."""

    def __init__(self, pipe):
        self.batches: list[int] = []
        self.handle = pipe.transformer.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.batches.append(kwargs["hidden_states"].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------------------- guidance


@pytest.mark.parametrize("guidance", [1.0, 0.5, 0.0])
def test_guidance_at_most_one_runs_without_cfg(pipe, guidance):
    with TransformerBatchSpy(pipe) as spy:
        latents = run(pipe, guidance_scale=guidance, negative_prompt="blurry")
    assert latents.shape == (1, *LATENT_SHAPE)
    assert torch.isfinite(latents).all()
    assert spy.batches == [1, 1]  # no unconditional half: one transformer pass of batch 1 per step
    # Every guidance <= 1 is the same thing: the conditional prediction alone.
    torch.testing.assert_close(latents, run(pipe, guidance_scale=1.0), atol=0, rtol=0)


def test_guidance_six_uses_cfg_and_differs_from_no_guidance(pipe):
    with TransformerBatchSpy(pipe) as spy:
        guided = run(pipe, guidance_scale=6.0)
    assert spy.batches == [2, 2]  # [negative; positive]
    unguided = run(pipe, guidance_scale=1.0)
    assert (guided - unguided).abs().max() > 1e-3


@pytest.mark.parametrize("rescale", [0.0, 1.0])
def test_guidance_rescale_pulls_the_guided_std_to_the_conditional_one(pipe, monkeypatch, rescale):
    """What the scheduler steps with: plain CFG (rescale 0), or CFG scaled per clip to the
    conditional prediction's std (rescale 1)."""
    outputs, stepped = [], []
    hook = pipe.transformer.register_forward_hook(lambda module, args, out: outputs.append(out[0].detach()))
    step = pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda v, *a, **k: stepped.append(v) or step(v, *a, **k))
    try:
        run(pipe, guidance_scale=6.0, guidance_rescale=rescale)
    finally:
        hook.remove()
    assert len(outputs) == len(stepped) == 2
    for out, v in zip(outputs, stepped):
        v_uncond, v_text = out.float().chunk(2)
        cfg = v_uncond + 6.0 * (v_text - v_uncond)
        if rescale == 0.0:
            torch.testing.assert_close(v, cfg)
        else:
            torch.testing.assert_close(v.std(), v_text.std(), rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(v, cfg * v_text.std() / cfg.std(), rtol=1e-4, atol=1e-6)
    with pytest.raises(KumoInputError, match="guidance_rescale=1.5"):
        run(pipe, guidance_scale=6.0, guidance_rescale=1.5)


# ---------------------------------------------------------------------------- batching / seeds


def test_batch_of_prompts_times_videos_per_prompt(pipe):
    prompts = ["a red circle moves left", "a blue square moves up"]
    batch = run(pipe, prompts, guidance_scale=6.0, num_videos_per_prompt=2, generator=[gen(i) for i in range(4)])
    assert batch.shape == (4, *LATENT_SHAPE)
    for i in range(4):  # video i: prompt i // 2, generator i (diffusers' one-generator-per-video convention)
        single = run(pipe, prompts[i // 2], guidance_scale=6.0, generator=[gen(i)])
        torch.testing.assert_close(batch[i], single[0], atol=1e-5, rtol=1e-5)
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # same prompt, different noise
    assert (batch[0] - batch[2]).abs().max() > 1e-2


def test_batch_with_one_negative_prompt_each(pipe):
    prompts = ["a red circle", "a blue square"]
    out = run(pipe, prompts, negative_prompt=["blurry", "dark"], guidance_scale=6.0, generator=[gen(0), gen(1)])
    assert out.shape == (2, *LATENT_SHAPE)
    with pytest.raises(KumoInputError, match="negative prompts"):
        run(pipe, prompts, negative_prompt=["blurry"], guidance_scale=6.0)


def test_same_seed_same_video_different_seed_different(pipe):
    a = run(pipe, seed=7, output_type="np")
    b = run(pipe, seed=7, output_type="np")
    c = run(pipe, seed=8, output_type="np")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_latents_argument_skips_the_noise_draw(pipe):
    noise = torch.randn((1, *LATENT_SHAPE), generator=gen(5))
    g = gen(123)
    state = g.get_state().clone()
    out = run(pipe, latents=noise, generator=g)
    assert torch.equal(g.get_state(), state), "the generator was drawn from although latents were given"
    # Same result as drawing that noise from the seed inside the pipeline.
    torch.testing.assert_close(out, run(pipe, seed=5), atol=0, rtol=0)
    # And no generator at all is needed.
    torch.testing.assert_close(out, run(pipe, latents=noise, generator=None), atol=0, rtol=0)
    with pytest.raises(KumoInputError, match="latents have shape"):
        run(pipe, latents=torch.randn(1, 3, 4, 6, 6))


# ---------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types(pipe, output_type):
    frames = run(pipe, output_type=output_type)
    if output_type == "pil":
        assert isinstance(frames, list) and len(frames) == 1 and len(frames[0]) == 9
        assert all(isinstance(im, PIL.Image.Image) and im.size == (64, 48) and im.mode == "RGB" for im in frames[0])
    elif output_type == "np":
        assert isinstance(frames, np.ndarray) and frames.shape == (1, 9, 48, 64, 3)
        assert frames.dtype == np.float32 and 0.0 <= frames.min() and frames.max() <= 1.0
    elif output_type == "pt":
        assert torch.is_tensor(frames) and frames.shape == (1, 9, 3, 48, 64)
        assert frames.dtype == torch.float32 and 0.0 <= frames.min() and frames.max() <= 1.0
    else:
        assert torch.is_tensor(frames) and frames.shape == (1, *LATENT_SHAPE)


def test_output_types_agree(pipe):
    as_np = run(pipe, output_type="np")[0]
    as_pt = run(pipe, output_type="pt")[0]
    as_pil = run(pipe, output_type="pil")[0]
    np.testing.assert_allclose(as_pt.permute(0, 2, 3, 1).numpy(), as_np, atol=1e-6)
    uint8 = frames_to_uint8(as_pt)
    assert uint8.dtype == np.uint8 and uint8.shape == (9, 48, 64, 3)
    assert np.abs(uint8.astype(int) - np.stack([np.asarray(im) for im in as_pil]).astype(int)).max() <= 1


def test_bad_inputs_raise_kumo_input_error(pipe):
    with pytest.raises(KumoInputError, match="4k\\+1"):
        pipe(PROMPT, height=48, width=64, num_frames=8, num_inference_steps=1)
    with pytest.raises(KumoInputError, match="8k\\+1"):  # 2 latent frames: the causal VAE needs an odd count
        pipe(PROMPT, height=48, width=64, num_frames=5, num_inference_steps=1)
    with pytest.raises(KumoInputError, match="height=40"):
        pipe(PROMPT, height=40, width=64, num_frames=9, num_inference_steps=1)
    with pytest.raises(KumoInputError, match="max_sequence_length"):
        pipe(PROMPT, **SIZE, num_inference_steps=1, max_sequence_length=32)
    with pytest.raises(KumoInputError, match="output_type"):
        pipe(PROMPT, **SIZE, num_inference_steps=1, output_type="gif")


# ---------------------------------------------------------------------------- memory switches


def test_vae_slicing_gives_identical_frames(pipe):
    def batch_of_two():
        return run(pipe, num_videos_per_prompt=2, generator=[gen(0), gen(1)], output_type="np")

    whole = batch_of_two()
    pipe.enable_vae_slicing()
    try:
        assert pipe.vae.use_slicing
        sliced = batch_of_two()
    finally:
        pipe.disable_vae_slicing()
    assert not pipe.vae.use_slicing
    assert sliced.shape == whole.shape == (2, 9, 48, 64, 3)
    # Same frames up to float rounding (batch 1 vs batch 2 convolutions sum in another order):
    # a value sitting on a .5 boundary may round to the neighbouring uint8 level.
    np.testing.assert_allclose(sliced, whole, atol=1e-5, rtol=0)
    assert np.abs(frames_to_uint8(sliced).astype(int) - frames_to_uint8(whole).astype(int)).max() <= 1


def test_cpu_decode_goes_clip_by_clip_with_the_batchs_frames(pipe, monkeypatch):
    """On the CPU a batch decodes one clip at a time (2.6x faster for four 128x128 clips,
    docs/benchmarks.md), giving what the batch decoded whole gives."""
    torch.manual_seed(0)
    latents = torch.randn(2, 3, pipe.vae.config.latent_channels, 6, 8)  # (B, F_lat, C, h, w): 9x48x64 clips
    with torch.no_grad():
        whole = pipe.vae.decode(latents.permute(0, 2, 1, 3, 4) / pipe.vae.config.scaling_factor).sample
        calls = []
        decode = pipe.vae.decode
        monkeypatch.setattr(pipe.vae, "decode", lambda z, *a, **k: calls.append(len(z)) or decode(z, *a, **k))
        clip_by_clip = pipe.decode_latents(latents)
    assert calls == [1, 1]
    assert clip_by_clip.shape == whole.shape == (2, 3, 9, 48, 64)
    torch.testing.assert_close(clip_by_clip, whole, atol=1e-5, rtol=0)


def test_vae_tiling_decodes_in_tiles_with_close_frames(pipe, monkeypatch):
    whole = run(pipe, output_type="np")
    calls = []
    tiled_decode = pipe.vae.tiled_decode
    monkeypatch.setattr(pipe.vae, "tiled_decode", lambda *a, **k: calls.append(1) or tiled_decode(*a, **k))
    # 32x32-pixel tiles (4x4 latents) with a quarter overlap: a 6x8 latent decodes as 2x3 tiles
    # whose stride (3 latents = 24 px) equals the kept part of each tile, so the seams line up.
    pipe.enable_vae_tiling(
        tile_sample_min_height=32,
        tile_sample_min_width=32,
        tile_overlap_factor_height=0.25,
        tile_overlap_factor_width=0.25,
    )
    try:
        assert pipe.vae.use_tiling
        tiled = run(pipe, output_type="np")
    finally:
        pipe.disable_vae_tiling()
    assert calls, "tiling was enabled but the VAE did not decode in tiles"
    assert tiled.shape == whole.shape == (1, 9, 48, 64, 3)
    diff = np.abs(tiled - whole)
    # Tiles see less context than the whole frame, so they are close, not equal.
    assert diff.mean() < 5e-3 and diff.max() < 0.1, (diff.mean(), diff.max())


def test_model_cpu_offload_hooks_on_cpu(pipe, fixtures_dir):
    """The offload sequence names real components and the hooks run; on a CPU-only machine
    the 'execution device' is the CPU itself, so this checks the wiring, not the memory saving."""
    offloaded = KumoPipeline.from_pretrained(fixtures_dir / "pipeline")
    offloaded.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload(device="cpu")
    assert all(hasattr(getattr(offloaded, name), "_hf_hook") for name in ("text_encoder", "transformer", "vae"))
    torch.testing.assert_close(run(offloaded, output_type="pt"), run(pipe, output_type="pt"), atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="enable_model_cpu_offload needs a CUDA GPU; none here")
def test_model_cpu_offload_on_cuda(fixtures_dir):
    pipe = KumoPipeline.from_pretrained(fixtures_dir / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload()
    out = run(pipe, output_type="pt")
    assert out.shape == (1, 9, 3, 48, 64)
    assert pipe.transformer.device.type == "cpu"  # moved back once the call finished
    reference = KumoPipeline.from_pretrained(fixtures_dir / "pipeline").to("cuda")
    reference.set_progress_bar_config(disable=True)
    torch.testing.assert_close(out.cpu(), run(reference, output_type="pt").cpu(), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------- samplers / callbacks


def test_callback_on_step_end_once_per_step(pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, int(t), tuple(tensors["latents"].shape)))
        if i == 3:  # a callback may replace the latents
            return {"latents": torch.zeros_like(tensors["latents"])}
        return {}

    out = run(pipe, steps=4, callback_on_step_end=callback)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert [s[1] for s in seen] == pipe.scheduler.timesteps.tolist() == [999, 749, 499, 249]
    assert all(s[2] == (1, *LATENT_SHAPE) for s in seen)
    assert torch.count_nonzero(out) == 0


def test_renoise_sampler_runs_and_is_seeded(pipe):
    seen = []
    a = run(pipe, sampler="renoise", steps=3, seed=1, callback_on_step_end=lambda p, i, t, x: seen.append(int(t)))
    b = run(pipe, sampler="renoise", steps=3, seed=1)
    c = run(pipe, sampler="renoise", steps=3, seed=2)
    assert a.shape == (1, *LATENT_SHAPE) and torch.isfinite(a).all()
    assert seen == renoise_timesteps(3).tolist() == [999, 666, 332]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-2
    # Its re-noising draws come from the generator too: same start noise, other stream -> other video.
    noise = torch.randn((1, *LATENT_SHAPE), generator=gen(1))
    d = run(pipe, sampler="renoise", steps=3, latents=noise, generator=gen(99))
    assert (a - d).abs().max() > 1e-2
    with pytest.raises(KumoInputError, match="sampler"):
        run(pipe, sampler="euler")


def test_turbo_consistency_scheduler_is_seeded(pipe, fixtures_dir):
    ddim = pipe.scheduler
    pipe.scheduler = KumoLCMScheduler.from_pretrained(fixtures_dir / "scheduler_lcm")
    try:
        a = run(pipe, steps=4, guidance_scale=2.0, seed=3)
        b = run(pipe, steps=4, guidance_scale=2.0, seed=3)
        noise = torch.randn((1, *LATENT_SHAPE), generator=gen(3))
        c = run(pipe, steps=4, guidance_scale=2.0, latents=noise, generator=gen(4))
    finally:
        pipe.scheduler = ddim
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-3  # the consistency steps draw noise from the generator


# ---------------------------------------------------------------------------- presets


def madit_parameter_count(heads, head_dim, layers, in_channels, time_embed_dim, text_dim, patch=2, out_channels=None):
    """Parameters of a MADiT, counted from the architecture (all linears with bias, affine LayerNorms)."""
    d, t, c_out = heads * head_dim, time_embed_dim, out_channels or in_channels
    linear = lambda i, o: i * o + o  # noqa: E731
    layer_norm = lambda n: 2 * n  # noqa: E731
    embed = (
        in_channels * patch * patch * d
        + d  # patch conv 2x2
        + linear(text_dim, d)  # text projection
        + linear(d, t)
        + linear(t, t)  # timestep MLP (the sinusoid and the 3D sin-cos table have none)
    )
    block = (
        2 * (linear(t, 6 * d) + layer_norm(d))  # norm1, norm2: AdaLN-zero (6 vectors) + shared LayerNorm
        + 4 * linear(d, d)
        + 2 * layer_norm(head_dim)  # attn1: q, k, v, out + per-head q/k LayerNorm
        + 2 * 4 * linear(d, d)  # attn2_1, attn2_2: q, k, v, out
        + linear(d, 4 * d)
        + linear(4 * d, d)  # feed-forward, 4x
    )
    head = layer_norm(d) + linear(t, 2 * d) + layer_norm(d) + linear(d, patch * patch * c_out)
    return embed + layers * block + head


KUMO_2_6B_PARAMETERS = 2_578_980_672  # = madit_parameter_count(30, 64, 30, 16, 512, 4096)


def test_kumo_2_6b_preset_on_meta_device():
    with torch.device("meta"):
        model = madit_from_preset("kumo-2.6b")
    assert next(model.parameters()).device.type == "meta"  # nothing allocated
    cfg = model.config
    assert (cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim) == (30, 30, 64)
    assert cfg.text_embed_dim == 4096 and cfg.max_text_seq_length == 226
    assert (cfg.sample_height, cfg.sample_width, cfg.sample_frames) == (60, 90, 41)
    vae_spatial = 8
    assert (cfg.sample_height * vae_spatial, cfg.sample_width * vae_spatial) == (480, 720)
    assert (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1 == 11  # latent frames
    expected = madit_parameter_count(30, 64, 30, cfg.in_channels, cfg.time_embed_dim, 4096)
    assert expected == KUMO_2_6B_PARAMETERS
    assert count_parameters(model) == expected


def test_parameter_formula_matches_the_fixture_checkpoint(pipe):
    cfg = pipe.transformer.config
    expected = madit_parameter_count(
        cfg.num_attention_heads,
        cfg.attention_head_dim,
        cfg.num_layers,
        cfg.in_channels,
        cfg.time_embed_dim,
        cfg.text_embed_dim,
        cfg.patch_size,
        cfg.out_channels,
    )
    assert count_parameters(pipe.transformer) == expected == 74_000


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown MADiT preset"):
        madit_from_preset("kumo-100b")


def test_tiny_preset_builds_saves_and_reloads(tmp_path):
    built = build_pipeline("kumo-tiny", seed=0)
    built.set_progress_bar_config(disable=True)
    built.save_pretrained(tmp_path / "tiny")
    reloaded = KumoPipeline.from_pretrained(tmp_path / "tiny")
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.transformer) is type(built.transformer)
    assert reloaded.transformer.config.num_layers == 2
    a = run(built, output_type="pt")
    b = run(reloaded, output_type="pt")
    assert a.shape == (1, 9, 3, 48, 64)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_call_without_sizes_or_guidance_uses_the_models_own_defaults(tmp_path):
    """pipe(prompt) alone makes the clip the transformer was made for (kumo-tiny: 48x64x9,
    not the original's 480x720x41) with the checkpoint's recommended steps and guidance,
    as `kumo generate` does; save_pretrained keeps the recommendation."""
    import json

    folder = tmp_path / "tiny"
    build_pipeline("kumo-tiny", seed=0).save_pretrained(folder)
    (folder / "kumo_defaults.json").write_text(json.dumps({"num_inference_steps": 3, "guidance_scale": 2.5}))
    pipe = KumoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.default_clip() == {"height": 48, "width": 64, "num_frames": 9}
    assert pipe.default_sampling() == {"num_inference_steps": 3, "guidance_scale": 2.5, "guidance_rescale": 0.0}

    steps = []
    implicit = pipe(
        PROMPT, generator=gen(0), output_type="pt", callback_on_step_end=lambda p, i, t, kw: steps.append(i) or {}
    ).frames
    explicit = pipe(
        PROMPT,
        generator=gen(0),
        output_type="pt",
        height=48,
        width=64,
        num_frames=9,
        num_inference_steps=3,
        guidance_scale=2.5,
    ).frames
    assert implicit.shape == (1, 9, 3, 48, 64) and steps == [0, 1, 2]
    torch.testing.assert_close(implicit, explicit, atol=0, rtol=0)

    pipe.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "kumo_defaults.json").read_text())["guidance_scale"] == 2.5
    with_lcm = KumoPipeline.from_pretrained(folder, scheduler=KumoLCMScheduler())
    assert with_lcm.default_sampling() == {"num_inference_steps": 4, "guidance_scale": 2.0, "guidance_rescale": 0.0}
