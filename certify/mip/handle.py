"""The :class:`RegretMIP` handle on a built per-profile regret MIP (:func:`certify.mip.encoders.encode`
builds it; ``certify.mip.encoders`` re-exports it)."""
from __future__ import annotations

import dataclasses

import numpy as np

from certify.mip import model as mm
from certify.network import Weights, apply32, utility64
from jaxauction.mechanism import MechanismSpec


@dataclasses.dataclass
class RegretMIP:
    """Handle on a built model (gurobi-machinelearning style).

    Attributes:
      backend: the solver model (:class:`certify.backends.Model`).
      spec, agent, valuations (N, M), low, high (N, M): the problem.
      bid_cols: (M,) columns of agent ``agent``'s bids.
      n_unstable_relus: trunk neurons encoded with a binary.
    """

    backend: mm.Model
    spec: MechanismSpec
    weights: Weights
    agent: int
    valuations: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bid_cols: np.ndarray
    n_unstable_relus: int
    evaluators: list
    objective: tuple = ()
    params: object = None

    @property
    def n_binaries(self) -> int:
        return self.backend.n_binaries

    def profile(self, bids_i) -> np.ndarray:
        """Full (N, M) bid profile with agent's row replaced by ``bids_i``."""
        b = np.array(self.valuations, np.float64, copy=True)
        b[self.agent] = np.clip(np.asarray(bids_i, np.float64), self.low[self.agent], self.high[self.agent])
        return b

    def start_values(self, bids_i) -> np.ndarray:
        """A complete, feasible assignment of every column for agent bids ``bids_i``."""
        vals = np.zeros(self.backend.n_vars)
        vals[self.bid_cols] = self.profile(bids_i)[self.agent]
        for fn in self.evaluators:
            fn(vals)
        return vals

    def objective_value(self, vals) -> float:
        cols, coefs, const = self.objective
        return float(np.dot(coefs, vals[cols]) + const)

    def set_start(self, bids_i) -> None:
        self.backend.set_start(self.start_values(bids_i))

    def solve(self, **kw) -> mm.SolveResult:
        return self.backend.solve(**kw)

    def to(self, solver: str) -> "RegretMIP":
        """Move the (recorded, not yet solved) model to ``"gurobi"`` or ``"scip"``."""
        from certify.mip.backends import BACKENDS

        self.backend = self.backend.to(BACKENDS[solver])
        return self

    def misreport(self, result: mm.SolveResult) -> np.ndarray | None:
        """(N, M) bid profile at the incumbent, or None."""
        if result.values is None:
            return None
        return self.profile(result.values[self.bid_cols])

    def get_error(self, result: mm.SolveResult, reference: str = "jax") -> float | None:
        """``|MIP objective at the incumbent - forward-pass utility at its bids|``.

        ``reference="jax"``: the JAX forward pass ``mechanism.apply`` (float32, what training
        uses); ``"float64"``: the same network in float64 numpy (isolates the encoding's error).
        """
        b = self.misreport(result)
        if b is None or result.objective is None:
            return None
        if reference == "float64":
            u = utility64(self.weights, self.spec, b, self.valuations, self.agent)
        elif reference == "jax":
            a, p = apply32(self.params, self.spec, b)
            u = float(np.sum(a[self.agent] * self.valuations[self.agent]) - p[self.agent])
        else:
            raise ValueError(f"reference must be 'jax' or 'float64', got {reference!r}")
        return abs(result.objective - u)
