"""The MIP encodes mechanism.apply exactly (certify.mip: encoders, model, backends, licensing)."""
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from certify.mip import backends as bk, licensing, model as mm
from certify.mip.encoders import EncodeOptions, Encoder, UnsupportedArchitecture, check_supported, encode, encode_net
from certify.network import forward64, sparsemax64, utility64, weights64
from certify.tighten import tighten
from jaxauction import mechanism
from jaxauction.bounds import Interval
from jaxauction.mechanism import MechanismSpec
from test_tighten import agent_box, random_net


def gurobi_ok(model: mm.Model) -> bool:
    try:
        return not licensing.gurobi_size_limited() or licensing.gurobi_refusal(model.size()) is None
    except Exception:
        return False


def test_sparsemax64_matches_jax():
    s = np.random.default_rng(0).normal(size=(50, 4, 3)) * 2
    a, tau = sparsemax64(s)
    ref = np.asarray(mechanism.sparsemax(jnp.asarray(s, jnp.float32), axis=-2))
    np.testing.assert_allclose(a, ref, atol=1e-6)
    np.testing.assert_allclose(a.sum(-2), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.maximum(s - tau[:, None, :], 0), a, atol=1e-12)


@pytest.mark.parametrize("payment", ["free", "fractional"])
def test_forward64_matches_mechanism_apply(payment):
    params, spec = random_net(5, n=3, m=2, hidden=(8, 8), payment=payment)
    b = np.random.default_rng(1).random((20, 3, 2))
    a, p = forward64(weights64(params), spec, b)
    a_ref, p_ref = mechanism.apply(params, jnp.asarray(b, jnp.float32), spec)
    np.testing.assert_allclose(a, np.asarray(a_ref), atol=2e-6)
    np.testing.assert_allclose(p, np.asarray(p_ref), atol=2e-6)


def encoded(params, spec, v, agent, lo_i, hi_i, opts=EncodeOptions(), method="crown"):
    lo, hi = np.zeros_like(v), np.ones_like(v)
    lo[agent], hi[agent] = lo_i, hi_i
    nb = tighten(params, spec, agent_box(v, agent, lo_i, hi_i), method=method)
    return encode(mm.Model(), weights64(params), spec, v, agent, lo, hi, nb, opts)


CASES = [(payment, opts) for payment in ("free", "fractional")
         for opts in (EncodeOptions(), EncodeOptions(sparsemax="sos1"), EncodeOptions(compact=False, ideal_inputs=0))]


@pytest.mark.parametrize("payment,opts", CASES)
def test_fixed_bids_objective_equals_forward_pass(payment, opts):
    """With agent i's bids pinned (lb = ub), the MIP's optimum is the network's utility there."""
    params, spec = random_net(7, n=2, m=2, hidden=(8, 8), payment=payment)
    rng = np.random.default_rng(2)
    v = rng.random((2, 2))
    w = weights64(params)
    nb_box = agent_box(v, 1, np.zeros(2), np.ones(2))
    nb = tighten(params, spec, nb_box, method="lp")  # bounds valid on the whole box hold at any point
    for _ in range(3):
        b = rng.random(2)
        lo, hi = np.zeros((2, 2)), np.ones((2, 2))
        lo[1] = hi[1] = b
        mip = encode(mm.Model(), w, spec, v, 1, lo, hi, nb, opts)
        prof = v.copy()
        prof[1] = b
        want = utility64(w, spec, prof, v, 1)
        # the complete MIP start is the network's own trace: same objective
        assert abs(mip.objective_value(mip.start_values(b)) - want) < 1e-9
        res = mip.to("scip").solve()
        assert res.status == "optimal", res
        assert abs(res.objective - want) < 1e-6
        assert mip.get_error(res, reference="float64") < 1e-6


@pytest.mark.parametrize("payment", ["free", "fractional"])
def test_encode_net_on_columns_and_constants(payment):
    """encode_net on an input of columns and constants (as certify.mip.two_copy builds it; agent 1's
    row mixes both, so its payment products have a variable and a constant factor): the recorded
    trace at any point of the box is the float64 forward pass and satisfies every row, and with the
    columns pinned the MIP's only value of ``u_1`` is the network's (seed 8: a_10, a_11 > 0 on the box)."""
    params, spec = random_net(8, n=2, m=2, hidden=(8, 8), payment=payment)
    w, rng = weights64(params), np.random.default_rng(3)
    var = np.array([[True, False], [False, True]])
    lo = rng.uniform(0, 0.5, (2, 2))
    hi = np.where(var, lo + 0.4, lo)
    nb = tighten(params, spec, Interval(lo, hi), method="lp")

    def build(xl, xu):
        be = mm.Model()
        col = np.full((2, 2), -1)
        col[var] = be.add_vars("x", xl[var], xu[var])
        enc = Encoder(be, w, spec, EncodeOptions())
        a, p = encode_net(enc, col, lo, 1, nb)
        be.set_objective(list(a) + list(p.cols), list(lo[1]) + list(-p.coef[0]), -float(p.const[0]))
        return be, enc, col, a, p

    be, enc, col, a, p = build(lo, hi)
    if payment == "fractional":  # w_1j = a_1j x_1j: a column for the variable x_11 only
        assert "pay_w[1,1]" in be.names and "pay_w[1,0]" not in be.names
    for x in [lo + rng.random((2, 2)) * (hi - lo) for _ in range(5)]:
        vals = np.zeros(be.n_vars)
        vals[col[var]] = x[var]
        for fn in enc.evaluators:
            fn(vals)
        a64, p64 = forward64(w, spec, x)
        assert be.violation(vals) < 1e-12
        np.testing.assert_allclose(vals[a], a64[1], atol=1e-12)
        assert abs(p.value(vals)[0] - p64[1]) < 1e-12
    x = lo + rng.random((2, 2)) * (hi - lo)
    pinned = build(x, x)[0]
    res = pinned.to(bk.ScipBackend).solve()
    assert res.status == "optimal", res
    assert abs(res.objective - utility64(w, spec, x, lo, 1)) < 1e-6


@pytest.mark.parametrize("payment", ["free", "fractional"])
def test_both_backends_same_optimum(payment):
    params, spec = random_net(11, n=2, m=2, hidden=(8, 8), payment=payment)
    v = np.random.default_rng(3).random((2, 2))
    objs = {}
    for solver in ("scip", "gurobi"):
        mip = encoded(params, spec, v, 0, np.zeros(2), np.ones(2))
        if solver == "gurobi" and not gurobi_ok(mip.backend):
            continue
        res = mip.to(solver).solve(time_limit=60)
        assert res.status == "optimal"
        assert mip.get_error(res, reference="float64") < 1e-6
        objs[solver] = res.bound
    assert "scip" in objs
    if "gurobi" in objs:
        assert abs(objs["scip"] - objs["gurobi"]) < 1e-5


def test_lp_file_is_readable(tmp_path):
    params, spec = random_net(2, hidden=(8, 8))
    v = np.random.default_rng(4).random((2, 2))
    mip = encoded(params, spec, v, 0, np.zeros(2), np.ones(2), EncodeOptions(compact=False)).to("scip")
    path = tmp_path / "m.lp"
    mip.backend.write(str(path))
    text = path.read_text()
    for name in ("b[0,0]", "z[1,", "lin[1,", "s[2,1]", "alloc_lin[0,0]", "spm_kkt[0,0]", "tau[0]"):
        assert name in text, name
    if mip.n_unstable_relus:
        assert "relu_up[" in text and "relu_on[" in text and "d[" in text


def test_unsupported_architectures():
    for alloc, pay in (("softmax", "free"), ("sparsemax", "fractional_sigmoid")):
        spec = MechanismSpec(n_agents=1, n_items=2, hidden=(4,), allocation=alloc, payment=pay)
        with pytest.raises(UnsupportedArchitecture, match="unsupported architecture.*--solver bab"):
            check_supported(spec)
    for towers in mechanism.TOWERS:
        tanh = MechanismSpec(n_agents=1, n_items=2, hidden=(4,), activation="tanh", towers=towers)
        with pytest.raises(UnsupportedArchitecture, match="activation='tanh'.*--solver bab"):
            check_supported(tanh)
    check_supported(MechanismSpec(n_agents=1, n_items=2, hidden=(4,), towers="separate"))  # relu towers: fine
    from certify import planar  # the planar method refuses tanh too, and takes separate ReLU towers

    with pytest.raises(planar.PlanarError, match="activation='tanh'.*--solver bab"):
        planar.check(MechanismSpec(n_agents=1, n_items=2, hidden=(4,), payment="free", activation="tanh"))
    planar.check(MechanismSpec(n_agents=1, n_items=2, hidden=(4,), payment="free", towers="separate"))


@pytest.mark.parametrize("payment", ["free", "fractional"])
def test_separate_relu_towers_certified_by_the_mip(payment):
    """Separate ReLU towers are the block-diagonal shared trunk of weights64: the MIP (over LP- and
    CROWN-tightened bounds of that trunk) proves a bound no dense search beats, and meets it."""
    import _nets

    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(6, 6), allocation="sparsemax", payment=payment,
                         towers="separate")
    params = _nets.random_params(spec, np.random.default_rng(4))
    v = np.random.default_rng(5).random((2, 2))
    agent = 1
    w = weights64(params)
    g = np.linspace(0, 1, 201)
    prof = np.repeat(v[None], g.size ** 2, 0)
    prof[:, agent] = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    dense = float(np.max(utility64(w, spec, prof, v, agent)))
    for method in ("lp", "crown"):
        mip = encoded(params, spec, v, agent, np.zeros(2), np.ones(2), method=method)
        res = mip.to("scip").solve(time_limit=120)
        assert res.status == "optimal", res
        assert res.bound >= dense - 1e-7, (res.bound, dense)
        assert res.bound - dense < 5e-3, (res.bound, dense)
        b = mip.misreport(res)
        assert abs(utility64(w, spec, b, v, agent) - res.objective) < 1e-6
        assert res.bound - res.objective < 1e-5
        assert mip.get_error(res, reference="float64") < 1e-6
        assert mip.get_error(res) < 1e-5  # vs the float32 forward pass of the block-diagonal pytree


def test_backend_validation():
    m = mm.Model()
    with pytest.raises(ValueError, match="lower bound"):
        m.add_vars("x", [1.0], [0.0])
    x = m.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="sense"):
        m.add_linear("c", [(np.ones((1, 2)), x)], "<=", [1.0])
    with pytest.raises(ValueError, match="does not match"):
        m.add_linear("c", [(np.ones((1, 3)), x)], "<", [1.0])
    with pytest.raises(TypeError, match="only records"):
        m.solve()
    with pytest.raises(ValueError, match="solver"):
        bk.new_backend("cplex")


def test_license_refusal_is_explained(caplog):
    """solver='gurobi' on a model over the pip license's limits names the limit and suggests SCIP."""
    try:
        limited = licensing.gurobi_size_limited()
    except Exception:
        pytest.skip("Gurobi not usable here")
    big = {"vars": 2500, "binaries": 0, "linear": 10, "quadratic": 0, "sos1": 0}
    quad = {"vars": 250, "binaries": 0, "linear": 10, "quadratic": 3, "sos1": 0}
    if not limited:
        assert licensing.choose_solver("gurobi", big) == "gurobi"
        pytest.skip("full Gurobi license: nothing is refused")
    for size, limit in ((big, "2000"), (quad, "200")):
        with pytest.raises(licensing.LicenseLimitError, match="scip") as e:
            licensing.choose_solver("gurobi", size)
        assert limit in str(e.value)
    licensing._warned.clear()
    with caplog.at_level(logging.WARNING, logger="certify"):
        assert licensing.choose_solver("auto", quad) == "scip"
        assert licensing.choose_solver("auto", quad) == "scip"
    assert sum("SCIP" in r.getMessage() for r in caplog.records) == 1  # one notice, not one per model
    # Gurobi's own refusal at solve time (error 10010) is translated the same way.
    m = mm.Model()
    x = m.add_vars("x", np.zeros(2001), np.ones(2001))
    m.set_objective(x, np.ones(2001))
    with pytest.raises(licensing.LicenseLimitError, match="--solver scip"):
        m.to(bk.GurobiBackend).solve()
