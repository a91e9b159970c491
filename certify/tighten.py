"""Per-neuron pre-activation bounds for the MIP: IBP, CROWN, and the Planet (triangle) LP.

Given a box of bid profiles ``[lo, hi]`` (N, M) (for certification: agent i's row spans the bid
support, the other rows are fixed at ``v_-i``), every trunk pre-activation ``z_k`` and every head
logit gets an interval containing its value for *every* profile in the box.

1. **IBP** (``method="ibp"``): :func:`jaxauction.bounds.ibp` evaluated in float64 (the first layer
   is affine in the box, so its bounds are exact already).
2. **CROWN** (``method="crown"``, :func:`crown_batch`): backward linear relaxation, batched over
   many boxes at once (the input-space branch and bound of :mod:`certify.regret` uses it).
3. **LP tightening** (``method="lp"``, the default): for layer k, every neuron that IBP and CROWN
   (from the tightened layers before) cannot prove stable (``l < 0 < u``) is minimized and
   maximized over the Planet relaxation of layers 1..k-1::

       h = z                                      if l >= 0 (stable active)
       h = 0                                      if u <= 0 (stable inactive: no column at all)
       h >= z,  0 <= h <= u,  h <= u (z - l) / (u - l)   otherwise (the triangle)

   with ``z = W h_prev + c`` substituted, so the LP has only ``x`` and the live ``h`` columns. One
   HiGHS model is grown layer by layer and re-solved warm (primal simplex) for each objective.
   The heads (allocation logits ``s``, payment logits ``q``) are tightened the same way.
   Only the M varying inputs are LP columns (fixed inputs fold into the first bias).

Soundness does not rest on the LP solver's tolerances: each reported bound is the *safe dual
bound* (Neumaier & Shcherbina 2004) recomputed in float64 from the solver's row duals ``y``::

    min c^T x  >=  sum_r (y_r > 0 ? y_r L_r : y_r U_r) + sum_j min(r_j l_j, r_j u_j),
    r = c - A^T y,

valid for any ``y`` (wrong-signed entries against an infinite side are zeroed), so a slightly
suboptimal LP only loosens the bound. The result is intersected with IBP, so tightened ⊆ IBP.

Bounds are plain float64 numpy values in :class:`jaxauction.bounds.NetworkBounds` (``pre[k]``:
(H_k,), ``alloc_logits``: (N+1, M), ``pay_logits``: (N,)).
"""
from __future__ import annotations

import jax
import numpy as np

from certify.network import Weights, weights64  # noqa: F401
from jaxauction import bounds as jbounds
from jaxauction.bounds import Interval, NetworkBounds
from jaxauction.mechanism import MechanismSpec, Params

METHODS = ("ibp", "crown", "lp")
_ROUND = 1e-9  # relative slack for float64 rounding in the safe-bound arithmetic
# Outward rounding of every bound: widened by OUTWARD times the neuron's interval magnitude
# m_k = |W_k|^T m_{k-1} + |c_k| (m_0 = max(|lo|, |hi|)), an upper bound on the sum of |terms|
# any bound computation for that neuron adds up (IBP, CROWN's back-substitution, whose
# coefficients are bounded by products of |W|). The float64 error of such a computation is at
# most L gamma_n m_k <= 1.2e-12 m_k for depth L <= 10 and widths n <= 1000, so 2^-33 = 1.2e-10
# covers it a hundred times over.
OUTWARD = 2.0 ** -33


def ibp64(params: Params, spec: MechanismSpec, box: Interval) -> NetworkBounds:
    """:func:`jaxauction.bounds.ibp` evaluated in float64 (sound for the float64 MIP)."""
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
        nb = jbounds.ibp(p64, Interval(np.asarray(box.lower, np.float64), np.asarray(box.upper, np.float64)), spec)
    lo, hi = (np.asarray(t, np.float64).reshape(-1) for t in (box.lower, box.upper))
    mags, (m_s, m_q), _ = magnitudes(weights64(params), lo, hi, spec.activation)
    cv = lambda iv, mg: Interval(*widen(np.asarray(iv.lower, np.float64), np.asarray(iv.upper, np.float64),
                                        np.reshape(mg, np.shape(iv.lower))))
    return NetworkBounds([cv(z, mg) for z, mg in zip(nb.pre, mags)], cv(nb.alloc_logits, m_s), cv(nb.pay_logits, m_q))


def relu_only(spec: MechanismSpec, what: str) -> None:
    if spec.activation != "relu":  # the CROWN and Planet relaxations here are ReLU's
        raise ValueError(f"{what} relaxes ReLUs only; this mechanism's activation is {spec.activation!r} "
                         f"(use method='ibp' here, or the branch-and-bound certifier, --solver bab)")


def magnitudes(wts: Weights, lo, hi, activation: str = "relu"):
    """Interval magnitudes ``m_k >= |z_k|`` of every pre-activation over boxes (B, D), and of the
    allocation and payment logits: the scale of :data:`OUTWARD` rounding. ``|relu(z)| <= |z|``;
    ``|tanh(z)| <= min(1, |z|)``."""
    m, out = np.maximum(np.abs(lo), np.abs(hi)), []
    for k, (w, b) in enumerate(wts.trunk):
        m = (np.minimum(m, 1.0) if k and activation == "tanh" else m) @ np.abs(w) + np.abs(b)
        out.append(m)
    m = np.minimum(m, 1.0) if activation == "tanh" else m
    heads = [m @ np.abs(w) + np.abs(b) for w, b in (wts.alloc, wts.pay)]
    return out, heads, m


def widen(l, u, mag):
    """``[l, u]`` rounded outward by ``OUTWARD * mag``."""
    return l - OUTWARD * mag, u + OUTWARD * mag


def _dense(l, u, w, b):
    mid, rad = (l + u) / 2, (u - l) / 2
    c = mid @ w + b
    r = rad @ np.abs(w)
    return c - r, c + r


class _PlanetLP:
    """The growing Planet LP: columns ``x`` (varying inputs) and live ``h`` of finished layers."""

    def __init__(self, xl, xu):
        import highspy

        self.h = h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("presolve", "off")
        h.setOptionValue("simplex_strategy", 4)  # primal simplex: the basis stays feasible across objectives
        h.setOptionValue("threads", 1)
        self.inf = h.getInfinity()
        self.col_l = np.asarray(xl, np.float64)
        self.col_u = np.asarray(xu, np.float64)
        h.addVars(len(xl), self.col_l, self.col_u)
        self.rows = []       # list of (cols, vals) per row, kept for the safe dual bound
        self.row_l = np.zeros(0)
        self.row_u = np.zeros(0)
        self._a = None
        self.cost_cols = np.zeros(0, np.int32)
        self.n_solves = 0

    @property
    def n_cols(self):
        return len(self.col_l)

    def add_cols(self, l, u):
        first = self.n_cols
        self.h.addVars(len(l), np.asarray(l, np.float64), np.asarray(u, np.float64))
        self.col_l = np.concatenate([self.col_l, l])
        self.col_u = np.concatenate([self.col_u, u])
        self._a = None
        return np.arange(first, first + len(l))

    def add_rows(self, coef, cols, rl, ru):
        """Rows ``rl <= coef @ x[cols] <= ru`` with a dense (R, K) ``coef``."""
        import scipy.sparse as sp

        coef = np.asarray(coef, np.float64)
        a = sp.csr_matrix(coef)
        a.indices = np.asarray(cols, np.int32)[a.indices]
        rl = np.where(np.isfinite(rl), rl, -self.inf)
        ru = np.where(np.isfinite(ru), ru, self.inf)
        self.h.addRows(a.shape[0], rl.astype(np.float64), ru.astype(np.float64), a.nnz,
                       a.indptr.astype(np.int32), a.indices.astype(np.int32), a.data)
        a = sp.csr_matrix((a.data, a.indices, a.indptr), shape=(a.shape[0], self.n_cols))
        self.rows.append(a)
        self.row_l = np.concatenate([self.row_l, np.where(np.isfinite(rl) & (np.abs(rl) < self.inf), rl, -np.inf)])
        self.row_u = np.concatenate([self.row_u, np.where(np.isfinite(ru) & (np.abs(ru) < self.inf), ru, np.inf)])
        self._a = None

    def _matrix(self):
        import scipy.sparse as sp

        if self._a is None:
            mats = [sp.csr_matrix((r.data, r.indices, r.indptr), shape=(r.shape[0], self.n_cols)) for r in self.rows]
            self._a = sp.vstack(mats, format="csr") if mats else sp.csr_matrix((0, self.n_cols))
        return self._a

    def minimize(self, cols, c) -> float:
        """Safe lower bound of ``min c @ x[cols]`` over the LP (``-inf`` if the LP fails)."""
        import highspy

        h = self.h
        cols = np.asarray(cols, np.int32)
        if len(self.cost_cols):
            h.changeColsCost(len(self.cost_cols), self.cost_cols, np.zeros(len(self.cost_cols)))
        h.changeColsCost(len(cols), cols, np.asarray(c, np.float64))
        self.cost_cols = cols
        h.run()
        self.n_solves += 1
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            h.clearSolver()  # never warm-start from a broken basis
            return -np.inf
        y = np.asarray(h.getSolution().row_dual, np.float64)
        return self._safe_bound(cols, np.asarray(c, np.float64), y)

    def _safe_bound(self, cols, c, y):
        full_c = np.zeros(self.n_cols)
        full_c[cols] = c
        a = self._matrix()
        y = np.where((y > 0) & ~np.isfinite(self.row_l), 0.0, y)
        y = np.where((y < 0) & ~np.isfinite(self.row_u), 0.0, y)
        row_part = np.where(y > 0, y * np.where(np.isfinite(self.row_l), self.row_l, 0.0),
                            y * np.where(np.isfinite(self.row_u), self.row_u, 0.0))
        r = full_c - a.T @ y
        col_part = np.minimum(r * self.col_l, r * self.col_u)
        terms = np.concatenate([row_part, col_part])
        val = float(np.sum(terms))
        return val - _ROUND * (1.0 + float(np.sum(np.abs(terms))))


def _lp_bounds(lp: _PlanetLP, prev_cols, w, b, which, l, u):
    """Tighten ``l, u`` of ``z = h_prev @ w + b`` at indices ``which`` by the LP."""
    l, u = l.copy(), u.copy()
    for j in which:
        lo = lp.minimize(prev_cols, w[:, j]) + b[j]
        hi = -lp.minimize(prev_cols, -w[:, j]) + b[j]
        l[j] = max(l[j], lo)
        u[j] = min(u[j], hi)
    return l, u


def tighten(params: Params, spec: MechanismSpec, box: Interval, *, method: str = "lp",
            tighten_heads: bool = True, prior: NetworkBounds | None = None) -> NetworkBounds:
    """Sound bounds on every pre-activation and head logit over a box of bid profiles.

    Args:
      params: mechanism parameter pytree.
      spec: its architecture.
      box: ``Interval(lower, upper)`` of shape (N, M); rows with ``lower == upper`` are fixed.
      method: ``"ibp"`` (interval propagation only), ``"crown"`` (backward linear relaxation,
        :func:`crown_batch`) or ``"lp"`` (CROWN, then the Planet LP for every neuron CROWN leaves
        unstable, layer by layer).
      tighten_heads: also LP-tighten the allocation and payment logits (``method="lp"`` only).
      prior: bounds already known to hold on this box (e.g. CROWN from a batched call); used
        instead of computing CROWN again.

    Returns:
      float64 :class:`NetworkBounds` with ``tightened ⊆ IBP``.
    """
    if method not in METHODS:
        raise ValueError(f"bound method must be one of {METHODS}, got {method!r}")
    n, m = spec.n_agents, spec.n_items
    lo = np.asarray(box.lower, np.float64).reshape(-1)
    hi = np.asarray(box.upper, np.float64).reshape(-1)
    if lo.shape != (n * m,) or hi.shape != (n * m,):
        raise ValueError(f"bid box must have shape ({n}, {m}), got {np.shape(box.lower)} / {np.shape(box.upper)}")
    if np.any(lo > hi) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("bid box needs finite lower <= upper")
    if method == "ibp":
        return ibp64(params, spec, box)
    relu_only(spec, f"bound method {method!r}")
    if prior is None:
        prior = select(crown_batch(params, spec, lo.reshape(1, n, m), hi.reshape(1, n, m)), 0)
    if method == "crown":
        return prior
    wts = weights64(params)
    var = lo < hi
    w1, b1 = wts.trunk[0]
    # Fixed inputs fold into the first layer's bias; the LP only sees the varying ones.
    w_in, b_in = w1[var], b1 + lo[~var] @ w1[~var]
    lp = _PlanetLP(lo[var], hi[var])
    prev_cols, prev_l, prev_u = np.arange(int(var.sum())), lo[var], hi[var]
    pre = []
    for k, (w, b) in enumerate(wts.trunk):
        if k == 0:
            w_k, b_k = w_in, b_in
        else:
            w_k, b_k = w[alive], b
        l, u = _dense(prev_l, prev_u, w_k, b_k)
        l, u = np.maximum(l, prior.pre[k].lower), np.minimum(u, prior.pre[k].upper)
        if k > 0:
            l, u = _lp_bounds(lp, prev_cols, w_k, b_k, np.flatnonzero((l < 0) & (u > 0)), l, u)
        pre.append(Interval(l, u))
        # Grow the LP by this layer's live neurons.
        alive = u > 0
        act = alive & (l >= 0)
        unst = alive & (l < 0)
        la, ua = np.maximum(l[alive], 0.0), u[alive]
        cols = lp.add_cols(la, ua)
        col_of = np.full(len(l), -1)
        col_of[alive] = cols
        wa = w_k.T  # (H_k, fan_in)
        if act.any():  # h - W z_prev = b
            coef = np.hstack([np.eye(int(act.sum())), -wa[act]])
            lp.add_rows(coef, np.concatenate([col_of[act], prev_cols]), b_k[act], b_k[act])
        if unst.any():
            nu = int(unst.sum())
            coef = np.hstack([np.eye(nu), -wa[unst]])
            lp.add_rows(coef, np.concatenate([col_of[unst], prev_cols]), b_k[unst], np.full(nu, np.inf))
            slope = u[unst] / (u[unst] - l[unst])
            coef = np.hstack([np.eye(nu), -slope[:, None] * wa[unst]])
            lp.add_rows(coef, np.concatenate([col_of[unst], prev_cols]), np.full(nu, -np.inf),
                        slope * (b_k[unst] - l[unst]))
        prev_cols, prev_l, prev_u = cols, la, ua
    (wa_, ba_), (wp_, bp_) = wts.alloc, wts.pay
    wa_, wp_ = wa_[alive], wp_[alive]
    sl, su = _dense(prev_l, prev_u, wa_, ba_)
    ql, qu = _dense(prev_l, prev_u, wp_, bp_)
    sl, su = np.maximum(sl, prior.alloc_logits.lower.ravel()), np.minimum(su, prior.alloc_logits.upper.ravel())
    ql, qu = np.maximum(ql, prior.pay_logits.lower), np.minimum(qu, prior.pay_logits.upper)
    if tighten_heads:
        sl, su = _lp_bounds(lp, prev_cols, wa_, ba_, np.flatnonzero(su > sl), sl, su)
        ql, qu = _lp_bounds(lp, prev_cols, wp_, bp_, np.flatnonzero(qu > ql), ql, qu)
    # Intersect with plain IBP so that tightened ⊆ IBP holds exactly.
    base = ibp64(params, spec, box)
    clip = lambda t, b0: Interval(np.maximum(t.lower, b0.lower), np.minimum(t.upper, b0.upper))
    mags, (m_s, m_q), _ = magnitudes(wts, lo, hi)
    out = lambda t, mg: Interval(*widen(t.lower, t.upper, np.reshape(mg, np.shape(t.lower))))
    pre = [out(clip(t, b0), mg) for t, b0, mg in zip(pre, base.pre, mags)]
    s = out(clip(Interval(sl.reshape(n + 1, m), su.reshape(n + 1, m)), base.alloc_logits), m_s)
    q = out(clip(Interval(ql, qu), base.pay_logits), m_q)
    return NetworkBounds(pre, s, q)


def _relax(l, u):
    """ReLU relaxations per neuron: ``sl z <= relu(z) <= su z + tu`` on [l, u] (CROWN-Ada lower)."""
    act = l >= 0
    unst = (l < 0) & (u > 0)
    den = np.where(unst, u - l, 1.0)
    su = np.where(act, 1.0, np.where(unst, u / den, 0.0))
    tu = np.where(unst, -u * l / den, 0.0)
    sl = np.where(act, 1.0, np.where(unst & (u > -l), 1.0, 0.0))
    return sl, su, tu


def _backward(a, c, k, layers, relax, xl, xu):
    """Upper bounds of ``a @ h_k + c`` (a: (B, R, H_k)) by backward linear relaxation.

    ``layers[j] = (w_j, b_j)`` computes ``z_j = h_{j-1} @ w_j + b_j`` (h_{-1} = x), ``relax[j]`` the
    ReLU relaxation of layer j. Concretized over the input box ``[xl, xu]`` (B, D).
    """
    bsz, r = a.shape[:2]
    for j in range(k, -1, -1):
        sl, su, tu = relax[j]
        pos = np.maximum(a, 0.0)
        c = c + (pos @ tu[:, :, None])[..., 0]
        az = pos * (su - sl)[:, None, :] + a * sl[:, None, :]  # pos*su + neg*sl
        w, b = layers[j]
        c = c + az @ b
        a = (az.reshape(bsz * r, -1) @ w.T).reshape(bsz, r, -1)  # one GEMM, not B small ones
    pos = np.maximum(a, 0.0)
    return c + (pos @ (xu - xl)[:, :, None])[..., 0] + (a @ xl[:, :, None])[..., 0]


def crown_batch(params: Params, spec: MechanismSpec, lower, upper, extra: tuple | None = None):
    """CROWN (backward linear relaxation) bounds for a batch of boxes, intersected with IBP.

    For each layer k the bound of ``z_k = h_{k-1} @ W_k + c_k`` comes from relaxing every earlier
    ReLU with ``sl z <= relu(z) <= su z + tu`` (the triangle's upper side; lower slope 0 or 1,
    whichever is tighter at the box's end points) and substituting backwards to the input box.
    All boxes go through together as batched matrix products; only neurons that interval
    propagation cannot already prove stable (in some box) are bounded this way.

    Args:
      lower, upper: (B, N, M) boxes.
      extra: optional ``(w (H_L, K), b (K,))``: also bound ``h_L @ w + b`` (e.g. logit differences).

    Returns:
      :class:`NetworkBounds` whose arrays carry a leading batch axis B; with ``extra``, the pair
      ``(bounds, Interval (B, K))``.
    """
    relu_only(spec, "CROWN (crown_batch)")
    n, m = spec.n_agents, spec.n_items
    lo = np.asarray(lower, np.float64).reshape(len(lower), -1)
    hi = np.asarray(upper, np.float64).reshape(len(upper), -1)
    bsz = len(lo)
    wts = weights64(params)
    layers = list(wts.trunk)
    pre, relax = [], []
    hl, hu = lo, hi
    mags, head_mags, h_mag = magnitudes(wts, lo, hi)

    def linear(w, b):  # bounds of h_{k} @ w + b through the relaxations so far
        l, u = _dense(hl, hu, w, b)
        a = np.broadcast_to(np.concatenate([w.T, -w.T])[None], (bsz, 2 * len(b), w.shape[0]))
        c = np.broadcast_to(np.concatenate([b, -b])[None], (bsz, 2 * len(b)))
        ub = _backward(a, c, len(relax) - 1, layers, relax, lo, hi)
        return np.maximum(l, -ub[:, len(b):]), np.minimum(u, ub[:, : len(b)])

    for k, (w, b) in enumerate(layers):
        l, u = _dense(hl, hu, w, b)
        if k > 0:
            rows = np.flatnonzero(np.any((l < 0) & (u > 0), axis=0))
            if len(rows):
                lr, ur = linear(w[:, rows], b[rows])
                l[:, rows] = np.maximum(l[:, rows], lr)
                u[:, rows] = np.minimum(u[:, rows], ur)
        l, u = widen(l, u, mags[k])
        pre.append(Interval(l, u))
        relax.append(_relax(l, u))
        hl, hu = np.maximum(l, 0.0), np.maximum(u, 0.0)
    s, q = (Interval(*widen(*linear(w, b), mg)) for (w, b), mg in zip((wts.alloc, wts.pay), head_mags))
    nb = NetworkBounds(pre, Interval(s.lower.reshape(bsz, n + 1, m), s.upper.reshape(bsz, n + 1, m)), q)
    if extra is None:
        return nb
    w_x, b_x = (np.asarray(t, np.float64) for t in extra)
    return nb, Interval(*widen(*linear(w_x, b_x), h_mag @ np.abs(w_x) + np.abs(b_x)))


def logit_differences(params: Params, spec: MechanismSpec, agent: int) -> tuple[np.ndarray, np.ndarray]:
    """``(w, b)`` of the allocation-logit differences ``d[r, j] = s[agent, j] - s[r, j]`` (all r).

    Sparsemax is shift invariant and ``a_agent,j`` is nondecreasing in every ``d[r, j]``, so bounds
    on the differences (correlated through the trunk, hence far tighter than differences of logit
    bounds) bound the allocation. Columns are ordered (r, j) row-major; the r = agent columns are 0.
    """
    n, m = spec.n_agents, spec.n_items
    w, b = weights64(params).alloc
    w3, b3 = w.reshape(-1, n + 1, m), b.reshape(n + 1, m)
    return (w3[:, agent:agent + 1] - w3).reshape(w.shape[0], -1), (b3[agent:agent + 1] - b3).reshape(-1)


def select(nb: NetworkBounds, k: int) -> NetworkBounds:
    """Box ``k`` of batched bounds."""
    iv = lambda t: Interval(t.lower[k], t.upper[k])
    return NetworkBounds([iv(z) for z in nb.pre], iv(nb.alloc_logits), iv(nb.pay_logits))


def unstable_counts(nb: NetworkBounds) -> list[int]:
    """Number of trunk neurons per layer whose bounds straddle zero (each needs a binary)."""
    return [int(np.sum((z.lower < 0) & (z.upper > 0))) for z in nb.pre]
