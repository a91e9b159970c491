"""A recorded MIP: variables, linear rows, SOS1 pairs and bilinear equalities as numpy arrays.

A model is built from numpy arrays: variables are integer *columns*; a block of linear rows is a
list of ``(coef (R, K), cols (K,))`` terms meaning ``sum_t coef_t @ x[cols_t]``. Every variable
and constraint gets a readable name (``"h[2,17]"``, ``"relu_up[2,17]"``) so that ``write("m.lp")``
gives a file one can read.

Building only records numpy arrays (:class:`Model`); a solver model is created in bulk on the first
``solve``/``write`` (:mod:`certify.mip.backends`). So the size of a model is known before a solver
is chosen (:mod:`certify.mip.licensing`), and :meth:`Model.to` moves a built model to another
solver without rebuilding it. :meth:`Model.violation` checks an assignment against the recorded
rows (used to tell a genuinely infeasible box from an unsound encoding).

Tolerances (:data:`TOLERANCES`, both solvers): optimality gap ``1e-6`` absolute and relative (the
paper's Gurobi run used the default 1e-4 relative; our certificates report the remaining gap
explicitly), primal feasibility ``1e-8``, Gurobi integrality ``1e-9`` (SCIP checks integrality
with its feasibility tolerance). Tight integrality matters: with big-M rows, a "binary" at 1e-5
lets a ReLU output drift by ``1e-5 * M``; the certificate's ``mip_network_error`` measures what is
left.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

TOLERANCES = {"gap_abs": 1e-6, "gap_rel": 1e-6, "feas": 1e-8, "int_feas": 1e-9, "opt": 1e-9}
# An incumbent's MIP objective and its float64 replay may differ by the feasibility tolerance
# times the big-M coefficients; ~1e-7 on our nets (``mip_network_error``).
REPLAY_TOL = 1e-6


def gap_tolerance(bound: float) -> float:
    """The stated gap tolerance of a MIP certificate whose bound is ``bound``: the solvers' absolute
    and relative gaps (the cutoff boxes use ``incumbent + gap_abs``) plus :data:`REPLAY_TOL`."""
    return TOLERANCES["gap_abs"] + TOLERANCES["gap_rel"] * abs(bound) + REPLAY_TOL


@dataclasses.dataclass
class SolveResult:
    """What a solve returned.

    Attributes:
      status: "optimal" | "cutoff" (proved nothing beats the cutoff) | "time_limit" | "infeasible"
        | "interrupted" | "error" | ...
      objective: objective of the incumbent (None without one).
      bound: proven dual bound (None if the solver has none, e.g. on error); with status
        "cutoff" it is the cutoff value.
      values: all column values at the incumbent (None without one).
      nodes: branch-and-bound nodes explored.
      time_s: solver wall time.
      message: solver-specific detail.
    """

    status: str
    objective: float | None
    bound: float | None
    values: np.ndarray | None
    nodes: int | None
    time_s: float
    message: str = ""


def _label(name: str, idx) -> str:
    if idx is None:
        return name
    if isinstance(idx, (tuple, list)):
        return f"{name}[{','.join(str(int(i)) for i in idx)}]"
    return f"{name}[{int(idx)}]"


def _labels(name: str, index, count: int) -> list[str]:
    if index is None:
        out = [f"{name}[{i}]" for i in range(count)]
    else:
        index = list(index)
        if index and isinstance(index[0], tuple) and len(index[0]) == 2:
            out = [f"{name}[{a},{b}]" for a, b in index]
        else:
            out = [_label(name, i) for i in index]
    if len(out) != count:
        raise ValueError(f"{name}: {len(out)} labels for {count} rows/variables")
    return out


class Model:
    """A recorded MIP (maximization). Subclasses load it into a solver and solve it."""

    name = "model"

    def __init__(self):
        self.names: list[str] = []
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._bin: list[np.ndarray] = []
        self.n_vars = self.n_binaries = self.n_linear = self.n_quadratic = self.n_sos = 0
        self.lin_rows: list[np.ndarray] = []
        self.lin_cols: list[np.ndarray] = []
        self.lin_vals: list[np.ndarray] = []
        self.lin_sense: list[np.ndarray] = []
        self.lin_rhs: list[np.ndarray] = []
        self.lin_names: list[str] = []
        self.sos: list[tuple] = []        # (label, u, v)
        self.bilinear: list[tuple] = []   # (label, out, x, y)
        self.objective = (np.zeros(0, np.int64), np.zeros(0), 0.0)
        self.start: np.ndarray | None = None
        self._loaded = False

    # --- building -------------------------------------------------------------------------
    def add_vars(self, name: str, lb, ub, *, binary: bool = False, index=None) -> np.ndarray:
        """Add ``len(lb)`` variables; returns their columns. ``index`` labels them (default 0..K-1)."""
        self._check_open()
        lb = np.atleast_1d(np.asarray(lb, np.float64))
        ub = np.atleast_1d(np.asarray(ub, np.float64)) * np.ones_like(lb)
        if np.any(lb > ub):
            bad = int(np.argmax(lb > ub))
            raise ValueError(f"variable {name}: lower bound {lb[bad]} > upper bound {ub[bad]} at {bad}")
        k = len(lb)
        self.names += _labels(name, index, k)
        cols = np.arange(self.n_vars, self.n_vars + k)
        self._lb.append(lb)
        self._ub.append(ub)
        self._bin.append(np.full(k, bool(binary)))
        self.n_vars += k
        self.n_binaries += k if binary else 0
        return cols

    def add_linear(self, name: str, terms: Sequence[tuple], sense: str, rhs, *, index=None) -> None:
        """Rows ``sum_t coef_t @ x[cols_t]  (sense)  rhs`` with sense in ``<``, ``>``, ``=``."""
        self._check_open()
        if sense not in ("<", ">", "="):
            raise ValueError(f"sense must be '<', '>' or '=', got {sense!r}")
        rhs = np.atleast_1d(np.asarray(rhs, np.float64))
        r = len(rhs)
        for coef, cols in terms:
            coef = np.asarray(coef, np.float64).reshape(r, -1)
            cols = np.asarray(cols, np.int64).reshape(-1)
            if coef.shape[1] != len(cols):
                raise ValueError(f"{name}: coefficient block {coef.shape} does not match {len(cols)} columns")
            if len(cols) and (cols.min() < 0 or cols.max() >= self.n_vars):
                raise ValueError(f"{name}: column index out of range")
            ri, ci = np.nonzero(coef)
            self.lin_rows.append(ri + self.n_linear)
            self.lin_cols.append(cols[ci])
            self.lin_vals.append(coef[ri, ci])
        self.lin_sense.append(np.full(r, sense))
        self.lin_rhs.append(rhs)
        self.lin_names += _labels(name, index, r)
        self.n_linear += r

    def add_sos1(self, name: str, pairs, *, index=None) -> None:
        """SOS1 on each row of ``pairs`` (K, 2): at most one of the two columns is nonzero."""
        self._check_open()
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        for lab, (u, v) in zip(_labels(name, index, len(pairs)), pairs):
            self.sos.append((lab, int(u), int(v)))
        self.n_sos += len(pairs)

    def add_bilinear_eq(self, name: str, out, x, y, *, index=None) -> None:
        """``x[out] == x[x] * x[y]`` elementwise (nonconvex quadratic equalities)."""
        self._check_open()
        out, x, y = (np.atleast_1d(np.asarray(c, np.int64)) for c in (out, x, y))
        for lab, o, a, b in zip(_labels(name, index, len(out)), out, x, y):
            self.bilinear.append((lab, int(o), int(a), int(b)))
        self.n_quadratic += len(out)

    def set_objective(self, cols, coefs, constant: float = 0.0) -> None:
        """Maximize ``coefs @ x[cols] + constant`` (duplicate columns are summed)."""
        cols = np.asarray(cols, np.int64)
        u, inv = np.unique(cols, return_inverse=True)
        c = np.zeros(len(u))
        np.add.at(c, inv, np.asarray(coefs, np.float64))
        self.objective = (u, c, float(constant))

    def set_start(self, values: np.ndarray) -> None:
        """A complete MIP start (a value for every column)."""
        values = np.asarray(values, np.float64)
        if values.shape != (self.n_vars,):
            raise ValueError(f"MIP start needs {self.n_vars} values, got {values.shape}")
        self.start = values

    # --- inspection -----------------------------------------------------------------------
    def bounds(self, cols) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the given columns."""
        lb, ub = np.concatenate(self._lb), np.concatenate(self._ub)
        return lb[np.asarray(cols)], ub[np.asarray(cols)]

    def size(self) -> dict:
        return {"vars": self.n_vars, "binaries": self.n_binaries, "linear": self.n_linear,
                "quadratic": self.n_quadratic, "sos1": self.n_sos}

    def matrix(self):
        """All linear rows as ``(csr (R, n_vars), sense (R,), rhs (R,))``; duplicates summed (built
        once per model size: rows recorded later rebuild it)."""
        import scipy.sparse as sp

        key = (self.n_linear, self.n_vars)
        cached = getattr(self, "_matrix", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)
        a = sp.csr_matrix((cat(self.lin_vals, np.float64), (cat(self.lin_rows, np.int64), cat(self.lin_cols, np.int64))),
                          shape=(self.n_linear, self.n_vars))
        a.sum_duplicates()
        out = (a, cat(self.lin_sense, "<U1"), cat(self.lin_rhs, np.float64))
        self._matrix = (key, out)
        return out

    def violation(self, values) -> float:
        """Largest violation of any recorded linear row, variable bound or bilinear equality by the
        assignments ``values`` ((n_vars,) or (K, n_vars)), relative to the row's magnitude
        ``1 + sum |a_k x_k| + |rhs|``."""
        x = np.atleast_2d(np.asarray(values, np.float64)).T          # (n_vars, K)
        a, sense, rhs = self.matrix()
        ax = a @ x
        scale = 1.0 + abs(a) @ np.abs(x) + np.abs(rhs)[:, None]
        r = rhs[:, None]
        r = np.where((sense == "<")[:, None], ax - r, np.where((sense == ">")[:, None], r - ax, np.abs(ax - r)))
        worst = float(np.max(np.maximum(r, 0.0) / scale)) if r.size else 0.0
        if self.n_vars:
            lb, ub = np.concatenate(self._lb)[:, None], np.concatenate(self._ub)[:, None]
            out = np.maximum(lb - x, 0.0) + np.maximum(x - ub, 0.0)
            worst = max(worst, float(np.max(out / (1.0 + np.abs(x)))))
        for _, o, p, q in self.bilinear:
            worst = max(worst, float(np.max(np.abs(x[o] - x[p] * x[q]) / (1.0 + np.abs(x[o]) + np.abs(x[p] * x[q])))))
        return worst

    def to(self, cls: type) -> "Model":
        """The same recorded model on another backend class (shares the recorded arrays)."""
        new = cls()
        skip = {"_loaded", "_solver", "_vars", "_x", "_matrix"}
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k not in skip})
        return new

    def _check_open(self):
        if self._loaded:
            raise RuntimeError("the model was already loaded into the solver; build a new one")

    # --- solving --------------------------------------------------------------------------
    def solve(self, *, time_limit: float | None = None, threads: int = 1, cutoff: float | None = None,
              node_limit: int | None = None, params: dict | None = None) -> SolveResult:
        """Solve (maximize). ``cutoff``: only solutions better than it are of interest.

        ``node_limit``: stop after this many branch-and-bound nodes (status "node_limit").
        ``params``: solver parameters (native names) overriding :data:`SOLVER_PARAMS`.
        """
        raise TypeError(f"{type(self).__name__} only records a model; move it to a solver with .to(...)")

    def write(self, path: str) -> None:
        """Write the model (``.lp``, ``.mps``, ... by extension)."""
        raise TypeError(f"{type(self).__name__} only records a model; move it to a solver with .to(...)")
