"""The exact costs of one assignment of a cost model, node by node and level by level, and
their totals (SPEC.md "Units and totals"); :meth:`hypar.cost.model.CostModel.evaluate` makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hypar.cost.price import ZERO, Cost

if TYPE_CHECKING:
    from hypar.cost.model import CostModel


@dataclass
class Evaluation:
    """Exact costs of one assignment: per node, per level communication; per node compute and memory."""

    model: "CostModel"
    assignment: list[tuple]
    comm: list[list[Cost]]          # [node][level]
    compute: list[Cost]             # [node]
    memory_bytes: list[float]       # [node], per PE
    _totals: dict = field(default_factory=dict, repr=False)

    def totals(self) -> dict:
        """The `totals` object of plans and `hypar evaluate --json` (SPEC.md "Units and totals");
        a fresh dict each call (computed once)."""
        if not self._totals:
            self._totals.update(self._sum_totals())
        return dict(self._totals)

    def _sum_totals(self) -> dict:
        """The totals, summed node by node and level by level (see :meth:`totals`)."""
        comm = sum((c for row in self.comm for c in row), ZERO)
        compute = sum(self.compute, ZERO)
        return {
            "comm_bytes": comm.bytes,
            "time_s": comm.seconds + compute.seconds,
            "compute_s": compute.seconds,
            "comm_s": comm.seconds,
            "energy_j": comm.joules + compute.joules,
            "peak_mem_bytes_per_pe": sum(self.memory_bytes),
        }

    def objective(self, objective: str) -> float:
        """The total an objective minimises: ``comm`` bytes, ``time`` seconds, ``energy`` joules."""
        t = self.totals()
        return {"comm": t["comm_bytes"], "time": t["time_s"], "energy": t["energy_j"]}[objective]

    def level_comm(self, h: int) -> Cost:
        """Communication at level h summed over nodes."""
        return sum((row[h] for row in self.comm), ZERO)

    def layers(self) -> list[dict]:
        """Per-layer rows with per-level communication (JSON-ready)."""
        rows = []
        for i, name in enumerate(self.model.names):
            node = self.model.nodes[i]
            rows.append({
                "name": name,
                "op": node.layer.op,
                "types": list(self.assignment[i]),
                "levels": [{"level": h, "comm_bytes": c.bytes, "comm_s": c.seconds, "energy_j": c.joules}
                           for h, c in enumerate(self.comm[i])],
                "comm_bytes": sum(c.bytes for c in self.comm[i]),
                "compute_s": self.compute[i].seconds,
                "time_s": self.compute[i].seconds + sum(c.seconds for c in self.comm[i]),
                "energy_j": self.compute[i].joules + sum(c.joules for c in self.comm[i]),
                "mem_bytes_per_pe": self.memory_bytes[i],
            })
        return rows
