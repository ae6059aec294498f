"""The library's front door: import a model, pick an array, partition, evaluate.

Everything the CLI and the sweeps do goes through here; no click, no printing (progress goes to
an optional callback).
"""

from __future__ import annotations

import os
import time
from typing import Callable

from hypar import graph as G
from hypar.array import PEArray, array_from_levels, array_from_pes, default_array, load_array
from hypar.cost import OBJECTIVES, SPACES, CostModel, Evaluation
from hypar.errors import ArrayConfigError, ModelStructureError, PlanError
from hypar.onnx import load_layer_graph, model_sha256
from hypar.plan import assignment_from_types, build_plan, plan_array, plan_types
from hypar.search import BASELINES, SearchLog, SolverSettings, baseline, complete, greedy, search

Progress = Callable[[str], None] | None


def resolve_array(array_path: str | None = None, pes: int | None = None,
                  levels: str | list[int] | None = None) -> PEArray:
    """One array from exactly one of a YAML file, ``--pes N`` or ``--levels 2,2,4`` (default: default.yaml)."""
    given = [x is not None for x in (array_path, pes, levels)]
    if sum(given) > 1:
        raise ArrayConfigError("give only one of --array, --pes and --levels")
    if array_path is not None:
        return load_array(array_path)
    if pes is not None:
        return array_from_pes(int(pes))
    if levels is not None:
        if isinstance(levels, str):
            try:
                levels = [int(x) for x in levels.replace(" ", "").split(",") if x]
            except ValueError:
                raise ArrayConfigError(f"--levels {levels!r}: give comma-separated fanouts, e.g. --levels 2,2,4") from None
        return array_from_levels(list(levels))
    return default_array()


def load_graph(model_path: str, batch: int | None = None, array: PEArray | None = None):
    """Import ``model_path``; the batch is ``batch``, else the array's, else the model's own."""
    b = batch if batch is not None else (array.batch if array is not None else None)
    g = load_layer_graph(model_path, batch=b)
    if not G.decision_layers(g):
        raise ModelStructureError(f"{model_path} has no weighted layer to partition")
    return g


def model_info(model_path: str | None, g) -> dict:
    """Name, path and sha256 of the model file (path and digest None for an in-memory graph)."""
    exists = model_path is not None and os.path.isfile(model_path)
    name = g.graph.get("name") or (os.path.splitext(os.path.basename(model_path))[0] if model_path else "model")
    return {"name": name, "path": os.fspath(model_path) if exists else None,
            "sha256": model_sha256(model_path) if exists else None}


def _check(objective: str, space: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {SPACES}")


def paper_baseline(model: CostModel, which: str, objective: str, settings: SolverSettings,
                   log: SearchLog | None = None) -> list[tuple]:
    """HyPar's (space hypar, comm objective) or AccPar's (space accpar) greedy plan, costed in
    ``model``'s space: their decision types are carried over and the remaining nodes take their
    best layouts. ``model`` must offer the types the method uses (not space hypar for accpar)."""
    sub = CostModel(model.g, model.array, which)
    asg = greedy(sub, "comm" if which == "hypar" else objective, settings, log)
    types = dict(zip(sub.names, asg))
    partial = [types.get(n) if model.nodes[i].layer.decision else None for i, n in enumerate(model.names)]
    return complete(model, partial, objective, settings, log)


def partition(model_path: str, array: PEArray, *, batch: int | None = None, objective: str = "time",
              space: str = "full", search_how: str = "refine", settings: SolverSettings = SolverSettings(),
              progress: Progress = None, graph=None) -> dict:
    """Partition ``model_path`` over ``array``; returns the plan dictionary (see hypar.plan)."""
    _check(objective, space)
    t0 = time.perf_counter()
    g = graph if graph is not None else load_graph(model_path, batch, array)
    t_import = time.perf_counter() - t0
    if progress:
        progress(f"imported {g.graph.get('name')}: {len(G.decision_layers(g))} decision layers "
                 f"({t_import:.2f} s)")
    model = CostModel(g, array, space)
    # Baselines are costed in one model with every type they use: space hypar has no type III,
    # so AccPar's plan is costed in the (otherwise identical, folded) accpar space.
    judge = CostModel(g, array, "accpar") if space == "hypar" else model
    log = SearchLog(progress=progress)
    papers = {which: paper_baseline(judge, which, objective, settings, log) for which in ("hypar", "accpar")}
    starts = {k: a for k, a in papers.items() if judge is model}
    found = search(model, search_how, objective, settings, log, extra_starts=starts)
    found.update(papers)
    evals = {k: judge.evaluate(found[k]) for k in BASELINES + ("hypar", "accpar")}
    plan_ev = model.evaluate(found["plan"])
    greedy_ev = judge.evaluate(found["greedy"])
    solver = {"method": settings.method, "backend": settings.backend if settings.method == "ilp" else settings.method,
              "status": log.status, "gap": settings.gap, "time_limit_s": settings.time_limit_s,
              "level_solves": len(log.solves),
              "n_variables_max": max((s["n_variables"] for s in log.solves), default=0),
              "joint_skipped": found["joint_skipped"],
              "solve_wall_s": round(sum(s["wall_s"] for s in log.solves), 6)}
    timing = {"import_wall_s": round(t_import, 6), "total_wall_s": round(time.perf_counter() - t0, 6)}
    return build_plan(model, plan_ev, model_info=model_info(model_path, g), objective=objective,
                      search=search_how, solver=solver, baselines=evals, greedy=greedy_ev, timing=timing)


def evaluate(model_path: str, *, plan: dict | None = None, baseline_name: str | None = None,
             array: PEArray | None = None, batch: int | None = None, space: str | None = None,
             objective: str = "time", settings: SolverSettings = SolverSettings()) -> tuple[CostModel, Evaluation]:
    """Cost a plan (full or minimal) or a baseline exactly. A full plan brings its own array, batch
    and space unless overridden."""
    if (plan is None) == (baseline_name is None):
        raise PlanError("give exactly one of --plan and --baseline")
    if plan is not None and "layers" in plan:
        array = array or plan_array(plan)
        batch = batch if batch is not None else plan.get("batch")
        space = space or plan.get("space")
        objective = plan.get("objective", objective)
    array = array or default_array()
    space = space or "full"
    _check(objective, space)
    g = load_graph(model_path, batch, array)
    model = CostModel(g, array, space)
    if baseline_name is not None:
        if baseline_name in ("hypar", "accpar"):
            asg = paper_baseline(model, baseline_name, objective, settings)
        elif baseline_name in BASELINES:
            asg = baseline(model, baseline_name, objective, settings)
        else:
            raise PlanError(f"unknown baseline {baseline_name!r}; choose one of {BASELINES + ('hypar', 'accpar')}")
    else:
        partial = assignment_from_types(model, plan_types(plan))
        asg = complete(model, partial, objective, settings)
    return model, model.evaluate(asg)
