"""Hand-built adversarial mechanisms and a seeded generator of random / degenerate ones.

Every net is built through the public pytree of :mod:`jaxauction.mechanism` (float32 numpy
leaves, weights ``(fan_in, fan_out)``) and comes with its exact (real-arithmetic) regret where
that can be computed by hand. Used by ``test_soundness.py`` and ``test_rounding.py``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec

F32 = np.float32


def layer(w, b):
    return {"w": np.asarray(w, F32), "b": np.asarray(b, F32)}


def make_params(spec: MechanismSpec, trunk, alloc, pay) -> dict:
    """The pytree from lists of ``(w, b)``; checked against ``spec``."""
    params = {"trunk": [layer(w, b) for w, b in trunk], "alloc": layer(*alloc), "pay": layer(*pay)}
    mechanism.check_params(params, spec)
    return params


@dataclasses.dataclass
class Case:
    """A certification problem: agent ``agent`` of ``params``/``spec`` at profile ``v``, bids in
    ``[low, high]`` (N, M). ``truth``: the exact regret when known by hand (else None)."""

    name: str
    params: dict
    spec: MechanismSpec
    v: np.ndarray
    agent: int
    low: np.ndarray
    high: np.ndarray
    truth: float | None = None

    def __repr__(self):
        return f"Case({self.name})"


# ------------------------------------------------------------------------------------------------
# finding 1: a payment that is exactly 0.5 in real arithmetic and 0.5 +- 2^-10 in float32
# ------------------------------------------------------------------------------------------------
def finding1_net():
    """1x2, free payment. Trunk ``h1 = relu(1e4 + b0)``, ``h2 = relu(1e4 + 2 b0)``; payment logit
    ``q = 2 h1 - h2 - (1e4 - 0.5)``, identically 0.5 in real arithmetic on b0 >= -5000 (every
    weight is exact in float32), while float32 rounds ``1e4 + b0`` to a multiple of 2^-10.
    Allocation logits all 0: ``a = (1/2, 1/2)``. So ``u_R(b) = (v0 + v1) / 2 - 1/2`` for every bid:
    the exact regret is 0 at every profile, the float32 regret is of order 2^-10."""
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2,), allocation="sparsemax", payment="free")
    params = make_params(
        spec,
        trunk=[([[1.0, 2.0], [0.0, 0.0]], [1e4, 1e4])],
        alloc=(np.zeros((2, 4)), np.zeros(4)),
        pay=([[2.0], [-1.0]], [-(1e4 - 0.5)]),
    )
    return params, spec


# ------------------------------------------------------------------------------------------------
# finding 2: kinks at scale 1e-12 amplified by a payment weight of 1e14
# ------------------------------------------------------------------------------------------------
F2_SCALE = 1e-12
F2_GAIN = 1e14
F2_BIAS = 0.1


def finding2_net():
    """1x2, free payment (``payment_max`` 2). ``z = +-1e-12 (b0 - 1/2)`` (w = +-1e-12, c = -+5e-13 in
    float32; ``c = -w/2`` exactly, so the kink is at b0 = 1/2 exactly), payment logit
    ``q = 1e14 (relu(z1) + relu(z2)) + 0.1 = 0.1 + 100 |b0 - 1/2|`` (float32 weights: 100 to 4e-8
    relative), allocation logits 0. At ``v0 = 0.9`` the payment is clipped at 2; bidding
    ``b0 = 1/2`` pays ``float32(0.1)``: exact regret ``2 - float32(0.1)`` = 1.8999999985."""
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2,), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    w = F32(F2_SCALE)
    params = make_params(
        spec,
        trunk=[([[w, -w], [0.0, 0.0]], [-w / F32(2), w / F32(2)])],
        alloc=(np.zeros((2, 4)), np.zeros(4)),
        pay=([[F2_GAIN], [F2_GAIN]], [F2_BIAS]),
    )
    return params, spec


def finding2_case() -> Case:
    params, spec = finding2_net()
    v = np.array([[0.9, 0.3]])
    truth = 2.0 - float(F32(F2_BIAS))
    return Case("finding2", params, spec, v, 0, np.zeros((1, 2)), np.ones((1, 2)), truth)


# ------------------------------------------------------------------------------------------------
# finding 3: a negative value, a narrow allocation dip, and inert ReLUs that force splitting
# ------------------------------------------------------------------------------------------------
F3_CENTER = 0.31
F3_HALF = 0.02     # the tent's half-width: a_0 < 1 only for |b0 - c| < 5/6 * F3_HALF
F3_V = (-0.72, 0.4)


def finding3_net(n_inert: int = 60, seed: int = 3):
    """1x2, free payment (always 0), support [-1, 1]^2. Agent's logit for item 0:
    ``s_0 = 2 - (6 / d) tent(b0)`` with ``tent = relu(b0 - c + d) - 2 relu(b0 - c) + relu(b0 - c - d)``
    (peak d at b0 = c), dummy logit 0: sparsemax gives ``a_0 = clip((s_0 + 1) / 2, 0, 1)``, which is
    1 outside ``|b0 - c| < 5d/6`` and 0 on ``|b0 - c| <= d/2``. Item 1: ``a_1 = 1``. Plus
    ``n_inert`` ReLUs whose lines cross the box but whose outgoing weights are 0 (they make the
    branch and bound split). At ``v = (-0.72, 0.4)``: ``u(v) = -0.72 + 0.4``, the best misreport
    ``b0 in [c - d/2, c + d/2]`` gets ``u = 0.4``: exact regret 0.72 (pruning that bounds
    ``a v`` by ``a^U v`` for ``v < 0`` misses it)."""
    c, d = F3_CENTER, F3_HALF
    hid = 3 + n_inert
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(hid,), allocation="sparsemax", payment="free")
    rng = np.random.default_rng(seed)
    w1 = np.zeros((2, hid))
    b1 = np.zeros(hid)
    w1[0, :3] = 1.0
    b1[:3] = [-(c - d), -c, -(c + d)]
    ang = rng.uniform(0, np.pi, n_inert)
    dirs = np.stack([np.cos(ang), np.sin(ang)])           # (2, n_inert)
    through = rng.uniform(-0.9, 0.9, (n_inert, 2))          # each line passes through a point of the box
    w1[:, 3:] = dirs
    b1[3:] = -np.sum(dirs.T * through, axis=1)
    wa = np.zeros((hid, 4))                                  # logits (agent, dummy) x (item 0, item 1)
    wa[:3, 0] = np.array([1.0, -2.0, 1.0]) * (-6.0 / d)
    ba = np.array([2.0, 2.0, 0.0, 0.0])
    params = make_params(spec, trunk=[(w1, b1)], alloc=(wa, ba), pay=(np.zeros((hid, 1)), np.zeros(1)))
    return params, spec


def finding3_case(n_inert: int = 60) -> Case:
    params, spec = finding3_net(n_inert)
    return Case("finding3", params, spec, np.array([F3_V]), 0, -np.ones((1, 2)), np.ones((1, 2)), -F3_V[0])


# ------------------------------------------------------------------------------------------------
# random and degenerate nets
# ------------------------------------------------------------------------------------------------
def random_params(spec: MechanismSpec, rng, bias_scale: float = 0.3) -> dict:
    """Glorot-uniform weights, N(0, bias_scale^2) biases (float32); shared trunk or separate towers
    as ``spec.towers`` says."""
    widths = (spec.n_agents * spec.n_items,) + spec.hidden

    def dense(fi, fo):
        lim = np.sqrt(6.0 / (fi + fo))
        return rng.uniform(-lim, lim, (fi, fo)), bias_scale * rng.normal(size=fo)

    if spec.towers == "separate":  # two towers of the same widths, drawn after each other
        towers = {t: [layer(*dense(widths[k], widths[k + 1])) for k in range(len(spec.hidden))]
                  for t in ("alloc_tower", "pay_tower")}
        params = {**towers, "alloc": layer(*dense(spec.hidden[-1], (spec.n_agents + 1) * spec.n_items)),
                  "pay": layer(*dense(spec.hidden[-1], spec.n_agents))}
        mechanism.check_params(params, spec)
        return params
    trunk = [dense(widths[k], widths[k + 1]) for k in range(len(spec.hidden))]
    return make_params(spec, trunk, dense(spec.hidden[-1], (spec.n_agents + 1) * spec.n_items),
                       dense(spec.hidden[-1], spec.n_agents))


def _layers(params):
    """Mutable float64 copies: list of [w, b] for trunk + alloc + pay."""
    return [[np.asarray(l["w"], np.float64).copy(), np.asarray(l["b"], np.float64).copy()]
            for l in list(params["trunk"]) + [params["alloc"], params["pay"]]]


def _pack(spec, ls):
    return make_params(spec, [tuple(l) for l in ls[:-2]], tuple(ls[-2]), tuple(ls[-1]))


KINDS = ("plain", "x30", "corners", "dup", "mirror", "tiny", "neg")


def _degenerate(kind, spec, ls, rng, v, agent, low, high):
    n_trunk = len(spec.hidden)
    if kind == "x30":
        picks = [k for k in range(len(ls)) if rng.random() < 0.5] or [int(rng.integers(len(ls)))]
        for k in picks:
            ls[k][0] *= 30.0
    elif kind == "corners":
        # first-layer hyperplanes through corners of agent i's bid box (others at v); dyadic weights
        # and 0/+-1 corners make some of them pass exactly through the corner
        w, b = ls[0]
        m = spec.n_items
        for j in rng.choice(w.shape[1], size=max(2, w.shape[1] // 2), replace=False):
            if rng.random() < 0.5:
                w[:, j] = rng.choice([-1.0, -0.5, -0.25, 0.25, 0.5, 1.0], size=w.shape[0])
            corner = v.copy()
            corner[agent] = np.where(rng.random(m) < 0.5, low[agent], high[agent])
            b[j] = -float(corner.reshape(-1) @ w[:, j])
    elif kind in ("dup", "mirror"):
        for k in range(n_trunk):
            w, b = ls[k]
            h = w.shape[1]
            src = rng.choice(h, size=h // 2, replace=False)
            for s_, t_ in zip(src[::2], src[1::2]):
                sign = -1.0 if kind == "mirror" else 1.0
                w[:, t_], b[t_] = sign * w[:, s_], sign * b[s_]
    elif kind == "tiny":
        for k in range(n_trunk):
            w, b = ls[k]
            nxt = ls[k + 1] if k + 1 < n_trunk else None
            for j in rng.choice(w.shape[1], size=max(1, w.shape[1] // 3), replace=False):
                w[:, j] *= 1e-9
                b[j] *= 1e-9
                if rng.random() < 0.5:          # compensate downstream (finding 2's pattern)
                    for out in ([nxt] if nxt is not None else [ls[-2], ls[-1]]):
                        out[0][j, :] *= 1e9


def fuzz_case(seed: int) -> Case:
    """A seeded random/degenerate certification problem: 1x2 or 2x2, hidden (8,) or (8, 8),
    free or fractional payment, sparsemax; a primary degenerate ``KINDS[seed % 7]`` plus each
    other kind with probability 1/5."""
    rng = np.random.default_rng(1000 + seed)
    n = 1 + (seed // 2) % 2
    hidden = (8,) if (seed // 4) % 2 == 0 else (8, 8)
    payment = ("free", "fractional")[seed % 2]
    kinds = [KINDS[seed % len(KINDS)]] + [k for k in KINDS[1:] if k != KINDS[seed % len(KINDS)] and rng.random() < 0.2]
    spec = MechanismSpec(n_agents=n, n_items=2, hidden=hidden, allocation="sparsemax", payment=payment)
    neg = "neg" in kinds
    low = -np.ones((n, 2)) if neg else np.zeros((n, 2))
    high = np.ones((n, 2))
    v = low + rng.random((n, 2)) * (high - low)
    agent = int(rng.integers(n))
    if rng.random() < 0.2:                   # truthful bid on a corner of the box
        v[agent] = np.where(rng.random(2) < 0.5, low[agent], high[agent])
    v = v.astype(F32).astype(np.float64)     # representable in float32: both meanings see the same v
    ls = _layers(random_params(spec, rng))
    for k in kinds:
        if k not in ("plain", "neg"):
            _degenerate(k, spec, ls, rng, v, agent, low, high)
    params = _pack(spec, ls)
    name = f"s{seed}-{n}x2-{payment}-h{'x'.join(map(str, hidden))}-{'+'.join(kinds)}"
    return Case(name, params, spec, v, agent, low, high)
