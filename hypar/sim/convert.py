"""Edge conversions executed: a producer's tensor (forward) or a consumer's error (backward) moved
level by level into the layouts the other side needs, in the order (of those ``schedule`` finds)
that shares most steps with conversions of the same tensor already run -- the cost model's
de-duplication -- and several consumers' errors folded so they are summed locally and reduced once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import SimulationError
from hypar.sim.ledger import ConversionKey, Ledger
from hypar.sim.mesh import Dist, slice_local
from hypar.sim.schedule import schedule


@dataclass(frozen=True)
class Conversion:
    """One edge conversion: ``kind`` "fwd" / "bwd", ``base`` (producer index, tensor key),
    ``what`` its label in transfers, ``consumer`` the node charged, ``view`` the consumer's layouts
    the model prices it on (a tuple, one per level)."""

    kind: str
    base: tuple
    what: str
    consumer: int
    view: tuple

    def key(self, h: int, before: tuple, after: tuple, src: tuple, tgt: tuple) -> ConversionKey:
        """The ledger key of the step at level h from ``before`` to ``after`` of the conversion
        ``src`` -> ``tgt``; the view enters as the model's _edge_view does: by size (splits per
        axis above h)."""
        return ConversionKey(self.kind, *self.base, h, before, after, src[h], tgt[h],
                             (self.view[:h].count(ROWS), self.view[:h].count(COLS)))

    def sharing(self, src: tuple, tgt: tuple, steps: list, ledger: Ledger) -> int:
        """How many of an order's message-moving steps another conversion already ran (shared)."""
        n, cur = 0, tuple(src)
        for h, op, new in steps:
            nxt = cur[:h] + (new,) + cur[h + 1:]
            if op != "slice" and self.key(h, cur, nxt, src, tgt) in ledger:
                n += 1
            cur = nxt
        return n


def convert(ledger: Ledger, conv: Conversion, d: Dist, tgt: tuple, memo: dict | None, flags: list) -> Dist:
    """Convert ``d`` to layouts ``tgt``: among the orders that realise the model's per-level
    amounts, the one sharing most steps with conversions of the same tensor already run (the
    ledger's keys, ``memo``: step key -> state reached, None to not reuse states), else the
    preferred one. A conversion no order realises is appended to ``flags`` (kind, what, consumer,
    levels, source layouts, target layouts). Raises SimulationError if it ends elsewhere."""
    orders, bad = schedule(d.layouts, tgt, conv.view, conv.kind == "bwd", all_orders=True)
    if bad:
        flags.append((conv.kind, conv.what, conv.consumer, bad, d.layouts, tgt))
    src = d.layouts
    steps = max(orders, key=lambda o: conv.sharing(src, tgt, o, ledger))
    for h, op, new in steps:
        key = conv.key(h, d.layouts, d.layouts_with(h, new), src, tgt)
        d = _run_step(ledger, conv, key, d, h, op, new, memo)
    if d.layouts != tgt:
        raise SimulationError(f"{conv.kind} conversion {conv.what} ended in {d.layouts}, wanted {tgt}")
    return d


def _run_step(ledger: Ledger, conv: Conversion, key: ConversionKey, d: Dist, h: int, op: str, new: str,
              memo: dict | None) -> Dist:
    """One level's step. A state another conversion reached is reused only through the same step
    (the cost model's de-duplication: same tensor, view size and layouts), else moved again."""
    if op == "slice":
        return slice_local(d, h, new)
    hit = memo.get(key) if memo is not None else None
    if hit is not None:
        ledger.run(key, conv.kind, conv.what, conv.consumer, lambda: None)
        d = hit
    else:
        d = ledger.run(key, conv.kind, conv.what, conv.consumer, lambda: ledger.comm.relayout(d, h, new))
    if memo is not None:
        memo[key] = d
    return d


class ErrorItem(NamedTuple):
    """A consumer's error for one of its producer's tensors: consumer index, edge index, error."""

    consumer: int
    edge: int
    error: Dist


def fold_into_partials(items: list[ErrorItem], base_of: dict) -> list[ErrorItem]:
    """Errors of one producer tensor from several consumers: where one is replicated (R) at a
    level at which another, otherwise in the same layouts, is a partial sum (P), fold it into a
    partial sum (kept by subgroup 0 only: free) so both are summed locally and reduced once, as
    the cost model charges them (a replica is a valid partial sum). ``base_of``: edge index ->
    the conversion's (producer, tensor key)."""
    out = []
    for c, e_idx, d in items:
        for _c2, e2, d2 in items:
            if base_of[e2] != base_of[e_idx] or d2 is d:
                continue
            lv = [h for h in range(len(d.layouts)) if d.layouts[h] != d2.layouts[h]]
            if lv and all(d.layouts[h] == FULL and d2.layouts[h] == PARTIAL for h in lv):
                vals = []
                for p, v in enumerate(d.vals):
                    keep = all(d.mesh.coords[p][h] == 0 for h in lv)
                    vals.append(v if keep else np.where(np.isnan(v), np.nan, 0.0))
                d = Dist(d.mesh, d.shape, d2.layouts, vals, d.axes)
                break
        out.append(ErrorItem(c, e_idx, d))
    return out
