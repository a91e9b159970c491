"""The networks shipped in checkpoints/ load, match their recorded evaluation, and certify."""
import json

import jax
import numpy as np
import pytest

from conftest import REPO
from jaxauction import evaluate, priors
from jaxauction.checkpoints import load_mechanism

SHIPPED = sorted(p.name for p in (REPO / "checkpoints").iterdir() if (p / "mechanism.json").exists())


def test_there_are_shipped_networks():
    assert {"1x2_reg", "2x2_reg"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_has_a_card(name):
    params, spec, info = load_mechanism(REPO / "checkpoints" / name)
    cfg = json.loads((REPO / "checkpoints" / name / "config.json").read_text())
    assert (spec.n_agents, spec.n_items) == (cfg["n_agents"], cfg["n_items"])
    assert (REPO / "checkpoints" / name / "CARD.md").exists()


def test_shipped_1x2_revenue_matches_its_recorded_evaluation():
    params, spec, info = load_mechanism(REPO / "checkpoints" / "1x2_reg")
    rec = json.loads((REPO / "checkpoints" / "1x2_reg" / "final_eval.json").read_text())
    prior = priors.from_dict(info["prior"], spec.n_agents, spec.n_items)
    out = evaluate.evaluate(params, spec, prior, points=rec["points"], seed=rec["seed"], steps=0)
    np.testing.assert_allclose(out["revenue"], rec["revenue"], rtol=1e-5)


def test_shipped_1x2_certificate_bounds_pgd():
    from certify.regret import certify_point

    params, spec, _ = load_mechanism(REPO / "checkpoints" / "1x2_reg")
    v = np.array([[0.7, 0.4]], np.float32)
    cert = certify_point(params, spec, v, 0, solver="scip", pgd_steps=200)
    assert cert.status == "optimal"
    assert cert.regret_upper >= cert.regret_lower - 1e-6
    assert cert.regret_upper >= cert.pgd_regret - 1e-6
    assert cert.regret_upper - cert.regret_lower < 1e-4
