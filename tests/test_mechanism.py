import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REFERENCE_NAMES
from jaxauction import mechanism
from jaxauction.checkpoints import CheckpointError, load_mechanism, save_mechanism
from jaxauction.mechanism import MechanismSpec


def test_sparsemax_matches_direct_formula():
    s = jnp.array([[0.5, 2.0, -1.0], [0.2, 0.1, -1.0], [-0.4, 0.0, -1.0]])  # (agents+1, items)
    out = np.asarray(mechanism.sparsemax(s, axis=0))
    for j in range(3):
        z = np.sort(np.asarray(s[:, j]))[::-1]
        k = np.arange(1, 4)
        support = 1 + k * z > np.cumsum(z)
        kk = k[support][-1]
        tau = (np.cumsum(z)[kk - 1] - 1) / kk
        np.testing.assert_allclose(out[:, j], np.maximum(np.asarray(s[:, j]) - tau, 0), atol=1e-6)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-6)


def test_sparsemax_gradient_matches_jacobian_formula():
    # On the support S, d a_S / d s_S = I - 11^T/|S|; zero elsewhere.
    s = jnp.array([0.9, 0.7, -2.0, 0.1])
    jac = np.asarray(jax.jacobian(lambda x: mechanism.sparsemax(x, axis=0))(s))
    a = np.asarray(mechanism.sparsemax(s, axis=0))
    S = a > 0
    want = np.zeros((4, 4))
    idx = np.flatnonzero(S)
    want[np.ix_(idx, idx)] = np.eye(len(idx)) - 1.0 / len(idx)
    np.testing.assert_allclose(jac, want, atol=1e-6)


def test_hand_computed_mechanism():
    # One agent, one item, no hidden effect: trunk is identity-like on positive bids.
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(1,), allocation="sparsemax", payment="fractional")
    params = {"trunk": [{"w": jnp.array([[1.0]]), "b": jnp.array([0.0])}],
              "alloc": {"w": jnp.array([[1.0, -1.0]]), "b": jnp.array([0.0, 0.0])},
              "pay": {"w": jnp.array([[10.0]]), "b": jnp.array([-5.0])}}
    b = jnp.array([[[0.3]]])
    a, p = mechanism.apply(params, b, spec)
    # logits (0.3, -0.3): sparsemax -> tau = (0.3 - 0.3 - 1)/2 = -0.5 -> a = 0.8
    np.testing.assert_allclose(np.asarray(a), [[[0.8]]], atol=1e-6)
    # q = 10*0.3 - 5 = -2 -> hard_sigmoid = 0.3; p = 0.3 * 0.8 * 0.3
    np.testing.assert_allclose(np.asarray(p), [[0.3 * 0.8 * 0.3]], atol=1e-6)


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_networks_reproduce_truthful_util(refdir, name):
    params, spec, info = load_mechanism(refdir / f"{name}.npz")
    doc = json.loads((refdir / f"{name}.json").read_text())
    for key, agent in (("results", 0), ("results_agent1", 1)):
        rows = doc.get(key, [])
        if not rows:
            continue
        v = jnp.array([r["truthful_input"] for r in rows], jnp.float32)
        a, p = mechanism.apply(params, v, spec)
        util = np.asarray(jnp.sum(a[:, agent] * v[:, agent], -1) - p[:, agent])
        want = np.array([r["truthful_util"] for r in rows])
        np.testing.assert_allclose(util, want, atol=1e-5)


def test_save_load_roundtrip_and_errors(tmp_path):
    spec = MechanismSpec(n_agents=2, n_items=3, hidden=(8, 8))
    params = mechanism.init(jax.random.PRNGKey(0), spec)
    save_mechanism(tmp_path / "ck", params, spec)
    p2, s2, _ = load_mechanism(tmp_path / "ck")
    assert s2 == spec
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, params), p2)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_mechanism(tmp_path / "nope")
    (tmp_path / "ck" / "mechanism.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_mechanism(tmp_path / "ck")


def test_nan_weights_rejected(tmp_path):
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(4,))
    params = jax.tree_util.tree_map(np.array, mechanism.init(jax.random.PRNGKey(0), spec))
    params["trunk"][0]["w"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_mechanism(tmp_path / "ck", params, spec)


def test_wrong_shapes_rejected():
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(4,))
    params = mechanism.init(jax.random.PRNGKey(0), MechanismSpec(n_agents=2, n_items=2, hidden=(4,)))
    with pytest.raises(ValueError, match="shape"):
        mechanism.check_params(params, spec)


def test_spec_activation_and_towers_validated_and_round_trip():
    with pytest.raises(ValueError, match="activation.*'sigmoid'"):
        MechanismSpec(1, 2, activation="sigmoid")
    with pytest.raises(ValueError, match="towers.*'three'"):
        MechanismSpec(1, 2, towers="three")
    spec = MechanismSpec(2, 3, (8, 4), "softmax", "fractional_sigmoid", activation="tanh", towers="separate")
    assert MechanismSpec.from_dict(spec.to_dict()) == spec
    old = MechanismSpec(2, 3).to_dict()
    del old["activation"], old["towers"]          # a spec written before the fields existed
    s = MechanismSpec.from_dict(old)
    assert (s.activation, s.towers) == ("relu", "shared") and s == MechanismSpec(2, 3)


@pytest.mark.parametrize("act", mechanism.ACTIVATIONS)
def test_separate_towers_save_load_and_check(tmp_path, act):
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(6, 5), allocation="softmax", payment="fractional_sigmoid",
                         activation=act, towers="separate")
    params = mechanism.init(jax.random.PRNGKey(0), spec)
    assert set(params) == {"alloc_tower", "pay_tower", "alloc", "pay"}
    assert params["alloc"]["w"].shape == (5, 6) and params["pay"]["w"].shape == (5, 2)
    save_mechanism(tmp_path / "ck", params, spec)
    p2, s2, _ = load_mechanism(tmp_path / "ck")
    assert s2 == spec
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.tree_util.tree_map(np.asarray, params), p2)
    # the alloc head reads only the alloc tower, the pay head only the pay tower
    b = jax.random.uniform(jax.random.PRNGKey(1), (16, 2, 2))
    a, p = mechanism.apply(params, b, spec)
    bumped = {**params, "pay_tower": jax.tree_util.tree_map(lambda x: x + 1.0, params["pay_tower"])}
    a2, p2_ = mechanism.apply(bumped, b, spec)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
    assert np.abs(np.asarray(p) - np.asarray(p2_)).max() > 1e-4
    if act == "tanh":  # the activation is applied: bounded features
        assert np.abs(np.asarray(mechanism.trunk(params, b.reshape(16, 4) * 100, spec))).max() <= 1.0
    with pytest.raises(ValueError, match="alloc_tower/pay_tower/alloc/pay"):
        mechanism.check_params(mechanism.init(jax.random.PRNGKey(0), MechanismSpec(2, 2, (6, 5))), spec)
    short = {**params, "pay_tower": params["pay_tower"][:1]}
    with pytest.raises(ValueError, match="1 pay_tower layers"):
        mechanism.check_params(short, spec)


def test_campaign_manifest_written_before_the_spec_fields_still_resumes(tmp_path):
    from certify.campaign import results
    from certify.campaign.errors import ManifestError

    spec = MechanismSpec(1, 2)
    m = {"ckpt": "x", "weights_sha256": "a" * 64, "setting": {"spec": spec.to_dict(), "prior": {"name": "uniform"}},
         "seed": 0, "profiles": {}, "solver": "mip", "time_limit": 1}
    old = json.loads(json.dumps(m))
    del old["setting"]["spec"]["activation"], old["setting"]["spec"]["towers"]
    (tmp_path / results.MANIFEST).write_text(json.dumps(old))
    (tmp_path / results.RESULTS).write_text("{}\n")
    assert results.check_or_write_manifest(tmp_path, m) == old
    m["setting"]["spec"]["activation"] = "tanh"
    with pytest.raises(ManifestError, match="setting"):
        results.check_or_write_manifest(tmp_path, m)
