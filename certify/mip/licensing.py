"""Which solver may take a model: Gurobi's licence limits, and the ``"auto"`` choice.

gurobipy's pip licence is size-limited (at most 2000 variables and 2000 linear constraints; with
any quadratic term at most 200 variables). :func:`gurobi_size_limited` detects it once per process
by asking Gurobi to solve a 2001-variable LP (GurobiError 10010 "Model too large for size-limited
license"); :func:`choose_solver` with ``"auto"`` uses Gurobi when the model fits or the licence is
a full one (a licence file or WLS environment variables work with no code change), and SCIP
otherwise, with a one-line notice per reason. ``"gurobi"`` on a model the licence refuses raises
:class:`LicenseLimitError` naming the limit and suggesting ``--solver scip``; the same error is
raised if Gurobi itself answers 10010 at solve time. A licence error is never hidden.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger("certify")

# MIP solvers by name ("auto": Gurobi if its licence takes the model, else SCIP).
MIP_SOLVERS = ("auto", "gurobi", "scip")
GUROBI_SIZE_LIMIT = {"vars": 2000, "linear": 2000, "quadratic_vars": 200}
GRB_SIZE_LIMIT_ERRNO = 10010
_warned: set = set()


class LicenseLimitError(RuntimeError):
    """Gurobi's license refused the model (size-limited pip license) or Gurobi is unusable."""

    fatal = True


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
        if e.errno == GRB_SIZE_LIMIT_ERRNO:
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


def _notice(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg)


def choose_solver(solver: str, size: dict) -> str:
    """Resolve ``solver`` ("auto"/"gurobi"/"scip") for a model of ``size`` (see module docstring)."""
    if solver not in MIP_SOLVERS:
        raise ValueError(f"solver must be one of {MIP_SOLVERS}, got {solver!r}")
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
