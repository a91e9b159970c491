"""certify.campaign (resumable, parallel certification runs) and certify.report, with a fake certifier.

The fake ``certify_fn`` returns a deterministic function of the valuations, so results can be
checked exactly; the real MIP core is exercised end to end in test_certify_cli.py.
"""
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from certify import campaign, report
from jaxauction import checkpoints, mechanism, priors
from jaxauction.mechanism import MechanismSpec

REQUIRED = ("point", "agent", "valuations", "truthful_utility", "regret_lower", "regret_upper", "best_misreport",
            "status", "solver", "time_bounds_s", "time_build_s", "time_solve_s", "nodes", "pgd_regret",
            "mip_network_error")


class FakeCert:
    def __init__(self, d):
        self.d = d

    def to_json(self):
        return dict(self.d)


CALLS = []


def fake_certify(params, spec, valuations, agent, *, low=None, high=None, solver="auto", time_limit=None,
                 threads=1, **kw):
    """regret = 0.1 * v[agent, 0]; a time-out when v[agent, 0] > 0.9; best misreport = low corner."""
    CALLS.append((np.asarray(valuations).tolist(), agent))
    v = np.asarray(valuations, float)
    r = 0.1 * v[agent, 0]
    mis = v.copy()
    mis[agent] = low[agent]
    timeout = v[agent, 0] > 0.9
    return FakeCert(dict(agent=agent, valuations=v.tolist(), truthful_utility=float(v[agent].sum()),
                         regret_lower=r, regret_upper=None if timeout else r, best_misreport=mis.tolist(),
                         status="time_limit" if timeout else "optimal", solver="fake", gap=None, nodes=3,
                         time_bounds_s=0.01, time_build_s=0.02, time_solve_s=0.5, mip_objective=1.0,
                         mip_network_error=0.0, pgd_regret=0.5 * r, n_binaries=4, n_unstable_relus=4,
                         message="", point=None))


def failing_certify(params, spec, valuations, agent, **kw):
    if valuations[agent][0] < 0.5:
        raise ValueError("boom at a low value")
    return fake_certify(params, spec, valuations, agent, **kw)


class LicenseRefused(RuntimeError):
    fatal = True


def license_certify(*a, **kw):
    raise LicenseRefused("Model too large for size-limited license")


def interrupted_certify(*a, **kw):
    c = fake_certify(*a, **kw)
    c.d["status"] = "interrupted"
    return c


def save_ckpt(d, n=1, m=2, seed=0, prior=None):
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=(8,), allocation="sparsemax", payment="free")
    params = mechanism.init(jax.random.PRNGKey(seed), spec)
    checkpoints.save_mechanism(d, params, spec, prior=prior)
    return d


@pytest.fixture
def ckpt(tmp_path):
    return save_ckpt(tmp_path / "ckpt")


@pytest.fixture
def ckpt22(tmp_path):
    return save_ckpt(tmp_path / "ckpt22", n=2, m=2)


def lines(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines()]


def run(ckpt, out, **kw):
    kw.setdefault("certify_fn", fake_certify)
    kw.setdefault("progress", False)
    return campaign.run_certification(ckpt, out, **kw)


# ---------------------------------------------------------------------------------------------
# Profiles


def test_sampling_is_deterministic_prefix_stable_and_in_support():
    prior = priors.per_item(2, [4.0, 4.0], [16.0, 7.0])
    a = campaign.sample_profiles(prior, 3, 5)
    b = campaign.sample_profiles(prior, 3, 12)
    c = campaign.sample_profiles(prior, 4, 5)
    assert a.shape == (5, 2, 2) and b.shape == (12, 2, 2)
    np.testing.assert_array_equal(a, b[:5])
    np.testing.assert_array_equal(a, campaign.sample_profiles(prior, 3, 5))
    assert not np.allclose(a, c)
    lo, hi = prior.bounds()
    assert np.all(b >= lo) and np.all(b <= hi)
    assert len({tuple(p.ravel()) for p in b}) == 12  # distinct profiles
    # The documented keying, across a sampling block boundary: profile p uses fold_in(PRNGKey(seed), p).
    big = campaign.sample_profiles(prior, 3, campaign.SAMPLE_BLOCK + 3)
    for p in (0, 7, campaign.SAMPLE_BLOCK + 1):
        want = prior.sample(jax.random.fold_in(jax.random.PRNGKey(3), p), 1)[0]
        np.testing.assert_array_equal(big[p], np.asarray(want, np.float64))


def test_profiles_validation_names_the_offending_index(tmp_path):
    lo, hi = np.zeros((1, 2)), np.ones((1, 2))
    ok = [[[0.1, 0.2]], [[0.3, 1.0]]]
    np.testing.assert_allclose(campaign.validate_profiles(ok, 1, 2, lo, hi), np.asarray(ok))
    with pytest.raises(campaign.ProfileError, match=r"profile 1 has shape \(2,\)"):
        campaign.validate_profiles([[[0.1, 0.2]], [0.1, 0.2]], 1, 2, lo, hi)
    with pytest.raises(campaign.ProfileError, match=r"profile 2 value 1.5 for agent 0, item 1 is outside"):
        campaign.validate_profiles(ok + [[[0.5, 1.5]]], 1, 2, lo, hi)
    with pytest.raises(campaign.ProfileError, match="profile 0 contains NaN"):
        campaign.validate_profiles([[[float("nan"), 0.2]]], 1, 2, lo, hi)
    with pytest.raises(campaign.ProfileError, match="profile 0 is not a numeric"):
        campaign.validate_profiles([[["a", 0.2]]], 1, 2, lo, hi)
    with pytest.raises(campaign.ProfileError, match="expected a list"):
        campaign.validate_profiles({"x": 1}, 1, 2, lo, hi)
    with pytest.raises(campaign.ProfileError, match="does not exist"):
        campaign.read_profiles_file(tmp_path / "nope.json", 1, 2, lo, hi)
    (tmp_path / "bad.json").write_text("[[[0.1, ")
    with pytest.raises(campaign.ProfileError, match="not readable JSON"):
        campaign.read_profiles_file(tmp_path / "bad.json", 1, 2, lo, hi)


def test_profiles_file_is_used_verbatim(ckpt, tmp_path):
    prof = [[[0.1, 0.2]], [[0.7, 0.0]], [[1.0, 1.0]]]
    f = tmp_path / "p.json"
    f.write_text(json.dumps(prof))
    recs = run(ckpt, tmp_path / "out", profiles=str(f))
    assert [r["valuations"] for r in recs] == prof
    assert json.loads((tmp_path / "out" / campaign.MANIFEST).read_text())["profiles"]["kind"] == "file"
    (tmp_path / "wrong.json").write_text(json.dumps([[[0.1, 0.2], [0.3, 0.4]]]))
    with pytest.raises(campaign.ProfileError, match=r"profile 0 has shape \(2, 2\)"):
        run(ckpt, tmp_path / "out2", profiles=str(tmp_path / "wrong.json"))


def test_agent_index_out_of_range(ckpt22, tmp_path):
    assert campaign.parse_agents("all", 2) == [0, 1]
    assert campaign.parse_agents("1,0,1", 2) == [0, 1]
    with pytest.raises(campaign.RunError, match="agent index 2 out of range"):
        run(ckpt22, tmp_path / "out", agents="0,2", points=1)
    with pytest.raises(campaign.RunError, match="agents must be"):
        campaign.parse_agents("x", 2)


# ---------------------------------------------------------------------------------------------
# Results file, resume, manifest


def test_results_lines_have_the_stable_keys_and_sampled_valuations(ckpt22, tmp_path):
    out = tmp_path / "out"
    recs = run(ckpt22, out, points=3, seed=5)
    got = lines(out / campaign.RESULTS)
    assert len(got) == 6 and {(r["point"], r["agent"]) for r in got} == {(p, a) for p in range(3) for a in range(2)}
    for r in got:
        assert set(REQUIRED) <= set(r), set(REQUIRED) - set(r)
    prior = priors.from_dict(None, 2, 2)
    prof = campaign.sample_profiles(prior, 5, 3)
    for r in recs:
        np.testing.assert_array_equal(r["valuations"], prof[r["point"]])
        assert r["regret_lower"] == pytest.approx(0.1 * prof[r["point"]][r["agent"], 0])
    m = json.loads((out / campaign.MANIFEST).read_text())
    assert m["seed"] == 5 and m["setting"]["spec"]["n_agents"] == 2 and m["profiles"] == {"kind": "prior", "seed": 5}


def test_resume_skips_finished_pairs(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=3)
    CALLS.clear()
    recs = run(ckpt, out, points=5)
    assert len(CALLS) == 2  # only the two new points
    prof = campaign.sample_profiles(priors.uniform(1, 2), 0, 5)
    assert [c[0] for c in CALLS] == prof[3:].tolist()
    got = lines(out / campaign.RESULTS)
    assert sorted((r["point"], r["agent"]) for r in got) == [(p, 0) for p in range(5)]
    assert len(recs) == 5
    CALLS.clear()
    run(ckpt, out, points=5)
    assert CALLS == [] and len(lines(out / campaign.RESULTS)) == 5


def test_torn_last_line_is_repaired_without_duplication(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=4)
    path = out / campaign.RESULTS
    text = path.read_text()
    full = text.splitlines(keepends=True)
    # Simulate a kill in the middle of writing point 3: only half of its line reached the disk.
    path.write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])
    with pytest.raises(json.JSONDecodeError):
        [json.loads(l) for l in path.read_text().splitlines()]
    CALLS.clear()
    run(ckpt, out, points=4)
    assert len(CALLS) == 1
    got = path.read_text().splitlines()
    assert len(got) == 4
    assert got[:3] == [l.rstrip("\n") for l in full[:3]]  # earlier lines untouched
    assert sorted(json.loads(l)["point"] for l in got) == [0, 1, 2, 3]


def test_complete_last_line_without_newline_is_kept(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=2)
    path = out / campaign.RESULTS
    path.write_text(path.read_text().rstrip("\n"))
    CALLS.clear()
    run(ckpt, out, points=3)
    assert len(CALLS) == 1
    assert sorted(r["point"] for r in lines(path)) == [0, 1, 2]


def test_corrupt_middle_line_is_an_error(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=3)
    path = out / campaign.RESULTS
    ls = path.read_text().splitlines()
    ls[1] = ls[1][:10]
    path.write_text("\n".join(ls) + "\n")
    with pytest.raises(campaign.ResultsError, match="line 2 is corrupt"):
        run(ckpt, out, points=3)


def test_manifest_mismatch_is_refused(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=2, seed=0)
    with pytest.raises(campaign.ManifestError, match="seed: 0 there vs 1 now"):
        run(ckpt, out, points=2, seed=1)
    with pytest.raises(campaign.ManifestError, match="time_limit"):
        run(ckpt, out, points=2, seed=0, time_limit=5.0)
    other = save_ckpt(tmp_path / "other", seed=1)
    with pytest.raises(campaign.ManifestError, match="weights_sha256"):
        run(other, out, points=2)
    wider = save_ckpt(tmp_path / "wider", prior={"name": "uniform", "low": 0.0, "high": 2.0})
    with pytest.raises(campaign.ManifestError, match="setting"):
        run(wider, out, points=2)
    # The same weights from another path (a copied checkpoint) resume fine.
    import shutil
    shutil.copytree(ckpt, tmp_path / "copy")
    CALLS.clear()
    run(tmp_path / "copy", out, points=2)
    assert CALLS == []


def test_manifest_ckpt_is_portable_and_found_again_from_another_checkout(tmp_path):
    """run.json records an in-repo checkpoint relative to the repository (``../shared/...`` beside
    it), so a clone elsewhere finds its own copy; an absolute path from another checkout maps to
    this one's copy (not to the other checkout's, even when that one exists on this machine)."""
    from certify.campaign.results import locate_ckpt, portable_ckpt
    from jaxauction.config import REPO

    shipped = REPO / "checkpoints" / "1x2_reg"
    assert portable_ckpt(shipped) == "checkpoints/1x2_reg"
    assert portable_ckpt(REPO.parent / "shared" / "optimaler" / "x.npz") == "../shared/optimaler/x.npz"
    outside = tmp_path / "ck"
    outside.mkdir()
    if not str(outside.resolve()).startswith(str(REPO.parent.resolve())):
        assert portable_ckpt(outside) == str(outside.resolve())
    assert locate_ckpt("checkpoints/1x2_reg") == shipped.resolve()
    assert locate_ckpt("/elsewhere/clone/checkpoints/1x2_reg") == shipped.resolve()
    other = tmp_path / "other_checkout" / "checkpoints" / "1x2_reg"
    other.mkdir(parents=True)
    assert locate_ckpt(str(other)) == shipped.resolve()  # this repository's copy first
    assert locate_ckpt(str(outside)) == outside.resolve()
    assert locate_ckpt("/elsewhere/checkpoints/no_such_net") is None
    assert locate_ckpt("") is None


def test_shipped_manifests_name_checkpoints_this_checkout_has():
    """Every shipped certification run (results/**/run.json, space_run.json) names its checkpoint
    portably, and it is found here (bench/frontier.py and bench/recertify.py read them)."""
    from certify.campaign.results import locate_ckpt
    from jaxauction.config import REPO

    found = 0
    for f in list((REPO / "results").rglob("run.json")) + list((REPO / "results").rglob("space_run.json")):
        rec = json.loads(f.read_text()).get("ckpt")
        if rec is None:
            continue
        assert not Path(rec).is_absolute(), f"{f}: absolute checkpoint path {rec}"
        if rec.startswith("../shared/") and not (REPO.parent / "shared").exists():
            continue  # the outside oracles are not in this checkout's neighbourhood
        assert locate_ckpt(rec) is not None, f"{f}: checkpoint {rec} not found"
        found += 1
    assert found > 0


# ---------------------------------------------------------------------------------------------
# Errors, fatal errors, interrupts, workers


def test_errors_are_recorded_not_raised(ckpt, tmp_path):
    out = tmp_path / "out"
    recs = run(ckpt, out, points=6, certify_fn=failing_certify)
    prof = campaign.sample_profiles(priors.uniform(1, 2), 0, 6)
    low = prof[:, 0, 0] < 0.5
    assert 0 < low.sum() < 6  # both kinds present with seed 0
    for r, is_low in zip(recs, low):
        assert (r["status"] == "error") == is_low
        if is_low:
            assert "ValueError: boom at a low value" in r["message"] and r["regret_upper"] is None
    assert len(lines(out / campaign.RESULTS)) == 6


def test_fatal_error_aborts_and_records_nothing(ckpt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LicenseRefused, match="size-limited"):
        run(ckpt, out, points=2, certify_fn=license_certify)
    assert not (out / campaign.RESULTS).exists() or (out / campaign.RESULTS).read_text() == ""


def test_a_directory_without_results_can_be_reused(ckpt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LicenseRefused):
        run(ckpt, out, points=2, certify_fn=license_certify, solver="gurobi")
    recs = run(ckpt, out, points=2, solver="scip", seed=1)  # another solver and seed: fine, nothing to mix
    assert len(recs) == 2
    assert json.loads((out / campaign.MANIFEST).read_text())["solver"] == "scip"


def test_interrupted_solve_is_not_recorded(ckpt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, out, points=2, certify_fn=interrupted_certify)
    assert (out / campaign.RESULTS).read_text() == ""


def test_executor_choices_and_a_missing_ray(ckpt, tmp_path, monkeypatch):
    import sys

    with pytest.raises(campaign.RunError, match="executor must be one of"):
        run(ckpt, tmp_path / "o", points=1, executor="dask")
    with pytest.raises(campaign.RunError, match="needs --executor ray"):
        run(ckpt, tmp_path / "o", points=1, address="127.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(campaign.RunError, match=r'needs Ray: pip install -e "\.\[ray\]"'):
        run(ckpt, tmp_path / "o", points=1, executor="ray")
    assert not (tmp_path / "o").exists()  # refused before any work


def test_workers_give_the_same_results_as_serial(ckpt22, tmp_path):
    serial = run(ckpt22, tmp_path / "a", points=4)
    par = run(ckpt22, tmp_path / "b", points=4, workers=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]
    assert strip(par) == strip(serial)
    got = lines(tmp_path / "b" / campaign.RESULTS)
    assert len(got) == 8 and len({(r["point"], r["agent"]) for r in got}) == 8


def slow_certify(params, spec, valuations, agent, **kw):
    """A certifier stuck in a long solve (for the kill tests)."""
    import time

    time.sleep(120)
    return fake_certify(params, spec, valuations, agent, **kw)


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc/PID/stat; None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _running(pid: int) -> bool:
    st = _state_and_parent(pid)
    return st is not None and st[0] != "Z"


def _children(pid: int) -> list[int]:
    kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [k for k in kids if (st := _state_and_parent(k)) is not None and st[1] == pid and st[0] != "Z"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killing_the_parent_ends_its_workers(ckpt22, tmp_path, sig):
    """``kill`` (SIGTERM) stops the workers like Ctrl-C; after SIGKILL, which the parent cannot
    handle, each worker notices it was orphaned and exits instead of finishing its MIP."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    code = ("import sys; sys.path.insert(0, %r); import test_certify_runs as t; from certify import campaign; "
            "campaign.run_certification(%r, %r, points=4, workers=2, certify_fn=t.slow_certify, progress=False)"
            % (str(Path(__file__).parent), str(ckpt22), str(out)))
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    try:
        deadline = time.time() + 60
        while len(_children(parent.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # let the workers initialise and take their tasks
        workers = _children(parent.pid)
        assert len(workers) >= 2, workers
        parent.send_signal(getattr(signal, sig))
        parent.wait(timeout=30)
        deadline = time.time() + 20
        alive = workers
        while alive and time.time() < deadline:
            time.sleep(0.3)
            alive = [w for w in workers if _running(w)]
        assert alive == [], f"workers still running after {sig} to their parent: {alive}"
        assert not (out / campaign.RESULTS).exists() or (out / campaign.RESULTS).read_text() == ""
    finally:
        parent.kill()


# ---------------------------------------------------------------------------------------------
# Report


def _rec(point, agent, status, lower, upper, pgd, t, vals=((0.5, 0.5),), mis=((0.4, 0.6),)):
    return {"point": point, "agent": agent, "status": status, "regret_lower": lower, "regret_upper": upper,
            "pgd_regret": pgd, "time_solve_s": t, "time_bounds_s": 0.5, "time_build_s": 0.5,
            "valuations": [list(v) for v in vals], "best_misreport": [list(m) for m in mis], "gap": None,
            "message": ""}


def test_report_numbers_by_hand(tmp_path):
    recs = [_rec(0, 0, "optimal", 0.01, 0.01, 0.01, 1.0), _rec(1, 0, "optimal", 0.02, 0.02, 0.01, 2.0),
            _rec(2, 0, "optimal", 0.05, 0.06, 0.01, 3.0),
            _rec(3, 0, "time_limit", 0.5, 0.9, 0.4, 10.0),  # huge upper bound: must not count
            {**_rec(4, 0, "error", None, None, None, None), "message": "ValueError: x"}]
    (tmp_path / campaign.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = report.write_report(tmp_path)
    (row,) = rep["summary"]["rows"]
    assert row["agent"] == 0 and row["count"] == 5
    assert (row["proven"], row["unproven"], row["errors"]) == (3, 1, 1)
    assert row["certified_regret"]["mean"] == pytest.approx(0.03)
    assert row["certified_regret"]["std"] == pytest.approx(math.sqrt((0.02 ** 2 + 0.01 ** 2 + 0.03 ** 2) / 3))
    assert row["certified_regret"]["max"] == pytest.approx(0.06)
    assert row["pgd_regret_mean"] == pytest.approx(0.01)
    assert row["certified_over_pgd"] == pytest.approx(3.0)
    st = row["solve_time_s"]
    assert (st["mean"], st["p50"], st["max"]) == pytest.approx((4.0, 2.5, 10.0))
    assert st["p95"] == pytest.approx(3.0 + 0.85 * 7.0)
    assert st["std"] == pytest.approx(np.std([1, 2, 3, 10]))
    assert row["status_counts"] == {"error": 1, "optimal": 3, "time_limit": 1}
    assert row["unproven_pairs"] == [{"point": 3, "agent": 0, "status": "time_limit", "regret_lower": 0.5,
                                      "regret_upper": 0.9, "gap": None}]
    md = (tmp_path / report.SUMMARY_MD).read_text()
    assert "0.90000" in md.split("Not proven")[1] and "0.90000" not in md.split("Not proven")[0]
    assert "ValueError: x" in md
    assert json.loads((tmp_path / report.SUMMARY_JSON).read_text()) == json.loads(json.dumps(rep["summary"]))


def test_report_all_row_and_plots(tmp_path):
    v2, m2 = ((0.2, 0.3), (0.4, 0.5)), ((0.1, 0.3), (0.4, 0.5))
    recs = [_rec(0, 0, "optimal", 0.01, 0.01, 0.005, 1.0, v2, m2), _rec(0, 1, "optimal", 0.03, 0.03, 0.03, 1.0, v2, m2)]
    (tmp_path / campaign.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = report.write_report(tmp_path)
    rows = {r["agent"]: r for r in rep["summary"]["rows"]}
    assert set(rows) == {0, 1, "all"}
    assert rows["all"]["certified_regret"]["mean"] == pytest.approx(0.02)
    assert rows["all"]["certified_over_pgd"] == pytest.approx(0.02 / 0.0175)
    assert (tmp_path / report.PLOT_REGRET).stat().st_size > 1000
    assert (tmp_path / report.PLOT_TIME).stat().st_size > 1000
    assert not (tmp_path / report.PLOT_ARROWS).exists()  # 2x2: no arrow plot


def test_arrow_plot_for_one_agent_two_items(ckpt, tmp_path):
    out = tmp_path / "out"
    run(ckpt, out, points=8)
    rep = report.write_report(out)
    png = out / report.PLOT_ARROWS
    assert png in rep["files"] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = rep["summary"]["rows"][0]
    assert r["proven"] + r["unproven"] == 8
