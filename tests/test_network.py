"""The float64 twin (certify.network) is the function jaxauction.mechanism.apply computes.

For every activation x towers x allocation x payment combination of ``mechanism.ACTIVATIONS`` x
``mechanism.TOWERS`` x ``mechanism.ALLOCATIONS`` x ``mechanism.PAYMENTS``: the twin agrees with
``apply`` in float32 to ~1e-5 relative, and with ``apply`` traced in float64 (``jax.enable_x64``)
to ~1e-12, on random nets and bids (negative bids included). Separate towers: ``weights64`` is the
block-diagonal shared trunk, and ``forward64`` equals a direct two-tower numpy computation. Plus
the sparsemax twin against ``mechanism.sparsemax`` and hand-computed projections.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _nets
from certify import network
from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec

COMBOS = list(itertools.product(mechanism.ALLOCATIONS, mechanism.PAYMENTS))
ARCHS = list(itertools.product(mechanism.ACTIVATIONS, mechanism.TOWERS))


def random_case(alloc, pay, seed, n=2, m=3, hidden=(16, 8), scale=1.0, activation="relu", towers="shared"):
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=hidden, allocation=alloc, payment=pay,
                         activation=activation, towers=towers)
    rng = np.random.default_rng(seed)
    params = _nets.random_params(spec, rng)
    if scale != 1.0:
        params = jax.tree_util.tree_map(lambda a: (np.asarray(a) * scale).astype(np.float32), params)
    bids = rng.uniform(-0.5, 1.5, (256, n, m))
    return params, spec, bids


def _apply64(params, spec, bids):
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
        a, p = mechanism.apply(p64, jnp.asarray(bids, jnp.float64), spec)
        assert a.dtype == jnp.float64
        return np.asarray(a), np.asarray(p)


@pytest.mark.parametrize("scale", [1.0, 4.0], ids=["glorot", "x4"])
@pytest.mark.parametrize("alloc,pay", COMBOS, ids=[f"{a}-{p}" for a, p in COMBOS])
@pytest.mark.parametrize("act,towers", ARCHS, ids=[f"{a}-{t}" for a, t in ARCHS])
def test_forward64_matches_apply(act, towers, alloc, pay, scale):
    params, spec, bids = random_case(alloc, pay, seed=COMBOS.index((alloc, pay)) + 10 * ARCHS.index((act, towers)),
                                     scale=scale, activation=act, towers=towers)
    w = network.weights64(params)
    a64, p64 = network.forward64(w, spec, bids)
    assert a64.shape == (len(bids), spec.n_agents, spec.n_items) and p64.shape == (len(bids), spec.n_agents)
    # float32 apply (the function users run)
    a32, p32 = mechanism.apply(params, jnp.asarray(bids, jnp.float32), spec)
    a32, p32 = np.asarray(a32, np.float64), np.asarray(p32, np.float64)
    assert a32.dtype == np.float64
    np.testing.assert_allclose(a64, a32, rtol=1e-5, atol=2e-6 * scale ** 2)
    np.testing.assert_allclose(p64, p32, rtol=1e-5, atol=2e-6 * scale ** 2)
    # the same computation in float64: the twin is the same function, not an approximation of it
    a_x, p_x = _apply64(params, spec, bids)
    np.testing.assert_allclose(a64, a_x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(p64, p_x, rtol=1e-12, atol=1e-13)
    # the pieces are nontrivial on these bids (allocations vary, payments are not all clipped)
    assert np.ptp(a64) > 0.05 and np.ptp(p64) > 1e-3
    # apply32 / utility32 / utility64 are the documented compositions
    # (jitted; XLA promises no bitwise equality between jitted and eager float32, nor across batch
    # shapes: compare within float32 rounding)
    a_j, p_j = network.apply32(params, spec, bids)
    assert a_j.dtype == np.float64
    np.testing.assert_allclose(a_j, a32, rtol=1e-5, atol=2e-6 * scale ** 2)
    np.testing.assert_allclose(p_j, p32, rtol=1e-5, atol=2e-6 * scale ** 2)
    v = np.clip(bids[0], 0, 1)
    for agent in range(spec.n_agents):
        want64 = np.sum(a64[:, agent] * v[agent], -1) - p64[:, agent]
        np.testing.assert_allclose(network.utility64(w, spec, bids, v, agent), want64, rtol=0, atol=1e-14)
        want32 = np.sum(a_j[:, agent] * v[agent], -1) - p_j[:, agent]
        np.testing.assert_allclose(network.utility32(params, spec, bids, v, agent), want32, rtol=0, atol=1e-14)


@pytest.mark.parametrize("alloc,pay", COMBOS, ids=[f"{a}-{p}" for a, p in COMBOS])
def test_forward64_single_profile_and_round_trip(alloc, pay):
    params, spec, bids = random_case(alloc, pay, seed=7, n=1, m=2, hidden=(5,))
    w = network.weights64(params)
    a, p = network.forward64(w, spec, bids[3])
    a_b, p_b = network.forward64(w, spec, bids)
    np.testing.assert_allclose(a, a_b[3], rtol=1e-14, atol=1e-15)  # BLAS may sum differently per batch
    np.testing.assert_allclose(p, p_b[3], rtol=1e-14, atol=1e-15)
    back = network.params_from(w)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("act", mechanism.ACTIVATIONS)
def test_separate_towers_are_the_block_diagonal_trunk(act):
    params, spec, bids = random_case("softmax", "fractional_sigmoid", seed=3, hidden=(6, 5, 4), activation=act,
                                     towers="separate")
    w = network.weights64(params)
    f = lambda a: np.asarray(a, np.float64)
    ta, tp = params["alloc_tower"], params["pay_tower"]
    # the structure: [A_1 | P_1], then blockdiag(A_l, P_l); heads [W_a; 0] and [0; W_p]
    np.testing.assert_array_equal(w.trunk[0][0], np.hstack([f(ta[0]["w"]), f(tp[0]["w"])]))
    for k in range(1, len(spec.hidden)):
        wk, h0, h1 = w.trunk[k][0], spec.hidden[k - 1], spec.hidden[k]
        assert wk.shape == (2 * h0, 2 * h1)
        np.testing.assert_array_equal(wk[:h0, :h1], f(ta[k]["w"]))
        np.testing.assert_array_equal(wk[h0:, h1:], f(tp[k]["w"]))
        assert not wk[:h0, h1:].any() and not wk[h0:, :h1].any()
    for k in range(len(spec.hidden)):
        np.testing.assert_array_equal(w.trunk[k][1], np.concatenate([f(ta[k]["b"]), f(tp[k]["b"])]))
    h = spec.hidden[-1]
    np.testing.assert_array_equal(w.alloc[0][:h], f(params["alloc"]["w"]))
    np.testing.assert_array_equal(w.pay[0][h:], f(params["pay"]["w"]))
    assert not w.alloc[0][h:].any() and not w.pay[0][:h].any()
    # forward64 is the direct two-tower computation
    act64 = np.tanh if act == "tanh" else (lambda z: np.maximum(z, 0.0))
    x = bids.reshape(len(bids), -1)
    g, k_ = x, x
    for la, lp in zip(ta, tp):
        g, k_ = act64(g @ f(la["w"]) + f(la["b"])), act64(k_ @ f(lp["w"]) + f(lp["b"]))
    s = (g @ f(params["alloc"]["w"]) + f(params["alloc"]["b"])).reshape(-1, spec.n_agents + 1, spec.n_items)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    a_want = (e / e.sum(axis=1, keepdims=True))[:, : spec.n_agents]
    q = k_ @ f(params["pay"]["w"]) + f(params["pay"]["b"])
    p_want = 1 / (1 + np.exp(-q)) * np.sum(a_want * bids, axis=-1)
    a64, p64 = network.forward64(w, spec, bids)
    np.testing.assert_allclose(a64, a_want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p64, p_want, rtol=1e-12, atol=1e-14)
    # trunk / heads of mechanism compose to the same features; params_from gives the equivalent
    # shared-trunk pytree (the same function)
    feats = np.asarray(mechanism.trunk(params, jnp.asarray(x, jnp.float32), spec), np.float64)
    np.testing.assert_allclose(feats, network.trunk64(w, x, activation=act), rtol=1e-5, atol=1e-6)
    merged = network.params_from(w)
    assert set(merged) == {"trunk", "alloc", "pay"}
    shared = dataclasses.replace(spec, hidden=tuple(2 * h_ for h_ in spec.hidden), towers="shared")
    mechanism.check_params(merged, shared)
    a_m, p_m = mechanism.apply(merged, jnp.asarray(bids, jnp.float32), shared)
    np.testing.assert_allclose(np.asarray(a_m), a64, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(p_m), p64, rtol=1e-5, atol=2e-6)
    # digest distinguishes the towers' leaves (and works on the separate pytree)
    swapped = {**params, "alloc_tower": params["pay_tower"], "pay_tower": params["alloc_tower"]}
    assert network.digest(params) != network.digest(swapped)


def test_head_constants_come_from_mechanism():
    q = np.linspace(-12, 12, 2001)
    np.testing.assert_allclose(network.hard_sigmoid64(q), np.asarray(mechanism.hard_sigmoid(jnp.asarray(q, jnp.float32))),
                               rtol=0, atol=1e-7)
    np.testing.assert_array_equal(network.hard_sigmoid64([-5.0, 0.0, 5.0, 2.5]), [0.0, 0.5, 1.0, 0.75])
    np.testing.assert_allclose(network.sigmoid64(q), np.asarray(jax.nn.sigmoid(jnp.asarray(q, jnp.float32))),
                               rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("rows,scale", [(2, 1.0), (3, 100.0), (5, 0.01)])
def test_sparsemax64_matches_mechanism(rows, scale):
    rng = np.random.default_rng(rows)
    s = scale * rng.normal(size=(64, rows, 4))
    s[0, 1] = s[0, 0]                     # ties
    s[1] = 0.0
    a, tau = network.sparsemax64(s)
    ref32 = np.asarray(mechanism.sparsemax(jnp.asarray(s, jnp.float32), axis=-2), np.float64)
    np.testing.assert_allclose(a, ref32, rtol=1e-5, atol=2e-6 * max(1.0, scale))
    with jax.enable_x64(True):
        ref64 = np.asarray(mechanism.sparsemax(jnp.asarray(s, jnp.float64), axis=-2))
    np.testing.assert_allclose(a, ref64, rtol=1e-12, atol=1e-13 * max(1.0, scale))
    # a projection onto the simplex: a >= 0, sum 1, a = max(s - tau, 0)
    assert np.all(a >= 0)
    np.testing.assert_allclose(a.sum(axis=-2), 1.0, atol=1e-12)
    np.testing.assert_allclose(a, np.maximum(s - tau[..., None, :], 0.0), atol=0)


def test_sparsemax64_hand_computed():
    # columns: (0.5, 0.2, -1) -> tau = max(-0.5, -0.15, -1.3/3) = -0.15 -> (0.65, 0.35, 0)
    #          (3, 0, 0) -> tau = 2 -> (1, 0, 0);  (0, 0, 0) -> tau = -1/3 -> (1/3, 1/3, 1/3)
    #          (1, 0.5, 0.5) -> tau = max((1-1)/1, (1.5-1)/2, (2-1)/3) = 1/3 -> (2/3, 1/6, 1/6)
    s = np.array([[0.5, 3.0, 0.0, 1.0], [0.2, 0.0, 0.0, 0.5], [-1.0, 0.0, 0.0, 0.5]])
    a, tau = network.sparsemax64(s)
    np.testing.assert_allclose(tau, [-0.15, 2.0, -1 / 3, 1 / 3], atol=1e-15)
    np.testing.assert_allclose(a, [[0.65, 1.0, 1 / 3, 2 / 3], [0.35, 0.0, 1 / 3, 1 / 6], [0.0, 0.0, 1 / 3, 1 / 6]],
                               atol=1e-15)
    np.testing.assert_allclose(np.asarray(mechanism.sparsemax(jnp.asarray(s, jnp.float32), axis=0)), a, atol=1e-7)


def test_allocation_and_payment_pieces_hand_computed():
    """A 1x1 net with one neuron: h = relu(2 b - 1), s_agent = 3 h, s_dummy = 0, q = 4 h - 1."""
    for pay in mechanism.PAYMENTS:
        spec = MechanismSpec(n_agents=1, n_items=1, hidden=(1,), allocation="sparsemax", payment=pay)
        params = _nets.make_params(spec, trunk=[([[2.0]], [-1.0])], alloc=([[3.0, 0.0]], [0.0, 0.0]),
                                   pay=([[4.0]], [-1.0]))
        w = network.weights64(params)
        b = np.array([[[0.25]], [[0.75]], [[1.0]]])
        h = np.maximum(2 * b[:, 0, 0] - 1, 0)                # 0, 0.5, 1
        a_want = np.clip((3 * h + 1) / 2, 0, 1)               # sparsemax of (s, 0): 0.5, 1, 1
        q = 4 * h - 1                                         # -1, 1, 3
        frac = {"free": None, "fractional": np.clip(q / 10 + 0.5, 0, 1), "fractional_sigmoid": 1 / (1 + np.exp(-q))}[pay]
        p_want = np.clip(q, 0, spec.payment_max) if pay == "free" else frac * a_want * b[:, 0, 0]
        a, p = network.forward64(w, spec, b)
        np.testing.assert_allclose(a[:, 0, 0], a_want, atol=1e-15)
        np.testing.assert_allclose(p[:, 0], p_want, atol=1e-15)
        a32, p32 = mechanism.apply(params, jnp.asarray(b, jnp.float32), spec)
        np.testing.assert_allclose(np.asarray(a32)[:, 0, 0], a_want, atol=1e-6)
        np.testing.assert_allclose(np.asarray(p32)[:, 0], p_want, atol=1e-6)
