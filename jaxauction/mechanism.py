"""THE forward pass of a RegretNet-family mechanism, shared by training and certification.

A mechanism maps a bid profile ``b`` of shape ``(N, M)`` (N agents, M items; additive values) to

* allocations ``a[i, j]`` in [0, 1] with ``sum_i a[i, j] <= 1`` (the rest stays unsold), and
* payments ``p[i]``.

Architecture, ``MechanismSpec.towers == "shared"`` (one trunk, two heads; the paper's nets)::

    x   = b.reshape(N * M)                       # agent-major: x[i * M + j] = b[i, j]
    h_0 = x
    h_l = act(h_{l-1} @ W_l + c_l)               # l = 1..L   (the trunk)
    s   = (h_L @ W_a + c_a).reshape(N + 1, M)    # allocation logits, last row = dummy "unsold"
    a   = act_a(s, axis=0)[:N]                   # softmax or sparsemax over agents, per item
    q   = h_L @ W_p + c_p                        # payment logits, shape (N,)
    p   = payment(q, a, b)

``towers == "separate"`` (RegretNet's original architecture): two towers of the same widths
``spec.hidden``, both reading ``x``, each feeding one head::

    g_0 = x;  g_l = act(g_{l-1} @ A_l + d_l)     # allocation tower, l = 1..L
    k_0 = x;  k_l = act(k_{l-1} @ P_l + e_l)     # payment tower,    l = 1..L
    s   = (g_L @ W_a + c_a).reshape(N + 1, M);   q = k_L @ W_p + c_p

``act`` (``MechanismSpec.activation``) is ``relu`` (the certifiable nets) or ``tanh`` (RegretNet),
applied after every trunk/tower layer and never after a head. :func:`trunk` returns ``h_L``, or
for separate towers the concatenation ``[g_L, k_L]`` (what :func:`heads` splits again): exactly the
features of the equivalent shared trunk with block-diagonal weights that
``certify.network.weights64`` builds.

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

and for ``towers="separate"`` the trunk is replaced by two towers of the same shapes::

    {"alloc_tower": [{"w": (N*M, H_1), "b": (H_1,)}, ...],   # A_l, d_l
     "pay_tower":   [{"w": (N*M, H_1), "b": (H_1,)}, ...],   # P_l, e_l
     "alloc": {"w": (H_L, (N+1)*M), "b": ...}, "pay": {"w": (H_L, N), "b": ...}}

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
ACTIVATIONS = ("relu", "tanh")
TOWERS = ("shared", "separate")
# the top-level keys of the params pytree, per MechanismSpec.towers
PARAM_KEYS = {"shared": ("trunk", "alloc", "pay"), "separate": ("alloc_tower", "pay_tower", "alloc", "pay")}
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
      hidden: widths (H_1, ..., H_L) of the trunk (of each tower when ``towers="separate"``).
      allocation: ``"softmax"`` or ``"sparsemax"`` over the N agents plus the dummy agent.
      payment: ``"fractional"``, ``"fractional_sigmoid"`` or ``"free"`` (see module docstring).
      payment_max: upper clip of the free payment (the paper uses ``n_items`` for U[0,1] values).
      activation: ``"relu"`` or ``"tanh"``, after every trunk/tower layer.
      towers: ``"shared"`` (one trunk feeds both heads) or ``"separate"`` (an allocation tower and
        a payment tower, RegretNet's original architecture).
    """

    n_agents: int
    n_items: int
    hidden: tuple[int, ...] = (128, 128)
    allocation: str = "sparsemax"
    payment: str = "fractional"
    payment_max: float | None = None
    activation: str = "relu"
    towers: str = "shared"

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
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"MechanismSpec.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.towers not in TOWERS:
            raise ValueError(f"MechanismSpec.towers must be one of {TOWERS}, got {self.towers!r}")
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
    tower = lambda: [{"w": (widths[k], widths[k + 1]), "b": (widths[k + 1],)} for k in range(len(spec.hidden))]
    heads_ = {"alloc": {"w": (spec.hidden[-1], (n + 1) * m), "b": ((n + 1) * m,)},
              "pay": {"w": (spec.hidden[-1], n), "b": (n,)}}
    if spec.towers == "separate":
        return {"alloc_tower": tower(), "pay_tower": tower(), **heads_}
    return {"trunk": tower(), **heads_}


def init(key: jax.Array, spec: MechanismSpec) -> Params:
    """Glorot-uniform weights, zero biases (as RegretNet)."""
    shapes = layer_shapes(spec)
    flat, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(flat))
    glorot = jax.nn.initializers.glorot_uniform()
    leaves = [glorot(k, s, jnp.float32) if len(s) == 2 else jnp.zeros(s, jnp.float32) for k, s in zip(keys, flat)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def tower_keys(params: Params) -> tuple[str, ...]:
    """The keys of the pytree's layer lists: ``("trunk",)`` or ``("alloc_tower", "pay_tower")``."""
    return ("alloc_tower", "pay_tower") if "alloc_tower" in params else ("trunk",)


def dense_layers(params: Params) -> list:
    """Every ``{"w", "b"}`` layer of the pytree: the trunk (or both towers), then alloc, pay."""
    return [*(lay for k in tower_keys(params) for lay in params[k]), params["alloc"], params["pay"]]


def check_params(params: Params, spec: MechanismSpec) -> None:
    """Raise ``ValueError`` naming the first leaf whose shape does not match ``spec`` or is not finite."""
    expected = layer_shapes(spec)
    keys = PARAM_KEYS[spec.towers]
    if not isinstance(params, dict) or set(params) != set(keys):
        raise ValueError(f"params must be a dict with keys {'/'.join(keys)} (towers={spec.towers!r}), got "
                         f"{type(params).__name__} with keys {sorted(params) if isinstance(params, dict) else '-'}")
    for k in keys[:-2]:
        if not isinstance(params[k], (list, tuple)) or len(params[k]) != len(expected[k]):
            got = len(params[k]) if isinstance(params[k], (list, tuple)) else type(params[k]).__name__
            raise ValueError(f"params have {got} {k} layers, spec says {len(expected[k])}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        want = expected
        try:
            for p in path:
                want = want[p.key if hasattr(p, "key") else p.idx]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"unexpected parameter {jax.tree_util.keystr(path)}") from None
        arr = np.asarray(leaf)
        name = jax.tree_util.keystr(path)
        if tuple(arr.shape) != tuple(want):
            raise ValueError(f"parameter {name} has shape {arr.shape}, expected {want} for "
                             f"{spec.n_agents}x{spec.n_items} hidden={spec.hidden} towers={spec.towers}")
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


def activate(name: str, z: jax.Array) -> jax.Array:
    """The trunk activation ``MechanismSpec.activation``: ``relu`` or ``tanh``."""
    if name == "relu":
        return jax.nn.relu(z)
    if name == "tanh":
        return jnp.tanh(z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def trunk(params: Params, x: jax.Array, spec: MechanismSpec) -> jax.Array:
    """Trunk features of flattened bids ``x`` (..., N*M): ``h_L``, or ``[g_L, k_L]`` (concatenated
    on the last axis) for separate towers."""
    outs = []
    for key in tower_keys(params):
        h = x
        for layer in params[key]:
            h = activate(spec.activation, h @ layer["w"] + layer["b"])
        outs.append(h)
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)


def heads(params: Params, h: jax.Array, spec: MechanismSpec) -> tuple[jax.Array, jax.Array]:
    """Allocation logits (..., N+1, M) and payment logits (..., N) from trunk features
    (:func:`trunk`'s output: for separate towers the alloc head reads the first half, pay the second)."""
    h_a = h_p = h
    if "alloc_tower" in params:  # as trunk(): the pytree's keys decide
        h_a, h_p = h[..., : spec.hidden[-1]], h[..., spec.hidden[-1]:]
    s = h_a @ params["alloc"]["w"] + params["alloc"]["b"]
    s = s.reshape(h.shape[:-1] + (spec.n_agents + 1, spec.n_items))
    q = h_p @ params["pay"]["w"] + params["pay"]["b"]
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
      spec: the architecture; or a mechanism that is not a network, with its own forward pass
        ``spec.apply(params, bids)`` (``jaxauction.baselines.BaselineSpec``), which is called instead.

    Returns:
      ``(alloc, pay)`` of shapes (B, N, M) and (B, N) (no batch dim for a single profile).
    """
    if not isinstance(spec, MechanismSpec):  # a baseline (jaxauction.baselines): not this network
        return spec.apply(params, bids)
    single = bids.ndim == 2
    b = bids[None] if single else bids
    chex.assert_rank(b, 3)
    chex.assert_axis_dimension(b, 1, spec.n_agents)
    chex.assert_axis_dimension(b, 2, spec.n_items)
    h = trunk(params, b.reshape(b.shape[0], spec.n_agents * spec.n_items), spec)
    s, q = heads(params, h, spec)
    a = allocate(s, spec)
    p = pay(q, a, b, spec)
    return (a[0], p[0]) if single else (a, p)
