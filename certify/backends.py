"""One small MIP interface with a Gurobi and a SCIP implementation.

A model is built from numpy arrays: variables are integer *columns*; a block of linear rows is a
list of ``(coef (R, K), cols (K,))`` terms meaning ``sum_t coef_t @ x[cols_t]``. Every variable
and constraint gets a readable name (``"h[2,17]"``, ``"relu_up[2,17]"``) so that ``write("m.lp")``
gives a file one can read.

Building only records numpy arrays (:class:`Model`); the solver model is created in bulk on the
first ``solve``/``write`` (one ``addMVar`` and one ``addMConstr`` for Gurobi). So the size of a
model is known before a solver is chosen, and :meth:`Model.to` moves a built model to another
solver without rebuilding it.

Tolerances (:data:`TOLERANCES`, both solvers): optimality gap ``1e-6`` absolute and relative (the
paper's Gurobi run used the default 1e-4 relative; our certificates report the remaining gap
explicitly), primal feasibility ``1e-8``, Gurobi integrality ``1e-9`` (SCIP checks integrality
with its feasibility tolerance). Tight integrality matters: with big-M rows, a "binary" at 1e-5
lets a ReLU output drift by ``1e-5 * M``; the certificate's ``mip_network_error`` measures what is
left.

Licensing: gurobipy's pip license is size-limited (at most 2000 variables and 2000 linear
constraints; with any quadratic term at most 200 variables). :func:`gurobi_size_limited` detects it
once per process by asking Gurobi to solve a 2001-variable LP (GurobiError 10010 "Model too large
for size-limited license"); :func:`choose_solver` with ``"auto"`` uses Gurobi when the model fits
or the license is a full one (a license file or WLS environment variables work with no code
change), and SCIP otherwise, with a one-line notice per reason. ``"gurobi"`` on a model the license
refuses raises :class:`LicenseLimitError` naming the limit and suggesting ``--solver scip``; the
same error is raised if Gurobi itself answers 10010 at solve time.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Sequence

import numpy as np

log = logging.getLogger("certify")

SOLVERS = ("auto", "gurobi", "scip")
TOLERANCES = {"gap_abs": 1e-6, "gap_rel": 1e-6, "feas": 1e-8, "int_feas": 1e-9, "opt": 1e-9}
# Solver parameters tuned on the reference networks (bench/certify_reference.py): the search
# supplies its own incumbent (cutoff / MIP start), so primal heuristics only cost time, and on these
# small leaf models cutting planes and (Gurobi) presolve cost more than they save. Measured per
# point: 1x2 fractional, Gurobi 1.16 -> 0.55 s, SCIP 9.1 -> 1.3 s (heuristics and cuts off);
# 2x2 distilled, Gurobi CPU 0.86 s (defaults) -> 0.46 s (no cuts/heuristics) -> 0.36 s (no presolve).
SOLVER_PARAMS = {"gurobi": {"Cuts": 0, "Heuristics": 0.0, "Presolve": 0},
                 "scip": {"heuristics": "off", "separating": "off"}}
GUROBI_SIZE_LIMIT = {"vars": 2000, "linear": 2000, "quadratic_vars": 200}
_GRB_SIZE_LIMIT_ERRNO = 10010
_warned: set = set()


class LicenseLimitError(RuntimeError):
    """Gurobi's license refused the model (size-limited pip license) or Gurobi is unusable."""


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
        """All linear rows as ``(csr (R, n_vars), sense (R,), rhs (R,))``; duplicates summed."""
        import scipy.sparse as sp

        cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)
        a = sp.csr_matrix((cat(self.lin_vals, np.float64), (cat(self.lin_rows, np.int64), cat(self.lin_cols, np.int64))),
                          shape=(self.n_linear, self.n_vars))
        a.sum_duplicates()
        return a, cat(self.lin_sense, "<U1"), cat(self.lin_rhs, np.float64)

    def to(self, cls: type) -> "Model":
        """The same recorded model on another backend class (shares the recorded arrays)."""
        new = cls()
        skip = {"_loaded", "_solver", "_vars", "_x"}
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


Recorder = Model


# --------------------------------------------------------------------------------------------
# Gurobi
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _gurobi_env():
    import gurobipy as gp

    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    return env


@functools.lru_cache(maxsize=1)
def gurobi_size_limited() -> bool:
    """True iff the available Gurobi license refuses a 2001-variable LP (the pip license)."""
    import gurobipy as gp

    m = gp.Model(env=_gurobi_env())
    m.addMVar(GUROBI_SIZE_LIMIT["vars"] + 1, ub=1.0)
    try:
        m.optimize()
    except gp.GurobiError as e:
        if e.errno == _GRB_SIZE_LIMIT_ERRNO:
            return True
        raise
    finally:
        m.dispose()
    return False


def gurobi_refusal(size: dict) -> str | None:
    """Which limit of the size-limited Gurobi license ``size`` exceeds, or None if it fits."""
    lim = GUROBI_SIZE_LIMIT
    if size["quadratic"] and size["vars"] > lim["quadratic_vars"]:
        return (f"the model has bilinear (quadratic) constraints and {size['vars']} variables, but the "
                f"size-limited Gurobi license allows at most {lim['quadratic_vars']} variables with any "
                f"quadratic term")
    if size["vars"] > lim["vars"]:
        return f"the model has {size['vars']} variables; the size-limited Gurobi license allows {lim['vars']}"
    if size["linear"] > lim["linear"]:
        return (f"the model has {size['linear']} linear constraints; the size-limited Gurobi license "
                f"allows {lim['linear']}")
    return None


class GurobiBackend(Model):
    name = "gurobi"

    def _load(self):
        import gurobipy as gp

        m = self._solver = gp.Model(env=_gurobi_env())
        inf = gp.GRB.INFINITY
        lb, ub, bn = (np.concatenate(x) if x else np.zeros(0) for x in (self._lb, self._ub, self._bin))
        vt = np.where(bn.astype(bool), gp.GRB.BINARY, gp.GRB.CONTINUOUS)
        x = m.addMVar(self.n_vars, lb=np.where(np.isfinite(lb), lb, -inf), ub=np.where(np.isfinite(ub), ub, inf),
                      vtype=vt, name=self.names)
        self._x = x
        self._vars = x.tolist()
        a, sense, rhs = self.matrix()
        if self.n_linear:
            c = m.addMConstr(a, x, sense, rhs)
            m.setAttr("ConstrName", c.tolist(), self.lin_names)
        for lab, u, v in self.sos:
            m.addSOS(gp.GRB.SOS_TYPE1, [self._vars[u], self._vars[v]], [1, 2])
        for lab, o, p, q in self.bilinear:
            m.addQConstr(self._vars[o] == self._vars[p] * self._vars[q], name=lab)
        cols, coefs, const = self.objective
        m.setObjective(gp.LinExpr(list(coefs), [self._vars[c] for c in cols]) + const, gp.GRB.MAXIMIZE)
        if self.start is not None:
            x.Start = self.start
        self._loaded = True

    def solve(self, *, time_limit=None, threads=1, cutoff=None, node_limit=None, params=None):
        import gurobipy as gp

        t0 = time.perf_counter()
        if not self._loaded:
            self._load()
        m = self._solver
        p = m.Params
        p.Threads = int(threads)
        if time_limit is not None:
            p.TimeLimit = max(float(time_limit), 0.0)
        p.MIPGap = TOLERANCES["gap_rel"]
        p.MIPGapAbs = TOLERANCES["gap_abs"]
        p.FeasibilityTol = TOLERANCES["feas"]
        p.IntFeasTol = TOLERANCES["int_feas"]
        p.OptimalityTol = TOLERANCES["opt"]
        if cutoff is not None:
            p.Cutoff = float(cutoff)
        if node_limit is not None:
            p.NodeLimit = float(node_limit)
        if self.n_quadratic:
            p.NonConvex = 2
        for k, val in {**SOLVER_PARAMS["gurobi"], **(params or {})}.items():
            m.setParam(k, val)
        try:
            m.optimize()
        except gp.GurobiError as e:
            if e.errno == _GRB_SIZE_LIMIT_ERRNO:
                why = gurobi_refusal(self.size()) or "the model exceeds the license's size limits"
                raise LicenseLimitError(f"Gurobi refused the model (error {e.errno}: {e}): {why}. "
                                        f"Use solver='scip' (CLI: --solver scip) or a full Gurobi license.") from None
            return SolveResult("error", None, None, None, None, time.perf_counter() - t0, f"GurobiError {e.errno}: {e}")
        dt = time.perf_counter() - t0
        G = gp.GRB
        st = {G.OPTIMAL: "optimal", G.TIME_LIMIT: "time_limit", G.INFEASIBLE: "infeasible", G.CUTOFF: "cutoff",
              G.INF_OR_UNBD: "infeasible_or_unbounded", G.UNBOUNDED: "unbounded", G.INTERRUPTED: "interrupted",
              G.NUMERIC: "numeric", G.SUBOPTIMAL: "suboptimal", G.NODE_LIMIT: "node_limit"}.get(m.Status, f"gurobi_status_{m.Status}")
        if st == "infeasible" and cutoff is not None:
            st = "cutoff"  # Gurobi reports a model cut off in presolve as infeasible
        has = m.SolCount > 0
        bound = None
        if st == "cutoff":
            bound = float(cutoff)
        else:
            try:
                bound = float(m.ObjBound)
            except (gp.GurobiError, AttributeError):
                bound = None
            if bound is not None and not math.isfinite(bound):
                bound = None
        vals = np.asarray(self._x.X, np.float64) if has else None
        return SolveResult(st, float(m.ObjVal) if has else None, bound, vals, int(m.NodeCount), dt)

    def write(self, path):
        if not self._loaded:
            self._load()
        self._solver.write(str(path))


# --------------------------------------------------------------------------------------------
# SCIP
# --------------------------------------------------------------------------------------------
_SCIP_AGGREGATE = {"heuristics": "setHeuristics", "separating": "setSeparating", "presolving": "setPresolve"}


class ScipBackend(Model):
    name = "scip"

    def _load(self):
        import pyscipopt
        from pyscipopt import Expr
        from pyscipopt.scip import Term

        m = self._solver = pyscipopt.Model()
        m.hideOutput()
        lb, ub, bn = (np.concatenate(x) if x else np.zeros(0) for x in (self._lb, self._ub, self._bin))
        vs = self._vars = [m.addVar(n, vtype="B" if b else "C", lb=float(l) if np.isfinite(l) else None,
                                    ub=float(u) if np.isfinite(u) else None)
                           for n, l, u, b in zip(self.names, lb, ub, bn)]
        a, sense, rhs = self.matrix()
        ind, ptr, dat = a.indices, a.indptr, a.data
        for r, lab in enumerate(self.lin_names):
            sl = slice(ptr[r], ptr[r + 1])
            e = Expr({Term(vs[c]): float(d) for c, d in zip(ind[sl], dat[sl])})
            b = float(rhs[r])
            s = sense[r]
            m.addCons(e <= b if s == "<" else (e >= b if s == ">" else e == b), name=lab)
        for lab, u, v in self.sos:
            m.addConsSOS1([vs[u], vs[v]], weights=[1, 2], name=lab)
        for lab, o, p, q in self.bilinear:
            m.addCons(vs[o] - vs[p] * vs[q] == 0, name=lab)
        cols, coefs, const = self.objective
        m.setObjective(Expr({Term(vs[c]): float(k) for c, k in zip(cols, coefs)}), "maximize")
        if const:
            m.addObjoffset(const)
        self._loaded = True

    def solve(self, *, time_limit=None, threads=1, cutoff=None, node_limit=None, params=None):
        t0 = time.perf_counter()
        if not self._loaded:
            self._load()
        m = self._solver
        from pyscipopt import SCIP_PARAMSETTING

        for k, val in {**SOLVER_PARAMS["scip"], **(params or {})}.items():
            if k in _SCIP_AGGREGATE:  # SCIP's emphasis-style settings: off / fast / aggressive / default
                getattr(m, _SCIP_AGGREGATE[k])(getattr(SCIP_PARAMSETTING, str(val).upper()))
            else:
                m.setParam(k, val)
        m.setParam("limits/time", float(time_limit) if time_limit is not None else 1e20)
        m.setParam("limits/gap", TOLERANCES["gap_rel"])
        m.setParam("limits/absgap", TOLERANCES["gap_abs"])
        m.setParam("numerics/feastol", TOLERANCES["feas"])
        m.setParam("parallel/maxnthreads", int(threads))
        m.setParam("limits/nodes", int(node_limit) if node_limit is not None else -1)
        msg = ""
        try:
            if cutoff is not None:
                m.setObjlimit(float(cutoff))
            if self.start is not None:
                sol = m.createSol()
                for v, val in zip(self._vars, self.start):
                    m.setSolVal(sol, v, float(val))
                if not m.addSol(sol, free=True):
                    msg = "MIP start rejected by SCIP"
            m.optimize()
        except Exception as e:  # pyscipopt raises plain Exceptions
            return SolveResult("error", None, None, None, None, time.perf_counter() - t0, f"SCIP: {e}")
        dt = time.perf_counter() - t0
        raw = m.getStatus()
        st = {"optimal": "optimal", "timelimit": "time_limit", "infeasible": "infeasible",
              "unbounded": "unbounded", "inforunbd": "infeasible_or_unbounded",
              "gaplimit": "optimal", "userinterrupt": "interrupted", "nodelimit": "node_limit"}.get(raw, raw)
        # With an objective limit, "infeasible" means: no solution better than the limit.
        has = m.getNSols() > 0
        vals = obj = None
        if has:
            best = m.getBestSol()
            vals = np.array([m.getSolVal(best, v) for v in self._vars], np.float64)
            obj = float(m.getSolObjVal(best))
        if cutoff is not None and (st == "infeasible" or (st == "optimal" and (obj is None or obj <= cutoff))):
            st, bound = "cutoff", float(cutoff)
        else:
            bound = float(m.getDualbound())
            if not math.isfinite(bound) or abs(bound) >= 1e19:
                bound = None
        return SolveResult(st, obj, bound, vals, int(m.getNNodes()), dt, msg)

    def write(self, path):
        if not self._loaded:
            self._load()
        self._solver.writeProblem(str(path))


BACKENDS = {"gurobi": GurobiBackend, "scip": ScipBackend}


def new_backend(solver: str) -> Model:
    if solver not in BACKENDS:
        raise ValueError(f"solver must be one of {tuple(BACKENDS)}, got {solver!r}")
    return BACKENDS[solver]()


def _notice(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg)


def choose_solver(solver: str, size: dict) -> str:
    """Resolve ``solver`` ("auto"/"gurobi"/"scip") for a model of ``size`` (see module docstring)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "scip":
        return "scip"
    try:
        limited = gurobi_size_limited()
    except Exception as e:  # no license at all, gurobipy broken, ...
        if solver == "gurobi":
            raise LicenseLimitError(f"Gurobi is not usable here ({e}); use solver='scip' (CLI: --solver scip)") from None
        _notice("unusable", f"certify: Gurobi unavailable ({e}); using SCIP")
        return "scip"
    why = gurobi_refusal(size) if limited else None
    if why is None:
        return "gurobi"
    if solver == "gurobi":
        raise LicenseLimitError(f"Gurobi's size-limited license refuses this model: {why}. "
                                f"Use solver='scip' (CLI: --solver scip) or a full Gurobi license.")
    key = "quadratic" if "quadratic" in why else ("linear" if "linear constraints" in why else "vars")
    _notice(key, f"certify: {why}; solving with SCIP instead (further such notices suppressed)")
    return "scip"
