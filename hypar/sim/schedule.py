"""The order of per-level steps converting a tensor's layouts (one per level) into others: which
operations each level needs, and the search for an order that moves the cost model's per-level
amounts (pure: layouts in, steps out)."""

from __future__ import annotations

from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS

MAX_ORDERS = 64     # schedule(all_orders=True) lists at most this many orders


def level_ops(s: str, t: str) -> list[tuple[str, str]]:
    """The operations turning layout s into t at one level: (op, new layout) with op one of
    "slice" (free), "a2a" (shard -> other shard), "ag" (shard -> full), "rs" (partial -> shard).
    Partial sums are all-reduced (reduce-scatter + all-gather) whatever t is (cost-model convention)."""
    if s == t:
        return []
    if s == FULL:
        return [("slice", t)]
    if s == PARTIAL:
        if t == FULL:
            return [("rs", ROWS), ("ag", FULL)]
        return [("rs", t), ("ag", FULL), ("slice", t)]
    if t == FULL:
        return [("ag", FULL)]
    return [("a2a", t)]


def _split(layout: str) -> bool:
    """Is the layout a shard (not a replica or a partial sum)."""
    return layout in (ROWS, COLS)


def _advanced(t: tuple, h: int, value) -> tuple:
    """``t`` with entry h replaced by ``value``."""
    return t[:h] + (value,) + t[h + 1:]


class _Search:
    """The per-level operations of one conversion and the rules an order must follow. A search
    position is how many of each level's operations ran (the state follows from it)."""

    def __init__(self, src: tuple, tgt: tuple, view: tuple, backward: bool):
        self.src, self.view, self.backward = tuple(src), tuple(view), backward
        self.H = len(src)
        self.ops = [level_ops(src[h], tgt[h]) for h in range(self.H)]
        self.start = (0,) * self.H
        self.dead: set = set()

    def valid(self, state: tuple, h: int, op: str) -> bool:
        """Does running ``op`` at level h in ``state`` move the model's amounts (levels above as
        the view, levels below sharded)."""
        if op == "slice":
            return True
        return (all(_split(state[u]) == _split(self.view[u]) for u in range(h))
                and all(_split(state[g]) for g in range(h + 1, self.H)))

    def candidates(self, pos: tuple) -> list[int]:
        """Levels with an operation left, preferred first (forward: slices then top level first;
        backward: message-moving steps bottom level first)."""
        hs = [h for h in range(self.H) if pos[h] < len(self.ops[h])]
        if self.backward:
            return sorted(hs, key=lambda h: (self.ops[h][pos[h]][0] == "slice", -h))
        return sorted(hs, key=lambda h: (self.ops[h][pos[h]][0] != "slice", h))

    def done(self, pos: tuple) -> bool:
        """Has every level run all its operations."""
        return all(pos[h] == len(self.ops[h]) for h in range(self.H))

    def step(self, pos: tuple, state: tuple, h: int) -> tuple[tuple, tuple, tuple]:
        """(step (level, op, new layout), next position, next state) of running level h's next op."""
        op, new = self.ops[h][pos[h]]
        return (h, op, new), _advanced(pos, h, pos[h] + 1), _advanced(state, h, new)

    def first(self, pos: tuple, state: tuple) -> list | None:
        """The preferred valid order from ``pos`` (depth first), or None."""
        if self.done(pos):
            return []
        if pos in self.dead:
            return None
        for h in self.candidates(pos):
            if not self.valid(state, h, self.ops[h][pos[h]][0]):
                continue
            step, p2, s2 = self.step(pos, state, h)
            rest = self.first(p2, s2)
            if rest is not None:
                return [step] + rest
        self.dead.add(pos)
        return None

    def every(self, pos: tuple, state: tuple, acc: list, orders: list) -> None:
        """Append every valid order from ``pos`` to ``orders`` (preferred first, at most MAX_ORDERS)."""
        if len(orders) >= MAX_ORDERS:
            return
        if self.done(pos):
            orders.append(list(acc))
            return
        for h in self.candidates(pos):
            if self.valid(state, h, self.ops[h][pos[h]][0]):
                step, p2, s2 = self.step(pos, state, h)
                self.every(p2, s2, acc + [step], orders)

    def greedy(self) -> tuple[list, list[int]]:
        """The preferred order taking a valid step where there is one: (steps, levels of the
        steps that are not valid)."""
        steps, bad, pos, state = [], [], self.start, self.src
        while True:
            cands = self.candidates(pos)
            if not cands:
                break
            ok = [h for h in cands if self.valid(state, h, self.ops[h][pos[h]][0])]
            h = (ok or cands)[0]
            if not ok:
                bad.append(h)
            step, pos, state = self.step(pos, state, h)
            steps.append(step)
        return steps, sorted(set(bad))

    def best(self) -> tuple[list, list[int]]:
        """The preferred valid order and no bad levels, else the greedy fallback."""
        found = self.first(self.start, self.src)
        if found is not None:
            return found, []
        return self.greedy()


def schedule(src: tuple, tgt: tuple, view: tuple, backward: bool,
             all_orders: bool = False) -> tuple[list, list[int]]:
    """Order the per-level operations converting layouts ``src`` into ``tgt``.

    The cost model prices level h's conversion on the consumer's view there (``view``: the
    consumer's layouts, unsplit where full or partial). An order *realises* those amounts when
    every message-moving operation at level h runs while (1) each level above has the split-ness
    of ``view`` and (2) each level below is sharded (a replica or an unreduced partial below would
    make every copy move its own data). Returns (steps (level, op, new layout), levels of the
    steps that break (1)/(2)); the second list is empty when such an order exists.
    Preference: forward top level first with replicas sliced early, backward bottom level first.
    ``all_orders``: the first element is then the list of every realising order (at most 64),
    preferred first (or the single fallback order).
    """
    search = _Search(src, tgt, view, backward)
    if not all_orders:
        return search.best()
    orders: list = []
    search.every(search.start, search.src, [], orders)
    if orders:
        return orders, []
    steps, bad = _Search(src, tgt, view, backward).best()
    return [steps], bad
