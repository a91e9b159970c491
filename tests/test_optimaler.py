"""The published RegretNet networks of optimaler (``../shared/optimaler``, README there): separate
tanh towers, softmax allocation, logistic payment fraction. ``checkpoints.load_optimaler`` (and
``load_mechanism``, which recognises them) must reproduce, at the JSON's 50 ``points``, the
allocation, payment and truthful utilities of the original PyTorch forward pass within 1e-5, with
``mechanism.apply`` (float32) and with the float64 twin.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from certify import network
from jaxauction import checkpoints, mechanism
from jaxauction.checkpoints import CheckpointError

NAMES = [f"regretnet_{s}_seed_{k}" for s in ("1x2", "2x2", "2x3", "2x5", "3x10") for k in (0, 1)]


def optimaler_dir() -> Path:
    """$JAXAUCTION_OPTIMALER, else ../shared/optimaler beside the checkout (as conftest.reference_dir)."""
    env = os.environ.get("JAXAUCTION_OPTIMALER")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "optimaler"


@pytest.fixture(scope="module")
def optdir():
    d = optimaler_dir()
    if not (d / f"{NAMES[0]}.npz").exists():
        pytest.skip(f"optimaler networks not found at {d} (set JAXAUCTION_OPTIMALER)")
    return d


@pytest.mark.parametrize("name", NAMES)
def test_optimaler_nets_reproduce_the_published_points(optdir, name):
    params, spec, info = checkpoints.load_mechanism(optdir / f"{name}.npz")
    doc = json.loads((optdir / f"{name}.json").read_text())
    assert info["kind"] == "optimaler" and info["name"] == name and info["json"] == doc
    assert info["prior"] == {"name": "uniform", "low": 0.0, "high": 1.0}
    assert (spec.activation, spec.towers, spec.allocation, spec.payment) == ("tanh", "separate", "softmax",
                                                                              "fractional_sigmoid")
    assert (spec.n_agents, spec.n_items) == (doc["n_agents"], doc["n_items"])
    assert spec.hidden == (doc["hidden"],) * (doc["alloc_layers"] - 1)
    mechanism.check_params(params, spec)
    pts = doc["points"]
    assert len(pts) == 50
    bids = np.array([p["profile"] for p in pts], np.float64)
    want_a = np.array([p["alloc"] for p in pts])
    want_p = np.array([p["pay"] for p in pts])
    want_u = np.array([p["truthful_util"] for p in pts])
    a32, p32 = mechanism.apply(params, jnp.asarray(bids, jnp.float32), spec)
    a64, p64 = network.forward64(network.weights64(params), spec, bids)
    for a, p in ((np.asarray(a32, np.float64), np.asarray(p32, np.float64)), (a64, p64)):
        np.testing.assert_allclose(a, want_a, rtol=0, atol=1e-5)
        np.testing.assert_allclose(p, want_p, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.sum(a * bids, -1) - p, want_u, rtol=0, atol=1e-5)
    # direct loader, the same
    p2, s2, _ = checkpoints.load_optimaler(optdir / f"{name}.npz")
    assert s2 == spec and network.digest(p2) == network.digest(params)


def test_optimaler_loader_errors(optdir, tmp_path):
    src = optdir / f"{NAMES[0]}.npz"
    doc = json.loads(src.with_suffix(".json").read_text())
    with np.load(src) as z:
        sd = {k: z[k] for k in z.files}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{k: v for k, v in sd.items() if k != "pay_layers.1.weight"})
    bad.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="pay_layers.1.weight"):
        checkpoints.load_mechanism(bad)
    np.savez(bad, **sd, **{"pay_layers.3.weight": sd["pay_layers.2.weight"]})
    with pytest.raises(CheckpointError, match="unexpected entries"):
        checkpoints.load_mechanism(bad)
    np.savez(bad, **sd)
    bad.with_suffix(".json").write_text(json.dumps({**doc, "pay_layers": 2}))
    with pytest.raises(CheckpointError, match="alloc_layers == pay_layers"):
        checkpoints.load_mechanism(bad)
    bad.with_suffix(".json").write_text(json.dumps({**doc, "activation": "relu"}))
    with pytest.raises(CheckpointError, match="activation"):
        checkpoints.load_mechanism(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.load_optimaler(tmp_path / "nope.npz")
