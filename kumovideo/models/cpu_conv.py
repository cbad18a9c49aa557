"""3D convolutions on the CPU through oneDNN, whatever their size.

PyTorch picks a CPU convolution kernel by a heuristic tuned on 2D image convolutions
(pytorch/pytorch#40610, #46675): at batch 1, float32, 3x3 kernels and a small
`N*C*T*H`, it runs the "native" vol2col + GEMM kernel (`aten::slow_conv3d_forward`)
instead of oneDNN. For the causal VAE's decoder at small sizes (the built-in model's
17x64x64 clips: latents 5x8x8, 128 channels) it was 90 % of a decode (`torch.profiler`,
1 thread), and decodes run 2.4-5.0x faster on oneDNN (`scripts/bench_cpu_conv.py`). The
numbers are the same up to float32 summation order.

`route_conv3d_to_onednn(module)` makes every `nn.Conv3d` inside `module` call
`torch.mkldnn_convolution` when the call is a CPU float32 inference call (no autograd),
and PyTorch's own choice otherwise (GPU, other dtypes, training). The weights, the
state dict and the module types are unchanged. `restore_pytorch_conv3d(module)` undoes it
(for comparisons and benchmarks).
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn

_ROUTED = "_kumo_onednn_conv3d"


def _conv_forward_onednn(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if (
        input.device.type == "cpu"
        and input.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
    ):
        return torch.mkldnn_convolution(
            input.contiguous(), weight, bias, self.padding, self.stride, self.dilation, self.groups
        )
    return type(self)._conv_forward(self, input, weight, bias)


def route_conv3d_to_onednn(module: nn.Module) -> int:
    """Route `module`'s CPU float32 inference Conv3d calls to oneDNN; returns how many
    convolutions were routed (0 where oneDNN is not built in). Idempotent."""
    if not torch.backends.mkldnn.is_available():
        return 0
    routed = 0
    for m in module.modules():
        # String padding ("same") and non-zero padding modes keep PyTorch's path.
        if isinstance(m, nn.Conv3d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            if not getattr(m, _ROUTED, False):
                m._conv_forward = types.MethodType(_conv_forward_onednn, m)
                setattr(m, _ROUTED, True)
            routed += 1
    return routed


def restore_pytorch_conv3d(module: nn.Module) -> int:
    """Undo `route_conv3d_to_onednn`: PyTorch's own kernel choice again; returns how many
    convolutions were restored."""
    restored = 0
    for m in module.modules():
        if m.__dict__.pop(_ROUTED, False):
            del m._conv_forward  # the instance attribute; the class method shows through again
            restored += 1
    return restored
