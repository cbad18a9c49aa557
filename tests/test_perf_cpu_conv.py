"""CPU 3D convolutions through oneDNN (kumovideo.models.cpu_conv): the same VAE outputs as
PyTorch's own kernel choice, oneDNN actually used at the sizes where PyTorch would not,
training untouched, and every VAE the package builds or loads routed."""

from __future__ import annotations

import copy

import pytest
import torch

from kumovideo.models.cpu_conv import is_routed, restore_pytorch_conv3d, route_conv3d_to_onednn
from kumovideo.pipelines.factory import build_pipeline, build_vae

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"),
]


def conv_kernels(fn) -> set[str]:
    with torch.profiler.profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "conv" in e.key}


def unrouted_copy(vae):
    """A copy of `vae` with PyTorch's own kernel choice back in place."""
    plain = copy.deepcopy(vae)
    assert restore_pytorch_conv3d(plain) > 0
    return plain


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("kumo-builtin").eval()


def test_decode_and_encode_match_pytorchs_kernels(vae):
    plain = unrouted_copy(vae)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, vae.config.latent_channels, 2, 4, 4, generator=g)
    video = torch.rand(1, 3, 5, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        # At these sizes PyTorch's heuristic picks its vol2col kernel; the routed VAE must not.
        assert "aten::slow_conv3d_forward" in conv_kernels(lambda: plain.decode(z))
        kernels = conv_kernels(lambda: vae.decode(z))
        assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
        for routed, reference in (
            (vae.decode(z).sample, plain.decode(z).sample),
            (vae.encode(video).latent_dist.mean, plain.encode(video).latent_dist.mean),
        ):
            assert routed.shape == reference.shape
            torch.testing.assert_close(routed, reference, rtol=0, atol=1e-4 * reference.abs().max().item())


def test_training_keeps_pytorchs_kernels_and_gradients(vae):
    """A call that needs gradients goes through PyTorch's own path: the same kernels and
    bit-identical gradients as an unrouted VAE."""
    z = torch.randn(1, vae.config.latent_channels, 2, 4, 4)
    grads = []
    for model in (copy.deepcopy(vae).train(), unrouted_copy(vae).train()):
        kernels = conv_kernels(lambda model=model: model.decode(z).sample.square().mean().backward())
        assert "aten::slow_conv3d_forward" in kernels
        grads.append([p.grad for p in model.decoder.parameters()])
    assert all(g is not None for g in grads[0])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_routing_is_idempotent_and_leaves_the_state_dict_alone(vae):
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    n = route_conv3d_to_onednn(vae)
    assert n > 0 and route_conv3d_to_onednn(vae) == n  # 3D convs only, counted again, not wrapped twice
    assert vae.state_dict().keys() == before.keys()
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in before.items())


def test_pipelines_and_loaded_vaes_are_routed(tmp_path):
    from kumovideo.pipelines.loading import load_vae

    pipe = build_pipeline("kumo-tiny")
    assert is_routed(pipe.vae.decoder.conv_in.conv)
    pipe.vae.save_pretrained(tmp_path / "vae")
    assert is_routed(load_vae(tmp_path / "vae").decoder.conv_in.conv)
