"""Conversion sharing: the one rule, per convention, for how often a tensor between layers is
converted (SPEC.md §3-4, HIER_SEMANTICS.md §3).

Over all edges carrying one tensor -- every consumer, every input slot:

- ``reference`` (:func:`share_conversions`, one level at a time): the tensor is costed in each
  consumer's *view* at the level (the consumer's own splits above it); forward, it is converted
  once per distinct (view, layout a consumer reads), from the layout the producer makes it in;
  backward, the errors the consumers send are converted once per distinct (view, error layout),
  into the layout the producer needs its output's error in; partial errors (layout ``P``) are
  all-reduced once per distinct view, whatever the producer does;
- ``hierarchical`` (:func:`share_by` over :func:`full_conversions`, the same at every level): forward, the producer's output
  is converted once per distinct *full* target tuple (one layout per level) among the edges;
  backward, errors with an equal full source tuple are summed locally and converted once into
  the producer's needed error tuple. A conversion whose tuples are equal moves nothing.

Edges with an equal key share one conversion, whether they belong to different consumers or to
two slots of one consumer. The exact evaluation and every problem encoding (pair matrices,
factor tables, group terms) use these rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hypar.cost.strategies import FULL, PARTIAL, NodeModel, Strategy
from hypar.cost.structure import EdgeModel

# (edge, consumer's type tuple, level) -> the consumer's view signature of the edge's tensor
# at that level (hypar.cost.model.CostModel.edge_view).
ViewOf = Callable[[EdgeModel, tuple, int], tuple]

# (edge, consumer's type tuple) -> the conversions that edge needs under that choice.
KeysOf = Callable[[EdgeModel, tuple], tuple["Conversion", ...]]


@dataclass(frozen=True, slots=True)
class Conversion:
    """One conversion of a tensor, named by what decides its amount besides the producer's
    strategies: direction, a signature of the tensor and the consumer's layout(s).

    ``reference``: ``view`` is the consumer's view signature at one level and ``layout`` one
    layout string. ``hierarchical``: ``view`` is the tensor's signature at the root
    (elements, batch size, feature size) and ``layout`` a tuple with one layout per level (None
    for a level not decided yet).
    """

    backward: bool          # False: the activation, into ``layout``; True: an error, out of ``layout``
    view: tuple             # the tensor's signature (see above)
    layout: str | tuple     # forward: what the consumer reads; backward: the error it sends
    width_bytes: int | None = None   # bytes per element the model declares (None: training precision)
    _hash: int = field(init=False, repr=False, compare=False)   # a memo key: hashed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.backward, self.view, self.layout, self.width_bytes)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def consumer_only(self) -> bool:
        """True for a partial error under ``reference``: all-reduced whatever the producer's
        strategy (never under ``hierarchical``, where P is converted into the producer's layouts)."""
        return self.backward and self.layout == PARTIAL

    def layouts(self, producer: Strategy | None) -> tuple[str, str]:
        """(source layout, target layout) of this conversion when the producer takes ``producer``
        (which may be None for a :attr:`consumer_only` one: a partial error is reduced in full)."""
        if not self.backward:
            return producer.out_layout, self.layout
        if self.layout == PARTIAL:
            return PARTIAL, FULL
        return self.layout, producer.out_err_layout


class Conversions:
    """One :class:`Conversion` object per distinct value: a cost model's problems name the same
    few conversions over and over (a few thousand distinct among hundreds of thousands asked
    for), and one object each keeps the memos that hold them small."""

    def __init__(self) -> None:
        self._made: dict[tuple, Conversion] = {}

    def get(self, backward: bool, view: tuple, layout: str | tuple, width_bytes: int | None = None) -> Conversion:
        """The conversion with these fields (made on first use)."""
        key = (backward, view, layout, width_bytes)
        hit = self._made.get(key)
        if hit is None:
            hit = self._made[key] = Conversion(backward, view, layout, width_bytes)
        return hit


def edge_conversions(e: EdgeModel, consumer: Strategy, view: tuple,
                     made: Conversions | None = None) -> tuple[Conversion, ...]:
    """What edge ``e`` alone needs when its consumer takes ``consumer`` and sees the tensor as
    ``view``: the forward conversion, then the backward one if ``e`` carries an error (objects
    from ``made`` when given)."""
    make = Conversion if made is None else made.get
    forward = make(False, view, consumer.in_layouts[e.slot], e.tensor.elem_bytes)
    if not e.needs_error:
        return (forward,)
    return forward, make(True, view, consumer.in_err_layouts[e.slot], e.tensor.error_bytes)


def slot_layouts(node: NodeModel, slot: int) -> tuple[dict, dict]:
    """Per label of ``node`` (and None, for a level not decided: None), the layout it reads on
    input ``slot`` and the layout of the error it sends back there: the tables
    :func:`full_conversions` maps a type tuple through."""
    forward: dict = {None: None}
    backward: dict = {None: None}
    for st in node.strategies:
        forward[st.label] = st.in_layouts[slot]
        backward[st.label] = st.in_err_layouts[slot]
    return forward, backward


def full_conversions(e: EdgeModel, layouts: tuple[dict, dict], types: tuple, sig: tuple,
                     made: Conversions | None = None) -> tuple[Conversion, ...]:
    """What edge ``e`` alone needs under ``hierarchical`` when its consumer takes ``types`` (None
    where undecided) and the tensor's root signature is ``sig``: the forward conversion into its
    full input tuple, then the backward one out of its full error tuple. ``layouts``: the
    consumer's :func:`slot_layouts` of ``e.slot`` (KeyError for a label the consumer lacks);
    objects from ``made`` when given."""
    make = Conversion if made is None else made.get
    forward = make(False, sig, tuple(map(layouts[0].__getitem__, types)), e.tensor.elem_bytes)
    if not e.needs_error:
        return (forward,)
    return forward, make(True, sig, tuple(map(layouts[1].__getitem__, types)), e.tensor.error_bytes)


def share_by(edges: list[EdgeModel], choices: Sequence[Sequence[tuple]] | Mapping[int, Sequence[tuple]],
             keys_of: KeysOf) -> dict[Conversion, list[tuple[int, int]]]:
    """The conversions one tensor needs, each once, with who needs it: edges needing an equal
    :class:`Conversion` (``keys_of``, see :data:`KeysOf`) share it.

    ``edges``: the edges carrying the tensor (:attr:`Structure.tensor_edges`); ``choices[c]``
    (a sequence or a mapping by consumer index): the type tuples (one label per level) consumer c
    may take -- one tuple for a fixed assignment.

    Returns {conversion: [(consumer index, choice index), ...]}: conversions in the order first
    needed (edge by edge, choice by choice, forward before backward), each one's needers in that
    order without repeats.
    """
    shared: dict[Conversion, list[tuple[int, int]]] = {}
    # a (consumer, choice) can need one conversion twice only through two edges of one consumer
    repeats = len({e.c for e in edges}) < len(edges)
    for e in edges:
        for t, types in enumerate(choices[e.c]):
            needer = (e.c, t)
            for conv in keys_of(e, types):
                needers = shared.get(conv)
                if needers is None:
                    shared[conv] = [needer]
                elif not (repeats and needer in needers):
                    needers.append(needer)
    return shared


def share_conversions(edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], level: int,
                      nodes: list[NodeModel], view_of: ViewOf,
                      made: Conversions | None = None) -> dict[Conversion, list[tuple[int, int]]]:
    """The ``reference`` rule at ``level`` (module docstring), as :func:`share_by` returns it;
    ``nodes``: the kept nodes; ``view_of``: see :data:`ViewOf`; conversion objects from ``made``
    when given."""
    def keys_of(e: EdgeModel, types: tuple) -> tuple[Conversion, ...]:
        return edge_conversions(e, nodes[e.c].strategy(types[level]), view_of(e, types, level), made)
    return share_by(edges, choices, keys_of)
