"""Sound linear relaxations, propagated forward over a low-dimensional input box (pure JAX).

Agent i's misreport ``x = b_i`` lives in a box ``[xl, xu]`` of only M = 2..10 dimensions, so every
quantity ``y`` of the network gets a pair of *linear* bounds in ``x`` (forward-mode linear
relaxation, as LiRPA's forward mode and DeepPoly's symbolic intervals)::

    al . x + cl  <=  y(x)  <=  au . x + cu        for every x in [xl, xu]          (:class:`Lin`)

and an interval ``[lo, hi]`` from concretizing them (``max_x au.x + cu = au.mid + |au|.rad + cu``).
Carrying M coefficients per neuron costs O(H^2 M) per layer, far less than back-substitution
for every neuron, and on small boxes the slack of every step below is second order in the box
width (first order across a ReLU kink), so branch and bound over boxes converges.

The steps (each one a pure function; ``y = f(z)`` with ``z in [l, u]``):

* affine ``y = W^T z + c``: ``au_y = W+^T au_z + W-^T al_z``, likewise ``cu`` (exact).
* ReLU: the triangle ``relu(z) <= lam (z - l)``, ``lam = u / (u - l)``, and ``relu(z) >= z`` or
  ``>= 0`` (CROWN's adaptive lower slope); stable neurons are exact.
* smooth ``f`` (tanh, logistic sigmoid, exp, 1/z on z > 0): both bounds with the chord slope
  ``lam = (f(u) - f(l)) / (u - l)``, offsets ``mu = max / min of g = f - lam z`` on [l, u]: on a
  convex piece the max of ``g`` is at an end point and the min is at least the tangent bound
  ``g(t) + g'(t) (x - t)`` for any t (we take ``t`` near the critical point ``f'(t) = lam``; an
  inaccurate ``t`` only loosens the bound), and the other way round on a concave piece. tanh and
  sigmoid are convex below 0 and concave above, so their pieces are ``[l, 0]`` and ``[0, u]``.
* product ``y = z w`` (McCormick): ``z w >= lw z + lz w - lz lw`` and ``>= uw z + uz w - uz uw``;
  ``z w <= uw z + lz w - lz uw`` and ``<= lw z + uz w - uz lw``; the tighter at the box centre.
* min of affine functions ``y = min_S y_S``: ``y <= y_S*``; ``y >= y_S* - max_S (y_S* - y_S)+``.

Every bound is also clipped by any constant bound that is tighter (e.g. ``a in [0, 1]``).

Floating point. Every array here is float64, and every step widens the bounds it computes by
:data:`PAD` times ``mag``, a running bound on the sum of the absolute values of all terms of
that step (``mag_y = |W|^T mag_z + |c|`` through a dense layer, times the largest |slope| plus the
largest |offset| through a relaxation). A step's inputs are the stored (already widened) bounds
of the step before, which hold exactly, so each step only has to cover its own rounding: a sum
of n products in any order errs by at most ``gamma_n mag`` (Higham, Lemma 3.1), and ``gamma_n <=
2^-40`` for n <= 8192 terms, i.e. for fan-ins up to 4000 even counting both halves of a split
``W+ au + W- al`` (our widest layer, two merged towers of 128, has 256: there ``PAD`` is 30 times
``gamma_{2H+3}``); the elementwise functions (exp, tanh, arctanh, sqrt) are assumed accurate to
2^-50 relative (8 ulps), as :mod:`certify.rounding` assumes. So the bounds hold for the exact
real-arithmetic function of the weights.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


_TINY = 1e-300
# Outward rounding of every step, relative to its magnitude (module docstring: >= gamma_n, n <= 8192).
PAD = 2.0 ** -40


class Lin(NamedTuple):
    """Linear bounds ``al . x + cl <= y <= au . x + cu`` of K quantities over the input box.

    Attributes:
      al, au: (K, M) coefficients; cl, cu: (K,) offsets.
      mag: (K,) bound on the sum of |terms| of any computation of y (the rounding scale).
    """

    al: jax.Array
    cl: jax.Array
    au: jax.Array
    cu: jax.Array
    mag: jax.Array


class Tape:
    """The box-dependent decisions of one relaxation pass (intervals, sides, McCormick planes),
    recorded in order and replayed by a second pass over the same operations in another input
    space (:func:`certify.linbound.bound_boxes` runs the head once in ``x`` and once in
    ``(h_L, x)``, whose box would give looser intervals)."""

    def __init__(self):
        self.values, self.replay, self.i = [], False, 0

    def rewind(self) -> "Tape":
        self.replay, self.i = True, 0
        return self


class Box(NamedTuple):
    """The input box ``[xl, xu]`` (M,) with its centre and radius; ``tape`` records (or replays)
    every decision that depends on the box (:class:`Tape`)."""

    xl: jax.Array
    xu: jax.Array
    tape: Tape | None = None

    @property
    def mid(self):
        return (self.xl + self.xu) / 2

    @property
    def rad(self):
        return (self.xu - self.xl) / 2


def decide(box: Box, fn):
    """``fn()``, recorded on (or replayed from) the box's tape."""
    t = box.tape
    if t is None:
        return fn()
    if t.replay:
        v = t.values[t.i]
        t.i += 1
        return v
    v = fn()
    t.values.append(v)
    return v


# ------------------------------------------------------------------------------------------------
# construction and concretization
# ------------------------------------------------------------------------------------------------
def inputs(box: Box) -> Lin:
    """``y = x``: exact."""
    m = box.xl.shape[0]
    eye = jnp.eye(m, dtype=box.xl.dtype)
    zero = jnp.zeros(m, box.xl.dtype)
    return Lin(eye, zero, eye, zero, jnp.maximum(jnp.abs(box.xl), jnp.abs(box.xu)))


def _pad(mag):
    return PAD * mag


def lower(y: Lin, box: Box) -> jax.Array:
    """``min_x al.x + cl`` over the box, rounded down."""
    return y.al @ box.mid - jnp.abs(y.al) @ box.rad + y.cl - _pad(y.mag)


def upper(y: Lin, box: Box) -> jax.Array:
    """``max_x au.x + cu`` over the box, rounded up."""
    return y.au @ box.mid + jnp.abs(y.au) @ box.rad + y.cu + _pad(y.mag)


def interval(y: Lin, box: Box):
    return lower(y, box), upper(y, box)


def widen(y: Lin) -> Lin:
    """Round the offsets outward by the rounding scale (after every computed step)."""
    p = _pad(y.mag)
    return y._replace(cl=y.cl - p, cu=y.cu + p)


def clamp(y: Lin, box: Box, lo=None, hi=None) -> Lin:
    """Replace a side by the constant bound ``lo`` / ``hi`` where that is tighter at the box
    centre (both are valid; a side that is tighter at the centre is better on average, and the
    constant loses the slope, so it is taken only there)."""
    al, cl, au, cu = y.al, y.cl, y.au, y.cu
    if lo is not None:
        lo = jnp.broadcast_to(jnp.asarray(lo, y.cl.dtype), y.cl.shape)
        use = decide(box, lambda: y.al @ box.mid + y.cl < lo)
        al, cl = jnp.where(use[:, None], 0.0, al), jnp.where(use, lo, cl)
    if hi is not None:
        hi = jnp.broadcast_to(jnp.asarray(hi, y.cu.dtype), y.cu.shape)
        use = decide(box, lambda: y.au @ box.mid + y.cu > hi)
        au, cu = jnp.where(use[:, None], 0.0, au), jnp.where(use, hi, cu)
    return Lin(al, cl, au, cu, y.mag)


# ------------------------------------------------------------------------------------------------
# linear steps
# ------------------------------------------------------------------------------------------------
def affine(z: Lin, w_pos, w_neg, w_abs, c, c_abs=None) -> Lin:
    """``y = W^T z + c`` with ``W`` split as ``w_pos = max(W, 0)``, ``w_neg = min(W, 0)`` (H, K).

    ``w_abs >= |W|`` and ``c_abs >= |c|`` are the rounding scales: for a ``W`` that was itself
    computed (a combination of weight columns) they bound the sum of |terms| of its entries."""
    # W+ au + W- al = W (au + al)/2 + |W| (au - al)/2: two products instead of four, each with
    # the batch's boxes and the M coefficients (plus the offset column) as the rows of one GEMM
    w = w_pos + w_neg
    mid = jnp.concatenate([(z.au + z.al).T, (z.cu + z.cl)[None]], 0) / 2           # (M+1, H)
    rad = jnp.concatenate([(z.au - z.al).T, (z.cu - z.cl)[None], z.mag[None]], 0) / 2  # (M+2, H)
    pm = mid @ w
    pr = rad @ w_abs
    au, al = (pm[:-1] + pr[:-2]).T, (pm[:-1] - pr[:-2]).T
    cu, cl = pm[-1] + pr[-2] + c, pm[-1] - pr[-2] + c
    # |terms| of the mid/rad form are at most twice those of the split form: 2 |W|^T mag + |c|
    mag = 4.0 * pr[-1] + (jnp.abs(c) if c_abs is None else c_abs)
    return widen(Lin(al, cl, au, cu, mag))


def combine(terms, const=0.0) -> Lin:
    """``y = sum_k alpha_k z_k + const`` for ``terms = [(alpha, z), ...]`` (alpha: (K,) or scalar)."""
    al = au = cl = cu = mag = 0.0
    for a, z in terms:
        a = jnp.asarray(a)
        ap, an = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
        au = au + ap[..., None] * z.au + an[..., None] * z.al
        al = al + ap[..., None] * z.al + an[..., None] * z.au
        cu = cu + ap * z.cu + an * z.cl
        cl = cl + ap * z.cl + an * z.cu
        mag = mag + jnp.abs(a) * z.mag
    return widen(Lin(al, cl + const, au, cu + const, mag + jnp.abs(const)))


def total(y: Lin, weights) -> Lin:
    """``sum_k weights_k y_k`` as a (1,)-shaped :class:`Lin`."""
    w = jnp.asarray(weights)
    wp, wn = jnp.maximum(w, 0.0), jnp.minimum(w, 0.0)
    au = wp @ y.au + wn @ y.al
    al = wp @ y.al + wn @ y.au
    cu = wp @ y.cu + wn @ y.cl
    cl = wp @ y.cl + wn @ y.cu
    return widen(Lin(al[None], cl[None], au[None], cu[None], (jnp.abs(w) @ y.mag)[None]))


def repeat(y: Lin, k: int) -> Lin:
    """A (1,)-shaped :class:`Lin` repeated to (k,)."""
    return Lin(*(jnp.repeat(a, k, axis=0) for a in y))


def group_sum(y: Lin, groups: int) -> Lin:
    """Sum over the leading axis of ``y`` viewed as (groups, K // groups) quantities."""
    r = lambda a: a.reshape((groups, -1) + a.shape[1:]).sum(0)
    return widen(Lin(r(y.al), r(y.cl), r(y.au), r(y.cu), r(y.mag)))


def scale_sides(z: Lin, lam_l, mu_l, lam_u, mu_u, mu_mag) -> Lin:
    """``lam_l z + mu_l <= y <= lam_u z + mu_u`` (slopes of any sign) turned into a :class:`Lin`."""
    def side(lam, z_same, c_same, z_other, c_other):
        pos, neg = jnp.maximum(lam, 0.0), jnp.minimum(lam, 0.0)
        return pos[:, None] * z_same + neg[:, None] * z_other, pos * c_same + neg * c_other

    au, cu = side(lam_u, z.au, z.cu, z.al, z.cl)
    al, cl = side(lam_l, z.al, z.cl, z.au, z.cu)
    mag = jnp.maximum(jnp.abs(lam_l), jnp.abs(lam_u)) * z.mag + mu_mag
    return widen(Lin(al, cl + mu_l, au, cu + mu_u, mag))


# ------------------------------------------------------------------------------------------------
# elementwise relaxations: slopes and offsets on [l, u]
# ------------------------------------------------------------------------------------------------
def relu_relaxation(l, u):
    """``lam_l z <= relu(z) <= lam_u z + mu_u`` on [l, u] (exact for stable neurons)."""
    act, dead = l >= 0, u <= 0
    unst = ~(act | dead)
    den = jnp.where(unst, u - l, 1.0)
    lam_u = jnp.where(act, 1.0, jnp.where(unst, u / den, 0.0))
    # the valid offset for the computed slope: g = relu - lam z is convex, its max is at an end
    mu_u = jnp.where(unst, jnp.maximum(jnp.maximum(-lam_u * l, u - lam_u * u), 0.0), 0.0)
    lam_l = jnp.where(act, 1.0, jnp.where(unst & (u > -l), 1.0, 0.0))
    zero = jnp.zeros_like(l)
    mag = jnp.where(unst, jnp.abs(lam_u) * (jnp.abs(l) + jnp.abs(u)) + jnp.abs(u), 0.0)
    return lam_l, zero, lam_u, mu_u + _pad(mag), mag


class Smooth(NamedTuple):
    """A smooth scalar function: value, derivative, the inflection point (convex below it,
    concave above; +inf for a convex function) and ``t(lam, side)``: a point where ``f' = lam`` on
    the convex (side 0) or concave (side 1) piece (any point is sound; a good one is tight)."""

    f: callable
    df: callable
    inflection: float
    crit: callable


def _tanh_crit(lam, side):
    s = jnp.sqrt(jnp.clip(1.0 - lam, 0.0, 1.0 - 1e-16))
    return jnp.where(side == 0, -1.0, 1.0) * jnp.arctanh(s)


def _sigmoid(x):
    return 0.5 * (1.0 + jnp.tanh(0.5 * x))


def _sigmoid_crit(lam, side):
    s = jnp.sqrt(jnp.clip(1.0 - 4.0 * lam, 0.0, 1.0 - 1e-16))
    return jnp.where(side == 0, -2.0, 2.0) * jnp.arctanh(s)


TANH = Smooth(jnp.tanh, lambda x: 1.0 - jnp.tanh(x) ** 2, 0.0, _tanh_crit)
SIGMOID = Smooth(_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)), 0.0, _sigmoid_crit)
EXP = Smooth(jnp.exp, jnp.exp, jnp.inf, lambda lam, side: jnp.log(jnp.maximum(lam, _TINY)))
# 1/z for z > 0 (convex); f' = -1/z^2 = lam  ->  z = 1/sqrt(-lam)
RECIPROCAL = Smooth(lambda z: 1.0 / z, lambda z: -1.0 / z ** 2, jnp.inf,
                    lambda lam, side: 1.0 / jnp.sqrt(jnp.maximum(-lam, _TINY)))


def smooth_relaxation(fn: Smooth, l, u):
    """``lam z + mu_l <= f(z) <= lam z + mu_u`` on [l, u], ``lam`` the chord slope (the derivative
    at the centre on a degenerate interval); see the module docstring for the offsets."""
    fl, fu = fn.f(l), fn.f(u)
    width = u - l
    degenerate = width <= 1e-9 * (1.0 + jnp.abs(l))
    lam = jnp.where(degenerate, fn.df((l + u) / 2), (fu - fl) / jnp.where(degenerate, 1.0, width))
    g = lambda x: fn.f(x) - lam * x
    ip = fn.inflection
    hi_parts, lo_parts, mags = [], [], []
    for side, a, b in ((0, l, jnp.minimum(u, ip)), (1, jnp.maximum(l, ip), u)):
        present = a <= b
        a_, b_ = jnp.where(present, a, l), jnp.where(present, b, l)
        t = jnp.clip(fn.crit(lam, side), a_, b_)
        gt, dg = g(t), fn.df(t) - lam
        tangent_lo = jnp.minimum(gt + dg * (a_ - t), gt + dg * (b_ - t))
        tangent_hi = jnp.maximum(gt + dg * (a_ - t), gt + dg * (b_ - t))
        ends_hi, ends_lo = jnp.maximum(g(a_), g(b_)), jnp.minimum(g(a_), g(b_))
        if side == 0:   # convex: max at the ends, min above the tangent
            hi, lo = ends_hi, tangent_lo
        else:           # concave
            hi, lo = tangent_hi, ends_lo
        hi_parts.append(jnp.where(present, hi, -jnp.inf))
        lo_parts.append(jnp.where(present, lo, jnp.inf))
        mags.append(jnp.abs(fn.f(t)) + jnp.abs(lam * t) + jnp.abs(dg) * (jnp.abs(a_) + jnp.abs(b_) + 2 * jnp.abs(t)))
    mag = mags[0] + mags[1] + jnp.abs(fl) + jnp.abs(fu) + jnp.abs(lam) * (jnp.abs(l) + jnp.abs(u))
    mu_u = jnp.maximum(hi_parts[0], hi_parts[1]) + _pad(mag)
    mu_l = jnp.minimum(lo_parts[0], lo_parts[1]) - _pad(mag)
    return lam, mu_l, lam, mu_u, mag + jnp.maximum(jnp.abs(mu_l), jnp.abs(mu_u))


def relaxed(z: Lin, box: Box, relaxation, lo=None, hi=None):
    """``f(z)`` from its relaxation ``(lam_l, mu_l, lam_u, mu_u, mag)`` and constant bounds
    ``lo``/``hi`` (taken where tighter at the centre). Returns the :class:`Lin` and the effective
    relaxation ``(lam_l, mu_l, lam_u, mu_u)`` after that choice, valid on the input's interval:
    what back-substitution (:func:`certify.linbound.backward_upper`) reuses."""
    lam_l, mu_l, lam_u, mu_u, mag = relaxation
    y = scale_sides(z, lam_l, mu_l, lam_u, mu_u, mag)
    if lo is not None:
        lo = jnp.broadcast_to(jnp.asarray(lo, y.cl.dtype), y.cl.shape)
        use = decide(box, lambda: y.al @ box.mid + y.cl < lo)
        y = y._replace(al=jnp.where(use[:, None], 0.0, y.al), cl=jnp.where(use, lo, y.cl))
        lam_l, mu_l = jnp.where(use, 0.0, lam_l), jnp.where(use, lo, mu_l)
    if hi is not None:
        hi = jnp.broadcast_to(jnp.asarray(hi, y.cu.dtype), y.cu.shape)
        use = decide(box, lambda: y.au @ box.mid + y.cu > hi)
        y = y._replace(au=jnp.where(use[:, None], 0.0, y.au), cu=jnp.where(use, hi, y.cu))
        lam_u, mu_u = jnp.where(use, 0.0, lam_u), jnp.where(use, hi, mu_u)
    return y, (lam_l, mu_l, lam_u, mu_u)


def relu_step(z: Lin, box: Box):
    l, u = decide(box, lambda: interval(z, box))
    return relaxed(z, box, relu_relaxation(l, u), lo=0.0)


def smooth_step(fn: Smooth, z: Lin, box: Box, lo=None, hi=None, domain=None):
    """``f(z)``; ``domain = (dl, du)``: a range ``z`` is known to lie in (e.g. ``z >= 1`` for a
    softmax denominator) that the interval is intersected with; ``lo, hi``: constant bounds on f."""
    l, u = decide(box, lambda: interval(z, box))
    if domain is not None:
        l, u = jnp.maximum(l, domain[0]), jnp.minimum(u, domain[1])
        u = jnp.maximum(u, l)   # never empty (it cannot be in exact arithmetic; rounding must not make it)
    return relaxed(z, box, smooth_relaxation(fn, l, u), lo=lo, hi=hi)


def apply_relu(z: Lin, box: Box) -> Lin:
    return relu_step(z, box)[0]


def apply_smooth(fn: Smooth, z: Lin, box: Box, lo=None, hi=None, domain=None) -> Lin:
    return smooth_step(fn, z, box, lo, hi, domain)[0]


def apply_clip(z: Lin, box: Box, top) -> Lin:
    """``clip(z, 0, top) = relu(z) - relu(z - top)``."""
    a = apply_relu(z, box)
    b = apply_relu(combine([(1.0, z)], -top), box)
    return clamp(combine([(1.0, a), (-1.0, b)]), box, lo=0.0, hi=top)


def product(z: Lin, w: Lin, box: Box) -> Lin:
    """McCormick bounds of ``z * w`` (elementwise), each side the tighter of its two planes at
    the box centre."""
    lz, uz = decide(box, lambda: interval(z, box))
    lw, uw = decide(box, lambda: interval(w, box))
    planes = [(lw, lz, -lz * lw), (uw, uz, -uz * uw), (uw, lz, -lz * uw), (lw, uz, -uz * lw)]  # 2 lower, 2 upper
    ys = [combine([(a, z), (b, w)], g) for a, b, g in planes]

    def picks():
        v = [(y.al if k < 2 else y.au) @ box.mid + (y.cl if k < 2 else y.cu) for k, y in enumerate(ys)]
        return v[0] >= v[1], v[2] <= v[3]

    pick_l, pick_u = decide(box, picks)
    al = jnp.where(pick_l[:, None], ys[0].al, ys[1].al)
    cl = jnp.where(pick_l, ys[0].cl, ys[1].cl)
    au = jnp.where(pick_u[:, None], ys[2].au, ys[3].au)
    cu = jnp.where(pick_u, ys[2].cu, ys[3].cu)
    mag = jnp.maximum(jnp.maximum(ys[0].mag, ys[1].mag), jnp.maximum(ys[2].mag, ys[3].mag))
    cands = jnp.stack([lz * lw, lz * uw, uz * lw, uz * uw])
    return clamp(Lin(al, cl, au, cu, mag), box, lo=cands.min(0), hi=cands.max(0))


def min_of(al, cl, au, cu, mag, box: Box) -> Lin:
    """``y_k = min_s y_{s,k}`` from linear bounds of shape (S, K, M) / (S, K)."""
    def choose():
        ys_u = jnp.einsum("skm,m->sk", au, box.mid) + jnp.einsum("skm,m->sk", jnp.abs(au), box.rad) + cu + _pad(mag)
        ys_l = jnp.einsum("skm,m->sk", al, box.mid) - jnp.einsum("skm,m->sk", jnp.abs(al), box.rad) + cl - _pad(mag)
        star = jnp.argmin((ys_u + ys_l) / 2, axis=0)                     # (K,)
        take = lambda a: jnp.take_along_axis(a, star[None, :, None] if a.ndim == 3 else star[None], 0)[0]
        au_s, cu_s, mag_s = take(au), take(cu), take(mag)
        # y >= y_* - max_s (y_* - y_s)^+ ; (y_* - y_s) <= U(y_*) - L(y_s) concretized
        d = au_s[None] - al
        diff = (jnp.einsum("skm,m->sk", d, box.mid) + jnp.einsum("skm,m->sk", jnp.abs(d), box.rad)
                + cu_s[None] - cl + _pad(mag_s[None] + mag))
        return star, jnp.maximum(jnp.max(diff, axis=0), 0.0)

    star, slack = decide(box, choose)
    take = lambda a: jnp.take_along_axis(a, star[None, :, None] if a.ndim == 3 else star[None], 0)[0]
    au_s, cu_s, al_s, cl_s, mag_s = take(au), take(cu), take(al), take(cl), take(mag)
    total = mag_s + jnp.max(mag, axis=0) + slack
    return widen(Lin(al_s, cl_s - slack, au_s, cu_s, total))
