"""certify.report: confidence bounds on expected regret in summary.json / summary.md."""
import json

import numpy as np
import pytest

from certify import campaign, report, stats
from certify.certificate import is_proven
from jaxauction import priors
from jaxauction.mechanism import MechanismSpec

DIGEST = "ab" * 32
SPEC22 = MechanismSpec(n_agents=2, n_items=2, hidden=(8,), payment="fractional")  # trivial R_i = 2


def _rec(point, agent, status="optimal", upper=0.01, pgd=0.005):
    return {"point": point, "agent": agent, "status": status, "regret_lower": 0.0 if upper is None else upper,
            "regret_upper": upper, "pgd_regret": pgd, "time_solve_s": 1.0, "time_bounds_s": 0.1,
            "time_build_s": 0.1, "valuations": [[0.5, 0.5], [0.5, 0.5]], "best_misreport": [[0.5, 0.5], [0.5, 0.5]],
            "gap": None, "message": ""}


def _write_run(out, recs, spec=SPEC22, kind="prior", prior=None):
    out.mkdir(parents=True, exist_ok=True)
    prior = prior or priors.uniform(spec.n_agents, spec.n_items)
    manifest = {"format": "jaxauction-cert-run-v1", "ckpt": "x", "weights_sha256": DIGEST,
                "setting": {"spec": spec.to_dict(), "prior": prior.to_dict()}, "seed": 0, "solver": "auto",
                "time_limit": None, "profiles": {"kind": kind, "seed": 0} if kind == "prior" else {"kind": kind}}
    (out / campaign.MANIFEST).write_text(json.dumps(manifest))
    (out / campaign.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


def _write_space(path, uppers, digest=DIGEST, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agents": [{"agent": a, "lower": 0.0, "upper": u, "status": "optimal", "gap": 0.0,
                                            "worst_profile": None, "worst_misreport": None, "cells": 1,
                                            "seconds": 1.0} for a, u in enumerate(uppers)],
                                "digest": digest, "spec": SPEC22.to_dict(), "low": [[0.0, 0.0]] * 2,
                                "high": [[1.0, 1.0]] * 2, **extra}))


def _rows(rep):
    return {r["agent"]: r for r in rep["summary"]["rows"]}


def _base(n=40):
    rng = np.random.default_rng(0)
    return [_rec(p, a, upper=float(rng.uniform(0, 0.004))) for p in range(n) for a in (0, 1)]


def test_summary_rows_carry_the_bounds_with_the_trivial_range(tmp_path):
    recs = _base()
    rep = report.write_report(_write_run(tmp_path / "run", recs), plots=False)
    rows = _rows(rep)
    X = np.array([[r["regret_upper"] for r in recs if r["agent"] == a] for a in (0, 1)]).T
    for a in (0, 1):
        r = rows[a]
        assert r[stats.KEY_UCB] == pytest.approx(stats.mean_ucb(X[:, a], 2.0, 0.05))
        assert (r[stats.KEY_RANGE], r[stats.KEY_RANGE_SOURCE]) == (2.0, stats.RANGE_TRIVIAL)
        assert (r[stats.KEY_DELTA], r[stats.KEY_METHOD], r[stats.KEY_SAMPLES]) == (0.05, stats.BERNSTEIN, 40)
        assert (r[stats.KEY_UNPROVEN], r[stats.KEY_MISSING]) == (0, 0)
        assert r[stats.KEY_EXCEED]["0.001"] == pytest.approx(
            stats.clopper_pearson_upper(int((X[:, a] > 1e-3).sum()), 40, 0.05))
        assert r[stats.KEY_EXCEED]["0.01"] == pytest.approx(stats.clopper_pearson_upper(0, 40, 0.05))
        assert r[stats.KEY_UCB] >= X[:, a].mean()
    # "all": the per-profile mean over agents (mean range), tails of the per-profile max
    assert rows["all"][stats.KEY_UCB] == pytest.approx(stats.mean_ucb(X.mean(axis=1), 2.0, 0.05))
    assert rows["all"][stats.KEY_EXCEED]["0.001"] == pytest.approx(
        stats.clopper_pearson_upper(int((X.max(axis=1) > 1e-3).sum()), 40, 0.05))
    assert "mean over agents" in rows["all"][stats.KEY_NOTE]
    saved = json.loads((tmp_path / "run" / report.SUMMARY_JSON).read_text())
    assert saved == json.loads(json.dumps(rep["summary"]))
    md = (tmp_path / "run" / report.SUMMARY_MD).read_text()
    assert "E[regret] UCB" in md and stats.BERNSTEIN in md and "P(> 0.01) UCB" in md
    assert f"{rows[0][stats.KEY_UCB]:.5f}" in md.split("E[regret] UCB")[1]


def test_delta_and_thresholds_are_configurable(tmp_path):
    out = _write_run(tmp_path / "run", _base())
    loose = _rows(report.write_report(out, plots=False, ucb_delta=0.3, thresholds=(0.002,)))
    tight = _rows(report.write_report(out, plots=False))
    assert loose[0][stats.KEY_DELTA] == 0.3 and set(loose[0][stats.KEY_EXCEED]) == {"0.002"}
    assert loose[0][stats.KEY_UCB] < tight[0][stats.KEY_UCB]
    with pytest.raises(ValueError, match="delta"):
        report.write_report(out, plots=False, ucb_delta=1.0)


def test_unproven_pairs_are_counted_against_the_bound(tmp_path):
    base = _base()
    timeout = base + [_rec(40, 0, "time_limit", 0.5), _rec(40, 1, "optimal", 0.001)]
    dropped = base  # the same run without profile 40
    r_to = _rows(report.write_report(_write_run(tmp_path / "a", timeout), plots=False))
    r_dr = _rows(report.write_report(_write_run(tmp_path / "b", dropped), plots=False))
    assert r_to[0][stats.KEY_UCB] > r_dr[0][stats.KEY_UCB]
    assert r_to[0][stats.KEY_UNPROVEN] == 1 and r_to["all"][stats.KEY_UNPROVEN] == 1
    x0 = [r["regret_upper"] for r in base if r["agent"] == 0] + [0.5]
    assert r_to[0][stats.KEY_UCB] == pytest.approx(stats.mean_ucb(x0, 2.0, 0.05))  # at the bound reached

    # no bound reached, an error, a pair missing from the file: each counted at R
    worse = base + [_rec(40, 0, "time_limit", None), {**_rec(40, 1, "error", None), "message": "boom"},
                    _rec(41, 1, "optimal", 0.001)]
    r = _rows(report.write_report(_write_run(tmp_path / "c", worse), plots=False))
    x0 = [r["regret_upper"] for r in base if r["agent"] == 0] + [2.0, 2.0]  # (41, 0) missing
    x1 = [r["regret_upper"] for r in base if r["agent"] == 1] + [2.0, 0.001]
    assert r[0][stats.KEY_UCB] == pytest.approx(stats.mean_ucb(x0, 2.0, 0.05))
    assert r[1][stats.KEY_UCB] == pytest.approx(stats.mean_ucb(x1, 2.0, 0.05))
    assert (r[0][stats.KEY_UNPROVEN], r[0][stats.KEY_MISSING], r[1][stats.KEY_UNPROVEN]) == (2, 1, 1)
    assert r[0][stats.KEY_SAMPLES] == 42 and r[0][stats.KEY_UCB] > r_to[0][stats.KEY_UCB]


def test_space_json_range_used_only_for_these_weights(tmp_path):
    out = _write_run(tmp_path / "run", _base())
    trivial = _rows(report.write_report(out, plots=False))
    _write_space(out / report.SPACE_JSON, [0.02, 5.0])  # agent 1's is above the trivial 2: not used
    r = _rows(report.write_report(out, plots=False))
    assert (r[0][stats.KEY_RANGE], r[0][stats.KEY_RANGE_SOURCE]) == (0.02, stats.RANGE_SPACE)
    assert (r[1][stats.KEY_RANGE], r[1][stats.KEY_RANGE_SOURCE]) == (2.0, stats.RANGE_TRIVIAL)
    assert r[0][stats.KEY_UCB] < trivial[0][stats.KEY_UCB] and r[1][stats.KEY_UCB] == trivial[1][stats.KEY_UCB]
    assert r["all"][stats.KEY_RANGE] == pytest.approx(1.01)
    assert r["all"][stats.KEY_RANGE_SOURCE] == "space.json+trivial"

    _write_space(out / report.SPACE_JSON, [0.02, 0.03], upper_float32=None)  # digest matches
    (out / report.SPACE_JSON).write_text(json.dumps({**json.loads((out / report.SPACE_JSON).read_text()),
                                                     "agents": [{"agent": 0, "upper": 0.02, "upper_float32": 0.025},
                                                                {"agent": 1, "upper": None}]}))
    r = _rows(report.write_report(out, plots=False))
    assert r[0][stats.KEY_RANGE] == 0.025 and r[1][stats.KEY_RANGE_SOURCE] == stats.RANGE_TRIVIAL

    _write_space(out / report.SPACE_JSON, [0.02, 0.03], digest="cd" * 32)  # other weights: ignored
    r = _rows(report.write_report(out, plots=False))
    assert r[0][stats.KEY_RANGE_SOURCE] == stats.RANGE_TRIVIAL and r[0][stats.KEY_UCB] == trivial[0][stats.KEY_UCB]
    assert "ignored" in r[0][stats.KEY_NOTE] and "other weights" in r[0][stats.KEY_NOTE]
    _write_space(out / report.SPACE_JSON, [0.02, 0.03], spec={**SPEC22.to_dict(), "payment": "free"})
    r = _rows(report.write_report(out, plots=False))
    assert r[0][stats.KEY_RANGE_SOURCE] == stats.RANGE_TRIVIAL and "another mechanism spec" in r[0][stats.KEY_NOTE]
    (out / report.SPACE_JSON).write_text('{"agents": [{"upper": 0.1}], "digest": "' + DIGEST + '"}')
    assert "malformed" in _rows(report.write_report(out, plots=False))[0][stats.KEY_NOTE]
    (out / report.SPACE_JSON).unlink()

    # the sibling space run, and an explicit file (whose mismatch is an error)
    _write_space(tmp_path / report.SPACE_DIR / report.SPACE_JSON, [0.02, 0.03])
    assert _rows(report.write_report(out, plots=False))[1][stats.KEY_RANGE] == 0.03
    other = tmp_path / "other.json"
    _write_space(other, [0.02, 0.03], high=[[2.0, 2.0]] * 2)
    with pytest.raises(ValueError, match="another valuation box"):
        report.write_report(out, plots=False, space=other)
    _write_space(other, [0.04, 0.03])
    assert _rows(report.write_report(out, plots=False, space=other))[0][stats.KEY_RANGE] == 0.04


def test_no_bound_without_iid_prior_profiles(tmp_path):
    r = _rows(report.write_report(_write_run(tmp_path / "f", _base(), kind="file"), plots=False))
    assert r[0][stats.KEY_UCB] is None and "not i.i.d." in r[0][stats.KEY_NOTE]
    md = (tmp_path / "f" / report.SUMMARY_MD).read_text()
    assert "Expected regret bound: not computed (profiles are not i.i.d." in md
    out = tmp_path / "nomanifest"
    out.mkdir()
    (out / campaign.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in _base(3)))
    r = _rows(report.write_report(out, plots=False))
    assert r["all"][stats.KEY_UCB] is None and campaign.MANIFEST in r["all"][stats.KEY_NOTE]


def test_free_payment_and_a_negative_box_range(tmp_path):
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(8,), payment="free", payment_max=1.5)
    prior = priors.UniformPrior(((-1.0, 0.5),), ((2.0, 3.0),))
    recs = [{**_rec(p, 0), "valuations": [[0.0, 1.0]]} for p in range(10)]
    (row,) = report.write_report(_write_run(tmp_path / "run", recs, spec, prior=prior), plots=False)["summary"]["rows"]
    assert row[stats.KEY_RANGE] == pytest.approx(6.5)  # max(1, 2) + max(0.5, 3) + 1.5


# ---------------------------------------------------------------------------------------------
# End to end: a real campaign (fake certifier) -> run.json + results.jsonl -> report


class _Cert:
    def __init__(self, d):
        self.d = d

    def to_json(self):
        return dict(self.d)


def _certify(params, spec, valuations, agent, *, low=None, high=None, **kw):
    """regret = 0.01 v[agent, 0]; a time-out (bound reached 0.5) when v[agent, 1] > 0.9."""
    v = np.asarray(valuations, float)
    r, slow = 0.01 * v[agent, 0], v[agent, 1] > 0.9
    return _Cert(dict(agent=agent, valuations=v.tolist(), truthful_utility=0.0, regret_lower=r,
                      regret_upper=0.5 if slow else r, best_misreport=v.tolist(),
                      status="time_limit" if slow else "optimal", solver="fake", gap=None, nodes=1,
                      time_bounds_s=0.0, time_build_s=0.0, time_solve_s=0.1, mip_objective=0.0,
                      mip_network_error=0.0, pgd_regret=r, n_binaries=0, n_unstable_relus=0, message="",
                      point=None))


def test_end_to_end_campaign_report(tmp_path):
    import jax

    from jaxauction import checkpoints, mechanism

    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(8,), payment="free")  # payment_max = 2: R = 2 + 2
    ckpt = tmp_path / "ckpt"
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda sh: rng.normal(size=sh).astype(np.float32),
                                    mechanism.layer_shapes(spec), is_leaf=lambda x: isinstance(x, tuple))
    checkpoints.save_mechanism(ckpt, params, spec)
    out = tmp_path / "out"
    recs = campaign.run_certification(ckpt, out, points=30, certify_fn=_certify, progress=False)
    rep = report.write_report(out, plots=False)
    rows = _rows(rep)
    saved = json.loads((out / report.SUMMARY_JSON).read_text())["rows"]
    keys = {stats.KEY_UCB, stats.KEY_DELTA, stats.KEY_METHOD, stats.KEY_EXCEED, stats.KEY_RANGE,
            stats.KEY_RANGE_SOURCE, stats.KEY_UNPROVEN, stats.KEY_SAMPLES}
    assert [r["agent"] for r in saved] == [0, 1, "all"] and all(keys <= set(r) for r in saved)
    for a in (0, 1):
        mine = sorted((r for r in recs if r["agent"] == a), key=lambda r: r["point"])
        x = [min(r["regret_upper"], 4.0) for r in mine]
        assert rows[a][stats.KEY_RANGE] == 4.0 and rows[a][stats.KEY_SAMPLES] == 30
        assert rows[a][stats.KEY_UNPROVEN] == sum(not is_proven(r) for r in mine)
        assert rows[a][stats.KEY_UCB] == pytest.approx(stats.mean_ucb(x, 4.0, 0.05))
    assert sum(rows[a][stats.KEY_UNPROVEN] for a in (0, 1)) > 0  # the fake's time-outs are in there
    md = (out / report.SUMMARY_MD).read_text()
    assert "Expected regret, 95% upper confidence bounds over the 30 i.i.d. prior profiles" in md
    line0 = next(l for l in md.splitlines() if l.startswith("|") and "trivial" in l)
    assert f"{rows[0][stats.KEY_UCB]:.5f}" in line0 and "4" in line0


def test_space_json_found_in_the_shipped_layout(tmp_path):
    """results/NAME beside results/space/NAME/space.json (what the repository ships): found, so that
    regenerating a shipped summary keeps its whole-space range (it once fell back to the trivial one)."""
    out = _write_run(tmp_path / "results" / "net", _base())
    trivial = _rows(report.write_report(out, plots=False))
    assert trivial[0][stats.KEY_RANGE_SOURCE] == stats.RANGE_TRIVIAL
    space = tmp_path / "results" / report.SPACE_DIR / "net" / report.SPACE_JSON
    space.parent.mkdir(parents=True)
    _write_space(space, [0.02, 0.03])
    r = _rows(report.write_report(out, plots=False))
    assert (r[0][stats.KEY_RANGE], r[0][stats.KEY_RANGE_SOURCE]) == (0.02, stats.RANGE_SPACE)
    assert r[0][stats.KEY_UCB] < trivial[0][stats.KEY_UCB]
