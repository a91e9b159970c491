"""Rounding margins (certify.rounding.utility_margin) against observed and exact errors.

``E = utility_margin(w, spec, nb, lo, hi, v, agent, precision)`` must satisfy ``|u_hat(b) - u_R(b)|
<= E`` for every bid profile b of the box, with ``u_hat`` the float32 ``mechanism.apply``
(``precision="float32"``) or the float64 twin (``"float64"``) and ``u_R`` the exact function:

* for every allocation x payment combination, on random and adversarial nets: the observed
  ``max |u32 - u64|`` over many bids is at most ``E32 + E64``, ``E32 > 0``, ``0 < E64 < 1e-9``;
* for the rational heads (sparsemax with the fractional or free payment), ``u_R`` in exact
  rational arithmetic (``fractions.Fraction``): ``|u32 - u_R| <= E32`` and ``|u64 - u_R| <= E64``;
* a 1-neuron net whose margin and whose float32 error are computed by hand;
* assumption 3 of rounding.py's docstring: XLA's float32 exp, tanh, sigmoid (and numpy's float64
  exp, tanh) within ``LIBM_REL`` relative error on a dense grid.
"""
from __future__ import annotations

import itertools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _nets
from certify import network, rounding, tighten
from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec

COMBOS = list(itertools.product(mechanism.ALLOCATIONS, mechanism.PAYMENTS))
IDS = [f"{a}-{p}" for a, p in COMBOS]


def real_bounds(params, spec, lo, hi):
    """Bounds valid on the box, as the certifier computes them (CROWN, float64)."""
    return tighten.select(tighten.crown_batch(params, spec, np.asarray(lo)[None], np.asarray(hi)[None]), 0)


def margins(params, spec, lo, hi, v, agent):
    w = network.weights64(params)
    nb = real_bounds(params, spec, lo, hi)
    return (rounding.utility_margin(w, spec, nb, lo, hi, v, agent, "float32"),
            rounding.utility_margin(w, spec, nb, lo, hi, v, agent, "float64"))


def sample_box(lo, hi, count, rng):
    """Random bid profiles in the box, its corners first (float64, mostly not float32 numbers)."""
    shape = lo.shape
    k = lo.size
    corners = np.array(list(itertools.product([0, 1], repeat=min(k, 8))), np.float64)
    c = np.zeros((len(corners), k))
    c[:, :corners.shape[1]] = corners
    c[:, corners.shape[1]:] = rng.random((len(corners), k - corners.shape[1]))
    t = np.concatenate([c, rng.random((count, k))])
    return (lo.reshape(-1) + t * (hi - lo).reshape(-1)).reshape((-1,) + shape)


def observed_error(params, spec, bids, v, agent):
    w = network.weights64(params)
    x64 = network.utility64(w, spec, bids, v, agent)
    x32 = network.utility32(params, spec, bids, v, agent)
    return float(np.max(np.abs(x32 - x64)))


# ------------------------------------------------------------------------------------------------
# nets
# ------------------------------------------------------------------------------------------------
def net(kind, alloc, pay, seed=0):
    """(params, spec, lo, hi, v, agent): the box is agent's row over its support, others at v
    ("full": every row varies)."""
    rng = np.random.default_rng(seed)
    if kind in ("finding1", "finding2"):
        params, base = getattr(_nets, f"{kind}_net")()
        spec = MechanismSpec(1, 2, base.hidden, alloc, pay, base.payment_max)
        v = np.array([[0.3, 0.6]])
        return params, spec, np.zeros((1, 2)), np.ones((1, 2)), v, 0
    n, m = (2, 2) if kind != "full" else (2, 3)
    spec = MechanismSpec(n, m, (8, 8), alloc, pay)
    ls = _nets._layers(_nets.random_params(spec, rng))
    low, high = np.zeros((n, m)), np.ones((n, m))
    v = rng.random((n, m))
    agent = int(rng.integers(n))
    if kind == "x30":
        for k in (0, len(ls) - 2):          # first layer and the allocation head
            ls[k][0] *= 30.0
    elif kind == "tiny":
        _nets._degenerate("tiny", spec, ls, np.random.default_rng(1), v, agent, low, high)
    elif kind == "negative":
        low = -np.ones((n, m))
        v = low + 2 * rng.random((n, m))
    params = _nets._pack(spec, ls)
    lo, hi = v.copy(), v.copy()
    lo[agent], hi[agent] = low[agent], high[agent]
    if kind == "full":
        lo, hi = np.zeros((n, m)), np.ones((n, m))
    return params, spec, lo, hi, v, agent


KINDS = ["random", "full", "x30", "tiny", "negative", "finding1", "finding2"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alloc,pay", COMBOS, ids=IDS)
def test_margin_covers_observed_float32_error(alloc, pay, kind):
    params, spec, lo, hi, v, agent = net(kind, alloc, pay, seed=COMBOS.index((alloc, pay)))
    e32, e64 = margins(params, spec, lo, hi, v, agent)
    bids = sample_box(lo, hi, 8192, np.random.default_rng(5))
    obs = observed_error(params, spec, bids, v, agent)
    assert np.isfinite(e32) and e32 > 0, e32
    assert 0 < e64 < 1e-9, e64
    assert e64 < e32, (e64, e32)
    assert obs <= e32 + e64, f"observed |u32 - u64| = {obs!r} above the margins {e32!r} + {e64!r}"
    if kind == "finding1" and pay == "free":  # the float32 payment is off by 2^-10: the margin must see it
        assert obs >= 2.0 ** -11 and e32 >= 2.0 ** -10, (obs, e32)


def test_margin_is_useful_on_ordinary_nets():
    """Not a soundness property: the float32 margin of an ordinary random net stays small
    (a margin of 1 would be sound and useless)."""
    for alloc, pay in COMBOS:
        params, spec, lo, hi, v, agent = net("random", alloc, pay, seed=COMBOS.index((alloc, pay)))
        e32, e64 = margins(params, spec, lo, hi, v, agent)
        assert e32 < 1e-4 and e64 < 1e-12, (alloc, pay, e32, e64)


def test_margin_grows_with_the_box():
    """A bigger box cannot have a smaller margin (the bounds only widen)."""
    params, spec, lo, hi, v, agent = net("random", "sparsemax", "fractional", seed=3)
    small_lo, small_hi = lo.copy(), hi.copy()
    small_lo[agent] = 0.4
    small_hi[agent] = 0.6
    e_small = margins(params, spec, small_lo, small_hi, v, agent)[0]
    e_big = margins(params, spec, lo, hi, v, agent)[0]
    assert e_small <= e_big * (1 + 1e-12), (e_small, e_big)


# ------------------------------------------------------------------------------------------------
# tanh trunks and separate towers (RegretNet's architecture)
# ------------------------------------------------------------------------------------------------
ARCHS = [("tanh", "shared"), ("tanh", "separate"), ("relu", "separate")]


def arch_net(act, towers, kind, seed):
    """A 2x2 softmax + logistic-payment net (sparsemax + free for relu, which CROWN and the MIP
    serve), the box agent's row over [0, 1] ("full": every row); real bounds by IBP for tanh."""
    rng = np.random.default_rng(seed)
    alloc, pay = ("softmax", "fractional_sigmoid") if act == "tanh" else ("sparsemax", "free")
    spec = MechanismSpec(2, 2, (8, 8), alloc, pay, activation=act, towers=towers)
    params = _nets.random_params(spec, rng)
    if kind == "x30":
        first = "trunk" if towers == "shared" else "alloc_tower"
        params[first][0] = {k: (30 * v).astype(np.float32) for k, v in params[first][0].items()}
        params["alloc"] = {k: (30 * v).astype(np.float32) for k, v in params["alloc"].items()}
    v, agent = rng.random((2, 2)), int(rng.integers(2))
    lo, hi = v.copy(), v.copy()
    lo[agent], hi[agent] = 0.0, 1.0
    if kind == "full":
        lo, hi = np.zeros((2, 2)), np.ones((2, 2))
    return params, spec, lo, hi, v, agent


def arch_margins(params, spec, lo, hi, v, agent):
    w = network.weights64(params)
    if spec.activation == "relu":
        nb = real_bounds(params, spec, lo, hi)
    else:
        nb = tighten.ibp64(params, spec, tighten.Interval(np.asarray(lo, np.float64), np.asarray(hi, np.float64)))
    return tuple(rounding.utility_margin(w, spec, nb, lo, hi, v, agent, pr) for pr in ("float32", "float64"))


@pytest.mark.parametrize("kind", ["random", "full", "x30"])
@pytest.mark.parametrize("act,towers", ARCHS, ids=[f"{a}-{t}" for a, t in ARCHS])
def test_tanh_and_tower_margins_cover_observed_error(act, towers, kind):
    params, spec, lo, hi, v, agent = arch_net(act, towers, kind, seed=ARCHS.index((act, towers)))
    e32, e64 = arch_margins(params, spec, lo, hi, v, agent)
    bids = sample_box(lo, hi, 8192, np.random.default_rng(5))
    obs = observed_error(params, spec, bids, v, agent)
    assert np.isfinite(e32) and 0 < e64 < e32 and e64 < 1e-9, (e32, e64)
    assert obs <= e32 + e64, f"observed |u32 - u64| = {obs!r} above the margins {e32!r} + {e64!r}"
    if kind == "random":  # sound and still useful on an ordinary net
        assert e32 < 1e-3, e32


def test_tanh_slopes_bracket_the_derivative():
    lo, hi = np.array([-3.0, 0.5, -0.2, -40.0]), np.array([-1.0, 2.0, 0.3, 800.0])
    d_lo, d_hi = rounding._slopes(lo, hi, 0.0, "tanh")
    z = np.linspace(lo, hi, 4001)
    with np.errstate(over="ignore"):
        d = 1 / np.cosh(z) ** 2
    assert np.all(d_lo <= d.min(0)) and np.all(d.max(0) <= d_hi) and np.all((0 <= d_lo) & (d_hi <= 1))
    np.testing.assert_allclose(d_hi[2], 1.0)


def optimaler_dir():
    """The published RegretNet nets: $JAXAUCTION_OPTIMALER, else ../shared/optimaler beside the checkout."""
    import os
    from pathlib import Path

    env = os.environ.get("JAXAUCTION_OPTIMALER")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "optimaler"


def test_margins_on_the_optimaler_nets():
    """Sound (above the observed error at 2000 bids of agent 0's box) and finite on all ten; small on
    the 1x2 and 2x2 nets. With IBP bounds (the box's tanh pre-activation bounds widen ~10x per layer
    on the 6-layer 3x10 nets) the margin of the deep nets is sound but useless: tighter real bounds
    shrink it."""
    from jaxauction import checkpoints

    files = sorted(optimaler_dir().glob("regretnet_*.npz"))
    if not files:
        pytest.skip(f"optimaler nets not found at {optimaler_dir()} (set JAXAUCTION_OPTIMALER)")
    for f in files:
        params, spec, info = checkpoints.load_mechanism(f)
        v = np.asarray(info["json"]["points"][0]["profile"], np.float64)
        lo, hi = v.copy(), v.copy()
        lo[0], hi[0] = 0.0, 1.0
        e32, e64 = arch_margins(params, spec, lo, hi, v, 0)
        bids = sample_box(lo, hi, 2000, np.random.default_rng(1))
        obs = observed_error(params, spec, bids, v, 0)
        assert np.isfinite(e32) and obs <= e32 + e64, (f.name, obs, e32)
        if spec.n_agents * spec.n_items <= 4:
            assert e32 < 0.05 and e64 < 1e-9, (f.name, e32, e64)


# ------------------------------------------------------------------------------------------------
# exact arithmetic (the rational heads)
# ------------------------------------------------------------------------------------------------
def exact_utility(params, spec, bids, v, agent) -> Fraction:
    """``u_R`` in exact rational arithmetic (sparsemax; fractional or free payment)."""
    F = Fraction
    n, m = spec.n_agents, spec.n_items
    x = [F(float(t)) for t in np.asarray(bids, np.float64).reshape(-1)]

    def dense(h, lay):
        w = np.asarray(lay["w"], np.float64)
        c = np.asarray(lay["b"], np.float64)
        return [sum((h[k] * F(float(w[k, j])) for k in range(len(h))), F(0)) + F(float(c[j])) for j in range(w.shape[1])]

    h = x
    for lay in params["trunk"]:
        h = [max(z, F(0)) for z in dense(h, lay)]
    s = dense(h, params["alloc"])
    q = dense(h, params["pay"])
    a = [[None] * m for _ in range(n + 1)]
    for j in range(m):
        col = [s[r * m + j] for r in range(n + 1)]
        z = sorted(col, reverse=True)
        tau = max((sum(z[:k]) - 1) / k for k in range(1, n + 2))
        for r in range(n + 1):
            a[r][j] = max(col[r] - tau, F(0))
    b = [[x[i * m + j] for j in range(m)] for i in range(n)]
    if spec.payment == "free":
        p = min(max(q[agent], F(0)), F(float(spec.payment_max)))
    elif spec.payment == "fractional":
        frac = q[agent] / F(mechanism.HARD_SIGMOID_DIVISOR) + F(mechanism.HARD_SIGMOID_OFFSET)
        frac = min(max(frac, F(0)), F(1))
        p = frac * sum(a[agent][j] * b[agent][j] for j in range(m))
    else:
        raise ValueError(spec.payment)
    vv = np.asarray(v, np.float64)
    return sum(a[agent][j] * F(float(vv[agent, j])) for j in range(m)) - p


@pytest.mark.parametrize("kind", ["random", "x30", "tiny", "negative", "finding1", "finding2"])
@pytest.mark.parametrize("pay", ["fractional", "free"])
def test_margins_cover_the_exact_error(pay, kind):
    params, spec, lo, hi, v, agent = net(kind, "sparsemax", pay, seed=11)
    e32, e64 = margins(params, spec, lo, hi, v, agent)
    bids = sample_box(lo, hi, 24, np.random.default_rng(9))
    w = network.weights64(params)
    x64 = network.utility64(w, spec, bids, v, agent)
    x32 = network.utility32(params, spec, bids, v, agent)
    worst32 = worst64 = 0.0
    for k in range(len(bids)):
        ur = exact_utility(params, spec, bids[k], v, agent)
        worst32 = max(worst32, float(abs(Fraction(float(x32[k])) - ur)))
        worst64 = max(worst64, float(abs(Fraction(float(x64[k])) - ur)))
    assert worst32 <= e32, f"|u32 - u_R| = {worst32!r} above the float32 margin {e32!r}"
    assert worst64 <= e64, f"|u64 - u_R| = {worst64!r} above the float64 margin {e64!r}"


# ------------------------------------------------------------------------------------------------
# a hand-computed case
# ------------------------------------------------------------------------------------------------
def one_neuron_net():
    """1x1, free payment (payment_max 2), sparsemax. ``h = relu(b + 1e4)`` (stably active on
    [0, 1]), allocation logits (agent, dummy) = (0, 0) (a = 1/2 exactly), payment logit
    ``q = h - 9999.5 = b + 1/2`` in reals. In float32, ``b + 1e4`` is rounded to a multiple of
    2^-10."""
    spec = MechanismSpec(1, 1, (1,), "sparsemax", "free", payment_max=2.0)
    params = _nets.make_params(spec, trunk=[([[1.0]], [1e4])], alloc=([[0.0, 0.0]], [0.0, 0.0]),
                               pay=([[1.0]], [-9999.5]))
    return params, spec


def test_one_neuron_float32_error_by_hand():
    params, spec = one_neuron_net()
    v = np.array([[0.3]])
    b = np.array([[0.3]])
    # float32: fl(0.3) = 0.30000001192092896; fl(1e4 + that) = 10000 + 307/1024 (the nearer of
    # 307/1024 = 0.2998046875 and 308/1024); q = that - 9999.5 = 0.7998046875 exactly (Sterbenz)
    assert float(np.float32(1e4) + np.float32(0.3)) == 10000 + 307 / 1024
    p32 = 0.7998046875
    u32_hand = 0.5 * 0.3 - p32
    u_exact = Fraction(1, 2) * Fraction(0.3) - (Fraction(0.3) + Fraction(1, 2))
    assert network.utility32(params, spec, b, v, 0) == pytest.approx(u32_hand, abs=1e-15)
    assert exact_utility(params, spec, b, v, 0) == u_exact
    err = float(abs(Fraction(u32_hand) - u_exact))
    assert err == pytest.approx(2.0 ** -10 * 0.2, rel=1e-6)      # 1.953e-4
    e32, e64 = margins(params, spec, np.zeros((1, 1)), np.ones((1, 1)), v, 0)
    assert e32 >= err and e64 >= 0


def test_one_neuron_margin_formula_by_hand():
    """rounding.py's method evaluated by hand on the 1-neuron net (box b in [0, 1], v = 0.3).

    u = 2^-24, g_n = n u / (1 - n u). Bid rounding eps_0 = u |b|max = u. Layer 1 (fan-in 1):
    rho_1 = g_2 ((1 + u) * 1 + 1e4); e_z = 1 * eps_0 + rho_1 (the neuron is active on the whole
    box: slope 1); |h| <= 1e4 + 1 + e_z. Allocation head (weights 0): e_s = 0. Payment head:
    e_q = eps_0 + rho_1 + g_2 ((1e4 + 1 + 2 e_z) * 1 + 9999.5). Sparsemax with R = 2 rows and
    logit bounds 0: e_tau = 0 + g_4 (0 + 1), e_a = e_tau + u (1 + e_tau). Free payment (P = 2 is a
    float32 number): e_p = e_q. Margin: e_a * |v| + e_p.
    """
    params, spec = one_neuron_net()
    u = 2.0 ** -24
    g = lambda n: n * u / (1 - n * u)
    eps0 = u
    rho1 = g(2) * ((1 + u) * 1.0 + 1e4)
    e_z = eps0 + rho1
    e_q = eps0 + rho1 + g(2) * ((1e4 + 1 + 2 * e_z) + 9999.5)
    e_tau = g(4) * 1.0
    e_a = e_tau + u * (1 + e_tau)
    want = e_a * 0.3 + e_q
    e32, _ = margins(params, spec, np.zeros((1, 1)), np.ones((1, 1)), np.array([[0.3]]), 0)
    assert e32 == pytest.approx(want, rel=1e-9), (e32, want)
    # and the rounding really is this large: the float32 error at b = 0.3 is 1.95e-4 (test above)
    assert 1e-4 < want < 1e-2


# ------------------------------------------------------------------------------------------------
# assumption 3: library functions
# ------------------------------------------------------------------------------------------------
def _grid32():
    lin = np.linspace(-87.0, 88.0, 1_000_001)
    tiny = np.logspace(-30, 1, 10_001)
    return np.unique(np.concatenate([lin, tiny, -tiny, [0.0]]).astype(np.float32))


def _rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    nz = ref != 0
    assert np.all(got[~nz] == 0)
    e = np.abs(got[nz] - ref[nz]) / np.abs(ref[nz])
    return float(e.max()), int(np.argmax(e))


@pytest.mark.parametrize("fn", ["exp", "tanh", "sigmoid"])
def test_xla_float32_libm_within_LIBM_REL(fn):
    x = _grid32()
    x64 = x.astype(np.float64)
    jfn = {"exp": jnp.exp, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[fn]
    ref = {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda t: 1.0 / (1.0 + np.exp(-t))}[fn](x64)
    lim = rounding.LIBM_REL["float32"]
    for how, f in (("eager", jfn), ("jit", jax.jit(jfn))):
        got = np.asarray(f(jnp.asarray(x)))
        assert got.dtype == np.float32
        e, k = _rel(got, ref)
        assert e < lim, f"{fn} ({how}): relative error {e:.3g} at x = {x[k]!r} above LIBM_REL {lim:.3g}"


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps, reason="no extended long double")
@pytest.mark.parametrize("fn", ["exp", "tanh"])
def test_numpy_float64_libm_within_LIBM_REL(fn):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-700, 700, 200_000), rng.uniform(-20, 20, 200_000),
                        np.logspace(-300, 1, 20_000), -np.logspace(-300, 1, 20_000)])
    if fn == "tanh":
        x = x[np.abs(x) < 30]
    f = getattr(np, fn)
    e, k = _rel(f(x), f(x.astype(np.longdouble)))
    assert e < rounding.LIBM_REL["float64"], f"np.{fn}: relative error {e:.3g} at x = {x[k]!r}"


def test_twin_sigmoid_absolute_error():
    """The twin's ``sigmoid64 = (1 + tanh(q / 2)) / 2`` loses relative accuracy far left (1 + tanh
    cancels), so the margin treats the sigmoid's error as absolute (``lib + u``): check that."""
    q = np.concatenate([np.linspace(-60, 60, 400_001), [-745.0, 745.0]])
    ref = 1 / (1 + np.exp(-q.astype(np.longdouble)))
    err = float(np.max(np.abs(network.sigmoid64(q) - ref)))
    assert err <= rounding.LIBM_REL["float64"] + rounding.UNIT_ROUNDOFF["float64"], err
