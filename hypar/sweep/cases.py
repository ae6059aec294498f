"""What a sweep computes: its arrays (:class:`ArraySpec`), its (model, array, batch) cases
(:class:`Case`, each with a stable ``key`` and the input dims it binds) and the model zoo's file
list.

The objective, space, search and pricing convention are checked here, once, where a sweep's settings enter the
library (:func:`make_cases`); a bad one stops the sweep before any case runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hypar.array import PEArray
from hypar.config import SolverSettings, resolve_array
from hypar.errors import HyparError
from hypar.onnx import model_input_dims
from hypar.vocab import Convention, Objective, Search, Space, parse


class SweepError(HyparError):
    """A sweep cannot start (bad options, results directory in use)."""


def short_sha(data: bytes) -> str:
    """The first 12 hex digits of ``data``'s sha256."""
    return hashlib.sha256(data).hexdigest()[:12]


def _file_digest(path: str) -> str:
    """:func:`short_sha` of a file's bytes; "unreadable" when it cannot be read (the case then
    fails on its own, as an error row)."""
    try:
        with open(path, "rb") as fh:
            return short_sha(fh.read())
    except OSError:
        return "unreadable"


@dataclass(frozen=True)
class ArraySpec:
    """One array of the sweep: ``pes`` identical PEs (kind "pes", ``value`` the count) or a YAML
    file (kind "file", ``value`` its absolute path); ``label``, ``n_pes`` and ``digest`` (of its
    JSON description) identify it in rows and case keys."""

    kind: str
    value: str
    label: str
    n_pes: int
    digest: str

    def resolve(self) -> PEArray:
        """The array itself (read again in each worker)."""
        if self.kind == "pes":
            return resolve_array(None, int(self.value), None)
        return resolve_array(self.value, None, None)


@dataclass(frozen=True)
class Case:
    """One (model, array, batch) case with the settings of hypar's plan (objective, space, search,
    pricing convention, solver); ``index`` is its place in the sweep's order, ``key`` identifies
    it across runs (resume)."""

    index: int
    model_path: str
    model_name: str
    model_digest: str
    array: ArraySpec
    batch: int | None
    objective: Objective
    space: Space
    search_how: Search
    settings: SolverSettings | None = None
    convention: Convention = Convention.HIERARCHICAL
    dims: tuple[tuple[str, int], ...] = ()
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def key(self) -> str:
        """``model@digest|array@digest|b<batch>|objective|space|search|convention``, then
        ``|dims:NAME=V,...`` and ``|shapes:INPUT=D0xD1...,...`` when the case binds those."""
        b = "default" if self.batch is None else f"b{self.batch}"
        bound = "".join([f"|dims:{','.join(f'{k}={v}' for k, v in self.dims)}" if self.dims else "",
                         f"|shapes:{','.join(k + '=' + 'x'.join(map(str, v)) for k, v in self.input_shapes)}"
                         if self.input_shapes else ""])
        return (f"{self.model_name}@{self.model_digest}|{self.array.label}@{self.array.digest}|{b}|"
                f"{self.objective}|{self.space}|{self.search_how}|{self.convention}{bound}")


def array_spec(pes: int | None = None, array_path: str | None = None) -> ArraySpec:
    """Validate one array now (a bad array is a usage error, not a per-case error): exactly one
    of ``pes`` and ``array_path``. SweepError otherwise; ArrayConfigError for a bad array."""
    if (pes is None) == (array_path is None):
        raise SweepError.naming("give exactly one of {pes} and {array_path}")
    if pes is not None:
        arr = resolve_array(None, int(pes), None)
        kind, value = "pes", str(int(pes))
    else:
        value = os.path.abspath(array_path)
        arr = resolve_array(value, None, None)
        kind = "file"
    digest = short_sha(json.dumps(arr.to_json(), sort_keys=True).encode())
    return ArraySpec(kind, value, arr.name, arr.n_pes, digest)


def zoo_dir() -> str:
    """The model zoo: $HYPAR_ZOO, else ``models/`` next to the package (a source checkout), else ./models."""
    env = os.environ.get("HYPAR_ZOO")
    if env:
        return env
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    here = os.path.join(os.path.dirname(package), "models")
    return here if os.path.isdir(here) else os.path.abspath("models")


def _manifest_files(directory: str) -> list[str]:
    """The model files ``directory/MANIFEST.json`` lists under ``models``, in its order ([] when
    there is no manifest or it lists none). SweepError naming the file when it is not JSON or
    its ``models`` is not a map of ``{file: ...}`` entries."""
    path = os.path.join(directory, "MANIFEST.json")
    if not os.path.exists(path):
        return []
    fix = "fix it, or remove it to sweep the directory's .onnx files in name order"
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path} cannot be read as JSON ({exc}); {fix}") from None
    entries = manifest.get("models", {}) if isinstance(manifest, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(m, dict) and "file" in m for m in entries.values()):
        raise SweepError(f"{path}: 'models' must map model names to {{file: NAME.onnx, ...}}; {fix}")
    return [os.path.join(directory, m["file"]) for m in entries.values()]


def zoo_models(directory: str | None = None) -> list[str]:
    """The zoo's models in MANIFEST order (file order if there is no manifest). SweepError when
    there is no zoo directory."""
    d = directory or zoo_dir()
    if not os.path.isdir(d):
        raise SweepError(f"no model zoo at {d}; set HYPAR_ZOO or pass model paths")
    return _manifest_files(d) or [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".onnx")]


Bound = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, tuple[int, ...]], ...]]


def model_bindings(paths: list[str], dims: Mapping[str, int] | None,
                   input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, Bound]:
    """Per model path, the part of ``dims`` and ``input_shapes`` it takes: the dim names its
    inputs have and the inputs it has (a model that cannot be read takes none and fails as its
    own case). SweepError naming the option for a dim name or an input no model has."""
    if not dims and not input_shapes:
        return {p: ((), ()) for p in paths}
    inputs = {}
    for p in paths:
        try:
            inputs[p] = model_input_dims(p)
        except HyparError:
            inputs[p] = {}
    names = {p: {d for ds in ins.values() for d in ds or () if isinstance(d, str)} for p, ins in inputs.items()}
    for name in dims or {}:
        if not any(name in n for n in names.values()):
            raise SweepError.naming(f"{{dims}} {name}: no model's inputs have a dim named '{name}'; check the name "
                                    "with the error `hypar inspect MODEL` gives without it")
    for name in input_shapes or {}:
        if not any(name in ins for ins in inputs.values()):
            raise SweepError.naming(f"{{input_shapes}} {name}: no model has an input named '{name}'")
    return {p: (tuple((k, int(v)) for k, v in (dims or {}).items() if k in names[p]),
                tuple((k, tuple(int(x) for x in v)) for k, v in (input_shapes or {}).items() if k in inputs[p]))
            for p in paths}


def make_cases(models: Iterable[str], arrays: Iterable[ArraySpec], batches: Iterable[int | None] = (None,), *,
               objective: Objective | str = "time", space: Space | str = "full",
               search_how: Search | str = Search.AUTO, convention: Convention | str = Convention.HIERARCHICAL,
               settings: SolverSettings | None = None, dims: Mapping[str, int] | None = None,
               input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[Case]:
    """Every (model, array, batch) case in a fixed order: models as given, then arrays, then
    batches; a repeated case once. Each model takes the ``dims`` names and ``input_shapes``
    inputs it has (:func:`model_bindings`). SweepError for an unknown objective, space, search or
    convention, a dim name or input no model has, or when there is no model or no array."""
    objective = parse(Objective, objective, error=SweepError)
    space = parse(Space, space, error=SweepError)
    search_how = parse(Search, search_how, "search", error=SweepError)
    convention = parse(Convention, convention, error=SweepError)
    settings = settings if settings is not None else SolverSettings()
    models, arrays, batches = list(models), list(arrays), list(batches) or [None]
    if not models:
        raise SweepError.naming("no models: pass model paths in {models}")
    if not arrays:
        raise SweepError.naming("no arrays: pass {pes} and/or {arrays}")
    cases, seen = [], set()
    paths = [os.path.abspath(m) for m in models]
    bound = model_bindings(paths, dims, input_shapes)
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        digest = _file_digest(path)
        for a in arrays:
            for b in batches:
                c = Case(len(cases), path, name, digest, a, None if b is None else int(b),
                         objective, space, search_how, settings, convention, *bound[path])
                if c.key not in seen:
                    seen.add(c.key)
                    cases.append(c)
    return cases
