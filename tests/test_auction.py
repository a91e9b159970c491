import jax.numpy as jnp
import numpy as np

from jaxauction import auction
from jaxauction.mechanism import MechanismSpec


def posted_price_params(price_logit):
    """1 agent, 1 item: allocation always 1 (sparsemax of (10, -10)), payment frac*a*b."""
    return {"trunk": [{"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}],
            "alloc": {"w": jnp.zeros((1, 2)), "b": jnp.array([10.0, -10.0])},
            "pay": {"w": jnp.zeros((1, 1)), "b": jnp.array([price_logit])}}


def test_hand_computed_regret_of_a_fractional_mechanism():
    # a = 1, p = hard_sigmoid(0) * b = b/2: utility v - b/2 is maximized by bidding 0.
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(1,), payment="fractional")
    params = posted_price_params(0.0)
    v = jnp.array([[[0.8]]])
    mis = jnp.array([[[0.0]]])
    _, p, u = auction.truthful(params, spec, v)
    np.testing.assert_allclose(p, [[0.4]], atol=1e-6)
    np.testing.assert_allclose(u, [[0.4]], atol=1e-6)
    np.testing.assert_allclose(auction.regret(params, spec, v, mis), [[0.4]], atol=1e-6)
    np.testing.assert_allclose(auction.revenue(p), 0.4, atol=1e-6)
    np.testing.assert_allclose(auction.ir_violation(*auction.truthful(params, spec, v)[:2], v), [[0.0]])


def test_misreport_profiles_replace_one_row():
    v = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    mis = -v
    prof = auction.misreport_profiles(v, mis)
    assert prof.shape == (2, 3, 3, 2)
    for b in range(2):
        for i in range(3):
            want = np.array(v[b]); want[i] = -want[i]
            np.testing.assert_array_equal(prof[b, i], want)


def test_ir_violation_of_free_payment():
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(1,), payment="free", payment_max=1.0)
    params = posted_price_params(0.7)  # always pays 0.7
    v = jnp.array([[[0.5]], [[0.9]]])
    a, p, _ = auction.truthful(params, spec, v)
    np.testing.assert_allclose(auction.ir_violation(a, p, v), [[0.2], [0.0]], atol=1e-6)
