"""The library's front door: import a model, pick an array, partition, evaluate.

Everything the CLI and the sweeps do goes through here; no click, no printing (progress goes to
an optional callback). The public functions take the vocabulary (objective, space, search,
convention, baseline) as :mod:`hypar.vocab` members or their strings, check it once here
(ValueError naming the parameter and the choices) and pass members inward. Every cost model built
here prices under the caller's convention (default hierarchical; a plan brings its own).
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from typing import Callable

from hypar import graph as G
from hypar.array import PEArray, default_array
from hypar.config import SettingError, resolve_array
from hypar.cost import CostModel, Evaluation
from hypar.errors import ModelStructureError, PlanError
from hypar.onnx import load_layer_graph, model_sha256
from hypar.onnx.binding import with_batch
from hypar.plan import Plan, assignment_from_types, build_plan
from hypar.search import BASELINES, SearchLog, SolverSettings, baseline, complete, greedy, search, tie_problems
from hypar.vocab import Baseline, Convention, Objective, Search, Space, parse

__all__ = ["DTYPE_BYTES", "Progress", "evaluate", "load_graph", "model_info", "paper_baseline", "parse_dtype",
           "partition", "plan_assignment", "resolve_array", "with_dtype"]

Progress = Callable[[str], None] | None

# The papers' greedy methods: the space each searches and the objective it minimises (None: the
# caller's). Costed alongside hypar's plan as baselines.
PAPERS = {Baseline.HYPAR: (Space.HYPAR, Objective.COMM), Baseline.ACCPAR: (Space.ACCPAR, None)}


Dims = Mapping[str, int] | None
InputShapes = Mapping[str, Sequence[int]] | None

# --dtype names -> bytes per element (a positive integer byte count is accepted too)
DTYPE_BYTES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "half": 2, "bf16": 2, "bfloat16": 2,
               "fp8": 1, "int8": 1, "uint8": 1}


def parse_dtype(dtype: str | int | None) -> tuple[str, int] | None:
    """``(name, bytes per element)`` of a precision override: a name of :data:`DTYPE_BYTES`
    (case-insensitive) or a positive whole byte count (``"2"`` or 2, named ``"2 bytes"``); None
    for None. SettingError (naming ``dtype``) for anything else."""
    if dtype is None:
        return None
    text = str(dtype).strip().lower()
    if text in DTYPE_BYTES:
        return text, DTYPE_BYTES[text]
    if text.isdigit() and int(text) > 0:
        return f"{int(text)} bytes", int(text)
    raise SettingError(f"{dtype!r} is not a precision: give one of {', '.join(DTYPE_BYTES)} "
                       "or a positive number of bytes per element", "dtype")


def with_dtype(g, array: PEArray, dtype: str | int | None):
    """``(graph, array)`` under a precision override (:func:`parse_dtype`): every tensor, error,
    weight and gradient in ``dtype`` (the graph's declared widths dropped, the array's
    ``dtype_bytes`` set); ``(g, array)`` unchanged for None (docs/precision.md)."""
    parsed = parse_dtype(dtype)
    if parsed is None:
        return g, array
    return G.without_precision(g), dataclasses.replace(array, dtype_bytes=parsed[1], _cache={})


def load_graph(model_path: str, batch: int | None = None, array: PEArray | None = None, *, dims: Dims = None,
               input_shapes: InputShapes = None):
    """Import ``model_path``; the batch is ``batch``, else the array's, else the model's own;
    ``dims`` (symbolic dims by name) and ``input_shapes`` (whole input shapes) bind the other input
    dims (see :func:`hypar.onnx.load_layer_graph`). ModelStructureError when the model has no
    weighted layer to partition; ShapeError for a bad binding or input dims left unbound."""
    b = batch if batch is not None else (array.batch if array is not None else None)
    g = load_layer_graph(model_path, batch=b, dims=dims, input_shapes=input_shapes)
    if not G.decision_layers(g):
        raise ModelStructureError(f"{model_path} has no weighted layer to partition")
    return g


def model_info(model_path: str | None, g, digest: Future | None = None) -> dict:
    """Name, path and sha256 of the model file (path and digest None for an in-memory graph) and
    its trainable parameter count (``parameters``: :func:`hypar.graph.parameter_count`);
    ``digest``: the sha256 already being computed (:func:`_digest_in_background`)."""
    exists = model_path is not None and os.path.isfile(model_path)
    name = g.graph.get("name") or (os.path.splitext(os.path.basename(model_path))[0] if model_path else "model")
    sha256 = (digest.result() if digest is not None else model_sha256(model_path)) if exists else None
    return {"name": name, "path": os.fspath(model_path) if exists else None,
            "sha256": sha256, "parameters": G.parameter_count(g)}


def _digest_in_background(pool: ThreadPoolExecutor, model_path: str | None) -> Future | None:
    """The model file's sha256 computed on a thread of ``pool`` (hashlib releases the GIL, so it
    overlaps the search: a 500 MB export takes about 1 s to hash); None when there is no file."""
    if model_path is None or not os.path.isfile(model_path):
        return None
    return pool.submit(model_sha256, model_path)


def paper_baseline(model: CostModel, which: Baseline | str, objective: Objective | str, settings: SolverSettings,
                   log: SearchLog | None = None) -> list[tuple]:
    """HyPar's (space hypar, comm objective) or AccPar's (space accpar) greedy plan, costed in
    ``model``'s space: their decision types are carried over and the remaining nodes take their
    best layouts. ``model`` must offer the types the method uses (not space hypar for accpar).
    ValueError unless ``which`` is hypar or accpar and ``objective`` is an objective."""
    if which not in PAPERS:
        raise ValueError(f"unknown paper baseline {str(which)!r}; choose one of {', '.join(PAPERS)}")
    return _paper_baseline(model, Baseline(which), parse(Objective, objective), settings, log)


def _paper_baseline(model: CostModel, which: Baseline, objective: Objective, settings: SolverSettings,
                    log: SearchLog | None = None) -> list[tuple]:
    """:func:`paper_baseline` on checked arguments."""
    space, own_objective = PAPERS[which]
    sub = CostModel(model.g, model.array, space, convention=model.convention)
    # the papers' spaces may not fit a weights-stationary array's capacity: costed all the same
    types = dict(zip(sub.names, greedy(sub, own_objective or objective, settings, log, over_capacity_ok=True)))
    partial = [types.get(n) if model.nodes[i].layer.decision else None for i, n in enumerate(model.names)]
    return complete(model, partial, objective, settings, log)


def _solver_record(model: CostModel, settings: SolverSettings, log: SearchLog, found: dict) -> dict:
    """The plan's ``solver`` field: how it was solved, the status, what the search reached (a
    :class:`hypar.vocab.Reached`), whether and why the joint problem was skipped, the solve
    counts, and the tied blocks with a level problem's size untied and tied
    (:meth:`hypar.cost.repeats.Ties.summary`)."""
    return {"method": settings.method,
            "backend": settings.backend if settings.method == "ilp" else settings.method,
            "status": log.status, "reached": found["reached"], "gap": settings.gap,
            "time_limit_s": settings.time_limit_s, "level_solves": len(log.solves),
            "n_variables_max": max((s["n_variables"] for s in log.solves), default=0),
            "joint_skipped": found["joint_skipped"], "joint_skipped_why": found["joint_skipped_why"],
            "solve_wall_s": round(sum(s["wall_s"] for s in log.solves), 6),
            "ties": model.ties.summary(model.structure, tie_problems(settings))}


def partition(model_path: str, array: PEArray, *, batch: int | None = None, dims: Dims = None,
              input_shapes: InputShapes = None, objective: Objective | str = "time",
              space: Space | str = "full", search_how: Search | str = Search.AUTO,
              convention: Convention | str = Convention.HIERARCHICAL, settings: SolverSettings = SolverSettings(),
              progress: Progress = None, graph=None, dtype: str | int | None = None) -> dict:
    """Partition ``model_path`` (or the layer graph ``graph``, recorded under that path) over
    ``array``, every cost priced under ``convention``; returns the plan dictionary (see
    :mod:`hypar.plan`; it records ``dims`` / ``input_shapes`` when given, see :func:`load_graph`).
    ``dtype`` overrides every tensor's precision (:func:`with_dtype`; recorded as the plan's
    ``model.dtype``, which :func:`plan_assignment` applies again). ValueError for an unknown
    objective, space, search or convention; SettingError for an unknown ``dtype``; the importer's,
    solver's and array's errors otherwise."""
    parse_dtype(dtype)                                  # a bad precision fails before the import
    objective, space = parse(Objective, objective), parse(Space, space)
    search_how = parse(Search, search_how, "search")
    convention = parse(Convention, convention)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = _digest_in_background(pool, model_path)
        g = graph if graph is not None else load_graph(model_path, batch, array, dims=dims, input_shapes=input_shapes)
        t_import = time.perf_counter() - t0
        if progress:
            progress(f"imported {g.graph.get('name')}: {len(G.decision_layers(g))} decision layers "
                     f"({t_import:.2f} s)")
        g, array = with_dtype(g, array, dtype)
        model = CostModel(g, array, space, convention=convention)
        plan_ev, parts = _search_and_cost(model, objective, search_how, settings, progress)
        info = model_info(model_path, g, digest)
        if dtype is not None:
            info["dtype"] = parse_dtype(dtype)[0]
    parts["timing"] = {"import_wall_s": round(t_import, 6), "total_wall_s": round(time.perf_counter() - t0, 6)}
    return build_plan(model, plan_ev, model_info=info, objective=objective, search=search_how, **parts)


def _search_and_cost(model: CostModel, objective: Objective, search_how: Search, settings: SolverSettings,
                     progress: Progress) -> tuple[Evaluation, dict]:
    """The search's plan on ``model``, evaluated, and the plan's other parts (:func:`build_plan`'s
    ``solver``, ``baselines`` and ``greedy``)."""
    # Baselines are costed in one model with every type they use: space hypar has no type III,
    # so AccPar's plan is costed in the (otherwise identical, folded) accpar space.
    judge = CostModel(model.g, model.array, Space.ACCPAR, convention=model.convention) \
        if model.space == Space.HYPAR else model
    log = SearchLog(progress=progress)
    papers = {which: _paper_baseline(judge, which, objective, settings, log) for which in PAPERS}
    starts = papers if judge is model else {}
    found = search(model, search_how, objective, settings, log, extra_starts=starts)
    found.update(papers)
    evals = {k: judge.evaluate(found[k]) for k in BASELINES + tuple(PAPERS)}
    plan_ev, greedy_ev = model.evaluate(found["plan"]), judge.evaluate(found["greedy"])
    return plan_ev, {"solver": _solver_record(model, settings, log, found), "baselines": evals, "greedy": greedy_ev}


def _plan_convention(plan: Plan, convention: Convention | str | None) -> Convention:
    """``convention`` when given (checked), else the plan's own, else the default (hierarchical)."""
    if convention is not None:
        return parse(Convention, convention)
    return plan.convention or Convention.HIERARCHICAL


def plan_assignment(model_path: str, plan: Plan | dict, *, array: PEArray | None = None, batch: int | None = None,
                    dims: Dims = None, input_shapes: InputShapes = None,
                    space: Space | str | None = None, objective: Objective | str = "time",
                    convention: Convention | str | None = None,
                    settings: SolverSettings = SolverSettings(),
                    dtype: str | int | None = None) -> tuple[CostModel, list[tuple]]:
    """The cost model a plan (full or minimal) is costed in, and the plan's full assignment.

    The model is ``model_path`` imported at ``batch`` (default: the full plan's) with ``dims`` and
    ``input_shapes`` bound (default, when neither is given: the full plan's, an input shape's axis
    0 set to the batch in use), on ``array``
    (default: the full plan's, else the default array), in ``space`` (default: the full plan's,
    else full), priced under ``convention`` (default: the plan's, else hierarchical), with the
    precision override ``dtype`` (default: the full plan's ``model.dtype``, else none). Layers the
    plan leaves out are type I at every level; non-weighted nodes it leaves open take their best
    layouts for the full plan's objective (else ``objective``). PlanError when the plan does not
    fit the model; ValueError for an unknown space, objective or convention.
    """
    plan = Plan.of(plan)
    array = array or plan.array or default_array()
    space = parse(Space, space or plan.space or Space.FULL)
    objective = plan.objective or parse(Objective, objective)
    convention = _plan_convention(plan, convention)
    batch = batch if batch is not None else plan.batch
    if dims is None and input_shapes is None:
        dims, input_shapes = plan.dims, with_batch(plan.input_shapes, batch)
    dtype = dtype if dtype is not None else ((plan.document or {}).get("model") or {}).get("dtype")
    parse_dtype(dtype)
    g = load_graph(model_path, batch, array, dims=dims, input_shapes=input_shapes)
    g, array = with_dtype(g, array, dtype)
    model = CostModel(g, array, space, convention=convention)
    return model, complete(model, assignment_from_types(model, plan.types), objective, settings)


def evaluate(model_path: str, *, plan: Plan | dict | None = None, baseline_name: Baseline | str | None = None,
             array: PEArray | None = None, batch: int | None = None, dims: Dims = None,
             input_shapes: InputShapes = None, space: Space | str | None = None,
             objective: Objective | str = "time", convention: Convention | str | None = None,
             settings: SolverSettings = SolverSettings(),
             dtype: str | int | None = None) -> tuple[CostModel, Evaluation]:
    """Cost a plan (full or minimal, see :func:`plan_assignment`) or a baseline exactly; returns the
    cost model and the evaluation; ``dims`` / ``input_shapes`` bind input dims (see
    :func:`load_graph`). A baseline is costed on ``array`` (default: the default array)
    in ``space`` (default: full) under ``convention`` (default: hierarchical); a plan under
    ``convention``, else its own. PlanError unless exactly one of ``plan`` and ``baseline_name``
    is given, or for an unknown baseline; ValueError for an unknown space, objective or
    convention. ``dtype``: a precision override (:func:`with_dtype`; a plan's own by default)."""
    if (plan is None) == (baseline_name is None):
        raise PlanError.naming("give exactly one of {plan} and {baseline_name}")
    if plan is not None:
        model, asg = plan_assignment(model_path, plan, array=array, batch=batch, dims=dims, input_shapes=input_shapes,
                                     space=space, objective=objective, convention=convention, settings=settings,
                                     dtype=dtype)
        return model, model.evaluate(asg)
    which = parse(Baseline, baseline_name, "baseline", error=PlanError)
    objective = parse(Objective, objective)
    convention = parse(Convention, convention or Convention.HIERARCHICAL)
    array = array or default_array()
    parse_dtype(dtype)
    g = load_graph(model_path, batch, array, dims=dims, input_shapes=input_shapes)
    g, array = with_dtype(g, array, dtype)
    model = CostModel(g, array, parse(Space, space or Space.FULL), convention=convention)
    if which in PAPERS:
        asg = _paper_baseline(model, which, objective, settings)
    else:
        asg = baseline(model, which, objective, settings)
    return model, model.evaluate(asg)
