"""AlexNet and VGG11 as the AccPar authors' public reference code describes them, and a builder of
hypar chain layer graphs from those descriptions (SPEC.md §1-3, "the reference setting").

Source of the numbers (data only): github.com/linghaosong/AccPar, ``networks/Alexnet.txt`` and
``networks/Vgg11.txt`` (commit 8f28c36961d72217dc5739e67412fac267e5c182). Their format is
``num_layers N`` and then, per layer, ``<name> CONV`` followed by ``in_ch, in_fmap_h, in_fmap_w,
kernel, out_ch, out_fmap_h, out_fmap_w, pool`` (one ``key value`` per line), or ``<name> FC``
followed by ``in_ch, out_ch``. ``out_fmap`` is the size after the layer's pooling (``pool`` is
the pooling factor; the reference uses it for nothing in the cost). The reference's ``main.cpp``
runs every network with batch 512 and 7 binary levels (128 accelerators).

How the reference sizes the tensors (``src/accpar.cpp``, ``Layer`` constructor and its cost
functions), which :func:`build_chain` follows exactly:
- every layer is a matrix product ``input B x Cin``, ``weight Cin x Cout``, ``output B x Cout``
  with constant multipliers ``ifmap = in_h * in_w``, ``ofmap = out_h * out_w``,
  ``kernel = k * k`` (all 1 for FC);
- A(F_in) = A(E_in) = B * Cin * ifmap, A(F_out) = B * Cout * ofmap, A(W) = A(dW) = Cin * Cout * kernel;
- the tensor between layers l-1 and l is sized by the *consumer* l (its ``input_matrix`` and
  ``ifmap``), not by the producer's output. In both networks the two agree in element count
  (e.g. AlexNet conv5 out 256 x 6 x 6 = 9216 = fc1 in), so the edge tensor here is the
  consumer's input (B, Cin, in_h, in_w) (or (B, Cin) for FC).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar import graph as G

REFERENCE_BATCH = 512   # main.cpp: batch_size = 512
REFERENCE_LEVELS = 7    # main.cpp: num_hierarchy = 7


@dataclass(frozen=True)
class RefLayer:
    """One layer of a reference network description (FC layers: spatial sizes and kernel 1)."""

    name: str
    kind: str          # "CONV" or "FC"
    in_ch: int
    out_ch: int
    in_h: int = 1
    in_w: int = 1
    kernel: int = 1
    out_h: int = 1
    out_w: int = 1
    pool: int = 1

    @property
    def ifmap(self) -> int:
        return self.in_h * self.in_w

    @property
    def ofmap(self) -> int:
        return self.out_h * self.out_w

    @property
    def kernel_size(self) -> int:
        return self.kernel * self.kernel


def _conv(name, in_ch, in_h, in_w, kernel, out_ch, out_h, out_w, pool):
    # argument order = the order of the keys in the reference's description files
    return RefLayer(name, "CONV", in_ch, out_ch, in_h, in_w, kernel, out_h, out_w, pool)


def _fc(name, in_ch, out_ch):
    return RefLayer(name, "FC", in_ch, out_ch)


# linghaosong/AccPar networks/Alexnet.txt (num_layers 8)
ALEXNET = (
    _conv("conv1", 3, 224, 224, 11, 96, 55, 55, 1),
    _conv("conv2", 96, 55, 55, 5, 256, 27, 27, 2),
    _conv("conv3", 256, 27, 27, 3, 384, 13, 13, 2),
    _conv("conv4", 384, 13, 13, 3, 384, 13, 13, 1),
    _conv("conv5", 384, 13, 13, 3, 256, 6, 6, 2),
    _fc("fc1", 9216, 4096),
    _fc("fc2", 4096, 4096),
    _fc("fc3", 4096, 1000),
)

# linghaosong/AccPar networks/Vgg11.txt (num_layers 11)
VGG11 = (
    _conv("conv1", 3, 224, 224, 3, 64, 112, 112, 2),
    _conv("conv2", 64, 112, 112, 3, 128, 56, 56, 2),
    _conv("conv31", 128, 56, 56, 3, 256, 56, 56, 1),
    _conv("conv32", 256, 56, 56, 3, 256, 28, 28, 2),
    _conv("conv41", 256, 28, 28, 3, 512, 28, 28, 1),
    _conv("conv42", 512, 28, 28, 3, 512, 14, 14, 2),
    _conv("conv51", 512, 14, 14, 3, 512, 14, 14, 1),
    _conv("conv52", 512, 14, 14, 3, 512, 7, 7, 2),
    _fc("fc1", 25088, 4096),
    _fc("fc2", 4096, 4096),
    _fc("fc3", 4096, 1000),
)

NETWORKS = {"alexnet": ALEXNET, "vgg11": VGG11}


def _in_tensor(name: str, lay: RefLayer, batch: int) -> G.Tensor:
    """Layer ``lay``'s input as the reference sizes it: (B, Cin[, in_h, in_w])."""
    if lay.kind == "FC":
        return G.Tensor(name, (batch, lay.in_ch), 0, 1)
    return G.Tensor(name, (batch, lay.in_ch, lay.in_h, lay.in_w), 0, 1)


def hypar_layer(lay: RefLayer, batch: int, inputs: tuple[str, ...], output: str) -> G.Layer:
    """The hypar :class:`~hypar.graph.Layer` of one reference layer (element counts as the reference).

    ``macs`` is not used by the communication objective; the reference has no compute model. It is
    set to B x Cout x (out_h*pool) x (out_w*pool) x Cin x k x k, i.e. counted on the pre-pooling
    output, for completeness only.
    """
    conv = lay.kind == "CONV"
    return G.Layer(
        name=lay.name, op="Conv" if conv else "Gemm", kind=G.CONV if conv else G.GEMM,
        inputs=inputs, outputs=(output,), batch=batch, d_in=lay.in_ch, d_out=lay.out_ch,
        in_spatial=(lay.in_h, lay.in_w) if conv else (), out_spatial=(lay.out_h, lay.out_w) if conv else (),
        kernel=(lay.kernel, lay.kernel) if conv else (),
        in_elements=batch * lay.in_ch * lay.ifmap,
        out_elements=batch * lay.out_ch * lay.ofmap,
        weight_elements=lay.in_ch * lay.out_ch * lay.kernel_size,
        macs=batch * lay.out_ch * lay.ofmap * lay.pool * lay.pool * lay.in_ch * lay.kernel_size,
    )


def build_chain(layers: tuple[RefLayer, ...] | str, batch: int = REFERENCE_BATCH, name: str | None = None):
    """A hypar chain layer graph of a reference network (a tuple of :class:`RefLayer` or a key of
    :data:`NETWORKS`). The tensor between two layers is the consumer's input as the reference
    sizes it; the graph output is the last layer's output (B, Cout[, out_h, out_w])."""
    if isinstance(layers, str):
        name = name or layers
        layers = NETWORKS[layers]
    g = G.new_graph(name or "reference", batch)
    x = _in_tensor("x", layers[0], batch)
    g.graph["inputs"] = (x,)
    prev: str | None = None
    prev_out = x.name
    for l, lay in enumerate(layers):
        if l + 1 < len(layers):
            out = _in_tensor(f"{lay.name}_out", layers[l + 1], batch)
            # the reference's chains agree in element count on both sides of every edge
            assert batch * lay.out_ch * lay.ofmap == out.elements, (lay.name, layers[l + 1].name)
        elif lay.kind == "FC":
            out = G.Tensor(f"{lay.name}_out", (batch, lay.out_ch), 0, 1)
        else:
            out = G.Tensor(f"{lay.name}_out", (batch, lay.out_ch, lay.out_h, lay.out_w), 0, 1)
        G.add_layer(g, hypar_layer(lay, batch, (prev_out,), out.name))
        if prev is None:
            g.graph["input_consumers"] = {x.name: (lay.name,)}
        else:
            G.add_edge(g, prev, lay.name, prev_tensor, 0)
        prev, prev_out, prev_tensor = lay.name, out.name, out
    g.graph["outputs"] = (prev_tensor,)
    return g
