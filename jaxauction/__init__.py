"""jaxauction: learn RegretNet-family auctions in JAX (see mechanism.py for the forward pass)."""
from __future__ import annotations

__version__ = "0.1.0"

from jaxauction.mechanism import MechanismSpec, apply, init, sparsemax, hard_sigmoid  # noqa: E402


def versions() -> dict:
    """Library versions recorded in checkpoints and results."""
    import importlib.metadata as md

    out = {"jaxauction": __version__}
    for pkg in ("jax", "jaxlib", "optax", "chex", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
