"""3D convolutions on the CPU through oneDNN, whatever their size.

PyTorch picks a CPU convolution kernel by a heuristic tuned on 2D image convolutions
(pytorch/pytorch#40610, #46675): at batch 1, float32, 3x3 kernels and a small
`N*C*T*H`, it runs the "native" vol2col + GEMM kernel (`aten::slow_conv3d_forward`)
instead of oneDNN. For the causal VAE's decoder at small sizes (the built-in model's
17x64x64 clips: latents 5x8x8, 128 channels) it was 90 % of a decode (`torch.profiler`,
1 thread), and decodes run 2.4-5.0x faster on oneDNN (`scripts/bench_cpu_conv.py`). The
numbers are the same up to float32 summation order.

`route_conv3d_to_onednn(module)` registers a diffusers `ModelHook` (`OneDNNConv3dHook`) on
every `nn.Conv3d` inside `module`: a CPU float32 inference call (no autograd) runs
`torch.mkldnn_convolution`, any other call (GPU, other dtypes, training) the module's own
forward. The weights, the state dict and the module types are unchanged.
`restore_pytorch_conv3d(module)` removes the hooks (for comparisons and benchmarks).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.hooks import HookRegistry, ModelHook

ONEDNN_CONV3D_HOOK = "kumo_onednn_conv3d"

# diffusers' CogVideoXSafeConv3d.forward cuts inputs of more than this many elements into
# time chunks (its 2 GiB at 2 bytes an element); such calls keep the module's own forward
# (at those sizes PyTorch picks oneDNN for each chunk itself).
SAFE_CONV3D_CHUNK_ELEMENTS = 2 * 1024**3 // 2


def onednn_applies(conv: nn.Conv3d, input: torch.Tensor) -> bool:
    """Whether this call goes to oneDNN: CPU, float32 input and weight, no gradient to record."""
    weight = conv.weight
    return (
        input.device.type == "cpu"
        and input.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
        and input.numel() <= SAFE_CONV3D_CHUNK_ELEMENTS
    )


class OneDNNConv3dHook(ModelHook):
    """Runs a Conv3d's CPU float32 inference calls on oneDNN (see the module docstring)."""

    def pre_forward(self, module: nn.Conv3d, input: torch.Tensor):
        # diffusers binds `new_forward` to the module the hook was registered on, and a deepcopy
        # of that module still calls this hook: hand over the module actually called.
        return (module, input), {}

    def new_forward(self, registered: nn.Conv3d, module: nn.Conv3d, input: torch.Tensor) -> torch.Tensor:
        if onednn_applies(module, input):
            return torch.mkldnn_convolution(
                input.contiguous(),
                module.weight,
                module.bias,
                module.padding,
                module.stride,
                module.dilation,
                module.groups,
            )
        if module is registered:
            return self.fn_ref.original_forward(input)
        return type(module).forward(module, input)  # a deepcopy: its own class's forward


def routable(m: nn.Module) -> bool:
    # String padding ("same") and non-zero padding modes keep PyTorch's path.
    return isinstance(m, nn.Conv3d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def route_conv3d_to_onednn(module: nn.Module) -> int:
    """Route `module`'s CPU float32 inference Conv3d calls to oneDNN; returns how many
    convolutions were routed (0 where oneDNN is not built in). Idempotent."""
    if not torch.backends.mkldnn.is_available():
        return 0
    routed = 0
    for m in module.modules():
        if routable(m):
            registry = HookRegistry.check_if_exists_or_initialize(m)
            if registry.get_hook(ONEDNN_CONV3D_HOOK) is None:
                registry.register_hook(OneDNNConv3dHook(), ONEDNN_CONV3D_HOOK)
            routed += 1
    return routed


def is_routed(conv: nn.Module) -> bool:
    registry = getattr(conv, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(ONEDNN_CONV3D_HOOK) is not None


def restore_pytorch_conv3d(module: nn.Module) -> int:
    """Undo `route_conv3d_to_onednn`: PyTorch's own kernel choice again; returns how many
    convolutions were restored."""
    restored = 0
    for m in module.modules():
        if is_routed(m):
            m._diffusers_hook.remove_hook(ONEDNN_CONV3D_HOOK, recurse=False)
            restored += 1
    return restored
