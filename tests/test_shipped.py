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
    assert cert.regret_upper_exact - cert.regret_lower < 1e-4 and cert.gap <= cert.gap_tol


@pytest.mark.parametrize("name", SHIPPED)
def test_card_reproduce_command_rebuilds_the_shipped_config(name):
    """The card's ``python train.py --config NAME --set ...`` (as CARD.md shows it, and as
    ``rundir.reproduce_command`` writes it today) gives back the run's own config (all but the
    teacher path, a placeholder, and a wall-clock budget the run finished within)."""
    import re
    import shlex

    from jaxauction.config import Config
    from jaxauction.config_io import apply_overrides, load_config
    from jaxauction.rundir import reproduce_command

    ckpt = REPO / "checkpoints" / name
    cfg = json.loads((ckpt / "config.json").read_text())
    done = json.loads((ckpt / "final_eval.json").read_text())["step"]
    shown = re.search(r"reproduce with `([^`]*)`", (ckpt / "CARD.md").read_text())
    assert shown, f"{name}/CARD.md shows no reproduce command"
    assert shown.group(1) == reproduce_command(cfg, done)
    argv = shlex.split(shown.group(1))
    assert argv[:4] == ["python", "train.py", "--config", cfg["name"]]
    sets = [argv[k + 1] for k, a in enumerate(argv) if a == "--set" and not argv[k + 1].startswith("teacher=")]
    rebuilt = apply_overrides(load_config(cfg["name"]), sets).to_dict()
    want = Config.from_dict(cfg).to_dict()
    if done < cfg["steps"]:  # stopped by its budget: the rerun needs the same budget
        assert rebuilt["max_seconds"] == want["max_seconds"]
    for key in ("teacher", "max_seconds"):
        rebuilt.pop(key), want.pop(key)
    assert rebuilt == want


# ---- the shipped affine maximizers (jaxauction.ama_train): strategyproof by construction ----------

from jaxauction import ama, ama_train, baselines  # noqa: E402

SHIPPED_AMA = sorted(p.name for p in (REPO / "checkpoints").iterdir() if ama.is_ama(p))


def test_there_are_shipped_affine_maximizers():
    assert {"3x2_ama", "3x3_ama"} <= set(SHIPPED_AMA)


@pytest.mark.parametrize("name", SHIPPED_AMA)
def test_shipped_ama_matches_its_record_beats_myerson_and_has_no_gainful_misreport(name):
    d = REPO / "checkpoints" / name
    params, spec, doc, prior = ama.load(d)
    rec = json.loads((d / "final_eval.json").read_text())
    vals = prior.sample(jax.random.PRNGKey(rec["seed"]), rec["points"])
    rev = np.asarray(ama.apply(params, vals, spec)[1], np.float64).sum(axis=1)
    np.testing.assert_allclose(rev.mean(), rec["revenue"], rtol=1e-6)
    diff = rev - np.asarray(baselines.make("myerson", prior)(vals)[1], np.float64).sum(axis=1)
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff)), "earns no more than item-wise Myerson"
    assert rec["misreport_search"]["max_gain"] <= 1e-9
    assert ama_train.misreport_search(params, spec, np.asarray(vals[:40]), misreports=64, seed=1) <= 1e-9
    card = (d / "CARD.md").read_text()
    assert f"--out checkpoints/{name}" in card and "- hardware: " in card
