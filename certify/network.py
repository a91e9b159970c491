"""The ONE float64 twin of :func:`jaxauction.mechanism.apply`, which every certifier evaluates.

Every part of ``certify/`` that evaluates the network (the MIP's replay and start values, the
planar vertices, the pruning bounds, the tests' dense searches) goes through the functions here,
and the head constants come from :mod:`jaxauction.mechanism`, so a change of the forward pass
cannot make a certificate speak about another function. ``tests/test_network.py`` compares the
twin with ``mechanism.apply`` for every allocation x payment combination.

What a certificate is about (the *semantics*; :class:`certify.certificate.Certificate`):

* ``u_R``: the exact real-arithmetic function of the stored weights (float32 numbers read as
  reals). The MIP encodes ``u_R`` exactly (its coefficients are those weights in float64), and
  the float64 twin here differs from it by at most :func:`rounding_margin` with
  ``precision="float64"`` (about 1e-13 on our nets).
* ``u_32``: what ``mechanism.apply`` computes in float32 (allocations and payments), combined
  with the true values exactly: ``u_32(b) = sum_j a32_ij(b) v_ij - p32_i(b)``.
  :func:`rounding_margin` bounds ``|u_32 - u_R|`` over a box of bids, rigorously, under the
  assumptions stated there.

Both functions read the same params pytree (``mechanism.py`` documents it). The twin knows one
architecture, a shared trunk: :func:`weights64` turns separate towers into the shared trunk with
block-diagonal weights that computes exactly the same function (see there). The trunk
activation (``spec.activation``: relu or tanh) comes from the spec, never from the weights.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec, Params


class Weights(NamedTuple):
    """The mechanism's weights as float64 numpy arrays (``w`` is (fan_in, fan_out))."""

    trunk: tuple  # ((w, b), ...)
    alloc: tuple  # (w (H, (N+1)*M), b)
    pay: tuple    # (w (H, N), b)


def weights64(params: Params) -> Weights:
    """float64 copies of the pytree's arrays (exact: every float32 is a float64).

    A separate-tower pytree (keys ``alloc_tower``/``pay_tower``) becomes the equivalent shared
    trunk with block-diagonal weights: layer 1 ``[A_1 | P_1]`` (N*M, 2 H_1), layer l > 1
    ``blockdiag(A_l, P_l)`` (2 H_{l-1}, 2 H_l), biases ``[d_l, e_l]``, so the trunk features are
    ``[g_l, k_l]``; the allocation head ``[W_a; 0]`` reads only ``g_L`` and the payment head
    ``[0; W_p]`` only ``k_L``. This is exact, in real arithmetic and in floating point: every added
    term is a product with an exact zero (``0 * x = 0``, ``t + 0 = t``), and the activation acts
    per neuron, so ``act`` of the merged layer is the two towers' activations side by side.
    """
    f = lambda a: np.asarray(a, np.float64)
    if "alloc_tower" not in params:
        return Weights(tuple((f(l["w"]), f(l["b"])) for l in params["trunk"]),
                       (f(params["alloc"]["w"]), f(params["alloc"]["b"])),
                       (f(params["pay"]["w"]), f(params["pay"]["b"])))
    trunk = []
    for k, (la, lp) in enumerate(zip(params["alloc_tower"], params["pay_tower"])):
        wa, wp = f(la["w"]), f(lp["w"])
        if k == 0:
            w = np.concatenate([wa, wp], axis=1)
        else:
            w = np.zeros((wa.shape[0] + wp.shape[0], wa.shape[1] + wp.shape[1]))
            w[: wa.shape[0], : wa.shape[1]] = wa
            w[wa.shape[0]:, wa.shape[1]:] = wp
        trunk.append((w, np.concatenate([f(la["b"]), f(lp["b"])])))
    wa, wp = f(params["alloc"]["w"]), f(params["pay"]["w"])
    h_a, h_p = wa.shape[0], wp.shape[0]
    alloc_w = np.concatenate([wa, np.zeros((h_p, wa.shape[1]))], axis=0)
    pay_w = np.concatenate([np.zeros((h_a, wp.shape[1])), wp], axis=0)
    return Weights(tuple(trunk), (alloc_w, f(params["alloc"]["b"])), (pay_w, f(params["pay"]["b"])))


def digest(params: Params) -> str:
    """sha256 of the weights (leaf names, shapes, float32 bytes): the one weights digest, used by
    run manifests (``weights_sha256``) and caches."""
    from jaxauction import checkpoints

    h = hashlib.sha256()
    for k, v in sorted(checkpoints.flatten_tree(params).items()):
        a = np.ascontiguousarray(np.asarray(v, np.float32))
        h.update(k.encode() + repr(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def cache_key(w: Weights, spec: MechanismSpec, *arrays, tag: str = "") -> bytes:
    """A short digest of float64 weights, the spec and further arrays (shapes included): the key
    of the certifiers' memos (planar regions, a box's rounding errors)."""
    h = hashlib.sha1(f"{spec}|{tag}".encode())
    for a in (*(x for layer in w.trunk for x in layer), *w.alloc, *w.pay, *arrays):
        a = np.ascontiguousarray(a, np.float64)
        h.update(repr(a.shape).encode() + a.tobytes())
    return h.digest()


# ------------------------------------------------------------------------------------------------
# the pieces, in float64
# ------------------------------------------------------------------------------------------------
def sparsemax64(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparsemax over axis -2 of ``s`` (..., R, M) in float64; returns ``(a, tau)``, tau (..., M).

    ``tau = max_k (sum_{r<=k} z_r - 1) / k`` over the decreasingly sorted ``z`` (as
    :func:`jaxauction.mechanism.sparsemax`), ``a = max(s - tau, 0)``.
    """
    s = np.asarray(s, np.float64)
    z = -np.sort(-s, axis=-2)
    k = np.arange(1, s.shape[-2] + 1)[:, None]
    tau = np.max((np.cumsum(z, axis=-2) - 1.0) / k, axis=-2)
    return np.maximum(s - tau[..., None, :], 0.0), tau


def softmax64(s: np.ndarray) -> np.ndarray:
    """Softmax over axis -2 (the agents plus the dummy) in float64."""
    s = np.asarray(s, np.float64)
    e = np.exp(s - s.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


def hard_sigmoid64(q):
    return np.clip(np.asarray(q, np.float64) / mechanism.HARD_SIGMOID_DIVISOR + mechanism.HARD_SIGMOID_OFFSET, 0.0, 1.0)


def sigmoid64(q):
    q = np.asarray(q, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * q))


def activation64(name: str, z):
    """The trunk activation in float64: ``relu`` (``maximum(z, 0)``) or ``tanh``."""
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    raise ValueError(f"activation must be one of {mechanism.ACTIVATIONS}, got {name!r}")


def trunk64(w: Weights, x: np.ndarray, upto: int | None = None, activation: str = "relu") -> np.ndarray:
    """Trunk features of flattened bids ``x`` (..., N*M) after ``upto`` layers (default all);
    ``activation`` is ``spec.activation``."""
    h = np.asarray(x, np.float64)
    for wk, ck in w.trunk[:upto]:
        h = activation64(activation, h @ wk + ck)
    return h


def preactivations64(w: Weights, spec: MechanismSpec, bids: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """Every trunk pre-activation ``z_k`` (..., H_k) and the head logits ``s`` (..., N+1, M), ``q``
    (..., N) at bids (..., N, M): what bounds on a box must contain at each of its points."""
    bids = np.asarray(bids, np.float64)
    h = bids.reshape(bids.shape[:-2] + (-1,))
    zs = []
    for wk, ck in w.trunk:
        zs.append(h @ wk + ck)
        h = activation64(spec.activation, zs[-1])
    s, q = heads64(w, spec, h)
    return zs, s, q


def heads64(w: Weights, spec: MechanismSpec, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Allocation logits (..., N+1, M) and payment logits (..., N) from trunk features."""
    s = (h @ w.alloc[0] + w.alloc[1]).reshape(h.shape[:-1] + (spec.n_agents + 1, spec.n_items))
    return s, h @ w.pay[0] + w.pay[1]


def allocate64(s: np.ndarray, spec: MechanismSpec) -> np.ndarray:
    a = sparsemax64(s)[0] if spec.allocation == "sparsemax" else softmax64(s)
    return a[..., : spec.n_agents, :]


def pay64(q: np.ndarray, alloc: np.ndarray, bids: np.ndarray, spec: MechanismSpec) -> np.ndarray:
    if spec.payment == "free":
        return np.clip(q, 0.0, spec.payment_max)
    frac = hard_sigmoid64(q) if spec.payment == "fractional" else sigmoid64(q)
    return frac * np.sum(alloc * bids, axis=-1)


def forward64(w: Weights, spec: MechanismSpec, bids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 forward pass: bids (..., N, M) -> ``(alloc (..., N, M), pay (..., N))``."""
    bids = np.asarray(bids, np.float64)
    h = trunk64(w, bids.reshape(bids.shape[:-2] + (-1,)), activation=spec.activation)
    s, q = heads64(w, spec, h)
    a = allocate64(s, spec)
    return a, pay64(q, a, bids, spec)


def utility64(w: Weights, spec: MechanismSpec, bids: np.ndarray, vals: np.ndarray, agent: int):
    """Agent ``agent``'s true utility ``sum_j a_ij v_ij - p_i`` at bids (..., N, M) (float64)."""
    a, p = forward64(w, spec, bids)
    u = np.sum(a[..., agent, :] * np.asarray(vals, np.float64)[agent], axis=-1) - p[..., agent]
    return float(u) if np.ndim(u) == 0 else u


# ------------------------------------------------------------------------------------------------
# the float32 function users run
# ------------------------------------------------------------------------------------------------
_apply_jit = None


def apply32(params: Params, spec: MechanismSpec, bids) -> tuple[np.ndarray, np.ndarray]:
    """``mechanism.apply`` (jitted, float32) at bids (N, M) or (B, N, M), returned as float64 numpy."""
    global _apply_jit
    import jax
    import jax.numpy as jnp

    if _apply_jit is None:
        _apply_jit = jax.jit(mechanism.apply, static_argnums=2)
    a, p = _apply_jit(params, jnp.asarray(bids, jnp.float32), spec)
    return np.asarray(a, np.float64), np.asarray(p, np.float64)


def utility32(params: Params, spec: MechanismSpec, bids, vals, agent: int):
    """``u_32``: the float32 allocation and payment of ``mechanism.apply``, combined with the
    true values ``vals`` (N, M) in float64 (exact to ~1e-16 relative)."""
    a, p = apply32(params, spec, bids)
    u = np.sum(a[..., agent, :] * np.asarray(vals, np.float64)[agent], axis=-1) - p[..., agent]
    return float(u) if np.ndim(u) == 0 else u


def params_from(w: Weights, dtype=np.float32) -> dict:
    """The params pytree of float64 weights, as ``dtype`` (float32: the inverse of :func:`weights64`
    for float32 data of a shared trunk; for separate towers, the equivalent block-diagonal
    shared-trunk pytree, the same function; ``mechanism.apply`` reads the pytree's keys, so either
    spec serves; float64: what bab evaluates candidate bids with)."""
    f = lambda a: np.asarray(a, dtype)
    return {"trunk": [{"w": f(a), "b": f(b)} for a, b in w.trunk], "alloc": {"w": f(w.alloc[0]), "b": f(w.alloc[1])},
            "pay": {"w": f(w.pay[0]), "b": f(w.pay[1])}}
