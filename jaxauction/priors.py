"""Valuation priors: independent uniform values on a per-(agent, item) box.

A prior is a small frozen value: ``low`` and ``high`` arrays of shape (N, M). ``sample(key, B)``
draws B additive valuation profiles ``v[b, i, j] ~ U[low[i, j], high[i, j]]`` independently.
``low``/``high`` are also the misreport support used by PGD and by certification, so a
non-uniform setting (e.g. the asymmetric 1x2 with v1 ~ U[4, 16], v2 ~ U[4, 7]) is one config line.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class UniformPrior:
    """Independent ``U[low[i, j], high[i, j]]`` values, stored as nested tuples (hashable)."""

    low: tuple
    high: tuple

    @property
    def n_agents(self) -> int:
        return len(self.low)

    @property
    def n_items(self) -> int:
        return len(self.low[0])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) as float32 arrays of shape (N, M): the valuation/bid support."""
        return np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)

    def sample(self, key: jax.Array, batch: int) -> jax.Array:
        """(batch, N, M) valuation profiles."""
        lo, hi = self.bounds()
        u = jax.random.uniform(key, (batch,) + lo.shape, jnp.float32)
        return lo + u * (hi - lo)

    def to_dict(self) -> dict:
        return {"name": "uniform", "low": [list(r) for r in self.low], "high": [list(r) for r in self.high]}


def uniform(n_agents: int, n_items: int, low: float = 0.0, high: float = 1.0) -> UniformPrior:
    """Every value i.i.d. ``U[low, high]``."""
    return UniformPrior(tuple((float(low),) * n_items for _ in range(n_agents)),
                        tuple((float(high),) * n_items for _ in range(n_agents)))


def per_item(n_agents: int, lows, highs) -> UniformPrior:
    """Item j's value ``U[lows[j], highs[j]]`` for every agent (e.g. the asymmetric 1x2 setting)."""
    if len(lows) != len(highs):
        raise ValueError("per_item prior: lows and highs must have one entry per item")
    return UniformPrior(tuple(tuple(float(x) for x in lows) for _ in range(n_agents)),
                        tuple(tuple(float(x) for x in highs) for _ in range(n_agents)))


def from_dict(d: dict | None, n_agents: int, n_items: int) -> UniformPrior:
    """Rebuild a prior saved by ``to_dict`` (``None`` or a scalar-bound dict means a uniform box)."""
    if d is None:
        return uniform(n_agents, n_items)
    if d.get("name", "uniform") != "uniform":
        raise ValueError(f"unknown prior {d.get('name')!r}")
    lo, hi = np.broadcast_to(np.asarray(d.get("low", 0.0), np.float64), (n_agents, n_items)), \
        np.broadcast_to(np.asarray(d.get("high", 1.0), np.float64), (n_agents, n_items))
    if np.any(hi <= lo):
        raise ValueError("prior: every high must exceed its low")
    return UniformPrior(tuple(tuple(map(float, r)) for r in lo), tuple(tuple(map(float, r)) for r in hi))
