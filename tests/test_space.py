"""The whole-space certificate (certify/joint.py, certify/space.py, certify/campaign/space_run.py,
``certify.py --space``).

* a hand-built posted-price mechanism with a deliberate exploit region, whose worst regret and
  per-cell maxima are known by hand;
* the joint bound is sound by sampling (random ReLU and tanh nets, sparsemax and softmax, every
  payment kind, 1x2 and 2x2, boxes of several widths) against a dense float64 evaluation;
* the whole-space bracket holds a dense grid search and every per-profile certificate, and agrees
  with the exact two-copy MIP on small boxes;
* resume: a run stopped by its time limit, and one killed mid-search, go on to the same answer;
* bad input is a one-line error.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from certify import joint, network, space
from certify.campaign import space_run
from certify.campaign.errors import RunError
from jaxauction import checkpoints, mechanism
from jaxauction.mechanism import MechanismSpec

REPO = Path(__file__).resolve().parents[1]
F = lambda *a: np.array(a, np.float32)


def posted_price():
    """1x2, free payment: both items always go to the bidder (sparsemax of logits (5, 0)), who pays
    ``0.3 + 0.5 relu(b_1 - 0.6)``: a posted price of 0.3 with a surcharge for bidding high on item 1.
    ``u(b; v) = v_1 + v_2 - p(b)``, so ``regret(v) = 0.5 relu(v_1 - 0.6)`` (shade b_1 to <= 0.6): the worst
    is 0.2 at ``v_1 = 1``, and a cell ``v_1 in [a, c]`` has worst regret ``0.5 relu(c - 0.6)``."""
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2,), allocation="sparsemax", payment="free", payment_max=1.0)
    params = {"trunk": [{"w": F([1.0, 0.0], [0.0, 1.0]), "b": F(-0.6, 0.0)}],
              "alloc": {"w": np.zeros((2, 4), np.float32), "b": F(5.0, 5.0, 0.0, 0.0)},
              "pay": {"w": F([0.5], [0.0]), "b": F(0.3)}}
    mechanism.check_params(params, spec)
    return params, spec


def random_net(seed, n=1, m=2, hidden=(8, 8), **kw):
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=hidden, **kw)
    params = mechanism.init(jax.random.PRNGKey(seed), spec)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params), spec


def run_search(params, spec, agent=0, gap=1e-4, low=None, high=None, grid=None, limit=None):
    n, m = spec.n_agents, spec.n_items
    low = np.zeros((n, m)) if low is None else low
    high = np.ones((n, m)) if high is None else high
    sp = space.Space(network.weights64(params), spec, agent, low, high, bid_low=np.zeros((n, m)),
                     bid_high=np.ones((n, m)), grid=grid, batch=256)
    pool = space.new_pool(sp)
    space.seed_incumbent(sp, pool, params, points=32, steps=50)
    status, _, _ = space.search(sp, pool, gap=gap, deadline=None if limit is None else time.perf_counter() + limit)
    lower, z = space.incumbent(pool)
    return sp, pool, status, lower, float(space.cell_upper(pool).max()), z


def dense_regret(params, spec, agent, z):
    """R at points z (P, D) through the float64 twin (not the jitted function under test)."""
    w = network.weights64(params)
    n, m = spec.n_agents, spec.n_items
    v = z[:, :n * m].reshape(-1, n, m)
    mis = v.copy()
    mis[:, agent] = z[:, n * m:]
    return np.array([network.utility64(w, spec, mi, vi, agent) - network.utility64(w, spec, vi, vi, agent)
                     for mi, vi in zip(mis, v)])


# ------------------------------------------------------------------------------------------------
def test_posted_price_known_worst_case_and_cells():
    params, spec = posted_price()
    sp, pool, status, lower, upper, z = run_search(params, spec, grid=8)
    assert status == "optimal"
    assert lower <= upper <= lower + 1e-4
    assert 0.2 - 1e-4 <= lower <= 0.2 + 1e-6 and upper >= 0.2 - 1e-6
    v, b = joint.split_point(z, spec)
    assert v[0, 0] == pytest.approx(1.0, abs=1e-3) and b[0] <= 0.6 + 1e-6
    # replayed through the twin
    assert dense_regret(params, spec, 0, z[None])[0] == pytest.approx(lower, abs=1e-9)
    # every cell's bound is at least its true worst 0.5 relu(c - 0.6), and at most the global bound
    cells = space.cell_upper(pool)
    half, kink = float(np.float32(0.5)), float(np.float32(0.6))   # the stored weights
    truth = half * np.maximum(sp.cell_hi[:, 0] - kink, 0.0)
    assert np.all(cells >= truth - 1e-9) and np.all(cells <= upper + 1e-12)
    # the cells without an exploit (v_1 <= 0.5) are bounded near 0
    assert np.all(cells[sp.cell_hi[:, 0] <= 0.5] <= 1e-6)


SOUND_NETS = [
    dict(activation="relu", allocation="sparsemax", payment="fractional"),
    dict(activation="relu", allocation="softmax", payment="free"),
    dict(activation="tanh", allocation="softmax", payment="fractional_sigmoid"),
    dict(activation="tanh", allocation="sparsemax", payment="fractional", towers="separate"),
]


def _sound_cases():
    for kind in range(len(SOUND_NETS)):
        for n in (1, 2):
            slow = (kind, n) != (0, 2)   # the default suite: the ReLU 2x2 case (the slow suite: all 8)
            yield pytest.param(kind, n, id=f"{'-'.join(SOUND_NETS[kind].values())}-{n}",
                               marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("kind,n", list(_sound_cases()))
def test_joint_bound_sound_by_sampling(kind, n):
    params, spec = random_net(10 + kind, n=n, hidden=(12, 12), **SOUND_NETS[kind])
    w = network.weights64(params)
    agent = n - 1
    jn = joint.compile_joint(w, spec, agent)
    p64 = network.params_from(w, np.float64)
    d = n * 2 + 2
    rng = np.random.default_rng(kind + 7 * n)
    for width in (1.0, 0.2, 0.02):
        c = rng.random((64, d))
        zl, zu = np.clip(c - width / 2, 0, 1), np.clip(c + width / 2, 0, 1)
        with jax.enable_x64(True):
            ub, mid = (np.asarray(a) for a in joint.bound_boxes(jn, p64, jnp.asarray(zl), jnp.asarray(zu),
                                                                    spec, agent, True))
        pts = zl[:, None] + rng.random((64, 24, d)) * (zu - zl)[:, None]
        pts[:, 0], pts[:, 1] = zl, zu                                    # corners too
        r = dense_regret(params, spec, agent, pts.reshape(-1, d)).reshape(64, 24)
        assert np.all(r <= ub[:, None] + 1e-9), (width, float((r - ub[:, None]).max()))
        assert np.allclose(mid, dense_regret(params, spec, agent, (zl + zu) / 2), atol=1e-9)


@pytest.mark.slow
def test_whole_space_brackets_dense_search_and_point_certificates():
    from certify.regret import certify_point

    params, spec = random_net(3, hidden=(8, 8), allocation="sparsemax", payment="fractional")
    sp, pool, status, lower, upper, z = run_search(params, spec, gap=1e-4)
    assert status == "optimal" and lower <= upper <= lower + 1e-4
    g = np.linspace(0, 1, 7)
    pts = np.stack(np.meshgrid(g, g, g, g, indexing="ij"), -1).reshape(-1, 4)
    assert dense_regret(params, spec, 0, pts).max() <= upper + 1e-9
    rng = np.random.default_rng(0)
    for v in rng.random((2, 1, 2)):
        c = certify_point(params, spec, v, 0, solver="bab", pgd_steps=50)
        assert c.regret_lower <= upper + 1e-9          # a point's regret is inside the whole space's bound
        assert c.regret_upper_exact <= upper + 1e-5    # and its proven max too (up to bab's gap)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_agrees_with_two_copy_mip_on_small_boxes(n):
    from certify.mip.two_copy import max_regret_box

    params, spec = random_net(20 + n, n=n, hidden=(6, 6), allocation="sparsemax", payment="fractional")
    m = 2
    rng = np.random.default_rng(n)
    lo = np.clip(rng.random((n, m)) * 0.8, 0, 1)
    hi = np.minimum(lo + 0.2, 1.0)
    agent = 0
    _, _, status, lower, upper, _ = run_search(params, spec, agent, gap=1e-5, low=lo, high=hi, grid=2)
    # the misreport ranges over the whole bid box [0, 1]^M, in both
    mip = max_regret_box(params, spec, agent, lo, hi, np.zeros(m), np.ones(m), solver="scip", time_limit=60)
    assert status == "optimal" and mip.status == "optimal"
    assert lower <= mip.upper + 1e-9 and mip.lower <= upper + 1e-9
    assert abs(upper - mip.upper) <= 2e-5


# ------------------------------------------------------------------------------------------------
def save(tmp_path, params, spec, name="net"):
    d = tmp_path / name
    checkpoints.save_mechanism(d, params, spec)
    return d


@pytest.mark.slow
def test_run_space_files_and_resume_after_time_limit(tmp_path):
    params, spec = random_net(5, hidden=(16, 16), allocation="sparsemax", payment="fractional")
    ck = save(tmp_path, params, spec)
    out = tmp_path / "space"
    first = space_run.run_space(ck, out, gap=1e-5, time_limit=2.0, progress=False)
    rec = first["agents"][0]
    assert set(space_run.AGENT_KEYS) <= set(rec)
    assert rec["lower"] <= rec["upper_exact"] <= rec["upper"]
    done = space_run.run_space(ck, out, gap=1e-5, time_limit=300.0, progress=False)
    rec2 = done["agents"][0]
    assert rec2["status"] == "optimal" and rec2["gap_exact"] <= 1e-5
    assert rec2["boxes"] > rec["boxes"] and rec2["seconds"] > rec["seconds"]
    assert rec2["lower"] >= rec["lower"] - 1e-12 and rec2["upper_exact"] <= rec["upper_exact"] + 1e-12
    # the same as one uninterrupted search
    fresh = space_run.run_space(ck, tmp_path / "fresh", gap=1e-5, time_limit=300.0, progress=False)["agents"][0]
    assert abs(fresh["lower"] - rec2["lower"]) <= 1e-5 and abs(fresh["upper_exact"] - rec2["upper_exact"]) <= 1e-5
    doc = json.loads((out / space_run.SPACE_JSON).read_text())
    assert doc["digest"] == network.digest(params)
    assert (out / "space.md").exists() and (out / "heatmap_agent0.png").exists()
    cells = [json.loads(x) for x in (out / space_run.CELLS).read_text().splitlines()]
    assert cells and all(c["upper_exact"] <= rec2["upper_exact"] + 1e-12 for c in cells)


@pytest.mark.slow
def test_cli_space_resumes_after_kill(tmp_path):
    params, spec = random_net(6, hidden=(32, 32), allocation="sparsemax", payment="fractional")
    ck = save(tmp_path, params, spec)
    out = tmp_path / "space"
    cmd = [sys.executable, str(REPO / "certify.py"), "--ckpt", str(ck), "--space", "--gap", "1e-6", "--out", str(out)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < 120 and not list(out.glob("pool_agent0.npz")):
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "pool_agent0.npz").exists(), "the run saved no pool before it was killed"
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / space_run.SPACE_JSON).read_text())["agents"][0]
    assert rec["status"] == "optimal" and rec["lower"] <= rec["upper_exact"] <= rec["lower"] + 1e-6


def test_bad_input_is_a_clear_error(tmp_path):
    params, spec = posted_price()
    ck = save(tmp_path, params, spec)
    bad = tmp_path / "box.json"
    bad.write_text(json.dumps({"low": [[0.0, 0.0]], "high": [[2.0, 1.0]]}))
    with pytest.raises(RunError, match="inside the prior's support"):
        space_run.run_space(ck, tmp_path / "o1", box=bad, progress=False)
    bad.write_text("{}")
    with pytest.raises(RunError, match="'low' and 'high'"):
        space_run.run_space(ck, tmp_path / "o1", box=bad, progress=False)
    with pytest.raises(RunError, match="gap must be positive"):
        space_run.run_space(ck, tmp_path / "o1", gap=0.0, progress=False)
    # a directory of another net
    box = tmp_path / "small.json"
    box.write_text(json.dumps({"low": [[0.5, 0.0]], "high": [[1.0, 0.5]]}))
    space_run.run_space(ck, tmp_path / "o2", box=box, progress=False, plots=False)
    other, spec2 = random_net(1)
    ck2 = save(tmp_path, other, spec2, "other")
    with pytest.raises(RunError, match="another net or box"):
        space_run.run_space(ck2, tmp_path / "o2", progress=False)
    r = subprocess.run([sys.executable, str(REPO / "certify.py"), "--ckpt", str(ck), "--space", "--box", str(bad),
                        "--out", str(tmp_path / "o3")], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "'low' and 'high'" in r.stderr


def test_box_run_matches_cells_of_the_hand_net(tmp_path):
    """--box: only profiles with v_1 in [0.5, 1], v_2 in [0, 0.5]: the worst is still 0.2; with v_1 <= 0.6 it is 0."""
    params, spec = posted_price()
    ck = save(tmp_path, params, spec)
    box = tmp_path / "b.json"
    box.write_text(json.dumps({"low": [[0.0, 0.0]], "high": [[0.6, 1.0]]}))
    rec = space_run.run_space(ck, tmp_path / "o", box=box, progress=False, plots=False)["agents"][0]
    assert rec["status"] == "optimal" and rec["upper_exact"] <= 1e-4 and rec["lower"] >= -1e-12


@pytest.mark.slow
def test_workers_split_the_cells_and_agree(tmp_path):
    params, spec = random_net(5, hidden=(16, 16), allocation="sparsemax", payment="fractional")
    ck = save(tmp_path, params, spec)
    one = space_run.run_space(ck, tmp_path / "one", gap=1e-5, progress=False, plots=False)["agents"][0]
    two = space_run.run_space(ck, tmp_path / "two", gap=1e-5, progress=False, workers=2)["agents"][0]
    assert one["status"] == two["status"] == "optimal"
    assert abs(one["lower"] - two["lower"]) <= 1e-5 and abs(one["upper_exact"] - two["upper_exact"]) <= 1e-5
    assert two["lower"] <= two["upper_exact"] <= two["upper"]
    assert sorted((tmp_path / "two").glob("pool_agent0_part*of2.npz"))
    cells = [json.loads(x)["cell"] for x in (tmp_path / "two" / space_run.CELLS).read_text().splitlines()]
    assert len(cells) == len(set(cells))          # each cell finished by one worker, once
    with pytest.raises(RunError, match="--workers"):
        space_run.run_space(ck, tmp_path / "three", workers=0, progress=False)


def test_map_tol_resolves_every_cell_and_reopens_on_rerun(tmp_path):
    params, spec = random_net(5, hidden=(16, 16), allocation="sparsemax", payment="fractional")
    ck = save(tmp_path, params, spec)
    out = tmp_path / "s"
    plain = space_run.run_space(ck, out, gap=1e-4, progress=False, plots=False, grid=4)["agents"][0]
    assert set(space_run.AGENT_KEYS) <= set(plain) and plain["lower"] <= plain["upper_exact"] <= plain["upper"]
    mapped = space_run.run_space(ck, out, gap=1e-4, progress=False, grid=4, map_tol=1e-3)["agents"][0]
    assert (out / "space.md").exists() and (out / "heatmap_agent0.png").exists()
    assert mapped["status"] == "optimal" and abs(mapped["upper_exact"] - plain["upper_exact"]) <= 1e-4
    last = {}
    for line in (out / space_run.CELLS).read_text().splitlines():
        r = json.loads(line)
        last[r["cell"]] = r
    assert len(last) == 16
    assert all(r["upper_exact"] <= max(r["lower"], 0.0) + 1e-3 + 1e-12 for r in last.values())
    assert all(r["upper_exact"] <= mapped["upper_exact"] + 1e-12 for r in last.values())
    lows = np.array([max(r["lower"], 0.0) for r in last.values()])
    ups = np.array([r["upper_exact"] for r in last.values()])
    assert np.ptp(ups) > 1e-3 or np.ptp(lows) <= 1e-3   # the bounds follow the cells' regret, not one level
