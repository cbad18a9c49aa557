"""The attribute-swap contrast (`binding_contrast_weight`): swapped-attribute negatives of
two-object captions, the loss that asks the v-loss to tell a caption from its negative, and a
DiT run that trains with it (docs/builtin-model.md, "Why two objects fail")."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from tiny_runs import dit_config_file, tiny_dit_settings, write_config

from kumovideo.data.shapes_world import attribute_swaps, parse_caption, swapped_caption
from kumovideo.training.config import load_config
from kumovideo.training.objectives import binding_contrast_loss
from kumovideo.training.runtime import setup_runtime
from kumovideo.training.train_dit import train_dit
from kumovideo.utils.errors import KumoInputError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

TWO = "a red triangle moves right and a green circle stays still on a forest background"


def test_a_swap_exchanges_one_attribute_between_the_objects_and_keeps_every_word():
    seen = set()
    for seed in range(20):
        swapped = swapped_caption(TWO, np.random.default_rng(seed))
        assert Counter(swapped.split()) == Counter(TWO.split())  # a bag of words cannot tell them apart
        before, after = parse_caption(TWO), parse_caption(swapped)
        assert after["background"] == before["background"]
        changed = {a for a in ("colour", "shape", "motion") if after["objects"][0][a] != before["objects"][0][a]}
        assert len(changed) == 1 and "colour" not in changed
        attribute = changed.pop()
        assert after["objects"][0][attribute] == before["objects"][1][attribute]
        assert after["objects"][1][attribute] == before["objects"][0][attribute]
        seen.add(attribute)
    assert seen == {"shape", "motion"}  # both are drawn


def test_attribute_swaps_lists_each_attribute_that_differs():
    assert attribute_swaps(TWO) == [
        "a red circle moves right and a green triangle stays still on a forest background",
        "a red triangle stays still and a green circle moves right on a forest background",
    ]


def test_only_the_attribute_that_differs_is_swapped():
    same_shape = "a red circle moves left and a blue circle grows on a black background"
    assert swapped_caption(same_shape, np.random.default_rng(0)) == (
        "a red circle grows and a blue circle moves left on a black background"
    )


@pytest.mark.parametrize(
    "text",
    [
        "a red circle moves left on a black background",  # one object
        "a red circle moves left and a blue circle moves left on a black background",  # nothing to swap
        "a cat playing the piano",  # outside the grammar
        "",  # a dropped caption
    ],
)
def test_captions_without_a_negative(text):
    assert swapped_caption(text, np.random.default_rng(0)) is None


def test_the_contrast_is_a_two_way_classifier_of_the_captions():
    target = torch.zeros(4, 3, 8)
    near, far = torch.full_like(target, 0.1), torch.full_like(target, 0.2)  # e = 0.01 and 0.04
    loss, accuracy, gap = binding_contrast_loss(near, near, target, temperature=0.01)
    assert loss.item() == pytest.approx(math.log(2)) and accuracy.item() == 0.0 and gap.item() == 0.0
    loss, accuracy, gap = binding_contrast_loss(near, far, target, temperature=0.01)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-3.0)), rel=1e-5)  # margin 0.03 / 0.01
    assert accuracy.item() == 1.0 and gap.item() == pytest.approx(0.03)
    swapped_right, _, _ = binding_contrast_loss(far, near, target, temperature=0.01)
    assert swapped_right.item() == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-5)
    # The gradient pulls the true prediction to the target and pushes the swapped one away.
    v_true, v_swapped = near.clone().requires_grad_(), near.clone().requires_grad_()
    binding_contrast_loss(v_true, v_swapped, target, temperature=0.01)[0].backward()
    assert (v_true.grad > 0).all() and (v_swapped.grad < 0).all()


def test_the_contrast_is_for_dit_runs_only(tmp_path):
    stage = {"name": "s", "steps": 1}
    vae = {"kind": "vae", "output_dir": str(tmp_path / "out"), "binding_contrast_weight": 1.0, "stages": [stage]}
    with pytest.raises(KumoInputError, match="binding_contrast_weight adds to the DiT loss; leave it out of vae"):
        load_config(write_config(tmp_path / "vae.json", vae))
    dit = {"kind": "dit", "output_dir": str(tmp_path / "out"), "stages": [stage], "binding_contrast_temperature": 0}
    with pytest.raises(KumoInputError, match="binding_contrast_temperature=0 must be a number > 0"):
        load_config(write_config(tmp_path / "dit.json", dit))


@pytest.mark.parametrize(
    "change, flags, needles",
    [
        ({"kind": "vae"}, [], ["binding_contrast_weight adds to the DiT loss", "leave it out of vae runs"]),
        ({"binding_contrast_temperature": -1}, [], ["binding_contrast_temperature=-1", "a number > 0"]),
        ({}, ["--fsdp", "--ulysses", "2"], ["binding_contrast_weight does not run under --ulysses", "drop --ulysses"]),
    ],
)
def test_the_contrast_refused_on_the_command_line_in_one_line(tmp_path, capsys, change, flags, needles):
    from cli_checks import assert_one_line_error

    from kumovideo.cli import main

    stage = {"name": "s", "steps": 1, "size": 32, "num_frames": 9, "batch_size": 1}
    data = {"kind": "dit", "output_dir": str(tmp_path / "out"), "preset": "kumo-tiny", "stages": [stage]}
    run = {**data, "binding_contrast_weight": 1.0, **change}
    path = write_config(tmp_path / "run.json", run)
    assert main(["train", run["kind"], "--config", str(path), "--device", "cpu", *flags]) == 2
    assert_one_line_error(capsys, *needles)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_run_with_the_contrast_logs_it_and_trains_other_weights(fixtures_dir, tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    def run(name, weight):
        settings = {
            **tiny_dit_settings(fixtures_dir),
            "checkpoint_every": 100,
            "transformer": {"max_text_seq_length": 24, "text_positions": True},
            "binding_contrast_weight": weight,
            "stages": [
                {"name": "two", "steps": 4, "size": 32, "num_frames": 9, "batch_size": 4, "two_object_share": 1}
            ],
        }
        path, out = dit_config_file(tmp_path, name, settings, tokenizer_dir)
        train_dit(load_config(path), setup_runtime("cpu"))
        weights = load_file(str(next((out / "pipeline" / "transformer").glob("*.safetensors"))))
        return (out / "loss_log.csv").read_text().splitlines(), weights

    log, contrasted = run("contrast", 1.0)
    header = log[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in log[1:]]
    assert len(rows) == 4
    assert all(0 <= float(r["bind_acc"]) <= 1 and float(r["bind_loss"]) > 0 for r in rows if int(r["bind_n"]))
    assert sum(int(r["bind_n"]) for r in rows) > 0  # the two-object batches had negatives
    plain_log, plain = run("plain", 0.0)
    assert "bind_acc" not in plain_log[0]
    # Same data, noise and draws: only the contrast tells the two runs apart.
    assert not torch.equal(contrasted["text_pos_embed"], plain["text_pos_embed"])
