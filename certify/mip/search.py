"""Input-space branch and bound over agent i's bid box, with an exact MIP at the leaves.

The other agents' bids are fixed at ``v_-i``, so the box is M-dimensional. Each box gets CROWN
bounds (batched, outward-rounded: :mod:`certify.tighten`) and an upper bound on agent i's utility
from bounds on the allocation-logit differences (sparsemax is monotone in them) and the lowest
payment (:func:`utility_upper`, valid for any sign of the values).

Phase 1 bisects (widest side first) the box holding the incumbent until CROWN leaves at most
``split_unstable`` unstable ReLUs, and solves its MIP with the incumbent as MIP start. Phase 2
takes the other boxes best-first: a box whose bound is not above the incumbent is pruned; a small
box gets a MIP with ``cutoff = incumbent + gap_abs`` (status "cutoff" proves nothing in it beats
the cutoff); a big one is bisected.

A cutoff MIP that ends with no solution proves "nothing in this box beats the cutoff" only if the
model admits every bid of the box. That is checked, not assumed: the complete assignment of the
box's centre (:meth:`certify.mip.encoders.RegretMIP.start_values`) must satisfy every recorded row
(:meth:`certify.mip.model.Model.violation`); if it does not, the encoding excluded a real point
(unsound bounds) and the search reports an error instead of a proof. Any other solver status that
is not a proof (numeric trouble, ...) falls back to the box's relaxation bound, with a message.
"""
from __future__ import annotations

import dataclasses
import heapq
import time

import numpy as np

from certify.certificate import CertifyOptions, auto_split_unstable
from certify.mip import licensing
from certify.mip import model as mm
from certify.mip.encoders import encode
from certify.network import hard_sigmoid64, preactivations64, sparsemax64, utility64
from certify.tighten import crown_batch, logit_differences, select, tighten
from jaxauction.bounds import Interval, NetworkBounds
from jaxauction.mechanism import MechanismSpec

# A cutoff MIP's model must admit the box's centre to this relative violation (the solvers'
# feasibility tolerance is 1e-8; a sound encoding is exact to ~1e-12).
CENTRE_VIOLATION = 1e-6


def agent_box(v, agent, lo_i, hi_i) -> Interval:
    """The (N, M) box of bid profiles with agent's row in ``[lo_i, hi_i]``, the others at ``v_-i``."""
    lo, hi = np.array(v, np.float64), np.array(v, np.float64)
    lo[agent], hi[agent] = lo_i, hi_i
    return Interval(lo, hi)


def utility_upper(nb: NetworkBounds, diff: Interval, spec: MechanismSpec, v, agent, b_lo, b_hi) -> np.ndarray:
    """Upper bound of agent's utility over boxes (batched: arrays have a leading B axis).

    ``a_ij`` depends on the logits only through the differences ``d_rj = s_ij - s_rj`` and is
    nondecreasing in each, so ``a^U = sparsemax(-d^U)_i`` and ``a^L = sparsemax(-d^L)_i`` (with
    ``d_ij = 0``); ``diff`` holds CROWN bounds on ``d`` (B, (N+1)*M). The payment is at least
    ``clip(q^L, 0, P)`` (free) or ``f^L * y^L`` with ``y = sum_j a_ij b_ij`` (fractional).
    """
    n1, m = spec.n_agents + 1, spec.n_items
    sl, su = nb.alloc_logits.lower, nb.alloc_logits.upper  # (B, N+1, M)
    d_l = np.maximum(diff.lower.reshape(-1, n1, m), sl[:, agent:agent + 1] - su)
    d_u = np.minimum(diff.upper.reshape(-1, n1, m), su[:, agent:agent + 1] - sl)
    d_l[:, agent], d_u[:, agent] = 0.0, 0.0
    a_u = sparsemax64(-d_u)[0][:, agent]
    a_l = sparsemax64(-d_l)[0][:, agent]
    ql = nb.pay_logits.lower[:, agent]
    if spec.payment == "free":
        p_l = np.clip(ql, 0.0, spec.payment_max)
    else:
        f_l = hard_sigmoid64(ql)
        corners = np.stack([a_l * b_lo, a_l * b_hi, a_u * b_lo, a_u * b_hi])
        y_l = np.sum(corners.min(0), axis=-1)
        p_l = np.minimum(f_l * y_l, hard_sigmoid64(nb.pay_logits.upper[:, agent]) * y_l)
    # sum_j a_ij v_ij <= sum_j (a^U if v_ij >= 0 else a^L) v_ij: any sign of v
    vi = v[agent]
    gain = np.sum(np.where(vi >= 0, a_u, a_l) * vi, axis=-1)
    # rounded outward: the float64 error of these few operations is ~1e-16 of their magnitude
    return gain - p_l + 1e-12 * (1.0 + np.abs(gain) + np.abs(p_l))


@dataclasses.dataclass
class _Box:
    lo: np.ndarray          # agent's bids, lower corner
    hi: np.ndarray
    ub: float               # proven upper bound on the utility over the box
    nb: NetworkBounds       # CROWN bounds on the box
    unstable: int
    depth: int

    def holds(self, b) -> bool:
        return bool(np.all(self.lo - 1e-12 <= b) and np.all(b <= self.hi + 1e-12))


class Search:
    """Input-space branch and bound over agent i's bid box (see the module docstring).

    Phase 1 bisects the root down to a box with at most ``split_unstable`` unstable ReLUs around
    the incumbent and solves its MIP (with the incumbent as MIP start): this usually makes the
    incumbent optimal. Phase 2 takes the other boxes best-first (largest bound first): a box whose
    bound is not above the incumbent is pruned; a small box gets a MIP with the incumbent as cutoff;
    a big one is bisected (or, with ``try_node_limit``, first gets a MIP limited to that many nodes
    and is bisected only if that fails; its children inherit the MIP's dual bound).
    """

    def __init__(self, params, spec, w, v, agent, low, high, opts: CertifyOptions, solver, threads, mip_start,
                 lp_file, deadline):
        self.params, self.spec, self.w, self.v, self.agent = params, spec, w, v, agent
        self.low, self.high, self.opts, self.solver, self.threads = low, high, opts, solver, threads
        self.mip_start, self.lp_file, self.deadline = mip_start, lp_file, deadline
        self.diff_w = logit_differences(params, spec, agent)
        self.bounds, self.messages, self.solvers = [], [], set()
        self.status, self.error = "optimal", None
        self.nodes = self.n_bin = self.n_mips = 0
        self.t = [0.0, 0.0, 0.0]
        self.best_from_mip = None
        self.n_unstable_root = 0

    @property
    def times(self):
        return tuple(self.t)

    def boxes(self, corners, depth) -> list[_Box]:
        """CROWN bounds, utility bounds and unstable counts for several boxes (one batched call)."""
        t0 = time.perf_counter()
        lo = np.repeat(self.v[None], len(corners), 0)
        hi = lo.copy()
        lo[:, self.agent] = [c[0] for c in corners]
        hi[:, self.agent] = [c[1] for c in corners]
        nb, diff = crown_batch(self.params, self.spec, lo, hi, extra=self.diff_w)
        ub = utility_upper(nb, diff, self.spec, self.v, self.agent, lo[:, self.agent], hi[:, self.agent])
        unst = sum(np.sum((z.lower < 0) & (z.upper > 0), axis=-1) for z in nb.pre)
        self.check_at_centres(lo, hi, nb, ub)
        self.t[0] += time.perf_counter() - t0
        return [_Box(c[0], c[1], float(ub[k]), select(nb, k), int(unst[k]), depth) for k, c in enumerate(corners)]

    def check_at_centres(self, lo, hi, nb: NetworkBounds, ub) -> None:
        """A posteriori check of the bounds of a batch of boxes: at each box's centre, every
        pre-activation and logit of the float64 twin must lie in its interval and the utility
        must not exceed the box's bound. A failure means the bounds are not sound for this network
        (a bug, or bounds from elsewhere): the search stops with an error instead of pruning on them."""
        if self.error is not None:
            return
        c = (lo + hi) / 2
        zs, s, q = preactivations64(self.w, self.spec, c)
        u = utility64(self.w, self.spec, c, self.v, self.agent)
        pairs = list(zip(zs, nb.pre)) + [(s, nb.alloc_logits), (q, nb.pay_logits)]
        for k, (val, iv) in enumerate(pairs):
            tol = 1e-9 * (1.0 + np.abs(val))
            bad = (val < iv.lower - tol) | (val > iv.upper + tol)
            if np.any(bad):
                self.error = ("bounds", f"the bounds of a box exclude the network's value at its centre (layer {k}, "
                                        f"{int(np.sum(bad))} values): they are not sound here; no bound is reported")
                return
        if np.any(u > ub + 1e-9 * (1.0 + np.abs(u))):
            self.error = ("bounds", "a box's utility bound is below the utility at its centre: the bounds are not "
                                    "sound here; no bound is reported")

    def split(self, box: _Box) -> list[_Box]:
        j = int(np.argmax(box.hi - box.lo))
        mid = 0.5 * (box.lo[j] + box.hi[j])
        left_hi, right_lo = box.hi.copy(), box.lo.copy()
        left_hi[j], right_lo[j] = mid, mid
        kids = self.boxes([(box.lo, left_hi), (right_lo, box.hi)], box.depth + 1)
        for k in kids:
            k.ub = min(k.ub, box.ub)
        return kids

    def can_split(self, box: _Box) -> bool:
        return box.depth < self.opts.max_depth and float(np.max(box.hi - box.lo)) > 0

    def run(self, inc_u, inc_b):
        self.inc_u, self.inc_b = inc_u, inc_b
        opts, thr = self.opts, self.opts.split_unstable
        if thr == "auto":
            thr = auto_split_unstable(self.spec)
        if self.spec.n_items > opts.max_split_items:
            thr = None  # bisecting a high-dimensional bid box multiplies MIPs; solve one MIP instead
        root = self.boxes([(self.low[self.agent].copy(), self.high[self.agent].copy())], 0)[0]
        self.n_unstable_root = root.unstable
        heap, count = [], 0

        def push(b):
            nonlocal count
            heapq.heappush(heap, (-b.ub, count, b))
            count += 1

        # phase 1: descend to the incumbent's box
        box = root
        while thr is not None and box.unstable > thr and self.can_split(box) and self.error is None:
            kids = self.split(box)
            box = kids[0] if kids[0].holds(self.inc_b) else kids[1]
            push(kids[1] if box is kids[0] else kids[0])
        if self.error is not None:
            return
        self.solve_box(box, first=True)
        # phase 2: best first
        while heap and self.error is None:
            _, _, box = heapq.heappop(heap)
            if box.ub <= self.inc_u:
                self.bounds.append(box.ub)
                continue
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                self.status = "time_limit"
                self.bounds.append(box.ub)
                continue
            small = thr is None or box.unstable <= thr or not self.can_split(box)
            limit = None if small else opts.try_node_limit
            if not small and limit is None:
                for k in self.split(box):
                    push(k)
                continue
            res = self.solve_box(box, node_limit=limit)
            if res is not None and res.status == "node_limit":
                parent_ub = min(box.ub, res.bound) if res.bound is not None else box.ub
                for k in self.split(box):
                    k.ub = min(k.ub, parent_ub)
                    push(k)

    def solve_box(self, box: _Box, first=False, node_limit=None):
        opts, agent, v = self.opts, self.agent, self.v
        remaining = None if self.deadline is None else self.deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            self.status = "time_limit"
            self.bounds.append(box.ub)
            return None
        t0 = time.perf_counter()
        nb = box.nb if opts.bounds == "crown" else tighten(self.params, self.spec, agent_box(v, agent, box.lo, box.hi),
                                                          method=opts.bounds, prior=box.nb)
        t1 = time.perf_counter()
        lo_b, hi_b = self.low.copy(), self.high.copy()
        lo_b[agent], hi_b[agent] = box.lo, box.hi
        mip = encode(mm.Model(), self.w, self.spec, v, agent, lo_b, hi_b, nb, opts.encode, params=self.params)
        name = licensing.choose_solver(self.solver, mip.backend.size())
        mip.to(name)
        self.solvers.add(name)
        has_inc = box.holds(self.inc_b)
        if has_inc and self.mip_start:
            mip.set_start(self.inc_b)
        if self.lp_file and self.n_mips == 0:
            mip.backend.write(self.lp_file)
        t2 = time.perf_counter()
        # Cutoff slightly above the incumbent: proving "nothing beats U* + gap_abs" terminates even
        # for a nonconvex box whose maximum equals U* (spatial branching only converges to it).
        cutoff = None if (first or has_inc) else self.inc_u + mm.TOLERANCES["gap_abs"]
        res = mip.solve(time_limit=remaining, threads=self.threads, cutoff=cutoff, node_limit=node_limit,
                        params=dict(opts.solver_params))
        t3 = time.perf_counter()
        self.t[0] += t1 - t0
        self.t[1] += t2 - t1
        self.t[2] += t3 - t2
        self.n_mips += 1
        self.nodes += res.nodes or 0
        self.n_bin += mip.n_binaries
        if res.message:
            self.messages.append(res.message)
        if res.status == "error":
            self.error = (name, res.message)
            return res
        if res.values is not None and res.objective is not None:
            b_i = mip.misreport(res)[agent]
            u64 = utility64(self.w, self.spec, mip.profile(b_i), v, agent)
            if self.best_from_mip is None or u64 > self.best_from_mip[0]:
                self.best_from_mip = (u64, res.objective, b_i)
            if u64 > self.inc_u:
                self.inc_u, self.inc_b = u64, b_i.copy()
        viol = self.admits(mip, box)
        if viol > CENTRE_VIOLATION:
            self.error = (name, f"the MIP of box {box.lo.tolist()}..{box.hi.tolist()} excludes bids of the box "
                                f"(relative violation {viol:.3g}): its bounds are unsound; no bound is reported")
            return res
        if res.status in ("optimal", "cutoff"):
            self.bounds.append(res.bound if res.bound is not None else box.ub)
        elif res.status == "node_limit":
            pass  # the caller splits the box
        elif res.status == "time_limit":
            self.status = "time_limit"
            self.bounds.append(min(box.ub, res.bound) if res.bound is not None else box.ub)
        else:  # infeasible without a cutoff, numeric, ...: the model admits the box, so keep its relaxation bound
            if self.status == "optimal":
                self.status = "gap_open"
            self.messages.append(f"box {box.lo.tolist()}..{box.hi.tolist()}: solver status {res.status}; "
                                 f"kept its relaxation bound")
            self.bounds.append(box.ub)
        return res

    def admits(self, mip, box: _Box) -> float:
        """Largest relative violation of ``mip``'s rows at the complete assignments of the box's
        centre, its corners (up to 4 items) and the incumbent if the box holds it, and largest
        relative difference between the model's objective there and the float64 twin's utility:
        > 0 beyond rounding means the encoding excludes real bids or encodes another function
        (its bounds were wrong)."""
        pts = [(box.lo + box.hi) / 2]
        m = len(box.lo)
        if m <= 4:
            grid = np.array(np.meshgrid(*[[0.0, 1.0]] * m, indexing="ij")).reshape(m, -1).T
            pts += list(box.lo + grid * (box.hi - box.lo))
        if box.holds(self.inc_b):
            pts.append(np.clip(self.inc_b, box.lo, box.hi))
        vals = np.stack([mip.start_values(b) for b in pts])
        u64 = utility64(self.w, self.spec, np.stack([mip.profile(b) for b in pts]), self.v, self.agent)
        obj = np.array([mip.objective_value(x) for x in vals])
        fidelity = float(np.max(np.abs(obj - u64) / (1.0 + np.abs(u64))))  # the model is this network
        return max(mip.backend.violation(vals), fidelity)
