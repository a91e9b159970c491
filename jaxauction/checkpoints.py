"""Checkpoints: atomic save/load of a mechanism, and the loader for the paper's reference networks.

A checkpoint of ours is a directory holding

* ``mechanism.npz``: the parameter pytree flattened to ``{"trunk/0/w": array, ...}``;
* ``mechanism.json``: ``{"spec": MechanismSpec.to_dict(), "prior": {...}, "meta": {...}}``.

Both are written to a temporary name and renamed, so a kill never leaves a half-written file.
A reference network is a ``NAME.npz`` (PyTorch state_dict) beside ``NAME.json`` (see
``../shared/reference/README.md``); so is a published RegretNet network of optimaler (separate
tanh towers, ``../shared/optimaler/README.md``, :func:`load_optimaler`; its JSON has
``"alloc_layers"``). :func:`load_mechanism` accepts any of them and returns the same
``(params, spec, info)``.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxauction import ama, priors
from jaxauction.mechanism import MechanismSpec, Params, check_params

MECH_NPZ = "mechanism.npz"
MECH_JSON = "mechanism.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not match what the caller expects."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode())


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write_bytes(Path(path), buf.getvalue())


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """Pytree -> ``{"a/0/b": ndarray}`` with '/'-joined dict keys and sequence indices."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(str(p.key) if hasattr(p, "key") else str(getattr(p, "idx", getattr(p, "name", p)))
                       for p in path)
        out[key] = np.asarray(leaf)
    return out


def unflatten_like(template: Any, arrays: dict[str, np.ndarray], what: str = "checkpoint") -> Any:
    """Inverse of :func:`flatten_tree` given a template pytree of the same structure."""
    want = flatten_tree(template)
    missing, extra = set(want) - set(arrays), set(arrays) - set(want)
    if missing or extra:
        raise CheckpointError(f"{what}: structure mismatch; missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    leaves, treedef = jax.tree_util.tree_flatten(template)
    keys = list(want)
    new = []
    for k, leaf in zip(keys, leaves):
        arr = arrays[k]
        if arr.shape != np.shape(leaf):
            raise CheckpointError(f"{what}: {k} has shape {arr.shape}, expected {np.shape(leaf)}")
        new.append(arr.astype(np.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, new)


def params_from_flat(arrays: dict[str, np.ndarray]) -> Params:
    """Rebuild the mechanism pytree from ``flatten_tree`` output (a shared trunk ``trunk/L/w``, or
    separate towers ``alloc_tower/L/w`` and ``pay_tower/L/w``)."""
    towers = ("alloc_tower", "pay_tower") if any(k.startswith("alloc_tower/") for k in arrays) else ("trunk",)

    def layers(name):
        n_layers = len({k.split("/")[1] for k in arrays if k.startswith(f"{name}/")})
        return [{"w": arrays[f"{name}/{l}/w"], "b": arrays[f"{name}/{l}/b"]} for l in range(n_layers)]

    try:
        return {**{t: layers(t) for t in towers},
                "alloc": {"w": arrays["alloc/w"], "b": arrays["alloc/b"]},
                "pay": {"w": arrays["pay/w"], "b": arrays["pay/b"]}}
    except KeyError as e:
        raise CheckpointError(f"mechanism weights lack array {e}") from None


def save_mechanism(directory: str | Path, params: Params, spec: MechanismSpec, prior: dict | None = None,
                   meta: dict | None = None) -> Path:
    """Atomically write ``mechanism.npz`` + ``mechanism.json`` into ``directory``."""
    from jaxauction import versions  # local import: avoid a cycle at package import

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    check_params(params, spec)
    atomic_savez(d / MECH_NPZ, flatten_tree(params))
    doc = {"format": "jaxauction-mechanism-v1", "spec": spec.to_dict(), "prior": prior or {"name": "uniform", "low": 0.0, "high": 1.0},
           "meta": {**versions(), **(meta or {})}}
    atomic_write_text(d / MECH_JSON, json.dumps(doc, indent=1))
    return d


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"cannot read weights file {path}: {e}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


REFERENCE_PAYMENTS = {"frac_sigmoid_linear": "fractional", "full_linear": "free"}


def _published(params, spec: MechanismSpec, npz_path: Path, doc: dict, kind: str):
    """A published net's float32 pytree, checked against its spec; info with the U[0, 1] prior."""
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    try:
        check_params(params, spec)
    except ValueError as e:
        raise CheckpointError(f"{npz_path}: {e}") from None
    prior = {"name": "uniform", "low": 0.0, "high": 1.0}
    return params, spec, {"kind": kind, "name": npz_path.stem, "prior": prior, "json": doc}


def load_reference(npz_path: str | Path) -> tuple[Params, MechanismSpec, dict]:
    """Load one of the paper's networks (``NAME.npz`` + ``NAME.json``) into our pytree.

    PyTorch ``Linear.weight`` is (out, in); ours is (in, out), so every weight is transposed. The
    trunk is ``nn_model.{0,2,4,...}``; the allocation and payment heads map to ``alloc``/``pay``.
    Returns ``(params, spec, info)`` where ``info["json"]`` is the whole JSON document.
    """
    npz_path = Path(npz_path)
    if not npz_path.exists():
        raise CheckpointError(f"reference network {npz_path} does not exist")
    doc = _read_json(npz_path.with_suffix(".json"))
    arch = doc.get("arch") or {}
    try:
        n, m, width = int(arch["n_agents"]), int(arch["n_items"]), int(arch["hidden_layer_size"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{npz_path.with_suffix('.json')}: arch lacks n_agents/n_items/hidden_layer_size") from None
    n_layers = int(arch.get("n_hidden_layers", 2)) + 1
    if arch.get("a_activation", "sparsemax") not in ("sparsemax", "softmax"):
        raise CheckpointError(f"unsupported reference allocation {arch.get('a_activation')!r}")
    if arch.get("p_activation") not in REFERENCE_PAYMENTS:
        raise CheckpointError(f"unsupported reference payment {arch.get('p_activation')!r}; "
                              f"supported: {sorted(REFERENCE_PAYMENTS)}")
    if arch.get("activation", "relu") != "relu" or arch.get("separate", False):
        raise CheckpointError("only shared ReLU trunks are supported (activation=relu, separate=false)")
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=(width,) * n_layers, allocation=arch.get("a_activation", "sparsemax"),
                         payment=REFERENCE_PAYMENTS[arch["p_activation"]], payment_max=float(m))
    sd = _read_npz(npz_path)
    try:
        params = {
            "trunk": [{"w": sd[f"nn_model.{2 * l}.weight"].T.copy(), "b": sd[f"nn_model.{2 * l}.bias"]}
                      for l in range(n_layers)],
            "alloc": {"w": sd["allocation_head.0.weight"].T.copy(), "b": sd["allocation_head.0.bias"]},
            "pay": {"w": sd["payment_head.0.weight"].T.copy(), "b": sd["payment_head.0.bias"]},
        }
    except KeyError as e:
        raise CheckpointError(f"{npz_path}: missing state_dict entry {e}") from None
    extra = [k for k in sd if k.startswith("nn_model.") and int(k.split(".")[1]) >= 2 * n_layers]
    if extra:
        raise CheckpointError(f"{npz_path}: has trunk layers {extra} beyond arch.n_hidden_layers")
    return _published(params, spec, npz_path, doc, "reference")


def load_optimaler(npz_path: str | Path) -> tuple[Params, MechanismSpec, dict]:
    """Load a published RegretNet network of optimaler (``NAME.npz`` + ``NAME.json``, see
    ``../shared/optimaler/README.md``) into our pytree.

    ``alloc_layers.{0..L-1}`` and ``pay_layers.{0..L-1}`` are PyTorch Linear layers (weight (out,
    in), transposed here), tanh after every one but the last: two separate towers of ``L - 1``
    hidden layers of width ``hidden`` (``alloc_tower``/``pay_tower``) and the heads ``alloc``/``pay``.
    Allocation logits are row-major (N+1, M), softmax over the agents and a dummy last row; the
    payment is ``sigmoid(q_i) * sum_j a_ij b_ij``: our spec ``activation="tanh"``,
    ``towers="separate"``, ``allocation="softmax"``, ``payment="fractional_sigmoid"``.
    Returns ``(params, spec, info)`` with ``info["json"]`` the whole JSON document.
    """
    npz_path = Path(npz_path)
    if not npz_path.exists():
        raise CheckpointError(f"optimaler network {npz_path} does not exist")
    doc = _read_json(npz_path.with_suffix(".json"))
    try:
        n, m, width = int(doc["n_agents"]), int(doc["n_items"]), int(doc["hidden"])
        n_alloc, n_pay = int(doc["alloc_layers"]), int(doc["pay_layers"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{npz_path.with_suffix('.json')}: lacks n_agents/n_items/hidden/alloc_layers/"
                              f"pay_layers") from None
    if n_alloc != n_pay or n_alloc < 2:
        raise CheckpointError(f"{npz_path}: needs alloc_layers == pay_layers >= 2, got {n_alloc} and {n_pay}")
    if doc.get("activation", "tanh") != "tanh":
        raise CheckpointError(f"{npz_path}: unsupported activation {doc.get('activation')!r} (optimaler nets are tanh)")
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=(width,) * (n_alloc - 1), allocation="softmax",
                         payment="fractional_sigmoid", payment_max=float(m), activation="tanh", towers="separate")
    sd = _read_npz(npz_path)
    lin = lambda name, l: {"w": sd[f"{name}.{l}.weight"].T.copy(), "b": sd[f"{name}.{l}.bias"]}
    try:
        params = {"alloc_tower": [lin("alloc_layers", l) for l in range(n_alloc - 1)],
                  "pay_tower": [lin("pay_layers", l) for l in range(n_pay - 1)],
                  "alloc": lin("alloc_layers", n_alloc - 1), "pay": lin("pay_layers", n_pay - 1)}
    except KeyError as e:
        raise CheckpointError(f"{npz_path}: missing state_dict entry {e}") from None
    used = {f"{t}.{l}.{x}" for t, k in (("alloc_layers", n_alloc), ("pay_layers", n_pay))
            for l in range(k) for x in ("weight", "bias")}
    if set(sd) - used:
        raise CheckpointError(f"{npz_path}: unexpected entries {sorted(set(sd) - used)[:5]} beyond the JSON's layers")
    return _published(params, spec, npz_path, doc, "optimaler")


def load_mechanism(path: str | Path) -> tuple[Params, MechanismSpec, dict]:
    """Load a mechanism from a run directory, a checkpoint directory, a reference ``.npz`` or an
    optimaler ``.npz`` (its JSON has ``"alloc_layers"``).

    Returns ``(params, spec, info)``; ``info["prior"]`` describes the valuation prior.
    Raises :class:`CheckpointError` with the reason when anything is missing or inconsistent.
    """
    p = Path(path)
    if p.suffix == ".npz" and p.with_suffix(".json").exists() and not (p.parent / MECH_JSON).exists():
        if "alloc_layers" in _read_json(p.with_suffix(".json")):
            return load_optimaler(p)
        return load_reference(p)
    if p.is_file() and p.name in (MECH_NPZ, MECH_JSON):
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    # A run directory keeps its best/last mechanism under checkpoint/.
    for cand in (p, p / "checkpoint", p / "final"):
        if (cand / MECH_JSON).exists():
            p = cand
            break
    else:
        if ama.is_ama(p):
            raise CheckpointError(f"{path} is an affine maximizer auction (jaxauction.ama), not a network: it is "
                                  "strategyproof by construction (regret 0 at every profile), so there is nothing to "
                                  "certify; evaluate it with python -m jaxauction.evaluate --ckpt " + str(path))
        raise CheckpointError(f"{path}: no {MECH_JSON} found (expected a run directory, a checkpoint "
                              f"directory, or a reference NAME.npz with NAME.json beside it)")
    doc = _read_json(p / MECH_JSON)
    try:
        spec = MechanismSpec.from_dict(doc["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p / MECH_JSON}: bad spec: {e}") from None
    params = params_from_flat(_read_npz(p / MECH_NPZ))
    try:
        check_params(params, spec)
    except ValueError as e:
        raise CheckpointError(f"{p}: {e}") from None
    return params, spec, {"kind": "jaxauction", "name": p.name, "prior": doc.get("prior"), "json": doc, "dir": str(p)}


def load_with_prior(path: str | Path) -> tuple[Params, MechanismSpec, dict, priors.UniformPrior]:
    """:func:`load_mechanism` plus the valuation prior the mechanism is for
    (``priors.from_dict(info["prior"])``; its box is also the bid support)."""
    params, spec, info = load_mechanism(path)
    return params, spec, info, priors.from_dict(info.get("prior"), spec.n_agents, spec.n_items)
