import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The parity fixtures live beside the clone in ../shared; KUMO_SHARED overrides the path.
SHARED = Path(os.environ.get("KUMO_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
FIXTURES = SHARED / "fixtures" / "kumovideo"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "README.md").exists():
        if os.environ.get("CI"):
            pytest.fail(f"parity fixtures not found at {FIXTURES} (CI must have ../shared)")
        pytest.skip(f"parity fixtures not found at {FIXTURES}; set KUMO_SHARED to the shared/ folder")
    return FIXTURES


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared folder not found at {SHARED}")
        pytest.skip(f"shared folder not found at {SHARED}; set KUMO_SHARED")
    return SHARED


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# The test models are tiny: one thread is as fast, much faster on a busy shared machine,
# and bit-for-bit comparisons with subprocesses need the same kernels on both sides.
@pytest.fixture
def one_thread():
    """One thread for each test (for tests that change the thread count themselves)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One thread for the whole module, module-scoped fixtures (trained runs) included."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The DiT's caption tokenizer, learned once (a DiT run reuses `output_dir/tokenizer`)."""
    from kumovideo.training.text import shapes_caption_corpus, train_t5_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_t5_tokenizer(shapes_caption_corpus(2000, seed=1000), out)
    return out


@pytest.fixture(scope="module")
def vae_4x_2x():
    """A random-weight CogVideoX VAE of other compression factors than the published one's
    (3 down blocks: 4x spatial; 2x temporal), for the tests that nothing assumes 8x / 4x."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        temporal_compression_ratio=2,
    ).eval()
