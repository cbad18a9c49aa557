"""MADiT's optional text position table (`text_positions`): without it the blocks see the
text tokens as a set, so swapping two of them changes nothing; with it the order counts.
Original configs gain no parameter; a trained model gains the table and keeps its weights."""

from __future__ import annotations

import pytest
import torch

from kumovideo.models.transformer_kumo import (
    KumoTransformer3DModel,
    expand_for_text_positions,
    madit_from_preset,
    text_position_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed(model: KumoTransformer3DModel, seed: int = 0) -> KumoTransformer3DModel:
    """Every weight nudged (a fresh MADiT is the identity: zero gates and heads)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def swapped_pair(model):
    """(latents, text states with tokens 2 and 9 of the second row swapped, timesteps)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 6, 8, generator=g).repeat(2, 1, 1, 1, 1)
    text = torch.randn(1, model.config.max_text_seq_length, model.config.text_embed_dim, generator=g).repeat(2, 1, 1)
    text[1, [2, 9]] = text[1, [9, 2]]
    return x, text, torch.tensor([500, 500])


def test_without_text_positions_the_text_is_a_set_and_with_them_order_counts():
    plain = perturbed(madit_from_preset("kumo-tiny"))
    x, text, t = swapped_pair(plain)
    with torch.no_grad():
        out = plain(x, text, t).sample
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=0)  # a swap the blocks cannot see

    ordered = expand_for_text_positions(plain)
    with torch.no_grad():
        out = ordered(x, text, t).sample
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_expansion_keeps_the_weights_and_starts_the_table_as_sine_cosine(tmp_path):
    plain = perturbed(madit_from_preset("kumo-tiny"))
    assert "text_pos_embed" not in plain.state_dict()  # original configs: no new parameter
    expanded = expand_for_text_positions(plain, scale=0.25)
    assert expanded.config.text_positions and expand_for_text_positions(expanded) is expanded
    new_state = expanded.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(new_state[name], value), name
    length, width = plain.config.max_text_seq_length, 2 * 16  # kumo-tiny: 2 heads x 16
    torch.testing.assert_close(new_state["text_pos_embed"], 0.25 * text_position_table(length, width))

    expanded.save_pretrained(tmp_path)
    loaded = KumoTransformer3DModel.from_pretrained(tmp_path).eval()
    x, text, t = swapped_pair(plain)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, text, t).sample, expanded(x, text, t).sample)


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), "big"])
def test_a_text_position_scale_that_is_not_a_positive_number_is_refused(scale):
    with pytest.raises(ValueError, match="text_position_scale=.* must be a positive number"):
        madit_from_preset("kumo-tiny", text_positions=True, text_position_scale=scale)


def test_only_a_model_with_text_positions_learns_a_target_that_depends_on_word_order():
    """Two captions with the same two words in either order, opposite targets: without the
    table the blocks cannot tell them apart (the loss stays at the targets' variance); with it
    a few Adam steps fit them."""

    def fit(model) -> float:
        g = torch.Generator().manual_seed(2)
        width = model.config.text_embed_dim
        u, v = torch.randn(width, generator=g), torch.randn(width, generator=g)
        text = torch.zeros(2, model.config.max_text_seq_length, width)
        text[0, 0], text[0, 1], text[1, 0], text[1, 1] = u, v, v, u
        x = torch.randn(1, 3, 4, 6, 8, generator=g).repeat(2, 1, 1, 1, 1)
        target = torch.tensor([0.5, -0.5]).view(2, 1, 1, 1, 1).expand_as(x)
        t = torch.tensor([500, 500])
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(60):
            loss = torch.nn.functional.mse_loss(model(x, text, t).sample, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    torch.manual_seed(0)
    plain = madit_from_preset("kumo-tiny")
    ordered = expand_for_text_positions(madit_from_preset("kumo-tiny"))
    assert fit(plain) > 0.2  # 0.25: the best a prediction blind to the order can do
    assert fit(ordered) < 0.05
