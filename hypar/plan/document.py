"""A plan as a file: reading it (full or minimal), checking it against the JSON Schema, writing it,
and the typed :class:`Plan` the library costs.

Two forms are read. A full plan is what ``hypar partition`` writes (schema ``hypar-plan/1``,
``hypar/plan_schema.json``): it brings its array, batch (and input dims bound beyond it), space,
objective and pricing convention, and records the costs of every layer. A minimal plan is
``{"assignment": {"<layer>": ["I", "II", ...]}}`` (one type per level, top first), optionally
with a ``"convention"``: layers left out are type I everywhere, non-weighted nodes left out take
their best layouts.

A full plan without ``"convention"`` was written before conventions existed, when every plan was
priced as ``reference`` prices today: it is read as ``reference``, so its recorded costs still
check. A minimal plan without one has no convention (the caller's default applies).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources

from hypar import graph as G
from hypar.array import PEArray, array_from_dict
from hypar.cost import CostModel
from hypar.errors import PlanError
from hypar.vocab import Convention, Objective, Space, parse

SCHEMA_ID = "hypar-plan/1"
# How a full plan without "convention" (written before conventions existed) was priced.
LEGACY_CONVENTION = Convention.REFERENCE

_NEITHER = ("is neither a hypar plan (no 'layers') nor a minimal plan "
            "({\"assignment\": {\"<layer>\": [\"I\", ...]}})")


def schema() -> dict:
    """The plan's JSON Schema (``hypar/plan_schema.json``)."""
    return json.loads(resources.files("hypar").joinpath("plan_schema.json").read_text())


def validate(plan: dict) -> None:
    """Raise PlanError, naming where, when ``plan`` breaks the JSON Schema."""
    import jsonschema  # only when a plan is checked: it adds ~50 ms to every start-up otherwise

    try:
        jsonschema.validate(plan, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise PlanError(f"plan does not match schema {SCHEMA_ID} at {where}: {exc.message}") from None


def dumps(plan: dict) -> str:
    """The plan file's text: one-space-indented JSON in the plan's own key order, newline at the end."""
    return json.dumps(plan, indent=1, sort_keys=False) + "\n"


def read_plan(path: str | os.PathLike) -> dict:
    """Load a plan file (full or minimal), a full one checked against the schema. PlanError
    naming the file and the fix when it is missing, not JSON or neither form."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PlanError(f"no such plan file {path!r}; write one with `hypar partition MODEL -o {path}`")
    try:
        with open(path) as f:
            plan = json.load(f)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix or regenerate it") from None
    if not isinstance(plan, dict) or not ("layers" in plan or "assignment" in plan):
        raise PlanError(f"{path} {_NEITHER}")
    if "layers" in plan:
        validate(plan)
    return plan


def plan_array(plan: dict) -> PEArray | None:
    """The array recorded in a full plan (None for a minimal plan)."""
    d = plan.get("array")
    if not d:
        return None
    d = {k: v for k, v in d.items() if k != "n_pes"}
    return array_from_dict(d, d.get("name", "plan-array"))


def plan_types(plan: dict) -> dict[str, list]:
    """Layer name -> types per level as written, from either plan form (checked against a model
    by :func:`assignment_from_types`)."""
    if "layers" in plan:
        return {l["name"]: l["types"] for l in plan["layers"]}
    a = plan["assignment"]
    if not isinstance(a, dict):
        raise PlanError("'assignment' must map layer names to lists of types, e.g. {\"conv1\": [\"I\", \"II\"]}")
    return a


@dataclass(frozen=True)
class Plan:
    """A plan read back: what it assigns and, for a full plan, the settings it brings.

    ``types``: layer name -> types per level as written; ``array`` / ``batch`` / ``space`` /
    ``objective``: the full plan's (None for a minimal plan, or where a full plan leaves one
    out); ``convention``: how the plan was priced (a full plan without one: reference, see the
    module docstring; a minimal plan: its own, else None); ``document``: the full plan as read
    (its recorded costs), None for a minimal plan; ``dims`` / ``input_shapes``: the input dims
    the full plan's model was bound with beyond the batch (None when it records none).
    """

    types: dict[str, list]
    array: PEArray | None = None
    batch: int | None = None
    space: Space | None = None
    objective: Objective | None = None
    document: dict | None = None
    convention: Convention | None = None
    dims: dict[str, int] | None = None
    input_shapes: dict[str, list[int]] | None = None

    @property
    def full(self) -> bool:
        """True for a full plan (one ``hypar partition`` wrote)."""
        return self.document is not None

    @classmethod
    def of(cls, plan: Plan | dict) -> Plan:
        """``plan`` itself, or the Plan of a plan dictionary (as :func:`read_plan` returns it).
        PlanError when the dictionary is neither form or names an unknown convention; ValueError
        for an unknown space or objective."""
        if isinstance(plan, Plan):
            return plan
        if not isinstance(plan, dict) or not ("layers" in plan or "assignment" in plan):
            raise PlanError(f"the plan {_NEITHER}")
        if "layers" not in plan:
            return cls(plan_types(plan), convention=_convention(plan.get("convention")))
        space, objective = plan.get("space"), plan.get("objective")
        binding = plan.get("binding") or {}
        return cls(plan_types(plan), plan_array(plan), plan.get("batch"),
                   None if space is None else parse(Space, space),
                   None if objective is None else parse(Objective, objective), plan,
                   _convention(plan.get("convention", LEGACY_CONVENTION)),
                   binding.get("dims") or None, binding.get("input_shapes") or None)


def _convention(value) -> Convention | None:
    """A plan's ``"convention"`` as a member (None stays None); PlanError when unknown."""
    return None if value is None else parse(Convention, value, "convention in the plan", error=PlanError)


def load_plan(path: str | os.PathLike) -> Plan:
    """:func:`read_plan`, as a :class:`Plan`."""
    return Plan.of(read_plan(path))


def _labels(labels) -> list[str]:
    """Labels as plain strings (so a message shows ['I', 'II'] whatever type they have)."""
    return [str(x) for x in labels]


def assignment_from_types(model: CostModel, types: dict[str, list]) -> list[tuple | None]:
    """Per-node types from a name->types map; decision layers left out default to I at every level,
    non-weighted nodes left out are None (to be completed). PlanError naming the layer for an
    unknown layer, a wrong number of levels or an unknown type."""
    H = model.n_levels
    unknown = sorted(set(types) - set(model.names))
    if unknown:
        hint = ""
        g = model.g
        if unknown[0] in g and not G.layer(g, unknown[0]).decision:
            hint = " (it is a non-weighted node; only space 'full' assigns those)"
        raise PlanError(f"plan names layer {unknown[0]!r} that the model does not have in space "
                        f"'{model.space}'{hint}; see `hypar inspect MODEL` for layer names")
    out: list[tuple | None] = []
    for i, name in enumerate(model.names):
        node = model.nodes[i]
        if name not in types:
            out.append(("I",) * H if node.layer.decision else None)
            continue
        t = types[name]
        if not isinstance(t, list) or len(t) != H:
            raise PlanError(f"layer {name!r}: plan gives {t!r} but the array has {H} level(s); "
                            f"give one type per level, top first, e.g. {['I'] * H}")
        for x in t:
            if x not in model.labels(i):
                raise PlanError(f"layer {name!r}: unknown type {x!r}; choose from {_labels(model.labels(i))}")
        out.append(tuple(t))
    return out
