#!/usr/bin/env python3
"""Build the model zoo in models/ (deterministic; onnx.helper only, no torch, no download).

Each model is architecture-faithful (layer shapes, strides, pads, BatchNorm, residual Adds,
inception Concats, depthwise convs, attention) but stores its weights as shapes only: every
weight is a ``ConstantOfShape`` node whose small int64 shape is an inline initializer. Such
files load with plain ``onnx.load`` and pass ``onnx.checker.check_model(full_check=True)``;
initializers pointing at an absent external-data file would fail ``onnx.load`` by default.

Usage::

    python scripts/build_zoo.py            # writes models/*.onnx, MANIFEST.json, README.md
    python scripts/build_zoo.py --check    # rebuild in memory, fail if models/ differs
"""

from __future__ import annotations

import argparse
import json
import sys
from math import prod
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17
ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
CNN_BATCH = 32
TF_BATCH, TF_SEQ = 8, 128


class Builder:
    """A tiny graph builder: every method adds nodes and returns the output tensor name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.counts: dict[str, int] = {}
        self.consts: dict[str, object] = {}
        self.params = 0  # trainable parameters (weights, biases, norm scale/shift)

    # -- naming / constants ---------------------------------------------------------------------
    def uid(self, base: str) -> str:
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str]:
        name = self.uid(name)
        outs = [name if n_out == 1 else f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def weight(self, name: str, shape: list[int], trainable: bool = True, value: float = 0.01) -> str:
        """A weight stored as its shape only: ConstantOfShape(int64 shape initializer)."""
        shp = helper.make_tensor(f"{name}__shape", TensorProto.INT64, [len(shape)], list(shape))
        self.inits.append(shp)
        self.nodes.append(helper.make_node(
            "ConstantOfShape", [shp.name], [name], name=f"{name}__const",
            value=helper.make_tensor("value", TensorProto.FLOAT, [1], [value])))
        if trainable:
            self.params += prod(shape)
        return name

    def ints(self, name: str, vals: list[int]) -> str:
        """A shared small int64 constant (one initializer per name)."""
        if name not in self.consts:
            self.inits.append(helper.make_tensor(name, TensorProto.INT64, [len(vals)], list(vals)))
            self.consts[name] = vals
        assert self.consts[name] == vals, name
        return name

    def scalar(self, name: str, val: float) -> str:
        """A shared float scalar constant (one initializer per name)."""
        if name not in self.consts:
            self.inits.append(helper.make_tensor(name, TensorProto.FLOAT, [], [val]))
            self.consts[name] = val
        assert self.consts[name] == val, name
        return name

    def input(self, name: str, shape: list, elem=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, t: str, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, shape))

    # -- CNN ops --------------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1, pad: int | None = None,
             groups: int = 1, bias: bool = True) -> str:
        pad = k // 2 if pad is None else pad
        w = self.weight(f"{name}.weight", [cout, cin // groups, k, k])
        ins = [x, w]
        if bias:
            ins.append(self.weight(f"{name}.bias", [cout]))
        return self.node("Conv", ins, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, group=groups)[0]

    def bn(self, x: str, c: int, name: str) -> str:
        s = self.weight(f"{name}.weight", [c])
        b = self.weight(f"{name}.bias", [c])
        m = self.weight(f"{name}.running_mean", [c], trainable=False, value=0.0)
        v = self.weight(f"{name}.running_var", [c], trainable=False, value=1.0)
        return self.node("BatchNormalization", [x, s, b, m, v], name, epsilon=1e-5)[0]

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)[0]

    def relu6(self, x: str, name: str) -> str:
        lo, hi = self.scalar("zero", 0.0), self.scalar("six", 6.0)
        return self.node("Clip", [x, lo, hi], name)[0]

    def maxpool(self, x: str, k: int, s: int, name: str, pad: int = 0, ceil: int = 0) -> str:
        return self.node("MaxPool", [x], name, kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4,
                         ceil_mode=ceil)[0]

    def avgpool(self, x: str, k: int, s: int, name: str) -> str:
        return self.node("AveragePool", [x], name, kernel_shape=[k, k], strides=[s, s])[0]

    def gap(self, x: str, name: str) -> str:
        return self.node("GlobalAveragePool", [x], name)[0]

    def flatten(self, x: str, name: str) -> str:
        return self.node("Flatten", [x], name, axis=1)[0]

    def fc(self, x: str, din: int, dout: int, name: str) -> str:
        w = self.weight(f"{name}.weight", [dout, din])
        b = self.weight(f"{name}.bias", [dout])
        return self.node("Gemm", [x, w, b], name, transB=1)[0]

    def dropout(self, x: str, name: str) -> str:
        return self.node("Dropout", [x], name)[0]

    def add(self, a: str, b: str, name: str) -> str:
        return self.node("Add", [a, b], name)[0]

    # -- transformer ops ------------------------------------------------------------------------
    def linear(self, x: str, din: int, dout: int, name: str) -> str:
        """torch.nn.Linear on a 3-D input as exporters write it: MatMul(x, W^T) + Add(bias)."""
        w = self.weight(f"{name}.weight", [din, dout])
        y = self.node("MatMul", [x, w], f"{name}/MatMul")[0]
        b = self.weight(f"{name}.bias", [dout])
        return self.node("Add", [y, b], f"{name}/Add")[0]

    def layernorm(self, x: str, d: int, name: str, eps: float = 1e-12) -> str:
        s = self.weight(f"{name}.weight", [d])
        b = self.weight(f"{name}.bias", [d])
        return self.node("LayerNormalization", [x, s, b], name, axis=-1, epsilon=eps)[0]

    def gelu(self, x: str, name: str) -> str:
        """Exact GELU as exported at opset < 20: x * 0.5 * (1 + erf(x / sqrt(2)))."""
        d = self.node("Div", [x, self.scalar("sqrt2", 2 ** 0.5)], f"{name}/Div")[0]
        e = self.node("Erf", [d], f"{name}/Erf")[0]
        a = self.node("Add", [e, self.scalar("one", 1.0)], f"{name}/Add")[0]
        m = self.node("Mul", [x, a], f"{name}/Mul")[0]
        return self.node("Mul", [m, self.scalar("half", 0.5)], f"{name}/Mul_1")[0]

    def heads(self, x: str, h: int, dh: int, name: str, key: bool = False) -> str:
        """(B, T, h*dh) -> (B, h, T, dh), or (B, h, dh, T) for keys."""
        r = self.node("Reshape", [x, self.ints("shape_bthd", [0, 0, h, dh])], f"{name}/Reshape")[0]
        perm = [0, 2, 3, 1] if key else [0, 2, 1, 3]
        return self.node("Transpose", [r], f"{name}/Transpose", perm=perm)[0]

    def attention(self, x: str, d: int, h: int, name: str, mask: str | None, fused_qkv: bool) -> str:
        dh = d // h
        if fused_qkv:
            qkv = self.linear(x, d, 3 * d, f"{name}.c_attn")
            q, k, v = self.node("Split", [qkv, self.ints("split_qkv", [d, d, d])], f"{name}/Split",
                                n_out=3, axis=2)
            proj = f"{name}.c_proj"
        else:
            q = self.linear(x, d, d, f"{name}.self.query")
            k = self.linear(x, d, d, f"{name}.self.key")
            v = self.linear(x, d, d, f"{name}.self.value")
            proj = f"{name}.output.dense"
        qh = self.heads(q, h, dh, f"{name}/q")
        kh = self.heads(k, h, dh, f"{name}/k", key=True)
        vh = self.heads(v, h, dh, f"{name}/v")
        s = self.node("MatMul", [qh, kh], f"{name}/scores/MatMul")[0]
        s = self.node("Div", [s, self.scalar("sqrt_dh", float(dh) ** 0.5)], f"{name}/scores/Div")[0]
        if mask is not None:
            s = self.node("Add", [s, mask], f"{name}/scores/Add")[0]
        p = self.node("Softmax", [s], f"{name}/Softmax", axis=-1)[0]
        c = self.node("MatMul", [p, vh], f"{name}/context/MatMul")[0]
        c = self.node("Transpose", [c], f"{name}/context/Transpose", perm=[0, 2, 1, 3])[0]
        c = self.node("Reshape", [c, self.ints("shape_btd", [0, 0, d])], f"{name}/context/Reshape")[0]
        return self.linear(c, d, d, proj)

    def gather(self, table: str, ids: str, name: str) -> str:
        return self.node("Gather", [table, ids], name)[0]

    # -- finish ---------------------------------------------------------------------------------
    def model(self, doc: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hypar build_zoo", producer_version="1")
        m.ir_version = 8
        m.doc_string = doc
        return m


# ------------------------------------------------------------------------------------------------
# CNNs (torchvision layouts unless stated)


def lenet() -> tuple[onnx.ModelProto, dict]:
    b = Builder("lenet")
    x = b.input("input", [CNN_BATCH, 1, 32, 32])
    x = b.relu(b.conv(x, 1, 6, 5, "conv1", pad=0), "relu1")
    x = b.maxpool(x, 2, 2, "pool1")
    x = b.relu(b.conv(x, 6, 16, 5, "conv2", pad=0), "relu2")
    x = b.maxpool(x, 2, 2, "pool2")
    x = b.flatten(x, "flatten")
    x = b.relu(b.fc(x, 400, 120, "fc1"), "relu3")
    x = b.relu(b.fc(x, 120, 84, "fc2"), "relu4")
    x = b.fc(x, 84, 10, "fc3")
    b.output(x, [CNN_BATCH, 10])
    return b.model("LeNet-5 (LeCun et al. 1998), 32x32x1 input, ReLU + max pooling"), {
        "source": "LeNet-5 (LeCun et al. 1998): 2 conv + 3 FC, 32x32 grayscale input",
        "batch": CNN_BATCH, "input": "input[32,1,32,32]", "params": b.params}


def alexnet():
    b = Builder("alexnet")
    x = b.input("input", [CNN_BATCH, 3, 224, 224])
    cfg = [(3, 64, 11, 4, 2, True), (64, 192, 5, 1, 2, True), (192, 384, 3, 1, 1, False),
           (384, 256, 3, 1, 1, False), (256, 256, 3, 1, 1, True)]
    for i, (ci, co, k, s, p, pool) in enumerate(cfg):
        x = b.relu(b.conv(x, ci, co, k, f"features.conv{i}", stride=s, pad=p), f"features.relu{i}")
        if pool:
            x = b.maxpool(x, 3, 2, f"features.pool{i}")
    x = b.flatten(x, "flatten")
    x = b.dropout(x, "classifier.drop0")
    x = b.relu(b.fc(x, 256 * 6 * 6, 4096, "classifier.fc1"), "classifier.relu1")
    x = b.dropout(x, "classifier.drop1")
    x = b.relu(b.fc(x, 4096, 4096, "classifier.fc2"), "classifier.relu2")
    x = b.fc(x, 4096, 1000, "classifier.fc3")
    b.output(x, [CNN_BATCH, 1000])
    return b.model("AlexNet, torchvision layout (single tower, no LRN)"), {
        "source": "AlexNet (Krizhevsky et al. 2012), torchvision.models.alexnet layout",
        "batch": CNN_BATCH, "input": "input[32,3,224,224]", "params": b.params}


VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(name: str):
    b = Builder(name)
    x = b.input("input", [CNN_BATCH, 3, 224, 224])
    c, i = 3, 0
    for v in VGG_CFG[name]:
        if v == "M":
            x = b.maxpool(x, 2, 2, f"features.{i}")
        else:
            x = b.relu(b.conv(x, c, v, 3, f"features.{i}"), f"features.{i + 1}")
            c = v
            i += 1
        i += 1
    x = b.flatten(x, "flatten")
    x = b.dropout(b.relu(b.fc(x, 512 * 7 * 7, 4096, "classifier.0"), "classifier.1"), "classifier.2")
    x = b.dropout(b.relu(b.fc(x, 4096, 4096, "classifier.3"), "classifier.4"), "classifier.5")
    x = b.fc(x, 4096, 1000, "classifier.6")
    b.output(x, [CNN_BATCH, 1000])
    convs = sum(1 for v in VGG_CFG[name] if v != "M")
    return b.model(f"{name.upper()} (Simonyan & Zisserman 2014), torchvision layout without BN"), {
        "source": f"{name.upper()} (configuration {'ABDE'['vgg11 vgg13 vgg16 vgg19'.split().index(name)]}, "
                  "Simonyan & Zisserman 2014), torchvision layout without BN",
        "batch": CNN_BATCH, "input": "input[32,3,224,224]", "params": b.params, "convs": convs}


RESNET = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}


def resnet(name: str):
    block, layers = RESNET[name]
    b = Builder(name)
    x = b.input("input", [CNN_BATCH, 3, 224, 224])
    x = b.relu(b.bn(b.conv(x, 3, 64, 7, "conv1", stride=2, pad=3, bias=False), 64, "bn1"), "relu")
    x = b.maxpool(x, 3, 2, "maxpool", pad=1)
    cin = 64
    exp = 1 if block == "basic" else 4
    for li, n in enumerate(layers):
        width = 64 * 2 ** li
        for bi in range(n):
            p = f"layer{li + 1}.{bi}"
            stride = 2 if (bi == 0 and li > 0) else 1
            idn = x
            if block == "basic":
                y = b.relu(b.bn(b.conv(x, cin, width, 3, f"{p}.conv1", stride=stride, bias=False), width,
                                f"{p}.bn1"), f"{p}.relu1")
                y = b.bn(b.conv(y, width, width, 3, f"{p}.conv2", bias=False), width, f"{p}.bn2")
            else:
                y = b.relu(b.bn(b.conv(x, cin, width, 1, f"{p}.conv1", bias=False), width, f"{p}.bn1"),
                           f"{p}.relu1")
                y = b.relu(b.bn(b.conv(y, width, width, 3, f"{p}.conv2", stride=stride, bias=False),
                                width, f"{p}.bn2"), f"{p}.relu2")
                y = b.bn(b.conv(y, width, width * 4, 1, f"{p}.conv3", bias=False), width * 4, f"{p}.bn3")
            if stride != 1 or cin != width * exp:
                idn = b.bn(b.conv(x, cin, width * exp, 1, f"{p}.downsample.0", stride=stride, bias=False),
                           width * exp, f"{p}.downsample.1")
            x = b.relu(b.add(y, idn, f"{p}.add"), f"{p}.relu")
            cin = width * exp
    x = b.flatten(b.gap(x, "avgpool"), "flatten")
    x = b.fc(x, cin, 1000, "fc")
    b.output(x, [CNN_BATCH, 1000])
    return b.model(f"{name} (He et al. 2015), torchvision layout (v1.5: stride in the 3x3 conv)"), {
        "source": f"{name} (He et al. 2015), torchvision.models.{name} layout",
        "batch": CNN_BATCH, "input": "input[32,3,224,224]", "params": b.params}


def googlenet():
    """Inception v1 as in the paper / BVLC Caffe model: biased convs, LRN, 5x5 branches."""
    b = Builder("googlenet")
    x = b.input("input", [CNN_BATCH, 3, 224, 224])
    x = b.relu(b.conv(x, 3, 64, 7, "conv1/7x7_s2", stride=2, pad=3), "conv1/relu")
    x = b.maxpool(x, 3, 2, "pool1/3x3_s2", ceil=1)
    x = b.node("LRN", [x], "pool1/norm1", size=5, alpha=1e-4, beta=0.75)[0]
    x = b.relu(b.conv(x, 64, 64, 1, "conv2/3x3_reduce"), "conv2/relu_reduce")
    x = b.relu(b.conv(x, 64, 192, 3, "conv2/3x3"), "conv2/relu")
    x = b.node("LRN", [x], "conv2/norm2", size=5, alpha=1e-4, beta=0.75)[0]
    x = b.maxpool(x, 3, 2, "pool2/3x3_s2", ceil=1)
    cin = 192
    cfg = [  # name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
        ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
        ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
        ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
        ("4e", 256, 160, 320, 32, 128, 128), "pool",
        ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
    ]
    npool = 3
    for c in cfg:
        if c == "pool":
            x = b.maxpool(x, 3, 2, f"pool{npool}/3x3_s2", ceil=1)
            npool += 1
            continue
        n, c1, c3r, c3, c5r, c5, pp = c
        p = f"inception_{n}"
        b1 = b.relu(b.conv(x, cin, c1, 1, f"{p}/1x1"), f"{p}/relu_1x1")
        b2 = b.relu(b.conv(x, cin, c3r, 1, f"{p}/3x3_reduce"), f"{p}/relu_3x3_reduce")
        b2 = b.relu(b.conv(b2, c3r, c3, 3, f"{p}/3x3"), f"{p}/relu_3x3")
        b3 = b.relu(b.conv(x, cin, c5r, 1, f"{p}/5x5_reduce"), f"{p}/relu_5x5_reduce")
        b3 = b.relu(b.conv(b3, c5r, c5, 5, f"{p}/5x5"), f"{p}/relu_5x5")
        b4 = b.maxpool(x, 3, 1, f"{p}/pool", pad=1)
        b4 = b.relu(b.conv(b4, cin, pp, 1, f"{p}/pool_proj"), f"{p}/relu_pool_proj")
        x = b.node("Concat", [b1, b2, b3, b4], f"{p}/output", axis=1)[0]
        cin = c1 + c3 + c5 + pp
    x = b.avgpool(x, 7, 1, "pool5/7x7_s1")
    x = b.dropout(x, "pool5/drop_7x7_s1")
    x = b.flatten(x, "flatten")
    x = b.fc(x, 1024, 1000, "loss3/classifier")
    b.output(x, [CNN_BATCH, 1000])
    return b.model("GoogLeNet / Inception v1 (Szegedy et al. 2014), BVLC layout"), {
        "source": "GoogLeNet / Inception v1 (Szegedy et al. 2014), BVLC Caffe layout "
                  "(biased convs, LRN, 5x5 branches, no auxiliary heads)",
        "batch": CNN_BATCH, "input": "input[32,3,224,224]", "params": b.params}


def mobilenetv2():
    b = Builder("mobilenetv2")
    x = b.input("input", [CNN_BATCH, 3, 224, 224])
    x = b.relu6(b.bn(b.conv(x, 3, 32, 3, "features.0.0", stride=2, bias=False), 32, "features.0.1"),
                "features.0.2")
    cin, idx = 32, 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            p = f"features.{idx}.conv"
            y, j = x, 0
            if t != 1:
                y = b.relu6(b.bn(b.conv(y, cin, hid, 1, f"{p}.{j}.0", bias=False), hid, f"{p}.{j}.1"),
                            f"{p}.{j}.2")
                j += 1
            y = b.relu6(b.bn(b.conv(y, hid, hid, 3, f"{p}.{j}.0", stride=stride, groups=hid, bias=False),
                             hid, f"{p}.{j}.1"), f"{p}.{j}.2")
            y = b.bn(b.conv(y, hid, c, 1, f"{p}.{j + 1}", bias=False), c, f"{p}.{j + 2}")
            if stride == 1 and cin == c:
                y = b.add(x, y, f"features.{idx}.add")
            x, cin = y, c
            idx += 1
    x = b.relu6(b.bn(b.conv(x, cin, 1280, 1, f"features.{idx}.0", bias=False), 1280, f"features.{idx}.1"),
                f"features.{idx}.2")
    x = b.flatten(b.gap(x, "avgpool"), "flatten")
    x = b.dropout(x, "classifier.0")
    x = b.fc(x, 1280, 1000, "classifier.1")
    b.output(x, [CNN_BATCH, 1000])
    return b.model("MobileNetV2 (Sandler et al. 2018), torchvision layout"), {
        "source": "MobileNetV2 (Sandler et al. 2018), torchvision.models.mobilenet_v2 layout "
                  "(inverted residuals, depthwise 3x3, ReLU6 as Clip)",
        "batch": CNN_BATCH, "input": "input[32,3,224,224]", "params": b.params}


# ------------------------------------------------------------------------------------------------
# Transformers


def bert_base():
    d, h, ff, layers, vocab, maxpos = 768, 12, 3072, 12, 30522, 512
    B, T = TF_BATCH, TF_SEQ
    b = Builder("bert_base")
    ids = b.input("input_ids", [B, T], TensorProto.INT64)
    tt = b.input("token_type_ids", [B, T], TensorProto.INT64)
    pos = b.input("position_ids", [B, T], TensorProto.INT64)
    am = b.input("attention_mask", [B, T])
    we = b.gather(b.weight("embeddings.word_embeddings.weight", [vocab, d]), ids, "embeddings.word_embeddings")
    pe = b.gather(b.weight("embeddings.position_embeddings.weight", [maxpos, d]), pos,
                  "embeddings.position_embeddings")
    te = b.gather(b.weight("embeddings.token_type_embeddings.weight", [2, d]), tt,
                  "embeddings.token_type_embeddings")
    x = b.add(b.add(we, te, "embeddings/Add"), pe, "embeddings/Add_1")
    x = b.layernorm(x, d, "embeddings.LayerNorm")
    x = b.dropout(x, "embeddings.dropout")
    # extended mask: (1 - mask)[:, None, None, :] * -10000
    m = b.node("Unsqueeze", [am, b.ints("axes_12", [1, 2])], "mask/Unsqueeze")[0]
    m = b.node("Sub", [b.scalar("one", 1.0), m], "mask/Sub")[0]
    m = b.node("Mul", [m, b.scalar("neg10000", -10000.0)], "mask/Mul")[0]
    for i in range(layers):
        p = f"encoder.layer.{i}"
        a = b.attention(x, d, h, f"{p}.attention", m, fused_qkv=False)
        x = b.layernorm(b.add(b.dropout(a, f"{p}.attention.output.dropout"), x, f"{p}.attention.output/Add"),
                        d, f"{p}.attention.output.LayerNorm")
        y = b.gelu(b.linear(x, d, ff, f"{p}.intermediate.dense"), f"{p}.intermediate.gelu")
        y = b.linear(y, ff, d, f"{p}.output.dense")
        x = b.layernorm(b.add(b.dropout(y, f"{p}.output.dropout"), x, f"{p}.output/Add"), d,
                        f"{p}.output.LayerNorm")
    b.output(x, [B, T, d])
    return b.model("BERT-base encoder (Devlin et al. 2018), HF BertModel layout without pooler"), {
        "source": "BERT-base encoder (Devlin et al. 2018), Hugging Face BertModel layout without the "
                  "pooler: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522; position_ids is a "
                  "graph input so the position embedding is a layer",
        "batch": B, "input": f"input_ids/token_type_ids/position_ids int64[{B},{T}], attention_mask[{B},{T}]",
        "params": b.params}


def gpt2_small():
    d, h, ff, layers, vocab, maxpos = 768, 12, 3072, 12, 50257, 1024
    B, T = TF_BATCH, TF_SEQ
    b = Builder("gpt2_small")
    ids = b.input("input_ids", [B, T], TensorProto.INT64)
    pos = b.input("position_ids", [B, T], TensorProto.INT64)
    wte = b.weight("transformer.wte.weight", [vocab, d])
    x = b.add(b.gather(wte, ids, "transformer.wte"),
              b.gather(b.weight("transformer.wpe.weight", [maxpos, d]), pos, "transformer.wpe"),
              "transformer/Add")
    x = b.dropout(x, "transformer.drop")
    # causal mask: 0 on and below the diagonal, -inf above (a constant buffer, stored as a shape)
    mask = b.weight("transformer.causal_mask", [1, 1, T, T], trainable=False, value=0.0)
    for i in range(layers):
        p = f"transformer.h.{i}"
        a = b.attention(b.layernorm(x, d, f"{p}.ln_1", eps=1e-5), d, h, f"{p}.attn", mask, fused_qkv=True)
        x = b.add(x, b.dropout(a, f"{p}.attn.resid_dropout"), f"{p}/Add")
        y = b.gelu(b.linear(b.layernorm(x, d, f"{p}.ln_2", eps=1e-5), d, ff, f"{p}.mlp.c_fc"), f"{p}.mlp.act")
        y = b.linear(y, ff, d, f"{p}.mlp.c_proj")
        x = b.add(x, b.dropout(y, f"{p}.mlp.dropout"), f"{p}/Add_1")
    x = b.layernorm(x, d, "transformer.ln_f", eps=1e-5)
    # tied LM head: logits = x @ wte^T (the same weight as the token embedding)
    wt = b.node("Transpose", [wte], "lm_head/Transpose", perm=[1, 0])[0]
    x = b.node("MatMul", [x, wt], "lm_head")[0]
    b.output(x, [B, T, vocab])
    return b.model("GPT-2 small (Radford et al. 2019), HF GPT2LMHeadModel layout, tied LM head"), {
        "source": "GPT-2 small (Radford et al. 2019), Hugging Face GPT2LMHeadModel layout: 12 causal "
                  "decoder layers, hidden 768, 12 heads, fused QKV (c_attn) + Split, FFN 3072, "
                  "LM head tied to the token embedding (counted once)",
        "batch": B, "input": f"input_ids/position_ids int64[{B},{T}]", "params": b.params}


ZOO = {
    "lenet": lenet, "alexnet": alexnet,
    "vgg11": lambda: vgg("vgg11"), "vgg13": lambda: vgg("vgg13"),
    "vgg16": lambda: vgg("vgg16"), "vgg19": lambda: vgg("vgg19"),
    "resnet18": lambda: resnet("resnet18"), "resnet34": lambda: resnet("resnet34"),
    "resnet50": lambda: resnet("resnet50"), "resnet101": lambda: resnet("resnet101"),
    "resnet152": lambda: resnet("resnet152"),
    "googlenet": googlenet, "mobilenetv2": mobilenetv2,
    "bert_base": bert_base, "gpt2_small": gpt2_small,
}

README = """# Model zoo

Built by `python scripts/build_zoo.py` (deterministic, onnx.helper only; `--check` verifies that
the committed files are what the script writes). Architecture-faithful graphs, **weights stored as
shapes only**: each weight is a `ConstantOfShape` node whose int64 shape is a small inline
initializer. These files load with plain `onnx.load` and pass `onnx.checker.check_model(...,
full_check=True)`; the alternative (initializers with external data pointing at an absent file)
makes `onnx.load` fail unless `load_external_data=False` is passed, so it was not used.
Running them gives constant outputs: they exist for partitioning, not for inference.

`params` counts trainable parameters: conv/linear weights and biases, BatchNorm/LayerNorm scale and
shift, embedding tables (BatchNorm running statistics and the causal-mask buffer excluded; GPT-2's
tied LM head counted once). `weights` counts the weight elements A(W) of the weighted layers only
(no biases, no norms). `weighted` counts Conv + Gemm/MatMul-with-weight + embedding layers as
`hypar inspect` reports them; `attention` counts activation x activation MatMuls.
Every CNN has batch 32 (224x224 input, LeNet 32x32); the transformers batch 8 x sequence 128.
`hypar inspect models/MODEL.onnx --batch N` overrides the batch.

| model | source architecture | weighted layers | attention | params | weights | batch | file size |
|---|---|---|---|---:|---:|---:|---:|
{rows}
"""


def build_all() -> dict[str, tuple[bytes, dict]]:
    out = {}
    for name, fn in ZOO.items():
        m, meta = fn()
        onnx.checker.check_model(m, full_check=True)
        out[name] = (m.SerializeToString(deterministic=True), meta)
    return out


def summarize(name: str, data: bytes, meta: dict) -> dict:
    """Counts as the importer sees them (also a self-test of hypar.onnx.importer)."""
    sys.path.insert(0, str(ROOT))
    from hypar import graph as G
    from hypar.onnx import load_layer_graph

    g = load_layer_graph(onnx.load_from_string(data), name=name)
    layers = [G.layer(g, n) for n in G.topo_layers(g)]
    weighted = [lay for lay in layers if lay.weighted]
    by_op: dict[str, int] = {}
    for lay in weighted:
        key = {"conv": "conv", "gemm": "fc" if lay.op == "Gemm" else "matmul", "embedding": "embedding"}[lay.kind]
        by_op[key] = by_op.get(key, 0) + 1
    seen: set = set()
    params = 0
    for lay in layers:
        w = lay.attr("weight")
        if w is not None and w in seen:
            params += lay.bias_elements
            continue
        seen.add(w)
        params += lay.params
    if params != meta["params"]:
        raise SystemExit(f"{name}: importer counts {params} params, builder {meta['params']}")
    return {
        "file": f"{name}.onnx",
        "source": meta["source"],
        "input": meta["input"],
        "batch": meta["batch"],
        "weighted_layers": len(weighted),
        "weighted_by_type": dict(sorted(by_op.items())),
        "attention_matmuls": sum(1 for lay in layers if lay.kind == G.MATMUL_ACT),
        "params": params,
        "weight_elements": sum(lay.weight_elements for lay in {lay.attr("weight"): lay for lay in weighted}.values()),
        "forward_macs": sum(lay.macs for lay in layers),
        "nodes": len(layers),
        "file_bytes": len(data),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if models/ differs from a fresh build")
    ap.add_argument("--out", default=str(MODELS), help="output folder (default: models/)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    built = build_all()
    manifest = {
        "storage": "weights as shapes only: ConstantOfShape nodes with inline int64 shape initializers "
                   "(onnx.load and onnx.checker.check_model(full_check=True) both pass)",
        "opset": OPSET,
        "params_definition": "trainable parameters: conv/linear weights + biases, BatchNorm/LayerNorm "
                             "scale + shift, embedding tables; BatchNorm running stats and buffers "
                             "excluded; tied weights counted once",
        "models": {n: summarize(n, data, meta) for n, (data, meta) in built.items()},
    }
    rows = "\n".join(
        f"| {n} | {m['source'].split(' (')[0]} | {m['weighted_layers']} "
        f"({', '.join(f'{v} {k}' for k, v in m['weighted_by_type'].items())}) | {m['attention_matmuls']} | "
        f"{m['params']:,} | {m['weight_elements']:,} | {m['batch']} | {m['file_bytes'] / 1024:.0f} KB |"
        for n, m in manifest["models"].items())
    files = {f"{n}.onnx": data for n, (data, _) in built.items()}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    files["README.md"] = README.format(rows=rows).encode()
    if args.check:
        bad = [f for f, data in files.items() if not (out / f).exists() or (out / f).read_bytes() != data]
        if bad:
            print(f"models/ is out of date: {', '.join(bad)}; run python scripts/build_zoo.py", file=sys.stderr)
            return 1
        print("models/ is up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for f, data in files.items():
        (out / f).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(built)} models to {out} ({total / 1e6:.1f} MB)")
    for n, m in manifest["models"].items():
        print(f"  {n:12s} weighted={m['weighted_layers']:4d} attention={m['attention_matmuls']:3d} "
              f"params={m['params']:>12,} size={m['file_bytes']:>8,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
