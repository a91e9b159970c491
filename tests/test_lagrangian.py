import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import lagrangian


def test_multiplier_and_rho_schedule_by_hand():
    # rho0 = 2, +0.5 every 2 updates; lam step every 3 updates; lambda0 = 1.
    lag = lagrangian.lagrangian(2.0, 0.5, rho_every=2, update_every=3, lambda0=1.0, mu0=10.0, rho_ir0=1.0,
                                rho_ir_increment=3.0, rho_ir_every=1, ir_update_every=2)
    st = lag.init(2)
    np.testing.assert_allclose(st.lam, [1.0, 1.0])
    rgt = jnp.array([0.1, 0.2])
    ir = jnp.array([0.5, 0.0])
    hist = []
    for _ in range(6):
        st = lag.update(st, rgt, ir)
        hist.append((int(st.count), np.asarray(st.lam).tolist(), float(st.rho), np.asarray(st.mu).tolist(),
                     float(st.rho_ir)))
    # count 1: nothing due (rho_ir: 1 -> 4 every update)
    # count 2: rho 2 -> 2.5; mu += rho_ir(=4) * ir -> [12, 10]; rho_ir 4 -> 7
    # count 3: lam += rho(=2.5) * rgt -> [1.25, 1.5]; rho_ir -> 10
    # count 4: rho -> 3; mu += 10 * ir -> [17, 10]; rho_ir -> 13
    # count 5: rho_ir -> 16
    # count 6: lam += 3 * rgt -> [1.55, 2.1]; rho -> 3.5; mu += 16 * ir -> [25, 10]; rho_ir -> 19
    want = [(1, [1.0, 1.0], 2.0, [10.0, 10.0], 4.0),
            (2, [1.0, 1.0], 2.5, [12.0, 10.0], 7.0),
            (3, [1.25, 1.5], 2.5, [12.0, 10.0], 10.0),
            (4, [1.25, 1.5], 3.0, [17.0, 10.0], 13.0),
            (5, [1.25, 1.5], 3.0, [17.0, 10.0], 16.0),
            (6, [1.55, 2.1], 3.5, [25.0, 10.0], 19.0)]
    for got, exp in zip(hist, want):
        assert got[0] == exp[0]
        np.testing.assert_allclose(got[1], exp[1], rtol=1e-6)
        assert got[2] == pytest.approx(exp[2])
        np.testing.assert_allclose(got[3], exp[3], rtol=1e-6)
        assert got[4] == pytest.approx(exp[4])


def test_update_is_jittable_and_ir_optional():
    lag = lagrangian.lagrangian(1.0, update_every=1)
    st = jax.jit(lag.update)(lag.init(3), jnp.array([0.0, 1.0, 2.0]), None)
    np.testing.assert_allclose(st.lam, [5.0, 6.0, 7.0])
    np.testing.assert_allclose(st.mu, [20.0] * 3)  # no IR values: IR multipliers unchanged


def test_loss_by_hand():
    st = lagrangian.LagrangianState(lam=jnp.array([1.0, 2.0]), rho=jnp.array(4.0), mu=jnp.array([3.0, 3.0]),
                                    rho_ir=jnp.array(2.0), count=jnp.array(0))
    rgt = jnp.array([0.1, 0.2])
    # -0.5 + (1*0.1 + 2*0.2) + 4/2 * (0.01 + 0.04) = 0.1
    assert float(lagrangian.loss(st, 0.5, rgt)) == pytest.approx(0.1, abs=1e-6)
    # + 3*0.1 + 3*0 + 2/2 * 0.01 = 0.41
    assert float(lagrangian.loss(st, 0.5, rgt, jnp.array([0.1, 0.0]))) == pytest.approx(0.41, abs=1e-6)


def test_loss_gradient_is_lambda_plus_rho_rgt_and_state_is_constant():
    st = lagrangian.LagrangianState(lam=jnp.array([1.0, 2.0]), rho=jnp.array(4.0), mu=jnp.zeros(2),
                                    rho_ir=jnp.array(1.0), count=jnp.array(0))
    rgt = jnp.array([0.1, 0.2])
    g_rev, g_rgt = jax.grad(lambda r, g: lagrangian.loss(st, r, g), argnums=(0, 1))(0.5, rgt)
    assert float(g_rev) == -1.0
    np.testing.assert_allclose(g_rgt, [1.0 + 4 * 0.1, 2.0 + 4 * 0.2], rtol=1e-6)
    g_state = jax.grad(lambda s: lagrangian.loss(s, 0.5, rgt), allow_int=True)(st)
    np.testing.assert_array_equal(g_state.lam, 0.0)
    assert float(g_state.rho) == 0.0


def test_bad_periods_and_shapes_raise():
    with pytest.raises(ValueError, match="update_every"):
        lagrangian.lagrangian(1.0, update_every=0)
    lag = lagrangian.lagrangian(1.0)
    with pytest.raises(AssertionError):
        lag.update(lag.init(2), jnp.zeros(3))


# ---- regret budget -------------------------------------------------------------------------------

def test_budget_update_by_hand_projects_the_multiplier_at_zero():
    lag = lagrangian.lagrangian(10.0, update_every=1, lambda0=0.05, budget=0.01)
    st = lag.update(lag.init(3), jnp.array([0.0, 0.01, 0.03]), None)
    # lam + rho (rgt - R): 0.05 + 10 * (-0.01) = -0.05 -> 0 ; 0.05 + 0 ; 0.05 + 10 * 0.02 = 0.25
    np.testing.assert_allclose(st.lam, [0.0, 0.05, 0.25], atol=1e-7)
    st = lag.update(st, jnp.array([0.0, 0.0, 0.0]), None)
    np.testing.assert_allclose(st.lam, [0.0, 0.0, 0.15], atol=1e-7)


def test_zero_budget_is_regretnets_update_and_loss():
    old, new = lagrangian.lagrangian(3.0, update_every=1), lagrangian.lagrangian(3.0, update_every=1, budget=0.0)
    rgt = jnp.array([0.2, 0.0, 0.05])
    np.testing.assert_array_equal(old.update(old.init(3), rgt).lam, new.update(new.init(3), rgt).lam)
    st = old.init(3)
    assert float(lagrangian.loss(st, 0.3, rgt)) == float(lagrangian.loss(st, 0.3, rgt, budget=0.0))


def test_budget_loss_penalizes_only_the_excess():
    st = lagrangian.LagrangianState(lam=jnp.array([1.0, 2.0]), rho=jnp.array(4.0), mu=jnp.zeros(2),
                                    rho_ir=jnp.array(1.0), count=jnp.array(0))
    rgt = jnp.array([0.1, 0.3])
    # R = 0.2: -0.5 + (0.1 + 0.6) + 4/2 * (0 + 0.1^2) = 0.22
    assert float(lagrangian.loss(st, 0.5, rgt, budget=0.2)) == pytest.approx(0.22, abs=1e-6)
    g = jax.grad(lambda r: lagrangian.loss(st, 0.5, r, budget=0.2))(rgt)
    np.testing.assert_allclose(g, [1.0, 2.0 + 4 * 0.1], rtol=1e-6)  # below the budget: lam only
