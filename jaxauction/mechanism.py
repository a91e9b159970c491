"""THE forward pass of a RegretNet-family mechanism, shared by training and certification.

A mechanism maps a bid profile ``b`` of shape ``(N, M)`` (N agents, M items; additive values) to

* allocations ``a[i, j]`` in [0, 1] with ``sum_i a[i, j] <= 1`` (the rest stays unsold), and
* payments ``p[i]``.

Architecture (one shared trunk, two heads)::

    x   = b.reshape(N * M)                       # agent-major: x[i * M + j] = b[i, j]
    h_0 = x
    h_l = relu(h_{l-1} @ W_l + c_l)              # l = 1..L   (the trunk)
    s   = (h_L @ W_a + c_a).reshape(N + 1, M)    # allocation logits, last row = dummy "unsold"
    a   = act_a(s, axis=0)[:N]                   # softmax or sparsemax over agents, per item
    q   = h_L @ W_p + c_p                        # payment logits, shape (N,)
    p   = payment(q, a, b)

Payment heads (``MechanismSpec.payment``):

* ``"fractional"``: ``p_i = hard_sigmoid(q_i) * sum_j a_ij b_ij`` with
  ``hard_sigmoid(x) = clip(x / 10 + 1/2, 0, 1)``. Individually rational by construction.
* ``"fractional_sigmoid"``: the same with the smooth logistic sigmoid (the RegretNet teacher).
* ``"free"``: ``p_i = clip(q_i, 0, payment_max)``; IR is only encouraged by a training penalty.

The parameter pytree (plain dict of float32 arrays; weights are ``(fan_in, fan_out)``, so a layer
computes ``x @ w + b``; this is the transpose of PyTorch's ``Linear.weight``)::

    {"trunk": [{"w": (N*M, H_1), "b": (H_1,)}, ..., {"w": (H_{L-1}, H_L), "b": (H_L,)}],
     "alloc": {"w": (H_L, (N+1)*M), "b": ((N+1)*M,)},
     "pay":   {"w": (H_L, N),       "b": (N,)}}

Certification (``certify/``) reads exactly this pytree and must encode exactly this function.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # the pytree documented above

ALLOCATIONS = ("softmax", "sparsemax")
PAYMENTS = ("fractional", "fractional_sigmoid", "free")
# hard_sigmoid(x) = clip(x / HARD_SIGMOID_DIVISOR + HARD_SIGMOID_OFFSET, 0, 1): the only place these live
# (certify.network's float64 twin and every MIP encoder read them from here).
HARD_SIGMOID_DIVISOR = 10.0
HARD_SIGMOID_OFFSET = 0.5


@dataclasses.dataclass(frozen=True)
class MechanismSpec:
    """Static description of a mechanism architecture (hashable: usable as a jit static arg).

    Attributes:
      n_agents: N, number of bidders.
      n_items: M, number of items.
      hidden: widths (H_1, ..., H_L) of the ReLU trunk.
      allocation: ``"softmax"`` or ``"sparsemax"`` over the N agents plus the dummy agent.
      payment: ``"fractional"``, ``"fractional_sigmoid"`` or ``"free"`` (see module docstring).
      payment_max: upper clip of the free payment (the paper uses ``n_items`` for U[0,1] values).
    """

    n_agents: int
    n_items: int
    hidden: tuple[int, ...] = (128, 128)
    allocation: str = "sparsemax"
    payment: str = "fractional"
    payment_max: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("n_agents", "n_items"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"MechanismSpec.{name} must be positive, got {getattr(self, name)}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"MechanismSpec.hidden must be non-empty positive widths, got {self.hidden}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"MechanismSpec.allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.payment not in PAYMENTS:
            raise ValueError(f"MechanismSpec.payment must be one of {PAYMENTS}, got {self.payment!r}")
        if self.payment_max is None:
            object.__setattr__(self, "payment_max", float(self.n_items))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MechanismSpec":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown MechanismSpec field(s): {sorted(unknown)}")
        return cls(**d)


def layer_shapes(spec: MechanismSpec) -> dict:
    """Expected shape of every leaf of the parameter pytree for ``spec``."""
    n, m = spec.n_agents, spec.n_items
    widths = (n * m,) + spec.hidden
    return {
        "trunk": [{"w": (widths[k], widths[k + 1]), "b": (widths[k + 1],)} for k in range(len(spec.hidden))],
        "alloc": {"w": (spec.hidden[-1], (n + 1) * m), "b": ((n + 1) * m,)},
        "pay": {"w": (spec.hidden[-1], n), "b": (n,)},
    }


def init(key: jax.Array, spec: MechanismSpec) -> Params:
    """Glorot-uniform weights, zero biases (as RegretNet)."""
    shapes = layer_shapes(spec)
    flat, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(flat))
    glorot = jax.nn.initializers.glorot_uniform()
    leaves = [glorot(k, s, jnp.float32) if len(s) == 2 else jnp.zeros(s, jnp.float32) for k, s in zip(keys, flat)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def check_params(params: Params, spec: MechanismSpec) -> None:
    """Raise ``ValueError`` naming the first leaf whose shape does not match ``spec`` or is not finite."""
    expected = layer_shapes(spec)
    if not isinstance(params, dict) or set(params) != {"trunk", "alloc", "pay"}:
        raise ValueError(f"params must be a dict with keys trunk/alloc/pay, got {type(params).__name__} "
                         f"with keys {sorted(params) if isinstance(params, dict) else '-'}")
    if len(params["trunk"]) != len(expected["trunk"]):
        raise ValueError(f"params have {len(params['trunk'])} trunk layers, spec says {len(expected['trunk'])}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        want = expected
        for p in path:
            want = want[p.key if hasattr(p, "key") else p.idx]
        arr = np.asarray(leaf)
        name = jax.tree_util.keystr(path)
        if tuple(arr.shape) != tuple(want):
            raise ValueError(f"parameter {name} has shape {arr.shape}, expected {want} for "
                             f"{spec.n_agents}x{spec.n_items} hidden={spec.hidden}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"parameter {name} contains NaN or inf")


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """``clip(x / 10 + 1/2, 0, 1)``: the payment fraction of the paper's IR-by-construction nets."""
    return jnp.clip(x / HARD_SIGMOID_DIVISOR + HARD_SIGMOID_OFFSET, 0.0, 1.0)


def sparsemax(logits: jax.Array, axis: int = 0) -> jax.Array:
    """Euclidean projection of ``logits`` onto the probability simplex along ``axis``.

    ``sparsemax(s) = argmin_{a >= 0, sum a = 1} ||a - s||^2 = max(s - tau, 0)`` with

        tau = max_k (sum_{r <= k} z_r - 1) / k,     z = s sorted in decreasing order

    (for every k, ``sum_{r<=k} (z_r - tau) <= sum_r max(z_r - tau, 0) = 1``, with equality at the
    support size). We compute it in exactly this form instead of calling
    ``optax.projections.projection_simplex`` (the same function; optax picks the support size by a
    float comparison and indexes with it): a max of K affine expressions has a short, rigorous
    float32 error bound (``certify.network.rounding_margin``), which certification needs, and
    its gradient is the same almost everywhere.
    """
    moved = jnp.moveaxis(logits, axis, -1)
    z = -jnp.sort(-moved, axis=-1)
    k = jnp.arange(1, moved.shape[-1] + 1, dtype=moved.dtype)
    tau = jnp.max((jnp.cumsum(z, axis=-1) - 1.0) / k, axis=-1, keepdims=True)
    return jnp.moveaxis(jax.nn.relu(moved - tau), -1, axis)


def trunk(params: Params, x: jax.Array) -> jax.Array:
    """ReLU trunk on flattened bids ``x`` of shape (..., N*M)."""
    h = x
    for layer in params["trunk"]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h


def heads(params: Params, h: jax.Array, spec: MechanismSpec) -> tuple[jax.Array, jax.Array]:
    """Allocation logits (..., N+1, M) and payment logits (..., N) from trunk features."""
    s = h @ params["alloc"]["w"] + params["alloc"]["b"]
    s = s.reshape(h.shape[:-1] + (spec.n_agents + 1, spec.n_items))
    q = h @ params["pay"]["w"] + params["pay"]["b"]
    return s, q


def allocate(s: jax.Array, spec: MechanismSpec) -> jax.Array:
    """Allocations (..., N, M) from logits (..., N+1, M); dummy row dropped."""
    if spec.allocation == "softmax":
        a = jax.nn.softmax(s, axis=-2)
    else:
        a = sparsemax(s, axis=-2)
    return a[..., : spec.n_agents, :]


def pay(q: jax.Array, alloc: jax.Array, bids: jax.Array, spec: MechanismSpec) -> jax.Array:
    """Payments (..., N) from payment logits, allocations and bids."""
    if spec.payment == "free":
        return jnp.clip(q, 0.0, spec.payment_max)
    frac = hard_sigmoid(q) if spec.payment == "fractional" else jax.nn.sigmoid(q)
    return frac * jnp.sum(alloc * bids, axis=-1)


def apply(params: Params, bids: jax.Array, spec: MechanismSpec) -> tuple[jax.Array, jax.Array]:
    """Run the mechanism.

    Args:
      params: parameter pytree (see module docstring).
      bids: (B, N, M) bid profiles (or a single (N, M) profile).
      spec: the architecture.

    Returns:
      ``(alloc, pay)`` of shapes (B, N, M) and (B, N) (no batch dim for a single profile).
    """
    single = bids.ndim == 2
    b = bids[None] if single else bids
    chex.assert_rank(b, 3)
    chex.assert_axis_dimension(b, 1, spec.n_agents)
    chex.assert_axis_dimension(b, 2, spec.n_items)
    h = trunk(params, b.reshape(b.shape[0], spec.n_agents * spec.n_items))
    s, q = heads(params, h, spec)
    a = allocate(s, spec)
    p = pay(q, a, b, spec)
    return (a[0], p[0]) if single else (a, p)
