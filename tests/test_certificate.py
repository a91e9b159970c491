"""certify.certificate: the invariants every certificate keeps, and settle()'s decisions."""
import dataclasses

import pytest

from certify.certificate import (RESULT_KEYS, STATUSES, Certificate, CertificateError, check_invariants, is_proven,
                                 settle)

COMMON = dict(agent=0, valuations=[[0.5, 0.5]], best_misreport=[[0.2, 0.7]], solver="scip", nodes=1,
              time_bounds_s=0.0, time_build_s=0.0, time_solve_s=0.0, mip_objective=None, mip_network_error=None,
              pgd_regret=None, n_binaries=0, n_unstable_relus=0)


def make(**kw):
    args = dict(search_status="optimal", upper_u=1.0 + 1e-6, truthful_u=0.9, lower_u=1.0, margin64=1e-12,
                margin32=1e-4, method_tol=2e-6)
    args.update(kw)
    return settle(**args, **COMMON)


def test_settle_adds_the_margins_and_keeps_the_order():
    c = make()
    assert c.status == "optimal"
    assert c.regret_lower == pytest.approx(0.1 - 2e-12, abs=1e-15)
    assert c.regret_upper_exact == pytest.approx(0.1 + 1e-6 + 1e-12)
    assert c.regret_upper == pytest.approx(0.1 + 1e-6 + 1e-12 + 2e-4)
    assert c.margin == pytest.approx(2e-4 + 1e-12)
    assert c.regret_lower <= c.regret_upper_exact <= c.regret_upper
    assert c.gap == pytest.approx(c.regret_upper - c.regret_lower) and c.gap <= c.gap_tol
    assert is_proven(c) and is_proven(c.to_json())


def test_open_gap_is_not_optimal():
    c = make(upper_u=1.5)
    assert c.status == "gap_open" and "gap" in c.message and not is_proven(c)
    assert c.regret_upper == pytest.approx(0.6 + 1e-12 + 2e-4)


def test_bound_below_an_evaluated_bid_is_an_error_not_a_bound():
    c = make(upper_u=0.99)  # the search's bound is below the utility of its own best bid
    assert c.status == "error" and c.regret_upper is None and c.gap is None
    assert "inconsistent" in c.message


def test_upper_and_lower_are_clipped_at_zero():
    """Regret is >= 0 (the truthful bid is feasible): a float64 bound below the truthful utility
    by rounding becomes 0, never a negative 'proof'."""
    c = make(upper_u=0.9 - 1e-9, lower_u=0.9 - 1e-9, margin32=0.0, margin64=0.0)
    assert c.regret_upper == 0.0 and c.regret_lower == 0.0 and c.status == "optimal"


def test_no_bound_is_error_or_time_limit():
    assert make(upper_u=None).status == "error"
    t = make(upper_u=None, search_status="time_limit")
    assert t.status == "time_limit" and t.regret_upper is None
    assert make(search_status="time_limit").status == "time_limit"


@pytest.mark.parametrize("change, match", [
    (dict(regret_lower=0.5), "regret_lower"),
    (dict(regret_lower=-0.1), ">= 0"),
    (dict(gap=0.3), "gap"),
    (dict(status="finished"), "status"),
    (dict(regret_upper=None), "without"),
    (dict(gap_tol=1e-9), "optimal"),
])
def test_broken_certificates_are_refused(change, match):
    good = dataclasses.asdict(make())
    good.update(change)
    with pytest.raises(CertificateError, match=match):
        Certificate(**good)
    with pytest.raises(CertificateError):
        check_invariants(good)


def test_result_keys_are_the_fields():
    assert RESULT_KEYS == tuple(f.name for f in dataclasses.fields(Certificate))
    assert set(make().to_json()) == set(RESULT_KEYS)
    assert "optimal" in STATUSES and "infeasible" not in STATUSES
