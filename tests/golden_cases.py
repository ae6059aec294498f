"""The golden-plan cases: one plan per (model, array, objective, space, search, convention) chosen
to cover every objective, space and search once, 2-way, 2x2, 4x2 and a heterogeneous array. The
cases written before conventions existed name ``reference`` (the pricing they were made with).

``golden_text(name)`` is what ``hypar partition`` computes for the case, as JSON text with the
run-dependent fields removed; tests/golden/<name>.json holds the expected text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypar import api

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"

# name -> (model path, array spec, objective, space, search, convention); the array spec is a
# ``--levels`` string or a YAML path. Paths are relative to the repository root (as a user types them).
REF = "reference"
HIER = "hierarchical"
CASES: dict[str, tuple[str, str, str, str, str, str]] = {
    "lenet_2": ("models/lenet.onnx", "2", "time", "full", "refine", REF),
    "alexnet_2x2": ("models/alexnet.onnx", "2,2", "comm", "hypar", "greedy", REF),
    "resnet18_4x2": ("models/resnet18.onnx", "4,2", "time", "accpar", "refine", REF),
    "mobilenetv2_hetero": ("models/mobilenetv2.onnx", "tests/golden/hetero_2x2.yaml", "energy", "full", "refine", REF),
    "transformer_2x2": ("tests/fixtures/transformer_dynamo.onnx", "2,2", "comm", "full", "joint", REF),
    "gpt2_small_4x2": ("models/gpt2_small.onnx", "4,2", "time", "full", "refine", REF),
    "lenet_hetero": ("models/lenet.onnx", "tests/golden/hetero_2x2.yaml", "time", "accpar", "joint", REF),
    # the hierarchical convention (issue 10); refine, so no time-limited solve makes them flaky
    "alexnet_2x2x2_hier": ("models/alexnet.onnx", "2,2,2", "time", "full", "refine", HIER),
    "transformer_4x2_hier": ("tests/fixtures/transformer_dynamo.onnx", "4,2", "comm", "full", "refine", HIER),
    "mobilenetv2_hetero_hier": ("models/mobilenetv2.onnx", "tests/golden/hetero_2x2.yaml", "time", "accpar", "refine",
                                HIER),
    "cnn_2x2x2_hier": ("tests/fixtures/cnn_dynamo.onnx", "2,2,2", "energy", "full", "refine", HIER),
}

# Fields that hold wall-clock measurements: they differ between runs of the same code.
VOLATILE = {("timing",), ("solver", "solve_wall_s")}


def strip_volatile(plan: dict) -> dict:
    """``plan`` without the wall-clock fields in ``VOLATILE`` (a new dict; nested dicts copied)."""
    out = json.loads(json.dumps(plan))
    for path in VOLATILE:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


def golden_plan(name: str) -> dict:
    """The case's plan, computed now by the library (``api.partition``), volatile fields removed."""
    model, spec, objective, space, search, convention = CASES[name]
    if spec.endswith(".yaml"):
        array = api.resolve_array(array_path=str(ROOT / spec))
    else:
        array = api.resolve_array(levels=spec)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the plan records the model path as given: keep it relative to the root
    try:
        plan = api.partition(model, array, objective=objective, space=space, search_how=search,
                             convention=convention)
    finally:
        os.chdir(cwd)
    return strip_volatile(plan)


def golden_text(name: str) -> str:
    """The JSON text stored for the case (sorted keys, two-space indent, newline at the end)."""
    return json.dumps(golden_plan(name), indent=2, sort_keys=True) + "\n"


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


# Golden ``hypar verify`` reports: plan case -> simulated batch. They hold what the simulator
# counted per layer, level and transfer, so a refactor of the simulator shows any change too.
VERIFY_CASES: dict[str, int] = {"lenet_2": 4, "lenet_hetero": 4, "transformer_2x2": 4}


def verify_report(name: str) -> dict:
    """``hypar verify --json`` on the case's golden plan at ``VERIFY_CASES[name]``, numeric
    errors removed (they are float noise; what was counted and decided stays)."""
    from hypar.verify import verify_plan

    plan = json.loads(golden_path(name).read_text())
    rep = verify_plan(str(ROOT / CASES[name][0]), plan, batch=VERIFY_CASES[name]).to_json()
    rep["model"] = Path(rep["model"]).name
    for layer in rep["layers"]:
        layer.pop("max_err", None)
        layer.pop("ref_scale", None)
    return rep


def verify_text(name: str) -> str:
    return json.dumps(verify_report(name), indent=2, sort_keys=True) + "\n"


def verify_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.verify.json"
