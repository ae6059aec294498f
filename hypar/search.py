"""Search across levels: baselines, greedy (the papers' method), refine and joint (SPEC.md §4-6).

Every function takes a :class:`hypar.cost.CostModel` and returns assignments (per node, one label
per level, top first) that :meth:`CostModel.evaluate` costs exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hypar import graph as G
from hypar.cost import CostModel
from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import solve_brute_force, solve_chain_dp
from hypar.ilp.solution import LevelSolution
from hypar.ilp.solve import solve_ilp
from hypar.vocab import Method, Search

BASELINES = ("data", "model", "owt")
SEARCHES = Search.values()
METHODS = Method.values()


@dataclass(frozen=True, slots=True)
class SolverSettings:
    """How each level problem is solved: ``method`` ilp/dp/brute; ILP ``backend``, limits."""

    method: str = "ilp"
    backend: str = "highs"
    time_limit_s: float = 60.0
    gap: float = 1e-6
    threads: int | None = None
    joint_max_pairs: int = 400_000      # joint search refused above this many pair variables
    memory_cap_gb: float | None = None  # per-PE capacity the plan must fit (None: unconstrained)

    @property
    def memory_cap_bytes(self) -> float | None:
        return None if self.memory_cap_gb is None else self.memory_cap_gb * 1e9


@dataclass
class SearchLog:
    """What the search did: per level solve records, status, and progress callbacks."""

    solves: list[dict] = field(default_factory=list)
    status: str = "optimal"
    progress: object = None               # callable(str) or None

    def record(self, what: str, level: int | None, sol: LevelSolution) -> None:
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


def solve_level(problem, settings: SolverSettings, incumbent=None) -> LevelSolution:
    """Solve one LevelProblem with the configured method (ILP: never without a fallback plan
    when one is at hand, so a time limit returns the best plan found)."""
    if settings.method == "dp":
        if not problem.is_chain():
            raise SolverError("--solver dp solves chains only and this level is not a chain; use --solver highs")
        return solve_chain_dp(problem)
    if settings.method == "brute":
        return solve_brute_force(problem)
    if settings.method != "ilp":
        raise SolverError(f"unknown solver method {settings.method!r}; use one of {METHODS}")
    if incumbent is None:
        incumbent = quick_incumbent(problem)
    return solve_ilp(problem, backend=settings.backend, time_limit_seconds=settings.time_limit_s,
                     gap=settings.gap, threads=settings.threads, incumbent=incumbent)


def _is_fc(layer: G.Layer) -> bool:
    return layer.kind == G.GEMM


def baseline_types(model: CostModel, name: str) -> list[tuple | None]:
    """Decision layers' types under baseline ``name`` (SPEC.md §6); None for nodes to be completed.

    ``data``: I everywhere; ``model``: II everywhere (I where a node has no II); ``owt``: conv I,
    fully connected II. Attention follows ``data``/``model``; embeddings follow FC in ``owt``.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    H = model.n_levels
    out: list[tuple | None] = []
    for i, node in enumerate(model.nodes):
        labels = model.labels(i)
        if not node.layer.decision:
            out.append(None)
            continue
        if name == "data":
            t = "I"
        elif name == "model":
            t = "II" if "II" in labels else "I"
        else:
            t = "II" if (_is_fc(node.layer) or node.layer.kind == G.EMBEDDING) and "II" in labels else "I"
        out.append((t,) * H)
    return out


def complete(model: CostModel, partial: list[tuple | None], objective: str, settings: SolverSettings,
             log: SearchLog | None = None) -> list[tuple]:
    """Fill the nodes left None (non-weighted layouts) level by level, decision layers held fixed."""
    if all(p is not None for p in partial):
        return [tuple(p) for p in partial]  # type: ignore[arg-type]
    H = model.n_levels
    asg = [tuple(p) if p is not None else (None,) * H for p in partial]
    for h in range(H):
        allowed = [None if partial[i] is None else (partial[i][h],) for i in range(len(asg))]
        prob = model.level_problem(asg, h, objective, lower="ideal", allowed=allowed)
        sol = solve_level(prob, settings)
        if log is not None:
            log.record("complete", h, sol)
        asg = [a[:h] + (prob.choices[i][sol.assignment[i]],) + a[h + 1:] for i, a in enumerate(asg)]
    return asg


def baseline(model: CostModel, name: str, objective: str, settings: SolverSettings,
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
    return sum(model.memory_bytes(i, a) for i, a in enumerate(asg))


def _infeasible(model: CostModel, settings: SolverSettings) -> InfeasibleError:
    need = _memory_of(model, smallest_memory(model)) / 1e9
    return InfeasibleError(f"no plan fits {settings.memory_cap_gb:g} GB per PE; the smallest footprint hypar "
                           f"found is {need:.4g} GB per PE: pass --memory-gb {need * 1.0001:.4g} or more, "
                           "or use more PEs")


def greedy(model: CostModel, objective: str, settings: SolverSettings, log: SearchLog | None = None) -> list[tuple]:
    """Top level first, each level solved exactly given the levels above, never revisited."""
    H = model.n_levels
    asg = [(None,) * H for _ in model.nodes]
    for h in range(H):
        prob = model.level_problem(asg, h, objective, lower="ideal", memory_cap_bytes=settings.memory_cap_bytes)
        try:
            sol = solve_level(prob, settings)
        except InfeasibleError:
            # A level above used the (optimistic) ideal split below; fall back to the smallest
            # footprint, which refine then improves, or report the capacity that would fit.
            fallback = smallest_memory(model)
            if _memory_of(model, fallback) <= settings.memory_cap_bytes * (1 + 1e-12):
                if log is not None and log.progress:
                    log.progress(f"greedy level {h}: capacity too tight for greedy; starting from the "
                                 "smallest-memory plan")
                return fallback
            raise _infeasible(model, settings) from None
        if log is not None:
            log.record("greedy", h, sol)
        asg = [a[:h] + (prob.choices[i][sol.assignment[i]],) + a[h + 1:] for i, a in enumerate(asg)]
    return asg


def refine(model: CostModel, starts: list[list[tuple]], objective: str, settings: SolverSettings,
           log: SearchLog | None = None, max_rounds: int = 10) -> list[tuple]:
    """Start from the best of ``starts``; re-solve each level with the others fixed, keeping a
    change only when the exact evaluation improves, until no level can improve (at most
    ``max_rounds`` x levels solves). Never worse than any start."""
    cap = settings.memory_cap_bytes

    def fits(a: list[tuple]) -> bool:
        return cap is None or model.evaluate(a).totals()["peak_mem_bytes_per_pe"] <= cap * (1 + 1e-12)

    feasible = [a for a in starts if fits(a)]
    if not feasible:
        raise _infeasible(model, settings)
    best = min(feasible, key=lambda a: model.evaluate(a).objective(objective))
    best_val = model.evaluate(best).objective(objective)
    # A level needs re-solving only while another level changed since it was last solved.
    dirty = list(range(model.n_levels))
    solves = 0
    while dirty and solves < max_rounds * model.n_levels:
        h = dirty.pop(0)
        solves += 1
        prob = model.level_problem(best, h, objective, lower="fixed", memory_cap_bytes=cap)
        inc = tuple(prob.choices[i].index(best[i][h]) for i in range(len(best)))
        sol = solve_level(prob, settings, incumbent=inc)
        if log is not None:
            log.record("refine", h, sol)
        cand = [a[:h] + (prob.choices[i][sol.assignment[i]],) + a[h + 1:] for i, a in enumerate(best)]
        val = model.evaluate(cand).objective(objective)
        if val < best_val * (1 - 1e-12) and fits(cand):
            best, best_val = cand, val
            dirty += [g for g in range(model.n_levels) if g != h and g not in dirty]
    return best


def joint_size(model: CostModel) -> int:
    """Pair variables the joint problem would need (an upper bound before reductions)."""
    sizes = [len(model.labels(i)) ** model.n_levels for i in range(len(model.nodes))]
    return sum(sizes[e.p] * sizes[e.c] for e in model.edges) + sum(sizes)


def joint(model: CostModel, objective: str, settings: SolverSettings, log: SearchLog | None = None,
          incumbent: list[tuple] | None = None) -> list[tuple] | None:
    """Exact over all levels together; None when the problem is too large (see joint_size)."""
    if joint_size(model) > settings.joint_max_pairs:
        return None
    prob = model.joint_problem(objective, settings.memory_cap_bytes)
    choices = model.joint_choices()
    inc = None
    if incumbent is not None:
        inc = tuple(choices[i].index(tuple(incumbent[i])) for i in range(len(incumbent)))
    sol = solve_level(prob, settings, incumbent=inc)
    if log is not None:
        log.record("joint", None, sol)
    return [choices[i][sol.assignment[i]] for i in range(len(choices))]


def search(model: CostModel, how: str, objective: str, settings: SolverSettings,
           log: SearchLog | None = None, extra_starts: dict[str, list[tuple]] | None = None) -> dict:
    """Run ``how`` (greedy / refine / joint) and the baselines; returns assignments by name.

    Keys: "plan" (the chosen assignment), "greedy", each of BASELINES, each of ``extra_starts``
    (other plans refine starts from, e.g. the papers' methods) and "joint_skipped" (True when
    joint was asked but too large; refine is used instead).
    """
    if how not in SEARCHES:
        raise ValueError(f"unknown search {how!r}; choose one of {SEARCHES}")
    log = log or SearchLog()
    t0 = time.perf_counter()
    out: dict = {"greedy": greedy(model, objective, settings, log)}
    for b in BASELINES:
        out[b] = baseline(model, b, objective, settings, log)
    out.update(extra_starts or {})
    plan = out["greedy"]
    out["joint_skipped"] = False
    if how in ("refine", "joint"):
        starts = [out["greedy"]] + [out[b] for b in BASELINES] + list((extra_starts or {}).values())
        plan = refine(model, starts, objective, settings, log)
    if how == "joint":
        j = joint(model, objective, settings, log, incumbent=plan)
        if j is None:
            out["joint_skipped"] = True
        elif model.evaluate(j).objective(objective) <= model.evaluate(plan).objective(objective):
            plan = j
    out["plan"] = plan
    out["search_seconds"] = time.perf_counter() - t0
    return out
