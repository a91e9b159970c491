"""Exact MIP encoding of ``mechanism.apply`` for one misreporting agent.

The model maximizes agent i's utility over its bids ``b_i in [low_i, high_i]`` with the others'
bids fixed at ``v_-i``::

    max_{b_i}  sum_j a_ij(b) v_ij - p_i(b)

Pieces (bounds ``[l, u]`` come from :mod:`certify.tighten`; every piece is an *exact* encoding):

* **Affine layers.** ``z = h_prev @ W + c``. With ``compact=True`` (default) the model keeps no
  variable for a neuron that is stable: a stable-active neuron is the affine expression itself and
  a stable-inactive one is 0, so expressions are carried as :class:`Affine` maps over the columns
  that do exist (the bids and the unstable ReLU outputs) and composed exactly in float64. With
  ``compact=False`` every live neuron gets a named variable ``z[k,j]`` and a row ``lin[k,j]``.
* **ReLU** ``h = max(z, 0)``, unstable only (``l < 0 < u``), big-M with binary ``d`` (a neuron
  whose range ``max(-l, u)`` is outside [1e-3, 1e3] is encoded in units of a power of two near
  it, so every row is well scaled)::

      relu_lo:  h >= z        relu_up:  h <= z - l (1 - d)        relu_on:  h <= u d,   h >= 0

* **Sparsemax** per item j over the N+1 logits ``s_.j`` (last row = "unsold"), by its KKT system::

      spm_kkt:  a_r = s_r - tau_j + mu_r        spm_sum:  sum_r a_r = 1
      a_r >= 0,  mu_r >= 0,  a_r mu_r = 0 (complementarity)

  Complementarity is ``"bigm"`` (binary ``e``: ``a_r <= a_r^U e``, ``mu_r <= mu_r^U (1 - e)``) or
  ``"sos1"`` (SOS1 on ``{a_r, mu_r}``). Bounds are exact over the logit box because sparsemax is
  monotone: ``tau`` is nondecreasing in every ``s_r``, so ``tau in [tau(s^L), tau(s^U)]``,
  ``a_r in [a_r(s_r^L, s_-r^U), a_r(s_r^U, s_-r^L)]`` and ``mu_r = max(tau - s_r, 0) <=
  tau^U - s_r^L``. A row that is provably always (never) in the support gets no binary.
* **Clipping** ``clip(t, 0, c) = c - relu(c - relu(t))``: two ReLUs, each with a binary only if
  its bounds straddle the kink. Free payment ``p = clip(q_i, 0, payment_max)``; the fractional
  payment's ``f = hard_sigmoid(q_i) = clip(q_i / 10 + 1/2, 0, 1)``.
* **Fractional payment** ``p = f y``, ``y = sum_j a_ij b_ij``: both factors of every product are
  variables for the misreporting agent, so ``w_j = a_ij b_ij`` and ``p = f y`` are bilinear
  equalities (nonconvex MIQCP; a constant factor, as in :mod:`certify.mip.two_copy`, is a coefficient).

:func:`encode_net` encodes the network once for an input whose entries are columns or constants
(:func:`inputs`); :func:`encode` calls it with agent i's bid columns and the others' bids fixed, and
:mod:`certify.mip.two_copy` twice on shared columns. :func:`encode` returns a :class:`RegretMIP`
handle (:mod:`certify.mip.handle`) that solves the model, turns the incumbent into a bid profile,
gives a complete MIP start for any bid (every variable is evaluated in the order it was defined),
and reports the error between the MIP and the network's forward pass.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from certify.mip import model as mm
from certify.mip.affine import Affine, plus
from certify.mip.handle import RegretMIP  # noqa: F401  (re-exported: built by encode)
from certify.network import Weights, params_from, sparsemax64
from jaxauction import mechanism
from jaxauction.bounds import NetworkBounds
from jaxauction.mechanism import MechanismSpec

SPARSEMAX_ENCODINGS = ("bigm", "sos1")
_PAD = 1e-9  # relative slack on bounds computed in float64 from other bounds (times their magnitude)


class UnsupportedArchitecture(ValueError):
    """The mechanism has a piece that no MIP can encode exactly (e.g. a softmax allocation)."""


def check_supported(spec: MechanismSpec) -> None:
    """Unless every piece has an exact MIP encoding, raise :class:`UnsupportedArchitecture` (separate
    ReLU towers are encoded as the block-diagonal shared trunk of ``certify.network.weights64``)."""
    if spec.activation != "relu":
        raise UnsupportedArchitecture(
            f"unsupported architecture: activation={spec.activation!r} is not piecewise linear, so it has "
            f"no exact MIP encoding; only 'relu' trunks can be certified by the MIP (use --solver bab)")
    if spec.allocation != "sparsemax":
        raise UnsupportedArchitecture(
            f"unsupported architecture: allocation={spec.allocation!r} is not piecewise linear, so it has "
            f"no exact MIP encoding; only 'sparsemax' allocations can be certified by the MIP (use --solver bab)")
    if spec.payment not in ("fractional", "free"):
        raise UnsupportedArchitecture(
            f"unsupported architecture: payment={spec.payment!r} (a smooth sigmoid) has no exact MIP "
            f"encoding; the MIP certifies 'fractional' (hard sigmoid) and 'free' (clipped) payments (use --solver bab)")


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """Formulation choices (all exact).

    Attributes:
      sparsemax: complementarity encoding, ``"bigm"`` or ``"sos1"``.
      compact: substitute stable neurons instead of giving each a variable.
      ideal_inputs: neurons whose pre-activation depends on at most this many model columns
        (the first layer: the agent's M bids) also get Anderson et al.'s ideal-formulation cuts
        (``2^k - 2`` rows each); 0 disables them.
    """

    sparsemax: str = "bigm"
    compact: bool = True
    ideal_inputs: int = 4

    def __post_init__(self):
        if self.sparsemax not in SPARSEMAX_ENCODINGS:
            raise ValueError(f"sparsemax encoding must be one of {SPARSEMAX_ENCODINGS}, got {self.sparsemax!r}")


def product_bounds(xl, xu, yl, yu):
    """Elementwise bounds of ``x y`` for ``x in [xl, xu]``, ``y in [yl, yu]``."""
    c = np.stack([xl * yl, xl * yu, xu * yl, xu * yu])
    return c.min(0), c.max(0)


class Encoder:
    """Adds the exact pieces to a model (``be``: a :class:`certify.mip.model.Model` or anything with its
    ``add_*``/``bounds``); ``evaluators`` replay every variable it defines, in definition order."""

    def __init__(self, be: mm.Model, w: Weights, spec: MechanismSpec, opts: EncodeOptions):
        self.be, self.w, self.spec, self.opts = be, w, spec, opts
        self.evaluators: list[Callable] = []
        self.n_unstable = 0

    # -- primitives ------------------------------------------------------------------------
    def materialize(self, var, row, index, aff: Affine, l, u) -> np.ndarray:
        """New variables ``var`` equal to ``aff`` (rows ``row``), bounded by [l, u]."""
        cols = self.be.add_vars(var, l, u, index=index)
        self.be.add_linear(row, [(np.eye(len(cols)), cols), aff.terms(-1.0)], "=", aff.const, index=index)
        self.evaluators.append(lambda v, c=cols, a=aff: v.__setitem__(c, np.clip(a.value(v), l, u)))
        return cols

    def relu(self, name, index, z: Affine, l, u) -> Affine:
        """Affine map of ``max(z, 0)``; binaries only where ``l < 0 < u``."""
        be = self.be
        idx = list(index)
        alive, unst = u > 0, (l < 0) & (u > 0)
        if not self.opts.compact and alive.any():  # a named variable for every live neuron
            sel = np.flatnonzero(alive)
            zc = self.materialize(f"z{name}", f"lin{name}", [idx[j] for j in sel], z.rows(sel), l[sel], u[sel])
            full = np.zeros((len(l), len(zc)))
            full[sel, np.arange(len(sel))] = 1.0
            z = Affine(full, zc, np.zeros(len(l)))
        out_coef = z.coef * (l >= 0)[:, None]
        out_const = z.const * (l >= 0)
        out = Affine(out_coef, z.cols, out_const)  # stable-active rows = z, dead rows = 0
        if unst.any():
            sel = np.flatnonzero(unst)
            lab = [idx[j] for j in sel]
            zu, ls, us = z.rows(sel), l[sel], u[sel]
            k = len(sel)
            # Badly scaled neurons (range far from 1, e.g. 1e-9 with a 1e9 weight downstream) get a
            # variable h' = h / s, s a power of two (exact), so that no solver tolerance (SCIP fixes
            # a variable whose range is below its feasibility tolerance) can change the function.
            rng_ = np.maximum(-ls, us)
            sc = np.where((rng_ < 1e-3) | (rng_ > 1e3), np.exp2(np.round(np.log2(rng_))), 1.0)
            zu = Affine(zu.coef / sc[:, None], zu.cols, zu.const / sc)
            ls, us = ls / sc, us / sc
            h = be.add_vars(f"h{name}", np.zeros(k), us, index=lab)
            d = be.add_vars(f"d{name}", np.zeros(k), np.ones(k), binary=True, index=lab)
            eye = np.eye(k)
            be.add_linear(f"relu_lo{name}", [(eye, h), zu.terms(-1.0)], ">", zu.const, index=lab)
            be.add_linear(f"relu_up{name}", [(eye, h), zu.terms(-1.0), (np.diag(-ls), d)], "<", zu.const - ls, index=lab)
            be.add_linear(f"relu_on{name}", [(eye, h), (np.diag(-us), d)], "<", np.zeros(k), index=lab)
            kin = len(zu.cols)
            if 1 < kin <= self.opts.ideal_inputs:
                self._ideal(name, lab, zu, h, d)

            def ev(v, h=h, d=d, zu=zu, us=us):
                zv = zu.value(v)
                v[h] = np.clip(zv, 0.0, us)
                v[d] = (zv > 0).astype(np.float64)

            self.evaluators.append(ev)
            self.n_unstable += k
            # rows of `out` for unstable neurons become the new h columns
            hs = Affine(np.zeros((len(l), k)), h, np.zeros(len(l)))
            hs.coef[sel, np.arange(k)] = sc
            out = plus(out, hs)
        return out

    def _ideal(self, name, lab, zu: Affine, h, d):
        """Anderson et al. (2020) ideal ReLU formulation over the box of z's few input columns.

        For ``z = c @ x + c0`` with x in the box [L, U], ``Lc_i = L_i if c_i >= 0 else U_i`` and
        ``Uc_i`` the other end, every proper nonempty subset I of the inputs gives the valid cut
        ``h <= sum_{i in I} c_i (x_i - Lc_i (1 - d)) + (c0 + sum_{i not in I} c_i Uc_i) d``
        (I = {} and I = all are relu_on and relu_up). With them the LP relaxation of one neuron
        is its convex hull.
        """
        import itertools

        xl, xu = self.be.bounds(zu.cols)
        c = zu.coef
        lc = np.where(c >= 0, xl, xu)
        uc = np.where(c >= 0, xu, xl)
        kin = len(zu.cols)
        k = len(lab)
        for size in range(1, kin):
            for sub in itertools.combinations(range(kin), size):
                m_in = np.zeros(kin, bool)
                m_in[list(sub)] = True
                cin = c * m_in
                dcoef = -(np.sum(cin * lc, 1) + zu.const + np.sum(c * ~m_in * uc, 1))
                rhs = -np.sum(cin * lc, 1)
                tag = "".join(str(t) for t in sub)
                self.be.add_linear(f"relu_ideal{tag}{name}", [(np.eye(k), h), (-cin, zu.cols), (np.diag(dcoef), d)],
                                   "<", rhs, index=lab)

    def clip(self, name, t: Affine, tl, tu, c) -> tuple[Affine, float, float]:
        """``clip(t, 0, c)`` for a 1-row affine ``t`` in [tl, tu]; returns (affine, lower, upper)."""
        tl, tu = float(tl), float(tu)
        if tu <= 0:
            return Affine.constant(0.0), 0.0, 0.0
        if tl >= c:
            return Affine.constant(c), c, c
        g = self.relu(f"_{name}_lo", [0], t, np.array([tl]), np.array([tu])) if tl < 0 else t
        gl, gu = max(tl, 0.0), tu
        if gu <= c:
            return g, gl, gu
        # min(g, c) = c - relu(c - g)
        r = Affine(-g.coef, g.cols, c - g.const)
        rr = self.relu(f"_{name}_hi", [0], r, np.array([c - gu]), np.array([c - gl]))
        return Affine(-rr.coef, rr.cols, c - rr.const), gl, min(gu, c)

    def as_col(self, var, row, aff: Affine, l, u) -> int:
        """A column equal to the 1-row ``aff`` (reuses it if ``aff`` is a single unit column)."""
        if aff.coef.shape[1] == 1 and aff.coef[0, 0] == 1.0 and aff.const[0] == 0.0:
            return int(aff.cols[0])
        return int(self.materialize(var, row, None, aff, np.array([l]), np.array([u]))[0])

    def times(self, name, lab, a_cols, al, au, xcol, xval) -> tuple[Affine, np.ndarray, np.ndarray]:
        """``a_j x_j`` per j, for columns ``a_cols`` in ``[al, au]`` and ``x_j`` the column ``xcol[j]``
        where it is >= 0, else the constant ``xval[j]``: an (M,)-row Affine and its bounds. A
        variable ``x_j`` gets a column ``name[lab_j]`` tied by a bilinear equality."""
        m = len(a_cols)
        al, au, xval = al * np.ones(m), np.asarray(au, np.float64), np.asarray(xval, np.float64)
        var = np.asarray(xcol) >= 0
        lo, hi = product_bounds(al, au, xval, xval)
        coef, cols = np.diag(np.where(var, 0.0, xval)), [np.asarray(a_cols)]
        if var.any():
            sel = np.flatnonzero(var)
            xl, xu = self.be.bounds(xcol[sel])
            lo[sel], hi[sel] = product_bounds(al[sel], au[sel], xl, xu)
            wc = self.be.add_vars(name, lo[sel], hi[sel], index=[lab[t] for t in sel])
            self.be.add_bilinear_eq(name, wc, a_cols[sel], xcol[sel], index=[lab[t] for t in sel])
            self.evaluators.append(lambda vv, wc=wc, a=a_cols[sel], x=xcol[sel]: vv.__setitem__(wc, vv[a] * vv[x]))
            extra = np.zeros((m, len(sel)))
            extra[sel, np.arange(len(sel))] = 1.0
            coef, cols = np.hstack([coef, extra]), cols + [wc]
        return Affine(coef, np.concatenate(cols), np.zeros(m)), lo, hi

    # -- the network -----------------------------------------------------------------------
    def sparsemax(self, s_cols, sl, su) -> np.ndarray:
        """Allocation columns (N+1, M) (dummy row last) from logit columns ``s_cols`` (N+1, M)."""
        be, opts = self.be, self.opts
        r_, m = sl.shape
        tau_l = sparsemax64(sl)[1]
        tau_u = sparsemax64(su)[1]
        eye = np.eye(r_, dtype=bool)[:, :, None]           # (r, r', 1): row r' == r
        a_l = sparsemax64(np.where(eye, sl[None], su[None]))[0][eye[..., 0]]  # (r, m)
        a_u = sparsemax64(np.where(eye, su[None], sl[None]))[0][eye[..., 0]]
        # outward rounding, relative to the logits' magnitude (float64 error of sparsemax64 is
        # ~1e-16 of it; _PAD is 1e-9 of it)
        scale = 1.0 + np.sum(np.maximum(np.abs(sl), np.abs(su)), axis=0)   # (m,)
        a_l = np.clip(a_l - _PAD * scale, 0.0, 1.0)
        a_u = np.clip(a_u + _PAD * scale, 0.0, 1.0)
        tau_l, tau_u = tau_l - _PAD * scale, tau_u + _PAD * scale
        mu_u = np.maximum(tau_u[None] - sl + _PAD * (scale + np.abs(sl)), 0.0)
        a_u = np.where(su < tau_l[None], 0.0, a_u)  # never in the support
        mu_u = np.where(a_l > 0, 0.0, mu_u)           # always in the support
        lab = [(r, j) for r in range(r_) for j in range(m)]
        a = be.add_vars("a", a_l.ravel(), a_u.ravel(), index=lab).reshape(r_, m)
        tau = be.add_vars("tau", tau_l, tau_u, index=range(m) if m > 1 else [0])
        mu = be.add_vars("mu", np.zeros(r_ * m), mu_u.ravel(), index=lab).reshape(r_, m)
        k = r_ * m
        tau_rep = np.tile(tau, r_)  # row-major (r, j) -> tau[j]
        be.add_linear("spm_kkt", [(np.eye(k), a.ravel()), (-np.eye(k), s_cols.ravel()), (np.eye(k), tau_rep),
                                  (-np.eye(k), mu.ravel())], "=", np.zeros(k), index=lab)
        summ = np.zeros((m, k))
        for j in range(m):
            summ[j, j::m] = 1.0
        be.add_linear("spm_sum", [(summ, a.ravel())], "=", np.ones(m), index=range(m) if m > 1 else [0])
        amb = (a_u.ravel() > 0) & (mu_u.ravel() > 0)
        e = None
        if amb.any():
            sel = np.flatnonzero(amb)
            lab_s = [lab[t] for t in sel]
            if opts.sparsemax == "sos1":
                be.add_sos1("spm_sos", np.stack([a.ravel()[sel], mu.ravel()[sel]], 1), index=lab_s)
            else:
                q = len(sel)
                e = be.add_vars("e", np.zeros(q), np.ones(q), binary=True, index=lab_s)
                be.add_linear("spm_on", [(np.eye(q), a.ravel()[sel]), (np.diag(-a_u.ravel()[sel]), e)], "<",
                              np.zeros(q), index=lab_s)
                be.add_linear("spm_off", [(np.eye(q), mu.ravel()[sel]), (np.diag(mu_u.ravel()[sel]), e)], "<",
                              mu_u.ravel()[sel], index=lab_s)

        def ev(v, sel=np.flatnonzero(amb)):
            sv = v[s_cols]
            av, tv = sparsemax64(sv)
            v[a] = np.clip(av, a_l, a_u)
            v[tau] = np.clip(tv, tau_l, tau_u)
            v[mu] = np.clip(np.maximum(tv[None] - sv, 0.0), 0.0, mu_u)
            if e is not None:
                v[e] = (av.ravel()[sel] > 0).astype(np.float64)

        self.evaluators.append(ev)
        return a


def inputs(col, val) -> Affine:
    """The N*M network inputs as expressions: ``x_rj`` is column ``col[r, j]`` where it is >= 0, else
    the constant ``val[r, j]``."""
    col, val = np.ravel(col), np.ravel(val).astype(np.float64)
    var = col >= 0
    coef = np.zeros((len(col), int(var.sum())))
    coef[np.flatnonzero(var), np.arange(int(var.sum()))] = 1.0
    return Affine(coef, col[var], np.where(var, 0.0, val))


def encode_net(enc: Encoder, col, val, agent: int, nb: NetworkBounds) -> tuple[np.ndarray, Affine]:
    """The network at the input ``x`` (N, M) of :func:`inputs` (``col``, ``val``), with ``nb`` valid on
    x's box: the trunk, the allocation logits and sparsemax (all rows: it couples them) and agent's
    payment. Returns agent's allocation columns (M,) and its payment ``p_i`` (a 1-row Affine)."""
    w, spec, be = enc.w, enc.spec, enc.be
    n, m = spec.n_agents, spec.n_items
    h = inputs(col, val)
    for k, (wk, ck) in enumerate(w.trunk):
        h = enc.relu("", [(k + 1, j) for j in range(len(ck))], h.dense(wk, ck), nb.pre[k].lower, nb.pre[k].upper)
    sl, su = nb.alloc_logits.lower, nb.alloc_logits.upper
    s = enc.materialize("s", "alloc_lin", [(r, j) for r in range(n + 1) for j in range(m)], h.dense(*w.alloc),
                        sl.ravel(), su.ravel()).reshape(n + 1, m)
    a = enc.sparsemax(s, sl, su)[agent]
    q = h.dense(*w.pay).rows([agent])
    ql, qu = float(nb.pay_logits.lower[agent]), float(nb.pay_logits.upper[agent])
    if spec.payment == "free":
        return a, enc.clip("pay", q, ql, qu, float(spec.payment_max))[0]
    dv, off = mechanism.HARD_SIGMOID_DIVISOR, mechanism.HARD_SIGMOID_OFFSET
    t = Affine(q.coef / dv, q.cols, q.const / dv + off)
    f, fl, fu = enc.clip("frac", t, ql / dv + off, qu / dv + off, 1.0)
    # y = sum_j a_ij x_ij (w's bounds from a in [0, a^U])
    wa, wl, wu = enc.times("pay_w", [(agent, j) for j in range(m)], a, 0.0, be.bounds(a)[1], col[agent], val[agent])
    yl, yu = float(np.sum(wl)), float(np.sum(wu))
    y = enc.materialize("pay_y", "pay_y", [agent], Affine(wa.coef.sum(0, keepdims=True), wa.cols, np.zeros(1)),
                        np.array([yl]), np.array([yu]))
    if fl == fu:  # constant fraction: p = f y is linear
        return a, Affine(np.array([[fl]]), y, np.zeros(1))
    fc = enc.as_col("frac", "frac_lin", f, fl, fu)
    pl, pu = product_bounds(fl, fu, yl, yu)
    pc = be.add_vars("pay", pl, pu, index=[agent])
    be.add_bilinear_eq("pay", pc, [fc], y, index=[agent])
    enc.evaluators.append(lambda vv: vv.__setitem__(pc, vv[fc] * vv[y]))
    return a, Affine.of_cols(pc)


def encode(backend: mm.Model, weights: Weights, spec: MechanismSpec, valuations, agent: int, low, high,
           nb: NetworkBounds, options: EncodeOptions = EncodeOptions(), params=None) -> RegretMIP:
    """Build the regret MIP of ``agent`` at profile ``valuations`` into ``backend``.

    Args:
      backend: an empty :class:`certify.backends.Model` (or a solver subclass of it).
      weights: float64 weights (:func:`certify.tighten.weights64`).
      spec: the architecture (sparsemax allocation; fractional or free payment).
      valuations: (N, M) true profile ``v``; the others' bids are fixed at ``v_-i``.
      agent: the misreporting agent i.
      low, high: (N, M) bid support; agent i's bids range over ``[low_i, high_i]``.
      nb: bounds valid on that box (:func:`certify.tighten.tighten`).
      options: formulation choices.
      params: the original parameter pytree (for :meth:`RegretMIP.get_error`'s JAX replay; rebuilt
        from ``weights`` if omitted).
    """
    check_supported(spec)
    v = np.asarray(valuations, np.float64)
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    n, m = spec.n_agents, spec.n_items
    enc = Encoder(backend, weights, spec, options)
    bid_cols = backend.add_vars("b", low[agent], high[agent], index=[(agent, j) for j in range(m)])
    col = np.full((n, m), -1, np.int64)
    col[agent] = bid_cols
    a, p = encode_net(enc, col, v, agent, nb)
    backend.set_objective(list(a) + list(p.cols), list(v[agent]) + list(-p.coef[0]),
                          0.0 - float(p.const[0]))
    return RegretMIP(backend, spec, weights, agent, v, low, high, bid_cols, enc.n_unstable, enc.evaluators,
                     backend.objective, params if params is not None else params_from(weights))
