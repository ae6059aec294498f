"""Search across levels: baselines, greedy (the papers' method), refine, joint and auto (SPEC.md §4-6).

Every function takes a :class:`hypar.cost.CostModel` and returns assignments (per node, one label
per level, top first) that :meth:`CostModel.evaluate` costs exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from hypar import graph as G
from hypar.array import PEArray
from hypar.config import SolverSettings
from hypar.cost import CostModel
from hypar.cost.stationary import fits_weights, smallest_weight_plan, weights_total_load
from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import solve_brute_force, solve_chain_dp
from hypar.ilp.problem import memory_limit
from hypar.ilp.solution import LevelSolution
from hypar.ilp.solve import solve_ilp
from hypar.vocab import Baseline, Method, Objective, PartitionType, Reached, Search

__all__ = ["BASELINES", "SearchLog", "SolverSettings", "baseline", "baseline_types", "complete", "greedy",
           "joint", "joint_size", "joint_skip_reason", "quick_incumbent", "refine", "search", "smallest_memory",
           "smallest_fitting_array", "solve_level", "tie_problems"]

# The fixed baselines every search computes (the papers' greedy methods are hypar.api's).
BASELINES = (Baseline.DATA, Baseline.MODEL, Baseline.OWT)


@dataclass
class SearchLog:
    """What the search did: per level solve records, status, and progress callbacks."""

    solves: list[dict] = field(default_factory=list)
    status: str = "optimal"
    progress: object = None               # callable(str) or None

    def record(self, what: str, level: int | None, sol: LevelSolution) -> None:
        """Keep one solve's record (``level`` None for the joint problem); a solve that is not
        optimal makes the status "feasible"; report it to ``progress``."""
        self.solves.append({"what": what, "level": level, "status": sol.status, "backend": sol.backend,
                            "objective": sol.objective, "wall_s": sol.wall_seconds,
                            "n_variables": sol.n_variables, "n_constraints": sol.n_constraints})
        if sol.status != "optimal":
            self.status = "feasible"
        if self.progress:
            self.progress(f"{what}" + ("" if level is None else f" level {level}") +
                          f": {sol.status} in {sol.wall_seconds:.2f} s")


def quick_incumbent(problem) -> tuple[int, ...] | None:
    """A feasible assignment at hand (each node's cheapest own cost), so a time-limited solve
    always has a plan to return; None when it breaks a memory row."""
    inc = tuple(int(np.argmin(c)) for c in problem.node_cost)
    return inc if problem.feasible(inc) else None


def _solve_ilp(problem, settings: SolverSettings, incumbent) -> LevelSolution:
    """The ILP, never without a fallback plan when one is at hand."""
    if incumbent is None:
        incumbent = quick_incumbent(problem)
    return solve_ilp(problem, backend=settings.backend, time_limit_seconds=settings.time_limit_s,
                     gap=settings.gap, threads=settings.threads, incumbent=incumbent, via_pulp=settings.via_pulp)


def _solve_dp(problem, settings: SolverSettings, incumbent) -> LevelSolution:
    """The chain DP; SolverError when the level is not a chain."""
    if not problem.is_chain():
        raise SolverError.naming("{solver} dp solves chains only and this level is not a chain; use {solver} highs")
    return solve_chain_dp(problem)


def _solve_brute(problem, settings: SolverSettings, incumbent) -> LevelSolution:
    """Enumeration of every assignment."""
    return solve_brute_force(problem)


_SOLVE = {Method.ILP: _solve_ilp, Method.DP: _solve_dp, Method.BRUTE: _solve_brute}


def solve_level(problem, settings: SolverSettings, incumbent=None) -> LevelSolution:
    """Solve one LevelProblem with ``settings.method`` (ILP: never without a fallback plan when
    one is at hand, so a time limit returns the best plan found). SolverError when the method
    cannot solve it (dp on a level that is not a chain) or the backend fails."""
    return _SOLVE[settings.method](problem, settings, incumbent)


def tie_problems(settings: SolverSettings) -> bool:
    """Whether level problems tie repeated blocks: ``settings.tie_blocks`` with the ILP (the chain
    DP needs a chain, which tying can fold, and brute force is for checking)."""
    return settings.tie_blocks and settings.method == Method.ILP


def _with_level(asg: list[tuple], h: int, labels: list[str]) -> list[tuple]:
    """``asg`` with node i's level-h label set to ``labels[i]``."""
    return [a[:h] + (labels[i],) + a[h + 1:] for i, a in enumerate(asg)]


def _data_type(node, labels: tuple[str, ...]) -> str:
    """``data``: type I."""
    return PartitionType.I


def _model_type(node, labels: tuple[str, ...]) -> str:
    """``model``: type II where the node has it, else I."""
    return PartitionType.II if PartitionType.II in labels else PartitionType.I


def _owt_type(node, labels: tuple[str, ...]) -> str:
    """``owt``: fully connected layers and embeddings II (where they have it), the rest I."""
    fc = node.layer.kind in (G.GEMM, G.EMBEDDING)
    return PartitionType.II if fc and PartitionType.II in labels else PartitionType.I


_BASELINE_TYPE = {Baseline.DATA: _data_type, Baseline.MODEL: _model_type, Baseline.OWT: _owt_type}


def baseline_types(model: CostModel, name: Baseline) -> list[tuple | None]:
    """Decision layers' types under baseline ``name`` (one of BASELINES, SPEC.md §6); None for
    nodes to be completed.

    ``data``: I everywhere; ``model``: II everywhere (I where a node has no II); ``owt``: conv I,
    fully connected II. Attention follows ``data``/``model``; embeddings follow FC in ``owt``.
    """
    type_of = _BASELINE_TYPE[name]
    H = model.n_levels
    return [(type_of(node, model.labels(i)),) * H if node.layer.decision else None
            for i, node in enumerate(model.nodes)]


def complete(model: CostModel, partial: list[tuple | None], objective: Objective, settings: SolverSettings,
             log: SearchLog | None = None) -> list[tuple]:
    """Fill the nodes left None (non-weighted layouts) level by level, decision layers held fixed."""
    if all(p is not None for p in partial):
        return [tuple(p) for p in partial]  # type: ignore[arg-type]
    H = model.n_levels
    asg = [tuple(p) if p is not None else (None,) * H for p in partial]
    for h in range(H):
        allowed = [None if partial[i] is None else (partial[i][h],) for i in range(len(asg))]
        prob = model.level_problem(asg, h, objective, lower="ideal", allowed=allowed, tie=tie_problems(settings))
        sol = solve_level(prob, settings)
        if log is not None:
            log.record("complete", h, sol)
        asg = _with_level(asg, h, prob.node_labels(sol.assignment))
    return asg


def baseline(model: CostModel, name: Baseline, objective: Objective, settings: SolverSettings,
             log: SearchLog | None = None) -> list[tuple]:
    """A full assignment for baseline ``name``; non-weighted nodes take their best layouts."""
    return complete(model, baseline_types(model, name), objective, settings, log)


def smallest_memory(model: CostModel) -> list[tuple]:
    """The plan that, level by level, shrinks every node's footprint most (memory is a sum over
    nodes, so each level's choice is that level's exact minimum given the levels above)."""
    H = model.n_levels
    asg = [(None,) * H for _ in model.nodes]
    for h in range(H):
        for i, a in enumerate(asg):
            best = min(model.labels(i), key=lambda t: model.memory_bytes(i, a[:h] + (t,) + a[h + 1:]))
            asg[i] = a[:h] + (best,) + a[h + 1:]
    return asg


def _memory_of(model: CostModel, asg: list[tuple]) -> float:
    """Sum of every node's memory footprint (bytes per PE) under ``asg``."""
    return sum(model.memory_bytes(i, a) for i, a in enumerate(asg))


def _infeasible(model: CostModel, settings: SolverSettings) -> InfeasibleError:
    """The error of a capacity no plan fits: the weights-stationary PEs' weight capacity (naming
    the smallest array that fits, :func:`smallest_fitting_array`) or the memory cap (naming the
    smallest footprint found)."""
    smallest = smallest_memory(model)
    plan = _least_weight_load(model, smallest)
    if not fits_weights(model, plan):
        return weights_infeasible(model, plan)
    need = _memory_of(model, smallest) / 1e9
    return InfeasibleError.naming(f"no plan fits {settings.memory_cap_gb:g} GB per PE; the smallest footprint "
                                  f"hypar found is {need:.4g} GB per PE: pass {{memory_cap_gb}} "
                                  f"{need * 1.0001:.4g} or more, or use more PEs")


def _least_weight_load(model: CostModel, plan: list[tuple]) -> list[tuple]:
    """``plan`` with the weighted nodes at their least weight load on arrays with
    weights-stationary PEs (:func:`hypar.cost.stationary.smallest_weight_plan`), else ``plan``."""
    return smallest_weight_plan(model, plan) if model.array.weights_stationary else plan


def _smallest_plan(model: CostModel) -> list[tuple]:
    """:func:`smallest_memory`, with the weighted nodes at their least weight load on arrays with
    weights-stationary PEs."""
    return _least_weight_load(model, smallest_memory(model))


def _top_subgroups_alike(array: PEArray) -> bool:
    """True when the top level's subgroups hold the same PE kinds in the same order."""
    below = array.n_pes // array.levels[0].fanout
    return array.pes == array.pes[:below] * array.levels[0].fanout


def _grown(array: PEArray, top_fanout: int) -> PEArray:
    """``array`` with its top level's fanout set to ``top_fanout`` (the top-level subgroups
    repeated), or, when those subgroups differ, ``top_fanout`` copies of the array under a new
    top level with the old top level's links."""
    if _top_subgroups_alike(array):
        first = array.pes[:array.n_pes // array.levels[0].fanout]
        levels = (replace(array.levels[0], fanout=top_fanout),) + array.levels[1:]
        return replace(array, levels=levels, pes=first * top_fanout, _cache={})
    levels = (replace(array.levels[0], fanout=top_fanout),) + array.levels
    return replace(array, levels=levels, pes=array.pes * top_fanout, _cache={})


def smallest_fitting_array(model: CostModel, max_pes: int = 1 << 16) -> PEArray | None:
    """The array with the fewest PEs, grown from ``model.array`` by its top fanout
    (:func:`_grown`), on which some plan fits every weights-stationary PE's weight capacity;
    None when none up to ``max_pes`` PEs does. Candidates start at the lower bound (the weights'
    total bytes over the capacity per top-level subgroup), double until one fits, then a
    bisection finds the least (the smallest load can only fall as the fanout grows); each is
    checked by its smallest-load plan (:func:`hypar.cost.stationary.smallest_weight_plan`)."""
    array = model.array
    grows_top = _top_subgroups_alike(array)
    unit_pes = array.n_pes // array.levels[0].fanout if grows_top else array.n_pes
    unit_cap = array.class_weight_capacity_bytes(array._key(0, unit_pes)) or 0.0
    total_bytes = sum(n.layer.weight_elements * G.element_bytes(n.layer.weight_bytes, array.dtype_bytes)
                      for n in model.nodes if n.layer.weighted)
    start = array.levels[0].fanout + 1 if grows_top else 2
    lo = max(start, -(-int(total_bytes) // int(unit_cap)) if unit_cap else start)

    def fits(k: int) -> bool:
        grown = CostModel(model.g, _grown(array, k), model.space, convention=model.convention)
        return fits_weights(grown, _smallest_plan(grown))

    hi = lo
    while not fits(hi):
        if hi * unit_pes > max_pes:
            return None
        lo, hi = hi + 1, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return _grown(array, hi)


def weights_infeasible(model: CostModel, least_load_plan: list[tuple]) -> InfeasibleError:
    """The error of weights that fit no plan on ``model.array``'s weights-stationary PEs (even
    ``least_load_plan``, :func:`_smallest_plan`), naming the smallest array that fits
    (:func:`smallest_fitting_array`)."""
    array = model.array
    load = weights_total_load(model, least_load_plan)
    caps = sorted({k.weight_capacity_bytes for k in array.kinds.values() if k.weights_stationary})
    head = (f"the weights do not fit array {array.name!r}: even the plan that spreads them most fills "
            f"{load:.3g}x the weight capacity ({', '.join(f'{c / 1e6:g} MB' for c in caps)} per PE) "
            f"of its {array.n_pes} PEs")
    bigger = smallest_fitting_array(model)
    if bigger is None:
        return InfeasibleError(f"{head}; no array of up to {1 << 16} PEs grown from it fits either (the "
                               "layers' smallest shares stop shrinking: an axis with fewer indices than PEs "
                               "lands on a few PEs, hypar/shards.py): use PEs with more weight capacity")
    fanouts = ",".join(str(f) for f in bigger.fanouts)
    return InfeasibleError(f"{head}. The smallest array that fits has {bigger.n_pes} PEs (level fanouts "
                           f"{fanouts}, top first): set the top level's fanout to {bigger.fanouts[0]} in the "
                           "array file, or use PEs with more weight capacity")


def greedy(model: CostModel, objective: Objective, settings: SolverSettings, log: SearchLog | None = None,
           over_capacity_ok: bool = False) -> list[tuple]:
    """Top level first, each level solved exactly given the levels above, never revisited.
    When no plan fits the weights-stationary PEs' capacity: InfeasibleError naming the smallest
    array that fits, or, with ``over_capacity_ok`` (a baseline costed whether it fits or not),
    the plan that spreads the weights most."""
    H = model.n_levels
    asg = [(None,) * H for _ in model.nodes]
    for h in range(H):
        prob = model.level_problem(asg, h, objective, lower="ideal", memory_cap_bytes=settings.memory_cap_bytes,
                                   tie=tie_problems(settings))
        try:
            sol = solve_level(prob, settings)
        except InfeasibleError:
            # A level above used the (optimistic) ideal split below; fall back to the smallest
            # footprint, which refine then improves, or report the capacity that would fit.
            fallback = _smallest_plan(model)
            if _fits_cap(model, fallback, settings.memory_cap_bytes):
                if log is not None and log.progress:
                    log.progress(f"greedy level {h}: capacity too tight for greedy; starting from the "
                                 "smallest-memory plan")
                return fallback
            if over_capacity_ok and not fits_weights(model, fallback):
                return fallback
            raise _infeasible(model, settings) from None
        if log is not None:
            log.record("greedy", h, sol)
        asg = _with_level(asg, h, prob.node_labels(sol.assignment))
    return asg


def _fits_cap(model: CostModel, asg: list[tuple], cap_bytes: float | None) -> bool:
    """True when ``asg``'s peak memory per PE (bytes) is within ``cap_bytes`` (None: no cap) and
    its weights fit the weights-stationary PEs' capacity (:func:`fits_weights`)."""
    if not fits_weights(model, asg):
        return False
    return cap_bytes is None or model.evaluate(asg).totals()["peak_mem_bytes_per_pe"] <= memory_limit(cap_bytes)


def _refined_value(model: CostModel, objective: Objective, prob, inc: tuple[int, ...] | None, sol: LevelSolution,
                   cand: list[tuple], best_val: float) -> float:
    """The objective of ``cand``, refine's new plan: with levels below fixed, the level problem
    holds every cost its level changes (its objective plus a constant is ``evaluate``'s), so it
    is ``best_val`` plus the problem's change from the incumbent ``inc`` (the old plan);
    evaluated in full when the old plan is not one of the problem's (a start with tied blocks
    apart)."""
    if inc is None:
        return model.evaluate(cand).objective(objective)
    return best_val + (sol.objective - prob.objective(inc))


def _refine(model: CostModel, starts: list[list[tuple]], objective: Objective, settings: SolverSettings,
            log: SearchLog | None, max_rounds: int) -> tuple[list[tuple], Reached]:
    """:func:`refine`, and whether it ended at its fixpoint: REFINE_FIXPOINT when every level was
    last re-solved optimally, with the final plan's other levels, without improving it;
    REFINE_STOPPED when the round limit or a time-limited solve ended it first."""
    cap = settings.memory_cap_bytes
    feasible = [a for a in starts if _fits_cap(model, a, cap)]
    if not feasible:
        raise _infeasible(model, settings)
    best = min(feasible, key=lambda a: model.evaluate(a).objective(objective))
    best_val = model.evaluate(best).objective(objective)
    # A level needs re-solving only while another level changed since it was last solved;
    # settled[h]: level h's last solve (with the current other levels) was optimal.
    dirty, settled = list(range(model.n_levels)), {}
    solves = 0
    while dirty and solves < max_rounds * model.n_levels:
        h = dirty.pop(0)
        solves += 1
        prob = model.level_problem(best, h, objective, lower="fixed", memory_cap_bytes=cap, tie=tie_problems(settings))
        inc = prob.incumbent([a[h] for a in best])
        sol = solve_level(prob, settings, incumbent=inc)
        if log is not None:
            log.record("refine", h, sol)
        cand = _with_level(best, h, prob.node_labels(sol.assignment))
        val = _refined_value(model, objective, prob, inc, sol, cand, best_val)
        if val < best_val * (1 - 1e-12) and _fits_cap(model, cand, cap):
            best, best_val, settled = cand, val, {}
            dirty += [g for g in range(model.n_levels) if g != h and g not in dirty]
        settled[h] = sol.status == "optimal"
    done = not dirty and all(settled.get(h, False) for h in range(model.n_levels))
    return best, Reached.REFINE_FIXPOINT if done else Reached.REFINE_STOPPED


def refine(model: CostModel, starts: list[list[tuple]], objective: Objective, settings: SolverSettings,
           log: SearchLog | None = None, max_rounds: int = 10) -> list[tuple]:
    """Start from the best of ``starts``; re-solve each level with the others fixed, keeping a
    change only when the exact evaluation improves, until no level can improve (at most
    ``max_rounds`` x levels solves). Never worse than any start. InfeasibleError when no start
    fits the memory cap."""
    return _refine(model, starts, objective, settings, log, max_rounds)[0]


def joint_size(model: CostModel) -> int:
    """Pair variables the joint problem would need (an upper bound before reductions)."""
    sizes = [len(model.labels(i)) ** model.n_levels for i in range(len(model.nodes))]
    return sum(sizes[e.p] * sizes[e.c] for e in model.edges) + sum(sizes)


def joint_skip_reason(model: CostModel, settings: SolverSettings) -> str | None:
    """Why the joint problem is not solved for ``model``: None when it fits (:func:`joint_size` at
    most ``settings.joint_max_pairs``), else a sentence naming both numbers."""
    n = joint_size(model)
    if n <= settings.joint_max_pairs:
        return None
    return f"the joint problem needs {n:,} pair variables, above joint_max_pairs {settings.joint_max_pairs:,}"


def _solve_joint(model: CostModel, objective: Objective, settings: SolverSettings, log: SearchLog | None,
                 incumbent: list[tuple] | None) -> tuple[list[tuple], str]:
    """The joint problem solved whatever its size: its plan and the solve's status."""
    prob = model.joint_problem(objective, settings.memory_cap_bytes)
    choices = model.joint_choices()
    inc = None
    if incumbent is not None:
        inc = tuple(choices[i].index(tuple(incumbent[i])) for i in range(len(incumbent)))
    return _joint_result(choices, solve_level(prob, settings, incumbent=inc), log)


def _joint_result(choices: list[list[tuple]], sol: LevelSolution, log: SearchLog | None) -> tuple[list[tuple], str]:
    """A joint solve's plan (each node's chosen full tuple) and status, recorded in ``log``."""
    if log is not None:
        log.record("joint", None, sol)
    return [choices[i][sol.assignment[i]] for i in range(len(choices))], sol.status


def _is_chain(model: CostModel) -> bool:
    """True when the model's edges are exactly (0, 1), (1, 2), ... (a chain, no fan-out)."""
    pairs = sorted((e.p, e.c) for e in model.edges)
    return pairs == [(i, i + 1) for i in range(len(model.nodes) - 1)]


def _solve_joint_chain(model: CostModel, objective: Objective, settings: SolverSettings,
                       log: SearchLog | None) -> tuple[list[tuple], str] | None:
    """The joint problem of a chain solved exactly by the chain DP, whose work grows with the pair
    count far slower than the ILP's: None unless ``model`` is a chain with no memory cap nor
    weight capacity and
    :func:`joint_size` at most ``settings.joint_dp_max_pairs``."""
    if settings.memory_cap_bytes is not None or model.array.weights_stationary or not _is_chain(model):
        return None
    if joint_size(model) > settings.joint_dp_max_pairs:
        return None
    prob = model.joint_problem(objective)
    if not prob.is_chain():
        return None
    return _joint_result(model.joint_choices(), solve_chain_dp(prob), log)


def joint(model: CostModel, objective: Objective, settings: SolverSettings, log: SearchLog | None = None,
          incumbent: list[tuple] | None = None) -> list[tuple] | None:
    """Exact over all levels together; None when the problem is too large (see joint_size)."""
    if joint_skip_reason(model, settings) is not None:
        return None
    return _solve_joint(model, objective, settings, log, incumbent)[0]


def _after_refine(model: CostModel, how: Search, objective: Objective, settings: SolverSettings, log: SearchLog,
                  plan: list[tuple], reached: Reached) -> tuple[list[tuple], Reached, str | None]:
    """The joint step of ``joint`` and ``auto`` after refine's ``plan``: the joint problem where it
    fits (``auto`` also solves a chain's by DP beyond the ILP's limit), kept when its exact
    evaluation is not worse; returns (plan, what it reached, why joint was skipped or None).
    Under ``auto`` a failing joint solve keeps refine's plan (the reason says why); under
    ``joint`` it raises."""
    why = joint_skip_reason(model, settings)
    if how == Search.AUTO:
        budget = min(settings.time_limit_s, settings.auto_joint_time_limit_s)
        settings = replace(settings, time_limit_s=budget)
    try:
        if why is None:
            found, status = _solve_joint(model, objective, settings, log, incumbent=plan)
        else:
            by_dp = _solve_joint_chain(model, objective, settings, log) if how == Search.AUTO else None
            if by_dp is None:
                return plan, reached, why
            found, status = by_dp
    except SolverError as exc:
        if how != Search.AUTO:
            raise
        return plan, reached, f"the joint solve failed: {exc}"
    if model.evaluate(found).objective(objective) <= model.evaluate(plan).objective(objective):
        return found, Reached.JOINT_OPTIMAL if status == "optimal" else Reached.JOINT_FEASIBLE, None
    return plan, reached, None


# How far each search goes past greedy: 1 refines the best start, 2 then tries the joint problem.
_DEPTH = {Search.GREEDY: 0, Search.REFINE: 1, Search.JOINT: 2, Search.AUTO: 2}


def search(model: CostModel, how: Search, objective: Objective, settings: SolverSettings,
           log: SearchLog | None = None, extra_starts: dict[str, list[tuple]] | None = None) -> dict:
    """Run ``how`` (greedy / refine / joint / auto) and the baselines; returns assignments by name.

    Keys: "plan" (the chosen assignment), "greedy", each of BASELINES, each of ``extra_starts``
    (other plans refine starts from, e.g. the papers' methods), "reached" (a :class:`Reached`:
    what the plan is known to be), "joint_skipped" (True when joint was wanted but not solved;
    refine's plan is used), "joint_skipped_why" (the reason, else None) and "search_seconds".
    ``joint`` and ``auto`` both refine first and then solve the joint problem where
    :func:`joint_size` fits ``settings.joint_max_pairs``; ``auto`` also solves a chain's joint
    problem by DP up to ``settings.joint_dp_max_pairs`` and survives a failing joint solve
    (SolverError) by keeping refine's plan.
    """
    depth = _DEPTH[how]
    log = log or SearchLog()
    t0 = time.perf_counter()
    out: dict = {"greedy": greedy(model, objective, settings, log)}
    for b in BASELINES:
        out[b] = baseline(model, b, objective, settings, log)
    out.update(extra_starts or {})
    plan, reached, why = out["greedy"], Reached.GREEDY, None
    if depth >= 1:
        starts = [out["greedy"]] + [out[b] for b in BASELINES] + list((extra_starts or {}).values())
        plan, reached = _refine(model, starts, objective, settings, log, max_rounds=10)
    if depth >= 2:
        plan, reached, why = _after_refine(model, how, objective, settings, log, plan, reached)
    out.update(plan=plan, reached=reached, joint_skipped=why is not None, joint_skipped_why=why,
               search_seconds=time.perf_counter() - t0)
    return out
