"""GPU-only tests (issue 17): every module here is marked `gpu` and skipped without CUDA.

They run on a lent device through `scripts/gpu/check.sh` (docs/gpu.md). To rehearse their
logic on a CPU, set KUMO_GPU_TESTS_ON_CPU=1: the tests that need CUDA itself (offload,
flash/cuDNN/efficient SDPA, FP8, NCCL) still skip, the others run on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ON_CPU = os.environ.get("KUMO_GPU_TESTS_ON_CPU") == "1"
NO_CUDA = "needs a CUDA GPU: run on a lent device with scripts/gpu/check.sh (docs/gpu.md)"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available() and not ON_CPU:
                item.add_marker(pytest.mark.skip(reason=NO_CUDA))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def fp32_exact():
    """Plain fp32 on CUDA (no TF32 in matmuls or convolutions), as the CPU tolerances assume."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
