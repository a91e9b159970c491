import os
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The paper's networks: $JAXAUCTION_REFERENCE, else ../shared/reference beside the checkout."""
    env = os.environ.get("JAXAUCTION_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


REFERENCE_NAMES = [
    "1x2_sparsemax_in_linsigpmt_scratch_fast",
    "1x2_sparsemax_linearpmt_distill_fast",
    "2x2_sparsemax_in_linsigpmt_scratch_fast",
    "2x2_sparsemax_linearpmt_distill_fast",
]


@pytest.fixture(scope="session")
def refdir():
    d = reference_dir()
    if not (d / f"{REFERENCE_NAMES[0]}.npz").exists():
        pytest.skip(f"reference networks not found at {d} (set JAXAUCTION_REFERENCE)")
    return d
