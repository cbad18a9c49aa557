"""Conditioning frames (docs/conditioning.md): slots and masks, MADiT's frame_conditioning,
the zero-initialised expansion, refusals of unconditioned models, conditioned training from
frame-latent shards, and a tiny model that learns to copy the first frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.cli import main
from kumovideo.models.transformer_kumo import condition_channels, expand_for_frame_conditioning, madit_from_preset
from kumovideo.pipelines.conditioning import END, MID, latent_slot, place_latents, task_frames
from kumovideo.pipelines.factory import build_pipeline
from kumovideo.training.objectives import diffuse
from kumovideo.utils.errors import KumoInputError

C, H, W = 4, 6, 8  # kumo-tiny latents


def masks(condition: torch.Tensor) -> list[tuple[int, int]]:
    """(end mask, mid mask) of each latent frame of a condition (F, 2C + 2, h, w)."""
    c = (condition.shape[1] - 2) // 2
    return [(int(f[2 * c].max()), int(f[2 * c + 1].max())) for f in condition]


def test_slots_follow_the_causal_vae_groups():
    assert latent_slot(0) == (0, END)
    assert [latent_slot(i) for i in (2, 4, 6, 8, 14, 16)] == [
        (1, MID),
        (1, END),
        (2, MID),
        (2, END),
        (4, MID),
        (4, END),
    ]
    for odd in (1, 3, 5):
        with pytest.raises(KumoInputError, match="0 or even"):
            latent_slot(odd)


@pytest.mark.parametrize(
    "task, expected",
    [
        ("i2v", [(1, 0), (0, 0), (0, 0), (0, 0), (0, 0)]),
        ("interpolate4", [(1, 0), (1, 0), (1, 0), (1, 0), (1, 0)]),
        ("interpolate2", [(1, 0), (1, 1), (1, 1), (1, 1), (1, 1)]),
        ("none", [(0, 0)] * 5),
    ],
)
def test_place_latents_masks_and_values_for_each_task(task, expected):
    frames = task_frames(task, 17)
    latents = {i: torch.full((C, H, W), float(i + 1)) for i in frames}
    condition = place_latents(latents, 5, (C, H, W))
    assert condition.shape == (5, condition_channels(C), H, W) == (5, 2 * C + 2, H, W)
    assert masks(condition) == expected
    for i in frames:
        k, slot = latent_slot(i)
        assert torch.equal(condition[k, slot * C : (slot + 1) * C], latents[i])
    assert condition.sum() == sum(v.sum() for v in latents.values()) + sum(sum(m) for m in expected) * H * W


def test_frame_conditioning_widens_only_the_patch_embedding():
    plain = madit_from_preset("kumo-tiny")
    conditioned = madit_from_preset("kumo-tiny", frame_conditioning=True)
    assert plain.patch_embed.proj.in_channels == C
    assert conditioned.patch_embed.proj.in_channels == 3 * C + 2
    assert conditioned.config.in_channels == C and conditioned.proj_out.out_features == 4 * C  # out: C per pixel
    assert "frame_conditioning" not in json.loads(plain.to_json_string()) or not plain.config.frame_conditioning


def test_expansion_keeps_text_to_video_outputs_identical():
    torch.manual_seed(0)
    model = madit_from_preset("kumo-tiny").eval()
    for p in model.parameters():  # non-trivial outputs (the fresh init predicts zeros)
        p.data.normal_(0, 0.05)
    x, text, t = torch.randn(2, 3, C, H, W), torch.randn(2, 16, 24), torch.tensor([10, 900])
    expanded = expand_for_frame_conditioning(model).eval()
    with torch.no_grad():
        before = model(x, text, t).sample
        assert torch.equal(expanded(x, text, t).sample, before)
        condition = torch.randn(2, 3, 2 * C + 2, H, W)  # zero weights: the condition changes nothing yet
        assert torch.equal(expanded(x, text, t, condition=condition).sample, before)


def test_a_condition_is_refused_by_an_unconditioned_model_and_checked_for_shape():
    model = madit_from_preset("kumo-tiny")
    x, text = torch.randn(1, 3, C, H, W), torch.randn(1, 16, 24)
    with pytest.raises(KumoInputError, match="not trained with conditioning frames"):
        model(x, text, 5, condition=torch.zeros(1, 3, 2 * C + 2, H, W))
    conditioned = madit_from_preset("kumo-tiny", frame_conditioning=True)
    with pytest.raises(KumoInputError, match="expected"):
        conditioned(x, text, 5, condition=torch.zeros(1, 3, C, H, W))


def test_pipeline_refuses_an_image_for_an_unconditioned_model_and_bad_frames():
    pipe = build_pipeline("kumo-tiny")
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(KumoInputError, match="not trained with conditioning frames"):
        pipe("a red circle", image=image, num_inference_steps=1)
    pipe.transformer = expand_for_frame_conditioning(pipe.transformer)
    with pytest.raises(KumoInputError, match="0 or even"):
        pipe("a red circle", conditioning_frames={3: image}, num_inference_steps=1)
    with pytest.raises(KumoInputError, match="outside"):
        pipe("a red circle", conditioning_frames={10: image}, num_inference_steps=1)
    with pytest.raises(KumoInputError, match="not both"):
        pipe("a red circle", image=image, conditioning_frames={0: image}, num_inference_steps=1)


def test_image_guidance_runs_three_branches_and_resizes_with_a_note(caplog):
    pipe = build_pipeline("kumo-tiny")
    pipe.transformer = expand_for_frame_conditioning(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    batches = []
    pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: (
            batches.append(args[0].shape[0]) if args else batches.append(kwargs["hidden_states"].shape[0])
        ),
        with_kwargs=True,
    )
    image = np.full((30, 90, 3), 200, np.uint8)  # another size and aspect
    with caplog.at_level("WARNING", logger="kumovideo"):
        out = pipe(
            "a", image=image, image_guidance_scale=2.0, guidance_scale=3.0, num_inference_steps=2, output_type="latent"
        ).frames
    assert out.shape == (1, 3, C, H, W) and batches == [3, 3]
    assert any("resized and centre-cropped" in r.getMessage() for r in caplog.records)
    batches.clear()
    pipe("a", image=np.zeros((48, 64, 3), np.uint8), guidance_scale=3.0, num_inference_steps=1, output_type="latent")
    assert batches == [2]  # the condition rides on both text branches: plain T2V's cost
    # Text guidance off: two branches, both with the text, the first without the image.
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    batches.clear()
    image = np.full((48, 64, 3), 200, np.uint8)
    pipe("a", image=image, image_guidance_scale=2.0, guidance_scale=1.0, num_inference_steps=1, output_type="latent")
    assert batches == [2]
    without, with_image = seen[0]["condition"].chunk(2)
    assert not without.any() and with_image.abs().sum() > 0
    text_a, text_b = seen[0]["encoder_hidden_states"].chunk(2)
    assert torch.equal(text_a, text_b)


def test_cli_refuses_an_unconditioned_model_before_loading_weights(tmp_path, capsys):
    # A folder with the transformer's config and no weights at all: the refusal must come first.
    folder = tmp_path / "t2v"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text(madit_from_preset("kumo-tiny").to_json_string())
    image = tmp_path / "first.png"
    from PIL import Image

    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle", "--image", str(image), "--model", str(folder), "-o", str(out)]) == 2
    assert_one_line_error(capsys, "not trained with conditioning frames")
    assert main(["generate", "a", "--interpolate", "4", "--interpolate-model", str(folder), "-o", str(out)]) == 2
    assert_one_line_error(capsys, "not trained with conditioning frames")
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--image", "IMG", "--interpolate", "4"], ["--image and --interpolate"]),
        (["--image", "NOTIMG"], ["cannot be read as an image"]),
        (["--image", "MISSING"], ["not found"]),
        (["--interpolate", "3"], ["use 2 or 4"]),
        (["--image-guidance", "2"], ["needs --image or --interpolate"]),
    ],
)
def test_generate_frames_flags_refused_in_one_line(tmp_path, capsys, extra, needles):
    from PIL import Image

    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "not.png").write_text("not an image")
    paths = {"IMG": tmp_path / "img.png", "NOTIMG": tmp_path / "not.png", "MISSING": tmp_path / "none.png"}
    extra = [str(paths.get(a, a)) for a in extra]
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle", "-o", str(out), *extra]) == 2
    assert_one_line_error(capsys, *needles)
    assert not out.exists()


def test_tiny_model_learns_to_copy_the_first_frame(one_thread):
    """A 2-layer MADiT with frame_conditioning, random latents: frame 0 can only be predicted
    from the condition, so after a few hundred steps its x0 estimate at high noise must copy it."""
    torch.manual_seed(0)
    model = madit_from_preset("kumo-tiny", frame_conditioning=True, sample_frames=5, sample_height=4, sample_width=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    alphas = torch.linspace(0.999, 0.01, 1000)  # alpha_bar per timestep, enough for this test
    text = torch.zeros(32, 16, 24)

    def batch(n: int):
        x0 = torch.randn(n, 2, C, 4, 4)  # (B, F_lat, C, h, w): frame 0 known, frame 1 not
        condition = place_latents({0: x0[0, 0]}, 2, (C, 4, 4)).expand(n, -1, -1, -1, -1).clone()
        for b in range(n):
            condition[b, 0, :C] = x0[b, 0]
        return x0, condition

    for _ in range(300):
        x0, condition = batch(32)
        t = torch.randint(0, 1000, (32,))
        x_t, v = diffuse(x0, torch.randn_like(x0), alphas[t])
        loss = torch.nn.functional.mse_loss(model(x_t, text, t, condition=condition).sample, v)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    x0, condition = batch(32)
    t = torch.full((32,), 900)
    a = alphas[t].view(-1, 1, 1, 1, 1)
    x_t, _ = diffuse(x0, torch.randn_like(x0), alphas[t])
    with torch.no_grad():
        v = model(x_t, text, t, condition=condition).sample
    x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * v
    copied = torch.mean((x0_hat[:, 0] - x0[:, 0]) ** 2)
    unknown = torch.mean((x0_hat[:, 1] - x0[:, 1]) ** 2)
    assert copied < 0.2 < unknown, (copied, unknown)  # frame 0 copied; frame 1 (unknown) near its variance


def test_conditioned_training_reads_frame_latents_and_refuses_shards_without_them(tmp_path, capsys, one_thread):
    from kumovideo.training.latent_cache import cache_shapes_latents

    torch.manual_seed(0)
    pipe = build_pipeline("kumo-tiny")
    pipe.save_pretrained(tmp_path / "base")
    cache_shapes_latents(pipe.vae, "vae", tmp_path / "plain", 4, 32, 9, seed=1, batch_size=4)
    cache_shapes_latents(pipe.vae, "vae", tmp_path / "frames", 4, 32, 9, seed=1, batch_size=4, frame_latents=True)
    index = json.loads((tmp_path / "frames" / "index.json").read_text())
    assert index["clips"][0]["frame_latents"] == [0, 2, 4, 6, 8]

    def config(cache: str) -> str:
        path = tmp_path / f"{cache}.json"
        path.write_text(
            json.dumps(
                {
                    "kind": "dit",
                    "output_dir": str(tmp_path / f"run-{cache}"),
                    "preset": "kumo-tiny",
                    "init_from": str(tmp_path / "base"),
                    "transformer": {"frame_conditioning": True},
                    "conditioning": {"i2v": 0.5, "interpolate4": 0.25, "interpolate2": 0.25},
                    "warmup_steps": 1,
                    "stages": [
                        {
                            "name": "s",
                            "steps": 2,
                            "size": 32,
                            "num_frames": 9,
                            "batch_size": 2,
                            "latents": str(tmp_path / cache / "index.json"),
                        }
                    ],
                }
            )
        )
        return str(path)

    capsys.readouterr()
    assert main(["train", "dit", "--config", config("plain")]) == 2
    assert_one_line_error(capsys, "holds no frame latents", "--frame-latents")
    assert main(["train", "dit", "--config", config("frames")]) == 0
    saved = json.loads((tmp_path / "run-frames" / "pipeline" / "transformer" / "config.json").read_text())
    assert saved["frame_conditioning"] is True and saved["in_channels"] == C


def test_the_image_latent_is_kept_as_latent_frame_0():
    from kumovideo.pipelines.conditioning import encode_images, images_to_tensor

    pipe = build_pipeline("kumo-tiny")
    pipe.transformer = expand_for_frame_conditioning(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    call = dict(num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0))
    kept = pipe("a", image=image, **call).frames
    call["generator"] = torch.Generator().manual_seed(0)
    own = pipe("a", image=image, keep_first_frame=False, **call).frames
    expected = encode_images(pipe.vae, images_to_tensor([image]))[0]
    assert torch.allclose(kept[0, 0], expected, atol=1e-5)
    assert torch.equal(kept[:, 1:], own[:, 1:]) and not torch.allclose(own[0, 0], expected)


def test_rebasing_a_fine_tune_adds_its_change_to_the_new_base():
    """scripts/rebase_finetune.py: new base + (fine-tune - old base), the widened patch
    embedding's conditioning channels kept as the fine-tune trained them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from rebase_finetune import rebase_state

    torch.manual_seed(0)
    old = {"w": torch.randn(4, 3), "proj": torch.randn(2, 8, 2, 2)}
    new = {k: v + torch.randn_like(v) for k, v in old.items()}
    tuned = {"w": old["w"] + 0.5, "proj": torch.cat([old["proj"] - 0.25, torch.randn(2, 18, 2, 2)], 1).half()}
    out = rebase_state(old, new, tuned)
    assert torch.allclose(out["w"], new["w"] + 0.5)
    assert out["proj"].dtype == torch.float16 and out["proj"].shape == (2, 26, 2, 2)
    assert torch.allclose(out["proj"][:, :8].float(), (new["proj"] - 0.25).half().float(), atol=2e-3)
    assert torch.equal(out["proj"][:, 8:], tuned["proj"][:, 8:])  # the condition's channels: the fine-tune's
    same = rebase_state(old, old, tuned)  # no change to the base: the fine-tune itself
    assert torch.allclose(same["w"], tuned["w"])
    halfway = rebase_state(old, old, tuned, scale=0.5)  # WiSE-FT: halfway from the base to the fine-tune
    assert torch.allclose(halfway["w"], old["w"] + 0.25)
    assert torch.equal(halfway["proj"][:, 8:], tuned["proj"][:, 8:])
    with pytest.raises(SystemExit, match="different tensors"):
        rebase_state(old, {"w": new["w"]}, tuned)
