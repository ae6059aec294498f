"""PE arrays: a hierarchy of levels over a row of processing elements (PEs), possibly of mixed kinds.

A :class:`PEArray` has levels top first; level h splits every group into ``fanout`` contiguous
subgroups. The PEs themselves (``pes``, one kind name per PE, in order) fix which subgroup holds
which kinds, so heterogeneity (e.g. half TPU-v2, half TPU-v3) follows from the layout of the PE
row. Arrays come from YAML (:func:`load_array`) or shortcuts (:func:`array_from_pes`,
:func:`array_from_levels`).

Units are in the names: ``tflops`` (dense TFLOP/s per PE), ``memory_gb`` (GB per PE),
``bandwidth_gbps`` (GB/s per PE at that level, each direction), ``latency_us`` (per message),
``energy_pj_per_bit`` (link energy), ``energy_pj_per_flop`` (compute energy).

Compute-in-memory (CIM) kinds: ``weights_stationary: true`` with ``weight_capacity_mb`` (MB =
1e6 bytes of on-chip weight storage per PE). Their throughput and energy may be given as a
macro's datasheet states them: ``tops`` (tera-operations/s) and ``tops_per_w`` at
``precision_bits``-bit operands. One MAC is 2 operations, as hypar counts one MAC as 2 FLOP
(SPEC.md §4), so ``tflops = tops`` and ``energy_pj_per_flop = 1 / tops_per_w`` (1 TOPS/W =
1e12 op/J = 1 op/pJ). The figures hold for elements of at most ``precision_bits`` bits: an array
whose ``dtype_bytes`` is wider is refused (hypar does not rescale a macro's throughput with the
operand width). What weight-stationarity changes in the plan is stated in
:mod:`hypar.cost.stationary`.
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
    """One kind of PE: dense throughput (TFLOP/s), memory (GB) and compute energy (pJ/FLOP);
    a compute-in-memory kind also holds its layers' weights in place (``weights_stationary``)
    within ``weight_capacity_bytes``, its figures valid up to ``precision_bits``-bit operands
    (None: any)."""

    name: str
    tflops: float = 100.0
    memory_gb: float = 32.0
    energy_pj_per_flop: float = 1.0
    weights_stationary: bool = False
    weight_capacity_bytes: float | None = None
    precision_bits: int | None = None


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
            _check_stationary(k, self.dtype_bytes)
        if self.dtype_bytes <= 0:
            raise ArrayConfigError("dtype_bytes must be positive (2 for bfloat16, 4 for float32)")

    @property
    def weights_stationary(self) -> bool:
        """True when some PE holds its layers' weights in place (a compute-in-memory kind)."""
        return any(self.kinds[k].weights_stationary for k in set(self.pes))

    def class_weight_capacity_bytes(self, key: tuple[tuple[str, int], ...]) -> float | None:
        """Weight capacity (bytes) of a group of class ``key``: the sum over its PEs when every
        one is weights-stationary; None when some PE is not (its weights are not bounded)."""
        caps = [(self.kinds[k].weight_capacity_bytes, n) for k, n in key]
        if any(c is None for c, _n in caps):
            return None
        return sum(c * n for c, n in caps)

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
            "pe_kinds": {k.name: _kind_json(k) for k in sorted(self.kinds.values(), key=lambda k: k.name)},
            "pes": [{"kind": k, "count": n} for k, n in self._key(0, self.n_pes)],
        }


def _kind_json(k: PEKind) -> dict:
    """A kind's figures for plans (the CIM keys only for kinds that have them, so plans of other
    arrays are unchanged)."""
    out: dict = {"tflops": k.tflops, "memory_gb": k.memory_gb, "energy_pj_per_flop": k.energy_pj_per_flop}
    if k.weights_stationary:
        out.update(weights_stationary=True, weight_capacity_mb=k.weight_capacity_bytes / 1e6)
    if k.precision_bits is not None:
        out["precision_bits"] = k.precision_bits
    return out


def _check_stationary(k: PEKind, dtype_bytes: int) -> None:
    """ArrayConfigError unless kind ``k``'s compute-in-memory figures are consistent: a stationary
    kind has a positive weight capacity (and only it has one); its precision covers the array's
    element width."""
    if k.weights_stationary and not (k.weight_capacity_bytes and k.weight_capacity_bytes > 0):
        raise ArrayConfigError(f"PE kind {k.name!r} is weights_stationary but has no weight capacity; "
                               "give weight_capacity_mb (on-chip weight bytes per PE, in MB)")
    if not k.weights_stationary and k.weight_capacity_bytes is not None:
        raise ArrayConfigError(f"PE kind {k.name!r} has weight_capacity_mb but is not weights_stationary; "
                               "add weights_stationary: true (or drop weight_capacity_mb)")
    if k.precision_bits is not None and dtype_bytes * 8 > k.precision_bits:
        raise ArrayConfigError(f"PE kind {k.name!r} computes at {k.precision_bits}-bit operands but the array's "
                               f"dtype_bytes is {dtype_bytes} ({dtype_bytes * 8} bits); set dtype_bytes: "
                               f"{max(1, k.precision_bits // 8)} or give the kind's figures at "
                               f"{dtype_bytes * 8} bits (precision_bits: {dtype_bytes * 8})")


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
KIND_KEYS = ("tflops", "memory_gb", "energy_pj_per_flop", "tops", "tops_per_w", "precision_bits",
             "weights_stationary", "weight_capacity_mb")
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
        kinds[kname] = _kind_from(kname, kd, where)
    return kinds


def _either(kd: dict, own: str, datasheet: str, default: float, convert, where: str) -> float:
    """``kd[own]``, or ``convert(kd[datasheet])`` (a CIM datasheet figure), or ``default``;
    ArrayConfigError when both keys are given or the datasheet figure is not positive."""
    if own in kd and datasheet in kd:
        raise ArrayConfigError(f"{where}: give {own} or {datasheet}, not both")
    if datasheet not in kd:
        return _num(kd, own, default, where)
    v = _num(kd, datasheet, 0.0, where)
    if v <= 0:
        raise ArrayConfigError(f"{where}: {datasheet} must be positive, got {v:g}")
    return convert(v)


def _kind_from(kname: str, kd: dict, where: str) -> PEKind:
    """One entry of ``pe_kinds`` (module docstring: ``tops`` -> ``tflops``, ``tops_per_w`` ->
    ``energy_pj_per_flop``, ``weight_capacity_mb`` -> bytes)."""
    stationary = kd.get("weights_stationary", False)
    if not isinstance(stationary, bool):
        raise ArrayConfigError(f"{where}: weights_stationary must be true or false, got {stationary!r}")
    bits = kd.get("precision_bits")
    if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or bits < 1):
        raise ArrayConfigError(f"{where}: precision_bits must be a positive integer (e.g. 8), got {bits!r}")
    cap_mb = _num(kd, "weight_capacity_mb", 0.0, where) if "weight_capacity_mb" in kd else None
    if cap_mb is not None and cap_mb <= 0:
        raise ArrayConfigError(f"{where}: weight_capacity_mb must be positive, got {cap_mb:g}")
    return PEKind(kname, _either(kd, "tflops", "tops", 100.0, lambda tops: tops, where),
                  _num(kd, "memory_gb", 32.0, where),
                  _either(kd, "energy_pj_per_flop", "tops_per_w", 1.0, lambda tpw: 1.0 / tpw, where),
                  stationary, None if cap_mb is None else cap_mb * 1e6, bits)


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
