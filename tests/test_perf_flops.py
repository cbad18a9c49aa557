"""The FLOP counter (kumovideo.perf.flops): a hand count on the tiny config, torch's own
FlopCounterMode on real forwards (MADiT and diffusers' CogVideoX), the full-size figures."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from kumovideo.geometry import DEFAULT_GEOMETRY
from kumovideo.models.transformer_kumo import count_parameters, madit_from_preset
from kumovideo.perf.flops import (
    cogvideox_flops,
    count_model_flops,
    gpu_peak_tflops,
    madit_flops,
    measured_flops,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hand_count_on_the_tiny_config():
    # kumo-tiny: 2 layers, 2 heads x 16 = D 32, time embed T 32, text width 24, text L 16,
    # 4 latent channels, patch 2. Latent 3 x 6 x 8 -> N = 3 * 3 * 4 = 36 vision tokens, S = 52.
    D, T, L, N, S, C, p, E = 32, 32, 16, 36, 52, 4, 2, 24
    mm = lambda m, k, n: 2 * m * k * n  # noqa: E731
    block = (
        2 * mm(1, T, 6 * D)  # norm1, norm2 AdaLN linears
        + mm(S, D, 3 * D)
        + mm(S, D, D)  # joint q, k, v, out
        + mm(S, D, S)
        + mm(S, S, D)  # joint QK^T, AV
        + mm(N, D, D)
        + mm(L, D, 2 * D)
        + mm(N, D, D)  # vision->text: q, k v, out
        + mm(N, D, L)
        + mm(N, L, D)  #   QK^T, AV
        + mm(L, D, D)
        + mm(N, D, 2 * D)
        + mm(L, D, D)  # text->vision: q, k v, out
        + mm(L, D, N)
        + mm(L, N, D)  #   QK^T, AV
        + mm(S, D, 4 * D)
        + mm(S, 4 * D, D)  # feed-forward
    )
    rest = (
        mm(N, C * p * p, D)
        + mm(L, E, D)  # patch conv, text projection
        + mm(1, D, T)
        + mm(1, T, T)  # timestep MLP
        + mm(1, T, 2 * D)  # norm_out AdaLN
        + mm(N, D, p * p * C)  # proj_out
    )
    assert block == 2_222_080  # by hand, number by number
    hand = 2 * block + rest
    assert hand == 4_550_656

    config = madit_from_preset("kumo-tiny").config
    count = madit_flops(config, 3, 6, 8)
    assert count.total == hand
    assert (count.vision_tokens, count.text_tokens, count.tokens) == (N, L, S)
    assert madit_flops(config, 3, 6, 8, batch=2).total == 2 * hand
    assert sum(count.parts.values()) == count.total


def test_matches_torch_flop_counter_on_a_real_forward():
    torch.manual_seed(0)
    model = madit_from_preset("kumo-tiny").eval()
    x, e, t = torch.randn(2, 3, 4, 6, 8), torch.randn(2, 16, 24), torch.tensor([10, 10])
    # The math backend, so that the counter sees QK^T and AV as matmuls.
    with sdpa_kernel(SDPBackend.MATH):
        assert measured_flops(model, x, e, t) == count_model_flops(model, 3, 6, 8, batch=2).total


def test_cogvideox_peer_count_matches_torch_flop_counter():
    from diffusers import CogVideoXTransformer3DModel

    peer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=24,
        max_text_seq_length=16,
        sample_height=6,
        sample_width=8,
        sample_frames=9,
        attention_bias=True,
    ).eval()
    x, e, t = torch.randn(2, 3, 4, 6, 8), torch.randn(2, 16, 24), torch.tensor([10, 10])
    with sdpa_kernel(SDPBackend.MATH):
        measured = measured_flops(peer, x, e, t)
    count = count_model_flops(peer, 3, 6, 8, batch=2)
    assert measured == count.total == cogvideox_flops(peer.config, 3, 6, 8, batch=2).total
    assert count.params == count_parameters(peer)


def test_full_size_model_at_480x720x41():
    with torch.device("meta"):
        model = madit_from_preset("kumo-2.6b")
    assert DEFAULT_GEOMETRY.latent_size(41, 480, 720) == (11, 60, 90)
    count = count_model_flops(model, 11, 60, 90, batch=2)
    assert (count.vision_tokens, count.text_tokens, count.tokens) == (14850, 226, 15076)
    assert 2.5e9 < count.params < 2.7e9
    # Dominated by the joint attention (q, k, v, out: 8 S D^2; QK^T and AV: 4 S^2 D) and the
    # feed-forward (16 S D^2); the cross-attentions' projections add ~15%. Batch 2.
    D, S, layers = 1920, 15076, 30
    dominant = 2 * layers * (8 * S * D * D + 4 * S * S * D + 16 * S * D * D)
    assert dominant < count.total < 1.2 * dominant
    assert round(count.total / 1e12, 2) == 214.56


def test_gpu_peaks():
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert gpu_peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "fp8") == pytest.approx(1978.9)
    assert gpu_peak_tflops("Some Other GPU") is None
