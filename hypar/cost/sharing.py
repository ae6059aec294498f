"""Conversion sharing: the one rule for how often a tensor between layers is converted at a level.

A tensor leaving a producer is costed in each consumer's *view* at the level (the consumer's own
splits above it, SPEC.md §3-4). Over all edges carrying that tensor -- every consumer, every
input slot -- and at one level:

- forward, the tensor is converted once per distinct (view, layout a consumer reads), from the
  layout the producer makes it in;
- backward, the errors the consumers send are converted once per distinct (view, error layout),
  into the layout the producer needs its output's error in; partial errors (layout ``P``) are
  all-reduced once per distinct view, whatever the producer does.

Edges with an equal (view, layout) share one conversion, whether they belong to different
consumers or to two slots of one consumer. :func:`share_conversions` applies the rule; the exact
evaluation and every problem encoding (pair matrices, factor tables, group terms) use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypar.cost.strategies import FULL, PARTIAL, NodeModel, Strategy
from hypar.cost.structure import EdgeModel

# (edge, consumer's type tuple, level) -> the consumer's view signature of the edge's tensor
# at that level (hypar.cost.model.CostModel.edge_view).
ViewOf = Callable[[EdgeModel, tuple, int], tuple]


@dataclass(frozen=True, slots=True)
class Conversion:
    """One conversion of a tensor at a level, named by what decides its amount besides the
    producer's strategy: direction, the consumer's view signature and the consumer's layout."""

    backward: bool   # False: the activation, into ``layout``; True: an error, out of ``layout``
    view: tuple      # the consumer's view signature of the tensor at the level
    layout: str      # forward: the layout the consumer reads; backward: the error layout it sends

    @property
    def consumer_only(self) -> bool:
        """True for a partial error: all-reduced whatever the producer's strategy."""
        return self.backward and self.layout == PARTIAL

    def layouts(self, producer: Strategy | None) -> tuple[str, str]:
        """(source layout, target layout) of this conversion when the producer takes ``producer``
        (which may be None for a :attr:`consumer_only` one: a partial error is reduced in full)."""
        if not self.backward:
            return producer.out_layout, self.layout
        if self.layout == PARTIAL:
            return PARTIAL, FULL
        return self.layout, producer.out_err_layout


def edge_conversions(e: EdgeModel, consumer: Strategy, view: tuple) -> tuple[Conversion, ...]:
    """What edge ``e`` alone needs when its consumer takes ``consumer`` and sees the tensor as
    ``view``: the forward conversion, then the backward one if ``e`` carries an error."""
    forward = Conversion(False, view, consumer.in_layouts[e.slot])
    if not e.needs_error:
        return (forward,)
    return forward, Conversion(True, view, consumer.in_err_layouts[e.slot])


def share_conversions(edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], level: int,
                      nodes: list[NodeModel], view_of: ViewOf) -> dict[Conversion, list[tuple[int, int]]]:
    """The conversions one tensor needs at ``level``, each once (the module's rule), with who needs it.

    ``edges``: the edges carrying the tensor (:attr:`Structure.tensor_edges`); ``choices[c]``:
    the type tuples (one label per level) consumer c may take -- one tuple for a fixed
    assignment; ``nodes``: the kept nodes; ``view_of``: see :data:`ViewOf`.

    Returns {conversion: [(consumer index, choice index), ...]}: conversions in the order first
    needed (edge by edge, choice by choice, forward before backward), each one's needers in that
    order without repeats.
    """
    shared: dict[Conversion, dict[tuple[int, int], None]] = {}
    for e in edges:
        node = nodes[e.c]
        for t, types in enumerate(choices[e.c]):
            for conv in edge_conversions(e, node.strategy(types[level]), view_of(e, types, level)):
                shared.setdefault(conv, {})[(e.c, t)] = None
    return {conv: list(needers) for conv, needers in shared.items()}
