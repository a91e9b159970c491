"""Affine maximizer auctions (AMAs): learned mechanisms that are strategyproof by construction.

An AMA fixes a finite **menu** of allocations ``A_1 .. A_K`` (each ``A_k`` an (N, M) array with
``A_k[i, j] >= 0`` and ``sum_i A_k[i, j] <= 1``), agent **weights** ``w_i > 0`` and **boosts**
``lambda_k``. On bids ``b`` (N, M), with ``u_ik = b_i . A_k[i]`` (agent i's bid value of menu
entry k)::

    W(k)       = sum_l w_l u_lk + lambda_k             # affine welfare of entry k
    W_{-i}(k)  = W(k) - w_i u_ik                       # the same without agent i
    k*         = argmax_k W(k)                         # lowest k on ties
    alloc      = A_{k*}
    p_i        = (max_k W_{-i}(k) - W_{-i}(k*)) / w_i  # a weighted VCG (Clarke) payment

**Strategyproof for additive bidders, for every menu, weight and boost** (Roberts' affine
maximizers; the proof is two lines). Agent i with values v_i bidding b_i gets
``v_i . A_{k'}[i] - p_i = (W_v(k') - h_i) / w_i`` where k' = k*(b_i), ``W_v`` is the affine welfare
with i's true values and ``h_i = max_k W_{-i}(k)`` does not depend on b_i. Truthful bidding picks
``k* = argmax_k W_v(k)``, so no b_i does better: **regret is 0 at every profile**, whatever the
tie-breaking. It is also IR: with ``k' = argmax_k W_{-i}(k)``, ``W_v(k*) = max_k W_v(k) >= W_{-i}(k') + w_i u_ik' >= h_i``
for values and menu entries >= 0; and payments are >= 0 (``h_i >= W_{-i}(k*)``). These are exact
statements about the mechanism; its float32 evaluation carries rounding (about 1e-7 of a value).
No certificate is computed because none is needed: ``certify.py`` refuses an AMA and says so.

**Item-wise Myerson is an AMA** (for priors whose agents share each item's U[lo_j, hi_j] with
``lo_j <= hi_j / 2``, so every uniform prior of this package's settings): take the **deterministic
menu** (each item to one agent or unsold: ``(N + 1)^M`` entries), ``w = 1`` and
``lambda_k = -sum_ij A_k[i, j] hi_ij / 2``. Then ``W(k) = sum_ij A_k[i, j] (b_ij - hi_ij / 2)`` is
maximized item by item (the item to the highest bid if it clears the reserve ``hi_j / 2``), and the
payment is ``max(second bid, reserve)``: :func:`init` starts there, so training starts at
Myerson's revenue and keeps the best menu it finds on held-out profiles
(``jaxauction.ama_train``). Boosts on bundles (one agent winning several items) are where an AMA
earns more than selling items separately.

Optional **lottery entries** (``AMASpec.n_lotteries``): ``A_k = softmax(logits_k)[:N]`` over the
agents plus a dummy "unsold" row, per item, learned with their boosts.

**Factored menus** (``AMASpec.groups``): the full deterministic menu has ``(N + 1)^M`` entries,
too many for 3x10 (4^10). Partition the items into groups ``g``; the menu is the product of the
groups' deterministic menus and the boost of a product entry is the sum of its parts'
``lambda_g``, with one weight vector for all groups. That is still one AMA (of the product menu),
so everything above holds; the affine welfare is a sum over groups, so ``k*`` and every
``max_k W_{-i}(k)`` split into per-group argmaxes and the payment is the sum of per-group weighted
VCG payments: ``sum_g (N + 1)^|g|`` entries to search instead of their product. Myerson is
still the start (its boosts are additive over items). Bundles are priced within a group only.

Parameters (a plain pytree; ``checkpoints`` writes it as ``ama.npz``)::

    {"boost": (K,), "log_w": (N,), "lottery_logits": (L, N + 1, M)}   # K = K_det + L, w = exp(log_w)
    # K_det = sum_g (N + 1)^|g|: the groups' boosts one after the other

Training needs a smooth surrogate: :func:`soft_apply` replaces both argmaxes by softmaxes at
temperature ``tau`` (Curry, Sandholm and Dickerson's relaxation for lottery AMAs); only the hard
:func:`apply` is the mechanism, and every revenue this package reports is the hard one.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxauction.priors import UniformPrior

AMA_FORMAT = "jaxauction-ama-v1"
AMA_NPZ, AMA_JSON = "ama.npz", "ama.json"
MAX_MENU = 4096  # the largest menu a spec accepts (its arrays are (batch, K, N) in training)


class AMAError(ValueError):
    """An AMA cannot be built or read: bad spec, menu too large, prior it cannot start from, bad file."""


@dataclasses.dataclass(frozen=True)
class AMASpec:
    """Static description of an AMA (hashable: a jit static argument, like ``MechanismSpec``).

    Attributes:
      n_agents, n_items: N, M.
      n_lotteries: L learned lottery entries after the deterministic ones (one item group only).
      deterministic: include the deterministic allocations (needed to start at Myerson).
      groups: a partition of the items into groups, e.g. ``((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))``, for a
        factored menu (module docstring); ``()``: one group of every item.
    """

    n_agents: int
    n_items: int
    n_lotteries: int = 0
    deterministic: bool = True
    groups: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(tuple(int(j) for j in g) for g in self.groups))
        if self.n_agents < 1 or self.n_items < 1:
            raise AMAError(f"AMA needs n_agents, n_items >= 1, got {self.n_agents}x{self.n_items}")
        if self.n_lotteries < 0:
            raise AMAError(f"AMA n_lotteries must be >= 0, got {self.n_lotteries}")
        if self.groups:
            flat = sorted(j for g in self.groups for j in g)
            if flat != list(range(self.n_items)) or not all(self.groups):
                raise AMAError(f"AMA groups {self.groups} must partition the items 0..{self.n_items - 1} into non-empty groups")
            if len(self.groups) > 1 and (self.n_lotteries or not self.deterministic):
                raise AMAError("AMA with several item groups takes deterministic menus only (no lotteries)")
        if self.n_menu < 1:
            raise AMAError("AMA menu is empty: set deterministic=True or n_lotteries >= 1")
        if self.n_menu > MAX_MENU:
            sizes = " + ".join(f"{self.n_agents + 1}^{len(g)}" for g in self.item_groups) if self.deterministic else "0"
            raise AMAError(f"AMA menu of {self.n_menu} entries for {self.n_agents}x{self.n_items} ({sizes} deterministic "
                           f"+ {self.n_lotteries} lotteries) exceeds {MAX_MENU}; use smaller item groups "
                           "(groups=...) or deterministic=False with lotteries")

    @property
    def item_groups(self) -> tuple:
        return self.groups or (tuple(range(self.n_items)),)

    @property
    def n_deterministic(self) -> int:
        return sum((self.n_agents + 1) ** len(g) for g in self.item_groups) if self.deterministic else 0

    @property
    def n_menu(self) -> int:
        return self.n_deterministic + self.n_lotteries

    def apply(self, params: dict, bids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(alloc (..., N, M), pay (..., N))``: the hard mechanism (:func:`apply`)."""
        return apply(params, bids, self)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "groups": [list(g) for g in self.groups]}


def deterministic_menu(n_agents: int, n_items: int) -> np.ndarray:
    """The ``(N + 1)^M`` deterministic allocations, (K, N, M) float32: entry k gives item j to agent
    ``o_j`` (``o_j = N``: unsold) for ``(o_1 .. o_M)`` the k-th tuple of ``itertools.product``
    (so entry 0 gives every item to agent 0 and the last entry sells nothing)."""
    owners = np.array(list(itertools.product(range(n_agents + 1), repeat=n_items)), np.int64).reshape(-1, n_items)
    return (owners[:, None, :] == np.arange(n_agents)[None, :, None]).astype(np.float32)


def group_menus(params: dict, spec: AMASpec) -> list:
    """Per item group, its (K_g, N, |g|) menu: the deterministic allocations of its items, then (one
    group only) the lotteries; the boosts are ``params["boost"]`` in the same order, group after group."""
    out = []
    for g in spec.item_groups:
        parts = [jnp.asarray(deterministic_menu(spec.n_agents, len(g)))] if spec.deterministic else []
        if spec.n_lotteries:
            parts.append(jax.nn.softmax(params["lottery_logits"], axis=1)[:, :spec.n_agents, :])
        out.append(jnp.concatenate(parts, axis=0))
    return out


def _terms(params: dict, bids: jax.Array, spec: AMASpec):
    """Weights w (N,), and per group: its menu A (K_g, N, |g|), W (..., K_g) and W_{-i} (..., K_g, N)."""
    b = jnp.asarray(bids)
    chex.assert_axis_dimension(b, -2, spec.n_agents)
    chex.assert_axis_dimension(b, -1, spec.n_items)
    w = jnp.exp(params["log_w"]).astype(b.dtype)
    boost = params["boost"].astype(b.dtype)
    out, at = [], 0
    for g, a in zip(spec.item_groups, group_menus(params, spec)):
        a = a.astype(b.dtype)
        vals = jnp.einsum("knm,...nm->...kn", a, b[..., list(g)]) * w        # w_i u_ik
        big_w = jnp.sum(vals, axis=-1) + boost[at:at + a.shape[0]]
        out.append((a, big_w, big_w[..., None] - vals))
        at += a.shape[0]
    return w, out


def _assemble(parts: list, spec: AMASpec) -> jax.Array:
    """Per-group allocations (..., N, |g|) back into item order (..., N, M)."""
    order = np.argsort(np.concatenate([np.asarray(g) for g in spec.item_groups]))
    return jnp.concatenate(parts, axis=-1)[..., order]


def apply(params: dict, bids: jax.Array, spec: AMASpec) -> tuple[jax.Array, jax.Array]:
    """The AMA of the module docstring on bids (..., N, M): ``(alloc (..., N, M), pay (..., N))``."""
    w, terms = _terms(params, bids, spec)
    allocs, pay = [], 0.0
    for a, big_w, w_minus in terms:
        k = jnp.argmax(big_w, axis=-1)                                                 # (...)
        w_minus_k = jnp.take_along_axis(w_minus, k[..., None, None], axis=-2)[..., 0, :]  # W_{-i}(k*)
        pay = pay + (jnp.max(w_minus, axis=-2) - w_minus_k) / w
        allocs.append(a[k])
    return _assemble(allocs, spec), pay


def soft_apply(params: dict, bids: jax.Array, spec: AMASpec, tau: float) -> tuple[jax.Array, jax.Array]:
    """The training surrogate: ``k*`` and each ``argmax_k W_{-i}(k)`` replaced by softmaxes at
    temperature ``tau`` (a mixture of menu entries; not a mechanism, not strategyproof)."""
    w, terms = _terms(params, bids, spec)
    allocs, pay = [], 0.0
    for a, big_w, w_minus in terms:
        s = jax.nn.softmax(big_w / tau, axis=-1)                                       # (..., K_g)
        chosen = jnp.einsum("...k,...kn->...n", s, w_minus)
        best = jnp.sum(jax.nn.softmax(w_minus / tau, axis=-2) * w_minus, axis=-2)
        pay = pay + (best - chosen) / w
        allocs.append(jnp.einsum("...k,knm->...nm", s, a))
    return _assemble(allocs, spec), pay


def init(spec: AMASpec, prior: UniformPrior, key: jax.Array, lottery_scale: float = 1.0) -> dict:
    """Parameters that make the hard AMA item-wise Myerson (module docstring): w = 1, deterministic
    boosts ``-sum_ij A_k[i, j] hi_ij / 2`` (per item group); lottery logits ``lottery_scale * N(0, 1)``
    with the boost Myerson's reserve rule gives their expected allocation."""
    if not isinstance(prior, UniformPrior) or prior.n_agents != spec.n_agents or prior.n_items != spec.n_items:
        raise AMAError(f"AMA init needs a {spec.n_agents}x{spec.n_items} UniformPrior, got {prior!r}")
    lo, hi = (np.asarray(x, np.float64) for x in prior.bounds())
    if np.any(lo > hi / 2):
        raise AMAError("AMA init starts at item-wise Myerson as an AMA, which needs lo <= hi / 2 for every "
                       f"(agent, item); got lo {lo.tolist()}, hi {hi.tolist()}")
    logits = lottery_scale * jax.random.normal(key, (spec.n_lotteries, spec.n_agents + 1, spec.n_items))
    boost = []
    if spec.deterministic:
        boost += [-np.einsum("knm,nm->k", deterministic_menu(spec.n_agents, len(g)), hi[:, list(g)] / 2)
                  for g in spec.item_groups]
    if spec.n_lotteries:
        lot = np.asarray(jax.nn.softmax(logits, axis=1)[:, :spec.n_agents, :], np.float64)
        boost.append(-np.einsum("knm,nm->k", lot, hi / 2))
    return {"boost": jnp.asarray(np.concatenate(boost), jnp.float32), "log_w": jnp.zeros(spec.n_agents, jnp.float32),
            "lottery_logits": jnp.asarray(logits, jnp.float32)}


def check_params(params: dict, spec: AMASpec) -> None:
    """Raise :class:`AMAError` unless ``params`` has the shapes ``spec`` needs and finite values."""
    want = {"boost": (spec.n_menu,), "log_w": (spec.n_agents,),
            "lottery_logits": (spec.n_lotteries, spec.n_agents + 1, spec.n_items)}
    for k, shape in want.items():
        if k not in params:
            raise AMAError(f"AMA params lack {k!r}")
        if tuple(np.shape(params[k])) != shape:
            raise AMAError(f"AMA params {k!r} has shape {tuple(np.shape(params[k]))}, spec needs {shape}")
        if not np.all(np.isfinite(np.asarray(params[k]))):
            raise AMAError(f"AMA params {k!r} has non-finite entries")


# ---- files ----------------------------------------------------------------------------------------

def is_ama(path: str | Path) -> bool:
    """Is ``path`` an AMA checkpoint directory (``ama.json`` inside)?"""
    return (Path(path) / AMA_JSON).is_file()


def save(directory: str | Path, params: dict, spec: AMASpec, prior: UniformPrior, meta: dict | None = None) -> Path:
    """Atomically write ``ama.npz`` (the params) and ``ama.json`` (format, spec, prior, meta)."""
    from jaxauction import checkpoints, versions  # local import: checkpoints imports this module

    check_params(params, spec)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    checkpoints.atomic_savez(d / AMA_NPZ, {k: np.asarray(v) for k, v in params.items()})
    doc = {"format": AMA_FORMAT, "spec": spec.to_dict(), "prior": prior.to_dict(), "meta": {**versions(), **(meta or {})}}
    checkpoints.atomic_write_text(d / AMA_JSON, json.dumps(doc, indent=1))
    return d


def load(directory: str | Path) -> tuple[dict, AMASpec, dict, UniformPrior]:
    """``(params, spec, doc, prior)`` of an AMA checkpoint written by :func:`save`."""
    from jaxauction import priors

    d = Path(directory)
    try:
        doc = json.loads((d / AMA_JSON).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AMAError(f"cannot read {d / AMA_JSON}: {e}") from None
    if doc.get("format") != AMA_FORMAT:
        raise AMAError(f"{d / AMA_JSON}: format {doc.get('format')!r}, expected {AMA_FORMAT!r}")
    try:
        spec = AMASpec(**doc["spec"])
    except (KeyError, TypeError) as e:
        raise AMAError(f"{d / AMA_JSON}: bad spec: {e}") from None
    try:
        with np.load(d / AMA_NPZ, allow_pickle=False) as z:
            params = {k: jnp.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        raise AMAError(f"cannot read {d / AMA_NPZ}: {e}") from None
    check_params(params, spec)
    return params, spec, doc, priors.from_dict(doc.get("prior"), spec.n_agents, spec.n_items)
