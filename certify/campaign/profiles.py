"""The profiles of a campaign: sampled from the prior, or read from a file and validated; agents.

Sampled profiles are deterministic in the seed and prefix-stable: profile p uses the key
``fold_in(PRNGKey(seed), p)``, so the first K profiles of a P-point run are those of a K-point run.
A profiles file is a JSON list of N x M matrices, checked for shape, finiteness and the prior's
support.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from certify.campaign.errors import ProfileError, RunError
from jaxauction import priors

SUPPORT_TOL = 1e-6
SAMPLE_BLOCK = 256


def sample_profiles(prior: priors.UniformPrior, seed: int, points: int) -> np.ndarray:
    """(P, N, M) float64 profiles; profile p drawn with ``fold_in(PRNGKey(seed), p)`` (prefix-stable).

    Profiles are drawn in jitted blocks of :data:`SAMPLE_BLOCK` indices (one compilation per prior),
    each depending only on its own index, so any P gives the same first profiles.
    """
    if points < 0:
        raise RunError(f"points must be non-negative, got {points}")
    blocks = [np.asarray(_sample_block(prior, int(seed), start))
              for start in range(0, points, SAMPLE_BLOCK)]
    if not blocks:
        return np.zeros((0, prior.n_agents, prior.n_items))
    return np.concatenate(blocks)[:points].astype(np.float32).astype(np.float64)


@functools.lru_cache(maxsize=None)
def _sampler(prior: priors.UniformPrior):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def block(base, start):
        idx = start + jnp.arange(SAMPLE_BLOCK, dtype=jnp.uint32)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
        return jax.vmap(lambda k: prior.sample(k, 1)[0])(keys)

    return block


def _sample_block(prior, seed: int, start: int):
    import jax
    import jax.numpy as jnp

    return _sampler(prior)(jax.random.PRNGKey(seed), jnp.uint32(start))


def validate_profiles(profiles: Any, n_agents: int, n_items: int, low: np.ndarray, high: np.ndarray,
                      what: str = "profiles") -> np.ndarray:
    """Check a list/array of N x M profiles; return it as a (P, N, M) float64 array.

    Raises:
      ProfileError: naming the first offending profile index (wrong shape, non-numeric, NaN/inf,
        or a value outside ``[low, high]``).
    """
    if isinstance(profiles, np.ndarray):
        items = list(profiles) if profiles.ndim >= 1 else [profiles]
    elif isinstance(profiles, (list, tuple)):
        items = list(profiles)
    else:
        raise ProfileError(f"{what}: expected a list of {n_agents}x{n_items} matrices, got {type(profiles).__name__}")
    if not items:
        raise ProfileError(f"{what}: no profiles given")
    out = np.empty((len(items), n_agents, n_items))
    for k, item in enumerate(items):
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProfileError(f"{what}: profile {k} is not a numeric {n_agents}x{n_items} matrix") from None
        if arr.shape != (n_agents, n_items):
            raise ProfileError(f"{what}: profile {k} has shape {arr.shape}, the mechanism needs "
                               f"({n_agents}, {n_items}) (agents x items)")
        if not np.all(np.isfinite(arr)):
            raise ProfileError(f"{what}: profile {k} contains NaN or inf")
        bad = (arr < low - SUPPORT_TOL) | (arr > high + SUPPORT_TOL)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ProfileError(f"{what}: profile {k} value {arr[i, j]:g} for agent {i}, item {j} is outside "
                               f"the prior's support [{low[i, j]:g}, {high[i, j]:g}]")
        out[k] = np.clip(arr, low, high)
    return out


def read_profiles_file(path: str | Path, n_agents: int, n_items: int, low: np.ndarray,
                       high: np.ndarray) -> np.ndarray:
    """Read and validate ``FILE.json`` holding a list of N x M valuation matrices."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"profiles file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"profiles file {path} is not readable JSON: {e}") from None
    return validate_profiles(doc, n_agents, n_items, low, high, what=f"profiles file {path}")


def resolve_profiles(profiles: Any, prior, spec, seed: int, points: int, low, high) -> tuple[np.ndarray, dict]:
    """A run's ``(P, N, M)`` profiles and their manifest entry (``kind``: prior, file or array).

    ``profiles``: None (sample ``points`` from the prior with ``seed``), a (P, N, M) array, or the
    path of a JSON list of N x M matrices.
    """
    if profiles is None:
        return sample_profiles(prior, seed, points), {"kind": "prior", "seed": int(seed)}
    if isinstance(profiles, (str, Path)):
        prof = read_profiles_file(profiles, spec.n_agents, spec.n_items, low, high)
        return prof, {"kind": "file", "path": str(Path(profiles).resolve()), "sha256": array_sha256(prof)}
    prof = validate_profiles(profiles, spec.n_agents, spec.n_items, low, high, what="profiles array")
    return prof, {"kind": "array", "sha256": array_sha256(prof)}


def array_sha256(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(arr, np.float64))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def parse_agents(agents: str | int | Iterable[int], n_agents: int) -> list[int]:
    """``"all"``, ``"0,1"``, an int or a list of ints -> sorted unique agent indices (range-checked)."""
    if isinstance(agents, str):
        if agents.strip().lower() == "all":
            return list(range(n_agents))
        try:
            agents = [int(a) for a in agents.split(",") if a.strip()]
        except ValueError:
            raise RunError(f"agents must be 'all' or comma-separated indices, got {agents!r}") from None
    elif isinstance(agents, (int, np.integer)):
        agents = [int(agents)]
    agents = sorted({int(a) for a in agents})
    if not agents:
        raise RunError("no agents given")
    bad = [a for a in agents if not 0 <= a < n_agents]
    if bad:
        raise RunError(f"agent index {bad[0]} out of range: the mechanism has {n_agents} agent(s) "
                       f"(valid: 0..{n_agents - 1})")
    return agents
