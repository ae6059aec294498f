"""The JSON mapping plan: built from an evaluation (:mod:`~hypar.plan.build`, with the weight
slices of :mod:`~hypar.plan.slices`), and read, checked and written as a file, typed as
:class:`Plan` (:mod:`~hypar.plan.document`)."""

from hypar.plan.build import TYPE_NAMES, build_plan, improvement, placements
from hypar.plan.document import (SCHEMA_ID, Plan, assignment_from_types, dumps, load_plan, plan_array, plan_types,
                                 read_plan, schema, validate)
from hypar.plan.slices import weight_slices

__all__ = ["SCHEMA_ID", "TYPE_NAMES", "Plan", "assignment_from_types", "build_plan", "dumps", "improvement",
           "load_plan", "placements", "plan_array", "plan_types", "read_plan", "schema", "validate",
           "weight_slices"]
