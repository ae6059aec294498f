"""What moving data costs: the :class:`Cost` triple (bytes, seconds, joules) and the price of one
collective at one level of the PE array (SPEC.md "Units and totals").

A collective at level h runs in every group of that level at once. Its bytes sum what every
subgroup of every group receives; its time is the slowest subgroup's per-PE bytes over the
level's bandwidth plus its latency per message; its energy is its bytes at the level's pJ/bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar.array import GroupClass, Level
from hypar.vocab import Objective

OBJECTIVES = Objective.values()   # what Cost.value can return: comm bytes, time seconds, energy joules
# The Cost field each objective minimises.
FIELD_OF = {"comm": "bytes", "time": "seconds", "energy": "joules"}

# One group class's part in a collective: (group class, groups of that class, elements received
# per subgroup in the class's child order, messages per subgroup).
Traffic = tuple[GroupClass, int, list[float], int]


@dataclass(frozen=True, slots=True)
class Cost:
    """Bytes over links, seconds, joules. Adding costs adds all three (times are sequential)."""

    bytes: float = 0.0
    seconds: float = 0.0
    joules: float = 0.0

    def __add__(self, o: "Cost") -> "Cost":
        return Cost(self.bytes + o.bytes, self.seconds + o.seconds, self.joules + o.joules)

    def value(self, objective: str) -> float:
        """The number an objective minimises: ``comm`` bytes, ``time`` seconds, ``energy`` joules
        (KeyError for another name)."""
        return getattr(self, FIELD_OF[objective])


ZERO = Cost()


def collective_cost(level: Level, dtype_bytes: int, traffic: list[Traffic]) -> Cost:
    """Cost of one collective at ``level`` from each group class's :data:`Traffic`.

    Bytes: groups x elements received x ``dtype_bytes``, summed. Seconds: the slowest receiving
    subgroup's bytes per PE / bandwidth + messages x latency. Joules: bytes x 8 x pJ/bit.
    """
    bandwidth_bytes_per_s = level.bandwidth_gbps * 1e9
    total_bytes, worst_s = 0.0, 0.0
    for gc, count, received, msgs in traffic:
        total_bytes += count * sum(received) * dtype_bytes
        for j, r in enumerate(received):
            if r > 0:
                t = r * dtype_bytes / gc.children[j][2] / bandwidth_bytes_per_s + msgs * level.latency_us * 1e-6
                worst_s = max(worst_s, t)
    return Cost(total_bytes, worst_s, total_bytes * 8 * level.energy_pj_per_bit * 1e-12)
