"""PE arrays: a hierarchy of levels over a row of processing elements (PEs), possibly of mixed kinds.

A :class:`PEArray` has levels top first; level h splits every group into ``fanout`` contiguous
subgroups. The PEs themselves (``pes``, one kind name per PE, in order) fix which subgroup holds
which kinds, so heterogeneity (e.g. half TPU-v2, half TPU-v3) follows from the layout of the PE
row. Arrays come from YAML (:func:`load_array`) or shortcuts (:func:`array_from_pes`,
:func:`array_from_levels`).

Units are in the names: ``tflops`` (dense TFLOP/s per PE), ``memory_gb`` (GB per PE),
``bandwidth_gbps`` (GB/s per PE at that level, each direction), ``latency_us`` (per message),
``energy_pj_per_bit`` (link energy), ``energy_pj_per_flop`` (compute energy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from math import prod

import yaml

from hypar.errors import ArrayConfigError


@dataclass(frozen=True, slots=True)
class PEKind:
    """One kind of PE: dense throughput (TFLOP/s), memory (GB) and compute energy (pJ/FLOP)."""

    name: str
    tflops: float = 100.0
    memory_gb: float = 32.0
    energy_pj_per_flop: float = 1.0


@dataclass(frozen=True, slots=True)
class Level:
    """One level of the hierarchy: each group splits into ``fanout`` subgroups linked at
    ``bandwidth_gbps`` (GB/s per PE, each direction), ``latency_us`` per message and
    ``energy_pj_per_bit``."""

    fanout: int
    bandwidth_gbps: float = 100.0
    latency_us: float = 0.0
    energy_pj_per_bit: float = 10.0
    name: str = ""


@dataclass(frozen=True, slots=True)
class GroupClass:
    """Groups of one composition at one level: ``count`` of them, each split into ``children``.

    ``children`` holds, per subgroup in order, (child class key, throughput fraction, PE count).
    """

    key: tuple[tuple[str, int], ...]
    count: int
    n_pes: int
    tflops: float
    children: tuple[tuple[tuple[tuple[str, int], ...], float, int], ...]


@dataclass(frozen=True)
class PEArray:
    """A hierarchical PE array. ``pes`` lists the kind of every PE in order."""

    name: str
    levels: tuple[Level, ...]
    kinds: dict[str, PEKind]
    pes: tuple[str, ...]
    dtype_bytes: int = 2
    batch: int | None = None
    description: str = ""
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ArrayConfigError(f"array {self.name!r} has no levels; give at least one level with fanout >= 2")
        for i, lv in enumerate(self.levels):
            if lv.fanout < 2:
                raise ArrayConfigError(f"level {i} of array {self.name!r} has fanout {lv.fanout}; every level must split a group into at least 2 subgroups")
            if lv.bandwidth_gbps <= 0:
                raise ArrayConfigError(f"level {i} of array {self.name!r} has bandwidth {lv.bandwidth_gbps} GB/s; it must be positive")
        need = prod(lv.fanout for lv in self.levels)
        if len(self.pes) != need:
            raise ArrayConfigError(
                f"array {self.name!r} lists {len(self.pes)} PEs but its levels' fanouts multiply to {need}; "
                "make the PE counts add up to the product of the fanouts")
        for k in set(self.pes):
            if k not in self.kinds:
                raise ArrayConfigError(f"array {self.name!r} uses PE kind {k!r} that is not defined under pe_kinds")
        for k in self.kinds.values():
            if k.tflops <= 0 or k.memory_gb <= 0:
                raise ArrayConfigError(f"PE kind {k.name!r} needs positive tflops and memory_gb")
        if self.dtype_bytes <= 0:
            raise ArrayConfigError("dtype_bytes must be positive (2 for bfloat16, 4 for float32)")

    @property
    def n_pes(self) -> int:
        """Number of PEs."""
        return len(self.pes)

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def fanouts(self) -> tuple[int, ...]:
        """Every level's fanout, top first."""
        return tuple(lv.fanout for lv in self.levels)

    @property
    def heterogeneous(self) -> bool:
        """True when the PEs do not all have the same throughput."""
        return len({self.kinds[k].tflops for k in self.pes}) > 1

    def _key(self, start: int, size: int) -> tuple[tuple[str, int], ...]:
        """Class key of the PEs [start, start + size): runs of (kind, count) in order."""
        runs: list[tuple[str, int]] = []
        for k in self.pes[start:start + size]:
            if runs and runs[-1][0] == k:
                runs[-1] = (k, runs[-1][1] + 1)
            else:
                runs.append((k, 1))
        return tuple(runs)

    def _tflops(self, key: tuple[tuple[str, int], ...]) -> float:
        """Total TFLOP/s of a class key."""
        return sum(self.kinds[k].tflops * n for k, n in key)

    @cached_property
    def classes(self) -> tuple[dict[tuple, GroupClass], ...]:
        """Per level: group classes by key (groups of equal composition share a class)."""
        out = []
        size = self.n_pes
        n_groups = 1
        for lv in self.levels:
            sub = size // lv.fanout
            counts: dict[tuple, int] = {}
            firsts: dict[tuple, int] = {}
            for g in range(n_groups):
                key = self._key(g * size, size)
                counts[key] = counts.get(key, 0) + 1
                firsts.setdefault(key, g * size)
            level_classes = {}
            for key, cnt in counts.items():
                start = firsts[key]
                total = self._tflops(key)
                kids = []
                for j in range(lv.fanout):
                    ck = self._key(start + j * sub, sub)
                    kids.append((ck, self._tflops(ck) / total, sub))
                level_classes[key] = GroupClass(key, cnt, size, total, tuple(kids))
            out.append(level_classes)
            size = sub
            n_groups *= lv.fanout
        return tuple(out)

    @property
    def root_key(self) -> tuple[tuple[str, int], ...]:
        """Class key of the whole array (the level-0 group)."""
        return self._key(0, self.n_pes)

    def kind_of(self, key: tuple[tuple[str, int], ...]) -> PEKind:
        """The kind of a single-kind class (a leaf or a homogeneous group)."""
        return self.kinds[key[0][0]]

    def class_tflops(self, key: tuple[tuple[str, int], ...]) -> float:
        """Total TFLOP/s of a group of class ``key``."""
        return self._tflops(key)

    def class_energy_pj_per_flop(self, key: tuple[tuple[str, int], ...]) -> float:
        """Throughput-weighted compute energy of a group (work spread by throughput)."""
        total = self._tflops(key)
        return sum(self.kinds[k].tflops * n * self.kinds[k].energy_pj_per_flop for k, n in key) / total

    def to_json(self) -> dict:
        """Description written into plans."""
        return {
            "name": self.name,
            "n_pes": self.n_pes,
            "dtype_bytes": self.dtype_bytes,
            "levels": [{"fanout": lv.fanout, "bandwidth_gbps": lv.bandwidth_gbps,
                        "latency_us": lv.latency_us, "energy_pj_per_bit": lv.energy_pj_per_bit,
                        **({"name": lv.name} if lv.name else {})} for lv in self.levels],
            "pe_kinds": {k.name: {"tflops": k.tflops, "memory_gb": k.memory_gb,
                                  "energy_pj_per_flop": k.energy_pj_per_flop}
                         for k in sorted(self.kinds.values(), key=lambda k: k.name)},
            "pes": [{"kind": k, "count": n} for k, n in self._key(0, self.n_pes)],
        }


DEFAULT_KIND = PEKind("accelerator", tflops=100.0, memory_gb=32.0, energy_pj_per_flop=1.0)


def _factor(n: int) -> list[int]:
    """Prime factors of n, largest first (so k-way levels appear at the top)."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return sorted(out, reverse=True)


def array_from_levels(fanouts: list[int], base: PEArray | None = None, name: str | None = None) -> PEArray:
    """A homogeneous array with the given fanouts (top first); link/PE figures from ``base``
    (default: :func:`default_array`). ArrayConfigError unless every fanout is >= 2."""
    fanouts = [int(f) for f in fanouts]
    if not fanouts or any(f < 2 for f in fanouts):
        raise ArrayConfigError.naming(f"{{fanouts}} {','.join(map(str, fanouts))}: every fanout must be >= 2 "
                                      "(e.g. {fanouts} 2,2,4)")
    base = base or default_array()
    blv = base.levels[0]
    kind = base.kinds[base.pes[0]]
    levels = tuple(Level(f, blv.bandwidth_gbps, blv.latency_us, blv.energy_pj_per_bit) for f in fanouts)
    return PEArray(name or "levels-" + "x".join(map(str, fanouts)), levels, {kind.name: kind},
                   (kind.name,) * prod(fanouts), base.dtype_bytes, base.batch)


def array_from_pes(n_pes: int, base: PEArray | None = None) -> PEArray:
    """``n_pes`` identical PEs: binary levels for a power of two, otherwise ``n_pes`` factored into
    k-way levels (largest on top). ArrayConfigError below 2 PEs."""
    if n_pes < 2:
        raise ArrayConfigError.naming(f"{{n_pes}} {n_pes}: need at least 2 PEs to partition over")
    return array_from_levels(_factor(n_pes), base, name=f"pes-{n_pes}")


# ----------------------------------------------------------------------------- YAML mappings

ARRAY_KEYS = ("name", "description", "dtype_bytes", "batch", "pe_kinds", "levels", "pes", "solver")
KIND_KEYS = ("tflops", "memory_gb", "energy_pj_per_flop")
LEVEL_KEYS = ("fanout", "bandwidth_gbps", "latency_us", "energy_pj_per_bit", "name")
PES_KEYS = ("kind", "count")


def _known_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    """ArrayConfigError naming the first key of ``d`` not in ``allowed`` (a typo is never ignored)."""
    extra = sorted(set(d) - set(allowed), key=str)
    if extra:
        raise ArrayConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _num(d: dict, key: str, default: float, where: str) -> float:
    """``d[key]`` (or ``default``) as a float; ArrayConfigError when it is not a number."""
    v = d.get(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ArrayConfigError(f"{where}: {key} must be a number, got {v!r}")
    return float(v)


def _require_mapping(d: object, name: str) -> dict:
    """``d`` when it is a mapping; otherwise the error a file without one gets."""
    if not isinstance(d, dict):
        raise ArrayConfigError(f"{name}: the file must hold a mapping with 'levels' and 'pes'")
    return d


def _kinds_from(kinds_d: dict, name: str) -> dict[str, PEKind]:
    """The ``pe_kinds`` mapping: kind name -> PEKind (absent: one default accelerator)."""
    kinds_d = kinds_d or {"accelerator": {}}
    if not isinstance(kinds_d, dict):
        raise ArrayConfigError(f"{name}: 'pe_kinds' must map kind names to their figures, e.g. "
                               "{accelerator: {tflops: 100, memory_gb: 32}}")
    kinds = {}
    for kname, kd in kinds_d.items():
        kd = kd or {}
        where = f"{name}: pe_kinds.{kname}"
        if not isinstance(kd, dict):
            raise ArrayConfigError(f"{where} must map {', '.join(KIND_KEYS)} to numbers")
        _known_keys(kd, KIND_KEYS, where)
        kinds[kname] = PEKind(kname, _num(kd, "tflops", 100.0, where), _num(kd, "memory_gb", 32.0, where),
                              _num(kd, "energy_pj_per_flop", 1.0, where))
    return kinds


def _level_from(ld: object, where: str) -> Level:
    """One entry of ``levels``."""
    if not isinstance(ld, dict) or "fanout" not in ld:
        raise ArrayConfigError(f"{where} needs a 'fanout'")
    _known_keys(ld, LEVEL_KEYS, where)
    fan = ld["fanout"]
    if not isinstance(fan, int) or isinstance(fan, bool):
        raise ArrayConfigError(f"{where}: fanout must be an integer >= 2, got {fan!r}")
    return Level(fan, _num(ld, "bandwidth_gbps", 100.0, where), _num(ld, "latency_us", 0.0, where),
                 _num(ld, "energy_pj_per_bit", 10.0, where), str(ld.get("name", "")))


def _levels_from(levels_d: object, name: str) -> tuple[Level, ...]:
    """The ``levels`` list, top first."""
    if not isinstance(levels_d, list) or not levels_d:
        raise ArrayConfigError(f"{name}: 'levels' must be a non-empty list, top level first, "
                               "e.g. [{fanout: 2, bandwidth_gbps: 25}]")
    return tuple(_level_from(ld, f"{name}: levels[{i}]") for i, ld in enumerate(levels_d))


def _pes_from(pes_d: object, kinds: dict[str, PEKind], n_pes: int, name: str) -> tuple[str, ...]:
    """The ``pes`` row (one kind name per PE); absent: ``n_pes`` PEs of the only kind."""
    if pes_d is None:
        if len(kinds) != 1:
            raise ArrayConfigError(f"{name}: with several pe_kinds, list 'pes' as [{{kind: ..., count: ...}}, ...]")
        return (next(iter(kinds)),) * n_pes
    if not isinstance(pes_d, list):
        raise ArrayConfigError(f"{name}: 'pes' must be a list of {{kind: ..., count: ...}}")
    pes: list[str] = []
    for i, pd in enumerate(pes_d):
        if not isinstance(pd, dict) or "kind" not in pd:
            raise ArrayConfigError(f"{name}: pes[{i}] needs 'kind' and 'count'")
        _known_keys(pd, PES_KEYS, f"{name}: pes[{i}]")
        cnt = pd.get("count", 1)
        if not isinstance(cnt, int) or cnt < 1:
            raise ArrayConfigError(f"{name}: pes[{i}].count must be a positive integer")
        pes += [pd["kind"]] * cnt
    return tuple(pes)


def array_from_dict(d: dict, name: str = "array") -> PEArray:
    """Build and validate an array from its YAML mapping (keys: ``ARRAY_KEYS``; see
    solver_configs/README.md). ArrayConfigError, prefixed with ``name``, names the bad key."""
    _require_mapping(d, name)
    _known_keys(d, ARRAY_KEYS, name)
    kinds = _kinds_from(d.get("pe_kinds"), name)
    levels = _levels_from(d.get("levels"), name)
    pes = _pes_from(d.get("pes"), kinds, prod(lv.fanout for lv in levels), name)
    batch = d.get("batch")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ArrayConfigError(f"{name}: batch must be a positive integer")
    dtype = d.get("dtype_bytes", 2)
    if not isinstance(dtype, int):
        raise ArrayConfigError(f"{name}: dtype_bytes must be an integer (2 for bfloat16)")
    return PEArray(str(d.get("name", name)), levels, kinds, pes, dtype, batch, str(d.get("description", "")))


def read_array_file(path: str | os.PathLike) -> dict:
    """The mapping an array YAML file holds (not yet checked beyond being a mapping).
    ArrayConfigError naming the file when it is missing, not YAML or not a mapping."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArrayConfigError(f"no such array config {path!r}; see solver_configs/ for examples")
    try:
        with open(path) as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ArrayConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    return _require_mapping(d, array_file_name(path))


def array_file_name(path: str | os.PathLike) -> str:
    """The name an array file's errors (and its array, unless it has a ``name``) go by: its stem."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def load_array(path: str | os.PathLike) -> PEArray:
    """Read an array YAML file (errors name the file and the fix)."""
    return array_from_dict(read_array_file(path), array_file_name(path))


def default_array() -> PEArray:
    """The built-in default (matches solver_configs/default.yaml): 16 PEs, four 2-way levels."""
    levels = tuple(Level(2, 100.0, 1.0, 10.0) for _ in range(4))
    return PEArray("default", levels, {DEFAULT_KIND.name: DEFAULT_KIND}, (DEFAULT_KIND.name,) * 16, 2, None)


def split_counts(n: int, fractions: tuple[float, ...] | list[float]) -> list[int]:
    """Split integer ``n`` in proportion to ``fractions`` (see :func:`_split_counts`); a new list."""
    return list(_split_counts(int(n), tuple(fractions)))


@lru_cache(maxsize=1 << 16)
def _split_counts(n: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Split integer ``n`` in proportion to ``fractions`` (largest remainder; ties go to the larger
    fraction, i.e. the faster subgroup, then to the lowest index).

    Equal fractions give the ceil parts first: 3 over 2 -> [2, 1].
    """
    raw = [n * f for f in fractions]
    base = [int(r + 1e-9) for r in raw]
    rest = n - sum(base)
    order = sorted(range(len(raw)), key=lambda j: (-round(raw[j] - base[j], 9), -fractions[j], j))
    for j in order[:rest]:
        base[j] += 1
    return tuple(base)
