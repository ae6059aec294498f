"""What a simulated step reports: elements counted per layer and level, every transfer, numeric
errors against the reference, and the known reasons counted and predicted amounts may differ."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_TOL = 1e-9          # float64 steps
FLOAT32_TOL = 1e-4          # float32 steps: distributed and reference sum in different orders
                            # (~1e-7 per rounding, grown over a deep network's layers)


def default_tol(dtype) -> float:
    """The numerics tolerance of a step in ``dtype`` (relative to max(1, max |reference|))."""
    return FLOAT32_TOL if np.dtype(dtype) == np.float32 else DEFAULT_TOL


@dataclass
class Transfer:
    """Elements received at one level by one collective / conversion."""

    kind: str          # "intra" or "fwd" / "bwd" (edge conversions), "fold" (folded normalisations)
    what: str          # "dW", "F_out" (intra) or "<producer> -> <consumer(s)>" (edges)
    level: int
    elements: int
    node: int          # model node index charged (intra: the node; edges: first consumer)
    bytes: int = 0     # elements x the step's bytes per element (hypar.sim.widths)


@dataclass
class SimResult:
    """One simulated training step of a plan, compared with the one-device reference.

    ``counted[i][h]`` is the number of elements received at level h charged to kept node i
    (summed over every PE of every group), ``counted_bytes[i][h]`` the same in bytes, each step
    in its own width (:mod:`hypar.sim.widths`; ``dtype_bytes`` x elements on a model that
    declares no widths); ``max_err[i]``
    is the largest |distributed - reference| over node i's output, output error (where the
    backward pass needs it) and weight gradient, ``scale[i]`` the largest |reference| of those. ``unsupported`` non-empty means
    nothing was simulated (the other lists are then empty).
    """

    names: list[str]
    n_levels: int
    dtype_bytes: int
    unsupported: list[str] = field(default_factory=list)
    counted: list[list[int]] = field(default_factory=list)        # [node][level] elements received
    counted_bytes: list[list[int]] = field(default_factory=list)  # [node][level] bytes received
    transfers: list[Transfer] = field(default_factory=list)
    max_err: list[float] = field(default_factory=list)             # [node] max |distributed - reference|
    scale: list[float] = field(default_factory=list)               # [node] max |reference|
    tol: float = DEFAULT_TOL
    # conversions no hierarchical order realises at the model's per-level amounts:
    # (kind, what, consumer node, levels, source layouts, target layouts)
    flags: list = field(default_factory=list)
    # conversions the model de-duplicates at a level but that reach it from different states
    # (kind, what, charged node, level)
    split_dedup: list = field(default_factory=list)

    # BatchNorm statistics all-reduced by a folded BatchNorm under a batch split: (node, level, what)
    folded_stats: list = field(default_factory=list)

    # other known differences: (node, level, text)
    notes: list = field(default_factory=list)

    def explained(self, node: int, level: int) -> str | None:
        """Why counted and predicted bytes may differ at (node, level), or None."""
        for c, h, text in self.notes:
            if c == node and h == level:
                return text
        for c, h, what in self.folded_stats:
            if c == node and h == level:
                return (f"{what}: a folded normalisation whose statistics axis is split (BatchNorm under a "
                        "batch split, LayerNorm under a feature split) needs its statistics all-reduced (mean, "
                        "variance forward; two sums backward); the folded space does not charge them")
        for kind, what, c, levels, src, tgt in self.flags:
            if c == node and level in levels:
                return (f"{kind} {what} {'/'.join(src)} -> {'/'.join(tgt)}: no level-by-level order moves "
                        f"the model's per-level amounts (a replica or partial sum below level {level} "
                        "must be moved by every copy, or the consumer's view above it is wrong)")
        for kind, what, c, h in self.split_dedup:
            if c == node and h == level:
                return (f"{kind} {what}: the model converts this tensor once at level {level} for several "
                        "consumers whose views there have equal sizes (CostModel.level_edge_costs keys on "
                        "_edge_view's sizes) though their shards differ (split at other levels, or other "
                        "layouts below); the simulator shares a step only between equal states")
        return None

    def clear_counts(self) -> None:
        """Forget everything counted or noted (a step that stopped half way reports nothing)."""
        self.counted, self.transfers, self.flags, self.split_dedup, self.folded_stats, self.notes = \
            [], [], [], [], [], []
        self.counted_bytes = []

    @property
    def ok_numerics(self) -> list[bool]:
        """Per node: is ``max_err <= tol * max(1, scale)``."""
        return [e <= self.tol * max(1.0, s) for e, s in zip(self.max_err, self.scale)]
