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
