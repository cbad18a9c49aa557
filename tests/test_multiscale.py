"""Multi-scale patching (Lumina-Video) in MADiT: coarse patch embeddings and heads on the
shared trunk, their positions, the expansion of a single-scale model, the pipeline's
coarse-then-native schedule, `kumo generate --multiscale` and `kumo bench --multiscale`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_checks import assert_one_line_error
from diffusers.models.embeddings import get_3d_sincos_pos_embed
from tiny_runs import CallKwargs, perturbed, tiny_pipeline_pair

from kumovideo.cli import main
from kumovideo.models.transformer_kumo import (
    KumoTransformer3DModel,
    expand_for_frame_conditioning,
    expand_for_multiscale,
    madit_from_preset,
    multiscale_sincos_table,
)
from kumovideo.pipelines.loading import read_sampling_defaults
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

C, TEXT_LEN, TEXT_DIM = 4, 16, 24  # kumo-tiny


def inputs(batch: int = 2, frames: int = 3, height: int = 8, width: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, C, height, width, generator=g)
    text = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g)
    return x, text, torch.tensor([900, 10][:batch])


def patchify(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, F, C, H, W) -> (B, F*(H/k)*(W/k), C*k*k): frame by frame, row by row, each patch
    channel-major (the layout the heads write and unpatchify reads)."""
    b, f, c, h, w = x.shape
    x = x.reshape(b, f, c, h // k, k, w // k, k).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, f * (h // k) * (w // k), c * k * k)


@pytest.fixture(scope="module")
def base() -> KumoTransformer3DModel:
    torch.manual_seed(0)
    return perturbed(madit_from_preset("kumo-tiny"))


@pytest.fixture(scope="module")
def expanded(base) -> KumoTransformer3DModel:
    return expand_for_multiscale(base, [4, 8]).eval()


# ------------------------------------------------------------------------------ config


def test_a_plain_model_has_no_new_parameters_or_config_surprises():
    plain = madit_from_preset("kumo-tiny")
    assert plain.config.multiscale_patch_sizes is None and plain.patch_sizes == [2]
    assert not [n for n in plain.state_dict() if n.startswith(("scale_", "motion_"))]
    multi = madit_from_preset("kumo-tiny", multiscale_patch_sizes=[4])
    extra = sorted(set(multi.state_dict()) - set(plain.state_dict()))
    assert extra == ["scale_embeds.0.bias", "scale_embeds.0.weight", "scale_heads.0.bias", "scale_heads.0.weight"]
    assert multi.patch_sizes == [2, 4]
    assert multi.scale_heads[0].out_features == 4 * 4 * C and multi.scale_embeds[0].kernel_size == (4, 4)


@pytest.mark.parametrize("sizes", [[3], [2], [1], [4, 4], [4.0]])
def test_coarse_sizes_must_be_larger_multiples_of_the_patch(sizes):
    with pytest.raises(ValueError, match="multiscale_patch_sizes"):
        madit_from_preset("kumo-tiny", multiscale_patch_sizes=sizes)


def test_a_fresh_multiscale_model_predicts_zeros_at_every_scale():
    model = madit_from_preset("kumo-tiny", multiscale_patch_sizes=[4]).eval()
    x, text, t = inputs()
    with torch.no_grad():
        for k in (2, 4):
            assert not model(x, text, t, patch_size=k).sample.any()


# ------------------------------------------------------------------------------ positions


def test_the_table_at_ratio_one_is_diffusers_native_table():
    native = get_3d_sincos_pos_embed(32, (8, 4), 3, 1.875, 1.0, output_type="pt").flatten(0, 1)
    torch.testing.assert_close(multiscale_sincos_table(32, 3, 4, 8, 1, 1.875, 1.0), native, atol=0, rtol=0)


@pytest.mark.parametrize("ratio", [2, 4])
def test_a_coarse_token_sits_at_the_centre_of_its_native_patches(ratio):
    # A grid on half-patch steps (interpolation scale x 2): native coordinate m/2 is entry m, so
    # the centre i * r + (r - 1)/2 of coarse token i is entry 2 i r + r - 1.
    s, rows, cols, frames = 1.875, 2, 3, 2
    coarse = multiscale_sincos_table(32, frames, rows, cols, ratio, s, 1.0).reshape(frames, rows, cols, 32)
    fine = multiscale_sincos_table(32, frames, 2 * rows * ratio, 2 * cols * ratio, 1, 2 * s, 1.0)
    fine = fine.reshape(frames, 2 * rows * ratio, 2 * cols * ratio, 32)
    centre = torch.arange(rows) * 2 * ratio + ratio - 1, torch.arange(cols) * 2 * ratio + ratio - 1
    torch.testing.assert_close(coarse, fine[:, centre[0]][:, :, centre[1]])


def test_a_shifted_table_is_the_matching_block_of_a_larger_one():
    big = multiscale_sincos_table(32, 2, 5, 7, 1, 1.875, 1.0).reshape(2, 5, 7, 32)
    shifted = multiscale_sincos_table(32, 2, 3, 4, 1, 1.875, 1.0, offset=(2, 3)).reshape(2, 3, 4, 32)
    torch.testing.assert_close(shifted, big[:, 2:5, 3:7], atol=0, rtol=0)
    # a coarse grid's offset is in native patches: 2 and 4 native patches are 1 and 2 coarse tokens
    coarse = multiscale_sincos_table(32, 2, 2, 2, 2, 1.875, 1.0, offset=(2, 4)).reshape(2, 2, 2, 32)
    wider = multiscale_sincos_table(32, 2, 3, 4, 2, 1.875, 1.0).reshape(2, 3, 4, 32)
    torch.testing.assert_close(coarse, wider[:, 1:, 2:], atol=0, rtol=0)


def test_a_position_offset_moves_the_grid_and_zero_is_the_native_path(base):
    x, text, t = inputs()
    with torch.no_grad():
        native = base(x, text, t).sample
        torch.testing.assert_close(base(x, text, t, position_offset=(0, 0)).sample, native, atol=0, rtol=0)
        # the grid path at offset 0 is diffusers' patch embedding exactly
        torch.testing.assert_close(base.embed_on_grid(text, x, None), base.patch_embed(text, x), atol=0, rtol=0)
        moved = base(x, text, t, position_offset=(1, 2)).sample
    assert moved.shape == native.shape and not torch.allclose(moved, native)


# ------------------------------------------------------------------------------ shapes and layout


@pytest.mark.parametrize("k", [None, 2, 4, 8])
def test_every_scale_returns_the_input_shape(expanded, k):
    x, text, t = inputs()
    with torch.no_grad():
        out = expanded(x, text, t, patch_size=k).sample
    assert out.shape == x.shape and out.abs().sum() > 0


@pytest.mark.parametrize("k", [2, 4, 8])
def test_patchify_unpatchify_round_trip_and_token_order(expanded, k):
    x, text, t = inputs()
    b, f, _, h, w = x.shape
    patches = patchify(x, k)
    assert patches.shape == (b, f * (h // k) * (w // k), C * k * k)
    torch.testing.assert_close(expanded.unpatchify(patches, f, h, w, patch_size=k), x, atol=0, rtol=0)
    # The patch embedding reads tokens in the same order: conv == linear over patchify(x).
    conv = expanded.patch_embed.proj if k == 2 else expanded.scale_embeds[expanded.scale_index(k)]
    tokens = conv(x.flatten(0, 1)).flatten(2).transpose(1, 2).reshape(b, -1, conv.out_channels)
    linear = patches @ conv.weight.reshape(conv.out_channels, -1).T + conv.bias
    torch.testing.assert_close(tokens, linear, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [None, 4])
def test_the_split_forward_pieces_give_the_forward(expanded, k):
    """embed / run_blocks / head / unpatchify (what the sequence-parallel forward calls) at a scale."""
    x, text, t = inputs()
    with torch.no_grad():
        vision, text_tokens, temb = expanded.embed(x, text, t, patch_size=k)
        assert vision.shape[1] == expanded.num_vision_tokens(3, 8, 16, patch_size=k)
        vision, _ = expanded.run_blocks(vision, text_tokens, temb)
        pieces = expanded.unpatchify(expanded.head(vision, temb, patch_size=k), 3, 8, 16, patch_size=k)
        torch.testing.assert_close(pieces, expanded(x, text, t, patch_size=k).sample, atol=0, rtol=0)


def test_unknown_patch_sizes_and_sides_that_do_not_divide_are_one_line(expanded, base):
    x, text, t = inputs()
    with pytest.raises(KumoInputError, match=r"patch sizes \[2, 4, 8\]"):
        expanded(x, text, t, patch_size=6)
    with pytest.raises(KumoInputError, match=r"patch sizes \[2\]"):
        base(x, text, t, patch_size=4)
    x12, text12, t12 = inputs(width=12)
    with pytest.raises(KumoInputError, match="do not divide by the patch size 8") as info:
        expanded(x12, text12, t12, patch_size=8)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ expansion


def test_expansion_keeps_native_outputs_identical(base, expanded):
    x, text, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(expanded(x, text, t).sample, base(x, text, t).sample, atol=0, rtol=0)
        torch.testing.assert_close(expanded(x, text, t, patch_size=2).sample, base(x, text, t).sample, atol=0, rtol=0)
    assert expanded.config.multiscale_patch_sizes == [4, 8] and not expanded.config.motion_conditioning


@pytest.mark.parametrize("k", [4, 8])
def test_a_coarse_token_starts_as_the_mean_of_its_native_patch_embeddings(expanded, k):
    x, _, _ = inputs()
    native = expanded.patch_embed.proj(x.flatten(0, 1))  # (B*F, D, H/2, W/2)
    coarse = expanded.scale_embeds[expanded.scale_index(k)](x.flatten(0, 1))  # (B*F, D, H/k, W/k)
    torch.testing.assert_close(coarse, F.avg_pool2d(native, k // 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [4, 8])
def test_a_coarse_head_starts_as_the_native_head_repeated_over_its_sub_patches(expanded, k):
    """Each p x p sub-patch of a coarse patch gets the native head's prediction for the
    coarse token: the coarse output is blocky (r x r equal sub-patches)."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 3 * (8 // k) * (16 // k), 32, generator=g)
    with torch.no_grad():
        native = expanded.proj_out(hidden)  # (B, N_k, p*p*C): one p x p patch per coarse token
        coarse = expanded.scale_heads[expanded.scale_index(k)](hidden)  # (B, N_k, k*k*C)
    r = k // 2
    coarse = coarse.reshape(2, -1, C, r, 2, r, 2)  # (B, N_k, C, sub-row, p, sub-col, p)
    expected = native.reshape(2, -1, C, 1, 2, 1, 2).expand_as(coarse)
    torch.testing.assert_close(coarse, expected, atol=1e-6, rtol=1e-6)
    # and so the whole coarse prediction is blocky
    x, text, t = inputs()
    with torch.no_grad():
        out = expanded(x, text, t, patch_size=k).sample.reshape(2, 3, C, 8 // k, r, 2, 16 // k, r, 2)
    torch.testing.assert_close(out, out[:, :, :, :, :1, :, :, :1].expand_as(out), atol=1e-6, rtol=1e-6)


def test_expansion_keeps_frame_conditioning_and_existing_scales(base):
    conditioned = expand_for_frame_conditioning(base)
    both = expand_for_multiscale(conditioned, [4])
    assert both.config.frame_conditioning and both.scale_embeds[0].in_channels == 3 * C + 2
    x, text, t = inputs()
    condition = torch.randn(2, 3, 2 * C + 2, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            both(x, text, t, condition=condition).sample,
            conditioned(x, text, t, condition=condition).sample,
            atol=0,
            rtol=0,
        )
        assert both(x, text, t, condition=condition, patch_size=4).sample.shape == x.shape
    assert expand_for_multiscale(both, [4]) is both  # nothing to add
    more = expand_for_multiscale(both, [8])
    assert more.config.multiscale_patch_sizes == [4, 8]
    torch.testing.assert_close(more.scale_embeds[0].weight, both.scale_embeds[0].weight, atol=0, rtol=0)


def test_the_coarse_modules_learn_at_the_coarse_scale(expanded):
    import copy

    model = copy.deepcopy(expanded).train()
    x, text, t = inputs()
    model(x, text, t, patch_size=4).sample.square().mean().backward()
    assert model.scale_embeds[0].weight.grad.abs().sum() > 0 and model.scale_heads[0].weight.grad.abs().sum() > 0
    assert model.scale_embeds[1].weight.grad is None and model.proj_out.weight.grad is None
    assert model.patch_embed.text_proj.weight.grad.abs().sum() > 0  # shared with the native scale


def test_save_and_load_keep_the_scales(expanded, tmp_path):
    expanded.save_pretrained(tmp_path / "t")
    assert (tmp_path / "t" / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((tmp_path / "t" / "config.json").read_text())["multiscale_patch_sizes"] == [4, 8]
    loaded = KumoTransformer3DModel.from_pretrained(tmp_path / "t", use_safetensors=True).eval()
    assert loaded.config.multiscale_patch_sizes == [4, 8]
    for name, value in expanded.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, atol=0, rtol=0)
    x, text, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, text, t, patch_size=4).sample, expanded(x, text, t, patch_size=4).sample)


# ------------------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def pipes():
    """(single-scale tiny pipeline, the same with coarse scale 4 added), perturbed weights."""
    return tiny_pipeline_pair(lambda transformer: expand_for_multiscale(transformer, [4]))


def sample(pipe, **kwargs):
    settings = dict(height=64, width=64, num_frames=9, num_inference_steps=4, output_type="latent")
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**settings, **kwargs}).frames


@pytest.mark.parametrize(
    "split, expected",
    [(0.5, [4, 4, None, None]), (0.25, [4, None, None, None]), (0.1, [4, None, None, None]), (1.0, [4] * 4)],
)
def test_multiscale_runs_the_first_steps_at_the_coarse_scale(pipes, split, expected):
    _, multi = pipes
    with CallKwargs(multi.transformer, "patch_size") as sizes:
        out = sample(multi, multiscale=True, multiscale_split=split)
    assert sizes == expected and out.shape == (1, 3, 4, 8, 8) and torch.isfinite(out).all()


def test_the_split_defaults_to_the_checkpoints_then_a_half(pipes):
    _, multi = pipes
    assert multi.multiscale_split == 0.5
    with CallKwargs(multi.transformer, "patch_size") as sizes:
        sample(multi, multiscale=True)
    assert sizes == [4, 4, None, None]
    multi.sampling_defaults = {"multiscale_split": 0.75}
    try:
        with CallKwargs(multi.transformer, "patch_size") as sizes:
            sample(multi, multiscale=True)
        assert sizes == [4, 4, 4, None]
    finally:
        multi.sampling_defaults = {}


def test_the_renoise_sampler_follows_the_same_schedule(pipes):
    _, multi = pipes
    with CallKwargs(multi.transformer, "patch_size") as sizes:
        sample(multi, multiscale=True, sampler="renoise")
    assert sizes == [4, 4, None, None]


def test_without_multiscale_an_expanded_pipeline_samples_as_before(pipes):
    plain, multi = pipes
    with CallKwargs(multi.transformer, "patch_size") as sizes:
        expanded_out = sample(multi)
    assert sizes == [None] * 4
    torch.testing.assert_close(expanded_out, sample(plain), atol=0, rtol=0)
    assert not torch.equal(sample(multi, multiscale=True), expanded_out)


@pytest.mark.parametrize(
    "which, kwargs, needle",
    [
        ("plain", dict(multiscale=True), "has one patch size (no multiscale_patch_sizes"),
        ("multi", dict(multiscale=True, height=48), "height=48 is not a multiple of 32"),
        ("multi", dict(multiscale=True, width=80), "use 64 or 96"),
        ("multi", dict(multiscale=True, multiscale_split=0.0), "(0, 1]"),
        ("multi", dict(multiscale=True, multiscale_split=1.5), "(0, 1]"),
        ("multi", dict(multiscale_split=0.5), "needs multiscale=True"),
    ],
)
def test_bad_multiscale_calls_are_refused_before_any_work(pipes, which, kwargs, needle):
    pipe = dict(zip(("plain", "multi"), pipes))[which]
    with CallKwargs(pipe.transformer, "patch_size") as sizes, pytest.raises(KumoInputError) as info:
        sample(pipe, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert sizes == []


def test_two_phase_timesteps_with_the_even_boundary_are_the_schedulers_own():
    from kumovideo.schedulers import KumoDDIMScheduler
    from kumovideo.schedulers.sampling import two_phase_timesteps

    scheduler = KumoDDIMScheduler()
    scheduler.set_timesteps(50)
    assert two_phase_timesteps(50, 25, 0.5).tolist() == scheduler.timesteps.tolist()
    assert two_phase_timesteps(50, 42, 0.16).tolist() == scheduler.timesteps.tolist()
    uneven = two_phase_timesteps(50, 42, 0.5).tolist()
    assert uneven[:2] == [999, 987] and min(uneven[:42]) > 500
    assert uneven[42:] == [499, 436, 374, 312, 249, 186, 124, 62]
    assert uneven == sorted(uneven, reverse=True) and len(set(uneven)) == 50


def test_ddim_on_a_list_is_the_schedulers_ddim_on_its_own_list():
    """sample_ddim (any timesteps) steps exactly as KumoDDIMScheduler does on its even ones."""
    from kumovideo.schedulers import KumoDDIMScheduler
    from kumovideo.schedulers.sampling import sample_ddim, sample_scheduler

    def model(x, t):  # any smooth v-prediction
        return torch.tanh(x) * (0.5 + t / 2000)

    scheduler = KumoDDIMScheduler()
    scheduler.set_timesteps(10)
    x = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = sample_scheduler(model, x, scheduler, scheduler.timesteps)
    ours = sample_ddim(model, x, scheduler.timesteps, scheduler.alphas_cumprod)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_a_handoff_moves_where_the_coarse_steps_end_not_how_many(pipes):
    """multiscale_handoff=0.5 with split 0.75 at 8 steps: 6 coarse calls above t = 500, the 2
    native ones below; the even boundary (1 - split) samples as no handoff does."""
    from kumovideo.schedulers.sampling import two_phase_timesteps

    _, multi = pipes
    with CallKwargs(multi.transformer, "patch_size") as sizes, CallKwargs(multi.transformer, "timestep") as steps:
        sample(multi, multiscale=True, multiscale_split=0.75, multiscale_handoff=0.5, num_inference_steps=8)
    assert sizes == [4] * 6 + [None] * 2
    assert [t[0] for t in steps] == two_phase_timesteps(8, 6, 0.5).tolist()
    torch.testing.assert_close(
        sample(multi, multiscale=True, multiscale_split=0.5, multiscale_handoff=0.5),
        sample(multi, multiscale=True, multiscale_split=0.5),
        atol=1e-5,
        rtol=1e-5,
    )
    multi.sampling_defaults = {"multiscale_split": 0.75, "multiscale_handoff": 0.5}
    try:
        with CallKwargs(multi.transformer, "timestep") as steps:
            sample(multi, multiscale=True, num_inference_steps=8)
        assert [t[0] for t in steps] == two_phase_timesteps(8, 6, 0.5).tolist()
        with CallKwargs(multi.transformer, "timestep") as steps:  # one step, all coarse: nothing to hand off
            sample(multi, multiscale=True, num_inference_steps=1)
        assert [t[0] for t in steps] == [999]
        with CallKwargs(multi.transformer, "timestep") as steps:  # the default does not apply to renoise
            sample(multi, multiscale=True, sampler="renoise")
        assert [t[0] for t in steps] == [999, 749, 499, 249]
    finally:
        multi.sampling_defaults = {}


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(multiscale_handoff=0.5), "needs multiscale=True"),
        (dict(multiscale=True, multiscale_handoff=1.0), "(0, 1)"),
        (dict(multiscale=True, multiscale_handoff=0.5, sampler="renoise"), "not --sampler renoise"),
    ],
)
def test_bad_handoffs_are_refused_before_any_work(pipes, kwargs, needle):
    _, multi = pipes
    with CallKwargs(multi.transformer, "patch_size") as sizes, pytest.raises(KumoInputError) as info:
        sample(multi, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert sizes == []


def test_kumo_defaults_split_is_checked(tmp_path):
    (tmp_path / "kumo_defaults.json").write_text(json.dumps({"multiscale_split": 0}))
    with pytest.raises(KumoInputError, match="multiscale_split is 0, but must be a fraction"):
        read_sampling_defaults(tmp_path)
    (tmp_path / "kumo_defaults.json").write_text(json.dumps({"multiscale_split": 0.3}))
    assert read_sampling_defaults(tmp_path) == {"multiscale_split": 0.3}
    (tmp_path / "kumo_defaults.json").write_text(json.dumps({"multiscale_handoff": 1}))
    with pytest.raises(KumoInputError, match="multiscale_handoff is 1, but must be a noise level"):
        read_sampling_defaults(tmp_path)


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def multiscale_folder(pipes, tmp_path_factory):
    """A saved tiny pipeline with coarse scale 4, sampling 2 steps at 64x64 by default."""
    _, multi = pipes
    folder = tmp_path_factory.mktemp("multiscale") / "pipe"
    multi.sampling_defaults = {"num_inference_steps": 2, "guidance_scale": 2.0, "multiscale_split": 0.5}
    try:
        multi.save_pretrained(folder)
    finally:
        multi.sampling_defaults = {}
    config = json.loads((folder / "transformer" / "config.json").read_text())
    config.update(sample_height=8, sample_width=8)  # default clip 64x64: the coarse patches tile it
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    return folder


def test_cli_multiscale_on_a_single_scale_model_is_one_line(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["generate", "a", "--model", str(fixtures_dir / "pipeline"), "--multiscale", "-o", str(out)]) == 2
    assert_one_line_error(capsys, "has one patch size", "drop --multiscale")
    assert not out.exists()


def test_cli_turbo_multiscale_says_the_turbo_model_has_one_scale(tmp_path, capsys):
    from kumovideo.builtin import is_trained

    if not is_trained(turbo=True):
        pytest.skip("this build ships no built-in Turbo model")
    assert main(["generate", "a", "--turbo", "--multiscale", "-o", str(tmp_path / "x.mp4")]) == 2
    assert_one_line_error(capsys, "Turbo model", "has one patch size")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--multiscale-split", "0.5"], "--multiscale-split needs --multiscale"),
        (["--multiscale", "--multiscale-split", "0"], "(0, 1]"),
        (["--multiscale", "--multiscale-split", "nan"], "(0, 1]"),
        (["--multiscale", "--parallel", "ulysses=1,cfg=1"], "drop --parallel"),
        (["--multiscale-handoff", "0.5"], "--multiscale-handoff needs --multiscale"),
        (["--multiscale", "--multiscale-handoff", "1"], "in (0, 1)"),
    ],
)
def test_cli_multiscale_flags_are_one_line(tmp_path, capsys, extra, needle):
    assert main(["generate", "a", "-o", str(tmp_path / "x.mp4"), *extra]) == 2
    assert_one_line_error(capsys, needle)


def test_cli_refuses_sides_the_coarse_patches_do_not_tile_before_loading_weights(
    multiscale_folder, tmp_path, capsys, monkeypatch
):
    from kumovideo.pipelines import KumoPipeline

    def refuse(cls, *args, **kwargs):  # the refusal must come before any weights load
        raise AssertionError("the weights loaded before the check")

    monkeypatch.setattr(KumoPipeline, "from_pretrained", classmethod(refuse))
    out = tmp_path / "x.mp4"
    args = ["generate", "a", "--model", str(multiscale_folder), "--multiscale", "-o", str(out)]
    assert main([*args, "--height", "48"]) == 2
    assert_one_line_error(capsys, "height=48 is not a multiple of 32", "use 32 or 64")


def test_cli_generates_with_multiscale(multiscale_folder, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    args = ["generate", "a red circle", "--model", str(multiscale_folder), "--multiscale", "-o", str(out)]
    assert main([*args, "--frames", "9"]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    handoff = ["--multiscale-split", "0.75", "--multiscale-handoff", "0.5", "--steps", "4"]
    assert main([*args, "--frames", "9", *handoff]) == 0


def test_cli_eval_records_the_handoff_it_sampled_with(multiscale_folder, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "shapes", "--model", str(multiscale_folder), "--n", "2", "--steps", "4", "--out", str(out)]
    assert main([*args, "--multiscale", "--multiscale-split", "0.75", "--multiscale-handoff", "0.5"]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert (summary["multiscale_split"], summary["multiscale_handoff"]) == (0.75, 0.5)


def test_bench_times_a_multiscale_loop_beside_the_single_scale_one():
    from kumovideo.perf.bench import BenchSpec, format_table, run_bench

    spec = BenchSpec(
        preset="kumo-tiny", height=64, width=64, steps=4, runs=1, warmup=1, device="cpu", threads=1, multiscale=True
    )
    result = run_bench(spec)
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"eager", "multiscale"}
    assert rows["multiscale"]["multiscale"] == {"patch_size": 4, "coarse_steps": 2}
    assert rows["multiscale"]["flops_per_step"] < rows["eager"]["flops_per_step"]
    assert rows["multiscale"]["e2e_s"]["median"] > 0
    assert "the first 2 of 4 steps at patch 4" in format_table(result)
    # --multiscale-split: a larger share of coarse steps, fewer FLOPs a step on average
    more = run_bench(dataclasses.replace(spec, multiscale_split=0.75, e2e=False, baseline=False))
    (row,) = more["rows"]
    assert row["multiscale"] == {"patch_size": 4, "coarse_steps": 3}
    assert row["flops_per_step"] < rows["multiscale"]["flops_per_step"]
    with pytest.raises(KumoInputError, match="needs --multiscale"):
        run_bench(dataclasses.replace(spec, multiscale=False, multiscale_split=0.75))


@pytest.mark.parametrize(
    "flags, complaint",
    [
        (["--multiscale-split", "0.5"], "needs --multiscale"),
        (["--multiscale", "--multiscale-split", "1.5"], "multiscale_split=1.5"),
    ],
)
def test_cli_bench_refuses_a_bad_multiscale_split_in_one_line(capsys, flags, complaint):
    argv = ["bench", "--preset", "kumo-tiny", "--height", "64", "--width", "64", "--steps", "2", "--no-e2e"]
    assert main([*argv, *flags]) == 2
    assert_one_line_error(capsys, complaint)


def test_drop_feature_heads_keeps_the_native_model_and_makes_the_flag_a_refusal(multiscale_folder, tmp_path, capsys):
    """scripts/drop_feature_heads.py: the copy has no coarse scale, the same native weights,
    and `--multiscale` on it is the one-line refusal of a single-scale model."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parent.parent
    plain = tmp_path / "plain"

    def drop_heads():
        script = ["scripts/drop_feature_heads.py", str(multiscale_folder), str(plain)]
        return subprocess.run([sys.executable, *script], cwd=repo, capture_output=True, text=True, timeout=120)

    run = drop_heads()
    assert run.returncode == 0, run.stderr
    assert "same output" in run.stdout
    config = json.loads((plain / "transformer" / "config.json").read_text())
    assert not config["multiscale_patch_sizes"] and not config["motion_conditioning"]
    weights = "transformer/diffusion_pytorch_model.safetensors"
    before, after = load_file(multiscale_folder / weights), load_file(plain / weights)
    assert set(before) - set(after) and all(name.startswith("scale_") for name in set(before) - set(after))
    assert all(torch.equal(before[name], after[name]) for name in after)
    assert (plain / "model_index.json").exists() and (plain / "vae").is_dir()
    out = tmp_path / "x.mp4"
    assert main(["generate", "a", "--model", str(plain), "--multiscale", "-o", str(out)]) == 2
    assert_one_line_error(capsys, "has one patch size", "drop --multiscale")
    again = drop_heads()
    assert again.returncode == 2 and "exists" in again.stderr  # never over an existing folder

    # scripts/graft_feature_heads.py, the inverse: the heads grafted back from the original
    # give the original model tensor for tensor, with its config and sampling defaults.
    grafted = tmp_path / "grafted"
    script = ["scripts/graft_feature_heads.py", str(plain), str(multiscale_folder), str(grafted)]
    run = subprocess.run([sys.executable, *script], cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "native output unchanged" in run.stdout
    back = load_file(grafted / weights)
    assert set(back) == set(before) and all(torch.equal(before[name], back[name]) for name in before)
    assert json.loads((grafted / "transformer" / "config.json").read_text())["multiscale_patch_sizes"] == [4]
    assert (grafted / "kumo_defaults.json").read_text() == (multiscale_folder / "kumo_defaults.json").read_text()
    script = ["scripts/graft_feature_heads.py", str(multiscale_folder), str(multiscale_folder), str(tmp_path / "g2")]
    twice = subprocess.run([sys.executable, *script], cwd=repo, capture_output=True, text=True, timeout=120)
    assert twice.returncode == 1 and "already has coarse scales" in twice.stderr  # the base must be plain
