"""The recorded model (:mod:`certify.mip.model`) loaded into Gurobi or SCIP and solved.

Gurobi gets the model in bulk (one ``addMVar`` and one ``addMConstr``); SCIP row by row. Both use
:data:`certify.mip.model.TOLERANCES` and return a :class:`~certify.mip.model.SolveResult` in one
status vocabulary. A cutoff (objective limit) that leaves no solution is status ``"cutoff"``;
whether such a box was really empty or the encoding excluded it is the caller's question
(:meth:`certify.mip.model.Model.violation`).
"""
from __future__ import annotations

import math
import time

import numpy as np

from certify.mip.licensing import GRB_SIZE_LIMIT_ERRNO, LicenseLimitError, _gurobi_env, gurobi_refusal
from certify.mip.model import TOLERANCES, Model, SolveResult

# Solver parameters tuned on the reference networks (bench/certify_reference.py): the search
# supplies its own incumbent (cutoff / MIP start), so primal heuristics only cost time, and on these
# small leaf models cutting planes and (Gurobi) presolve cost more than they save. Measured per
# point: 1x2 fractional, Gurobi 1.16 -> 0.55 s, SCIP 9.1 -> 1.3 s (heuristics and cuts off);
# 2x2 distilled, Gurobi CPU 0.86 s (defaults) -> 0.46 s (no cuts/heuristics) -> 0.36 s (no presolve).
# SCIP's zero threshold (numerics/epsilon, default 1e-9) drops smaller coefficients, and trained nets
# have weights down to 1e-14: with a large weight downstream the model then encodes another
# function (tests/test_soundness.py's 1e-9/1e9 nets). 1e-12 / 1e-10 keep them, at no measured cost.
SOLVER_PARAMS = {"gurobi": {"Cuts": 0, "Heuristics": 0.0, "Presolve": 0},
                 "scip": {"heuristics": "off", "separating": "off", "numerics/epsilon": 1e-12,
                          "numerics/sumepsilon": 1e-10}}


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
            if e.errno == GRB_SIZE_LIMIT_ERRNO:
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

        m.setParam("limits/time", float(time_limit) if time_limit is not None else 1e20)
        m.setParam("limits/gap", TOLERANCES["gap_rel"])
        m.setParam("limits/absgap", TOLERANCES["gap_abs"])
        m.setParam("numerics/feastol", TOLERANCES["feas"])
        m.setParam("parallel/maxnthreads", int(threads))
        m.setParam("limits/nodes", int(node_limit) if node_limit is not None else -1)
        # after the defaults, so that explicit params override them (e.g. limits/absgap), as in Gurobi
        for k, val in {**SOLVER_PARAMS["scip"], **(params or {})}.items():
            if k in _SCIP_AGGREGATE:  # SCIP's emphasis-style settings: off / fast / aggressive / default
                getattr(m, _SCIP_AGGREGATE[k])(getattr(SCIP_PARAMSETTING, str(val).upper()))
            else:
                m.setParam(k, val)
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
