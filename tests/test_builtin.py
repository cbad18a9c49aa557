"""The shipped built-in model: it is there, loads offline, and does what a prompt says."""

import json

import numpy as np
import pytest
import torch

from kumovideo.builtin import BUILTIN_DIRS, LUMINA_DIR, builtin_model_dir, is_trained, lumina_request
from kumovideo.cli import main
from kumovideo.evaluation.shapes_judge import PALETTE_NAMES, nearest_palette
from kumovideo.pipelines import KumoPipeline, frames_to_uint8
from kumovideo.utils.video_io import read_video


@pytest.fixture(scope="module")
def builtin():
    assert is_trained(), f"the built-in model is missing from {BUILTIN_DIRS[False]}"
    torch.set_num_threads(1)
    return KumoPipeline.from_pretrained(builtin_model_dir(), torch_dtype=torch.float32)


def colour_fraction(frames: np.ndarray, name: str) -> float:
    """Fraction of pixels whose nearest palette entry is the named colour."""
    labels, _ = nearest_palette(frames)
    return float((labels == list(PALETTE_NAMES).index(name)).mean())


@pytest.mark.parametrize("colour, background", [("red", "black"), ("yellow", "navy")])
def test_builtin_model_draws_the_named_colour_on_the_named_background(builtin, colour, background):
    prompt = f"a large {colour} circle stays still on a {background} background"
    video = builtin(
        prompt,
        num_frames=17,
        height=128,
        width=128,
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).frames[0]
    frames = frames_to_uint8(video)
    assert colour_fraction(frames, colour) > 0.02, f"no {colour} pixels in the clip for {prompt!r}"
    assert colour_fraction(frames, background) > 0.5, f"background is not {background} for {prompt!r}"


def test_kumo_generate_uses_the_builtin_model_by_default(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a blue square moves right on a gray background", "--steps", "10", "-o", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (17, 128, 128, 3) and fps == 8  # the spec's size
    assert "random-weight" not in capsys.readouterr().err


def test_one_rule_says_what_a_model_was_trained_for():
    """`checks.trained_for` / `trained_for_size`: read by the refusals, the CLI's choice of a
    built-in model (`lumina_request`) and the server's routing (`ModelInfo`) alike."""
    from kumovideo.pipelines.checks import trained_for, trained_for_size

    plain = {"frame_conditioning": False, "multiscale_patch_sizes": None, "motion_conditioning": False}
    lumina = {**plain, "multiscale_patch_sizes": [4], "motion_conditioning": True}
    assert trained_for(plain) and trained_for({})  # plain text-to-video: any model
    assert not trained_for(plain, image=True) and trained_for({**plain, "frame_conditioning": True}, image=True)
    assert not trained_for(plain, multiscale=True)
    assert not trained_for({**plain, "multiscale_patch_sizes": []}, multiscale=True)
    assert trained_for(lumina, multiscale=True, motion=True) and not trained_for(lumina, image=True, motion=True)
    assert trained_for_size((128, 128), None, None, None) and trained_for_size((128, 128), None, 128, None)
    assert not trained_for_size((128, 128), None, 64, 64) and not trained_for_size((128, 128), None, None, 96)
    assert trained_for_size((64, 64), (0.5, 2.0), 112, 64)  # aspect buckets: any size


def test_the_base_model_is_a_plain_128_model_and_lumina_requests_go_to_its_lumina_model(caplog):
    """The 128x128 base was trained without motion scores or coarse patches, so it has neither
    (scripts/drop_feature_heads.py), and at 128x128 only; what only kumo-shapes-lumina was
    trained for (those flags, other sizes) goes there."""
    config = json.loads((BUILTIN_DIRS[False] / "transformer" / "config.json").read_text())
    assert (config["sample_height"], config["sample_width"], config["sample_frames"]) == (16, 16, 17)
    assert not config["motion_conditioning"] and not config["multiscale_patch_sizes"]
    assert lumina_request(False, None, None, None) is None
    assert lumina_request(False, None, 128, 128) is None
    assert lumina_request(False, None, 128, None) is None  # the other side is the base's 128
    assert lumina_request(False, None, 112, 64) == "a size other than 128x128"
    assert lumina_request(False, None, None, 64) == "a size other than 128x128"
    assert lumina_request(False, None, 64, 64) == "a size other than 128x128"  # the base was trained at 128 only
    assert lumina_request(True, None, None, None) == "--multiscale"
    assert lumina_request(False, 20.0, None, None) == "--motion-score"
    with caplog.at_level("INFO", logger="kumovideo.builtin"):
        assert builtin_model_dir(lumina="--motion-score") == LUMINA_DIR
    (record,) = caplog.records
    assert "--motion-score: using the built-in kumo-shapes-lumina" in record.getMessage()
    assert builtin_model_dir(turbo=True, lumina="--multiscale") == BUILTIN_DIRS[True]  # Turbo refuses it later


def test_kumo_generate_with_a_motion_score_uses_the_lumina_model(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    argv = ["generate", "a blue square moves right on a gray background", "--motion-score", "20", "--steps", "2"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "the built-in kumo-shapes-lumina model" in capsys.readouterr().out
    frames, _ = read_video(out)
    assert frames.shape == (17, 128, 128, 3)  # kumo-shapes-lumina's size, the base's


def read_eval(out_dir) -> dict:
    return json.loads((out_dir / "results.json").read_text())


def test_kumo_eval_shapes_judges_unseen_captions_and_writes_its_evidence(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "shapes", "--n", "4", "--steps", "4", "--batch-size", "2", "--json", "--out", str(out)]) == 0
    results = read_eval(out)
    summary = results["summary"]
    assert summary["n"] == 4 and summary["one_object"]["n"] == 2 and summary["two_objects"]["n"] == 2
    assert summary["steps"] == 4 and summary["excluded_training_captions"] > 1000
    seen = set((builtin_model_dir() / "training_captions.txt").read_text().splitlines())
    assert not seen & {clip["caption"] for clip in results["clips"]}, "eval captions must be new to the model"
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert '"match_rate"' in capsys.readouterr().out


def test_kumo_eval_shapes_reference_renders_match_their_captions(tmp_path, capsys):
    """The judge agrees with the renderer on every caption, and the built-in VAE keeps
    background and colour (the ceiling a denoiser with this VAE could reach)."""
    out = tmp_path / "render"
    assert main(["eval", "shapes", "--reference", "render", "--n", "6", "--out", str(out)]) == 0
    assert read_eval(out)["summary"]["match_rate"] == 1.0 and read_eval(out)["summary"]["held_back"] is None
    assert "reference clips (render)" in capsys.readouterr().out
    out = tmp_path / "vae"
    assert main(["eval", "shapes", "--reference", "vae", "--n", "6", "--out", str(out)]) == 0
    attributes = read_eval(out)["summary"]["attributes"]
    assert attributes["background"] == 1.0 and attributes["colour"] == 1.0


def test_kumo_eval_shapes_held_back_judges_only_unseen_cyan_captions(tmp_path, capsys):
    """--held-back: every caption names the held-back cyan once, none is a training caption,
    and the judge agrees with the renders; without it the draw is the one captured before
    cyan existed (the test captions of --seed 2024)."""
    from kumovideo.cli.eval_common import eval_captions

    assert eval_captions(4, 2024, 128, 17, set()) == [
        "a white triangle moves right on a navy background",
        "a white triangle moves up and a purple triangle shrinks on a black background",
        "a green circle moves left on a black background",
        "a purple circle grows and a blue circle moves down on a forest background",
    ]
    out = tmp_path / "held-back"
    assert main(["eval", "shapes", "--reference", "render", "--held-back", "--n", "6", "--out", str(out)]) == 0
    assert "6 captions (each with the held-back colour cyan)" in capsys.readouterr().out
    results = read_eval(out)
    summary, captions = results["summary"], [clip["caption"] for clip in results["clips"]]
    assert summary["held_back"] == "cyan" and summary["match_rate"] == 1.0
    assert summary["one_object"]["n"] == summary["two_objects"]["n"] == 3
    assert all(text.split().count("cyan") == 1 for text in captions)
    seen = set((builtin_model_dir() / "training_captions.txt").read_text().splitlines())
    assert not seen & set(captions)


def test_kumo_eval_shapes_refuses_a_guidance_rescale_outside_0_1(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "shapes", "--n", "2", "--guidance-rescale", "1.5", "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kumo: error: "), lines
    assert "--guidance-rescale 1.5" in lines[0] and "from 0 (off) to 1" in lines[0]
    assert not out.exists()


def _latents(pipe, prompt: str) -> torch.Tensor:
    return pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="latent").frames


def test_capitals_and_stray_spaces_give_the_lowercase_captions_clip(builtin):
    """The built-in tokenizer has no capitals (an upper-case word was <unk> pieces, another
    clip): its kumo_defaults.json says `lowercase_prompts`, so the pipeline normalises."""
    assert builtin.sampling_defaults["lowercase_prompts"] is True
    lower = _latents(builtin, "a red circle moves left on a black background")
    shouted = _latents(builtin, "  A RED Circle  MOVES LEFT ON A BLACK BACKGROUND ")
    assert torch.equal(lower, shouted)
    # A sentence's closing stop too: its vocabulary has no punctuation ('.' was an unknown word).
    assert torch.equal(lower, _latents(builtin, "A red circle moves left on a black background."))


def test_words_the_model_never_saw_are_named_in_one_warning(builtin, caplog):
    with caplog.at_level("WARNING", logger="kumovideo.pipelines.pipeline_kumo"):
        _latents(builtin, "A red circle moves left on a black background")
        assert not caplog.records  # every word (case aside) is in its training captions
        _latents(builtin, "a cat playing the piano")
    (record,) = caplog.records
    message = record.getMessage()
    assert "'cat', 'playing', 'the', 'piano'" in message and "\n" not in message


def test_known_words_in_an_order_never_seen_are_named_in_one_warning(builtin, caplog):
    """ShapesWorld has no white background: every word is known, the pair is not."""
    with caplog.at_level("WARNING", logger="kumovideo.pipelines.pipeline_kumo"):
        _latents(builtin, "a red square stays still and a green circle moves up on a gray background")
        assert not caplog.records  # an unseen caption of seen pairs: the evaluations' captions
        _latents(builtin, "a red circle moves left on a white background")
    (record,) = caplog.records
    message = record.getMessage()
    assert "'white background'" in message and "side by side" in message and "\n" not in message
    assert "'a white'" not in message  # "a white circle ..." is a caption it was trained on


def test_a_checkpoint_without_the_switch_keeps_the_prompt_as_written(builtin):
    pipe = KumoPipeline(**builtin.components)  # built from components: no kumo_defaults.json, no caption list
    assert pipe.normalize_prompt("A  Red") == "A  Red" and pipe.caption_vocabulary is None
