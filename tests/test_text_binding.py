"""`kumo train bind-text`: a fresh small T5 that binds each object's words (kumovideo/training/text_binding.py).

The built-in model's T5 gives a word the same state wherever it stands; the retrained one must
not (a caption and the caption with its shapes swapped get different states), while keeping
the old states closely enough for the transformer, and leaving every other component as it was.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_checks import assert_one_line_error

from kumovideo.builtin import builtin_model_dir
from kumovideo.cli import main
from kumovideo.pipelines import KumoPipeline
from kumovideo.training.text_binding import (
    ATTRIBUTES,
    attribute_classes,
    bind_text_encoder,
    clause_labels,
    swapped_state_gap,
)
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

CAPTION = "a red triangle moves right and a green circle stays still on a forest background"
SWAPPED = "a red circle moves right and a green triangle stays still on a forest background"


def swap_gap(folder) -> float:
    """`swapped_state_gap` of CAPTION and SWAPPED relative to the states' largest size (0 for a bag of words)."""
    pipe = KumoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    gap, states, _ = swapped_state_gap(pipe, CAPTION, SWAPPED)
    return gap / states.abs().max().item()


def test_each_token_of_a_clause_names_its_own_object():
    pipe = KumoPipeline.from_pretrained(str(builtin_model_dir()), torch_dtype=torch.float32)
    labels = clause_labels(pipe.tokenizer, CAPTION, pipe.max_sequence_length)
    pieces = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(CAPTION, add_special_tokens=False).input_ids)
    classes = attribute_classes()
    first = [classes[a].index(v) for a, v in zip(ATTRIBUTES, ("red", "triangle", "moves right", None), strict=True)]
    second = [classes[a].index(v) for a, v in zip(ATTRIBUTES, ("green", "circle", "stays still", None), strict=True)]
    by_piece = dict(zip(pieces, labels.tolist(), strict=False))
    assert by_piece["▁triangle"] == first and by_piece["▁red"] == first and by_piece["▁right"] == first
    assert by_piece["▁circle"] == second and by_piece["▁green"] == second and by_piece["▁still"] == second
    assert by_piece["▁forest"] == [-100] * 4 and by_piece["▁background"] == [-100] * 4
    assert (labels[len(pieces) :] == -100).all()  # eos and padding


def test_the_retrained_encoder_binds_and_the_rest_of_the_pipeline_is_unchanged(tmp_path):
    source = builtin_model_dir()
    assert swap_gap(source) < 1e-5  # the shipped T5: a bag of words
    figures = bind_text_encoder(source, tmp_path / "bound", steps=300, batch_size=32, show_progress=False)
    assert figures["two_object_tokens_naming_their_object"] > 0.9, figures
    assert figures["keep_loss"] < 0.25, figures  # the transformer still reads the states
    assert swap_gap(tmp_path / "bound") > 0.02
    for part in ("transformer/diffusion_pytorch_model.safetensors", "training_captions.txt", "kumo_defaults.json"):
        assert (tmp_path / "bound" / part).read_bytes() == (source / part).read_bytes(), part
    recorded = json.loads((tmp_path / "bound" / "text_encoder" / "binding.json").read_text())
    assert recorded["recipe"]["steps"] == 300 and recorded["steps"] == 300 and recorded["judged_captions"] == 2048
    config = json.loads((tmp_path / "bound" / "text_encoder" / "config.json").read_text())
    assert config["dtype"] == json.loads((source / "text_encoder" / "config.json").read_text())["dtype"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "no-such-folder"], ["no-such-folder", "does not exist"]),
        (["--steps", "0"], ["--steps"]),
        (["--keep-weight", "-1"], ["--keep-weight"]),
        (["--lr", "nan"], ["--lr"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--seed", "-1"], ["--seed"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, needles, tmp_path, capsys):
    base = ["train", "bind-text", "--model", str(builtin_model_dir()), "--out", str(tmp_path / "out")]
    assert main(base + args) == 2
    assert_one_line_error(capsys, *needles)
    assert not (tmp_path / "out").exists()


def test_a_folder_without_its_training_captions_is_refused(tmp_path, capsys):
    shutil.copytree(builtin_model_dir(), tmp_path / "model", ignore=shutil.ignore_patterns("training_captions.txt"))
    assert main(["train", "bind-text", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys, "training_captions.txt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "other",
    [
        "a blue triangle moves right and a green circle stays still on a forest background",  # one word changed
        "a red circle moves left and a green triangle stays still on a forest background",  # three words
    ],
)
def test_a_pair_that_is_not_one_swap_is_refused_in_one_line(other):
    pipe = KumoPipeline.from_pretrained(str(builtin_model_dir()), torch_dtype=torch.float32)
    with pytest.raises(KumoInputError, match="differ only by two words trading places") as refused:
        swapped_state_gap(pipe, CAPTION, other)
    assert "\n" not in str(refused.value)


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("keep me")
    assert main(["train", "bind-text", "--model", str(builtin_model_dir()), "--out", str(out)]) == 2
    assert_one_line_error(capsys, "--out", "existing file")
    assert out.read_text() == "keep me"
