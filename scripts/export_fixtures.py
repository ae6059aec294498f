#!/usr/bin/env python3
"""Re-export the real-exporter ONNX fixtures in tests/fixtures/ (dev-only; needs torch).

The fixtures are committed, so tests never need torch. Re-run this only to refresh them, with
the pinned exporter toolchain (``pip install -e .[export]``: torch==2.13.0 + onnxscript)::

    python scripts/export_fixtures.py            # writes tests/fixtures/*.onnx
    python scripts/export_fixtures.py --out DIR  # somewhere else
    python scripts/export_fixtures.py --summary  # also print each file's op-type histogram

Everything is seeded (``torch.manual_seed``) and the models are tiny, so a re-export with the
same torch/onnx/onnxscript versions gives byte-identical files. Both ONNX exporters are used:

- ``dynamo=True``  : the torch.export / onnxscript-based exporter (torch >= 2.5 default);
- ``dynamo=False`` : the legacy TorchScript (tracing) exporter.

Models:

- ``cnn``         : conv-bn-relu stem, one residual block (conv-bn-relu-conv-bn + identity skip,
                    Add, relu), max-pool, flatten, linear classifier. Input (2, 3, 16, 16).
- ``transformer_sdpa``: the same with ``F.scaled_dot_product_attention`` instead of the explicit
                    matmul/softmax/matmul (same weights).
- ``transformer`` : token nn.Embedding + learned positional parameter, one post-norm encoder
                    block written explicitly (separate q/k/v Linear, reshape/transpose to heads,
                    q @ k^T / sqrt(d), softmax, @ v, merge heads, out Linear, residual,
                    LayerNorm, GELU FFN, residual, LayerNorm), Linear vocabulary head.
                    hidden 64, 4 heads, FFN 128, seq 16, vocab 100, input (2, 16) int64 ids.

Files (``<model>_<exporter>[_<variant>].onnx``):

- cnn_dynamo, cnn_torchscript, transformer_dynamo, transformer_torchscript: static batch 2;
- cnn_torchscript_train: TorchScript exporter in TrainingMode.PRESERVE (eval mode folds
  BatchNormalization into the Conv weights; this keeps it);
- transformer_torchscript_opset14: LayerNormalization and Gelu did not exist before opset 17/20,
  so this one holds the decomposed forms (ReduceMean/Sub/Pow/Sqrt/Div..., Erf...);
- transformer_sdpa_{dynamo,torchscript}: how each exporter decomposes SDPA at its default opset;
  transformer_sdpa_dynamo_opset23: the single ONNX ``Attention`` op (opset 23);
- *_dynbatch: the batch dim is symbolic ("batch"), for the ``--batch`` binding and its error;
- decoder_dynamo: hypar/torch/examples.py's Llama-style decoder (GQA, RMSNorm, rotary, SwiGLU),
  batch and sequence symbolic ("batch", "sequence"); decoder_dynamo_opset23: the same at opset 23
  (RMSNormalization as one op);
- windowed_vit_torchscript: scripts/fixture_llm.py's windowed-attention ViT through the
  TorchScript exporter with ``dynamic_axes`` batch, height and width (run-time padding arithmetic).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import logging
import math
import os
import sys
import warnings
from pathlib import Path

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - dev-only script
    sys.exit(
        "export_fixtures.py needs torch: pip install -e .[export]  "
        "(installs torch==2.13.0 and onnxscript; the CPU wheel is enough)"
    )
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_llm  # noqa: E402  (the windowed-attention model)

from hypar.torch.examples import Decoder, DecoderConfig  # noqa: E402  (the decoder; hypar.torch's tests run it)

SEED = 0
BATCH = 2
IMG = 16
SEQ = 16
VOCAB = 100
HIDDEN = 64
HEADS = 4
FFN = 128
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


class ResidualCNN(nn.Module):
    """stem conv-bn-relu, residual block (conv-bn-relu-conv-bn + skip), pool, flatten, linear."""

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(channels * (IMG // 2) * (IMG // 2), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(x + y)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class EncoderLM(nn.Module):
    """Token + positional embedding, one explicit post-norm encoder block, vocabulary head."""

    def __init__(self, sdpa: bool = False) -> None:
        super().__init__()
        self.sdpa = sdpa
        self.tok = nn.Embedding(VOCAB, HIDDEN)
        self.pos = nn.Parameter(torch.randn(1, SEQ, HIDDEN) * 0.02)
        self.q = nn.Linear(HIDDEN, HIDDEN)
        self.k = nn.Linear(HIDDEN, HIDDEN)
        self.v = nn.Linear(HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, HIDDEN)
        self.ln1 = nn.LayerNorm(HIDDEN)
        self.ffn1 = nn.Linear(HIDDEN, FFN)
        self.ffn2 = nn.Linear(FFN, HIDDEN)
        self.ln2 = nn.LayerNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        d = HIDDEN // HEADS
        x = self.tok(ids) + self.pos
        q = self.q(x).reshape(b, s, HEADS, d).transpose(1, 2)  # (b, h, s, d)
        k = self.k(x).reshape(b, s, HEADS, d).transpose(1, 2)
        v = self.v(x).reshape(b, s, HEADS, d).transpose(1, 2)
        if self.sdpa:  # what most real models (e.g. Hugging Face) call
            ctx = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d)  # (b, h, s, s)
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, h, s, d)
        ctx = ctx.transpose(1, 2).reshape(b, s, HIDDEN)
        x = self.ln1(x + self.out(ctx))
        x = self.ln2(x + self.ffn2(nn.functional.gelu(self.ffn1(x))))
        return self.head(x)


def _example(model_name: str, batch: int = BATCH) -> tuple[torch.Tensor, str]:
    g = torch.Generator().manual_seed(SEED)
    if model_name == "cnn":
        return torch.randn(batch, 3, IMG, IMG, generator=g), "x"
    if model_name == "decoder":
        return torch.randint(0, DecoderConfig().vocab, (batch, DecoderConfig().sequence), generator=g), "input_ids"
    if model_name == "windowed_vit":
        return torch.randn(batch, 3, 24, 40, generator=g), "pixel_values"
    return torch.randint(0, VOCAB, (batch, SEQ), generator=g), "ids"  # transformer*


def _build(model_name: str) -> nn.Module:
    torch.manual_seed(SEED)
    if model_name == "cnn":
        model: nn.Module = ResidualCNN()
    elif model_name == "decoder":
        model = Decoder()
    elif model_name == "windowed_vit":
        model = fixture_llm.WindowedViT()
    else:
        model = EncoderLM(sdpa=model_name == "transformer_sdpa")
    # Non-trivial BN statistics so folding (TorchScript eval) visibly changes the weights.
    # Trained-looking norm scales, so the dynamo exporter does not merge the all-ones initializers.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, nn.RMSNorm):
            nn.init.normal_(m.weight, 1.0, 0.1)
    return model.eval()


def _dynamo_dims(model_name: str) -> dict:
    """The symbolic dims of a dynamo export's input: batch, and the decoder's sequence."""
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    if model_name == "decoder":
        dims[1] = torch.export.Dim("sequence", min=2, max=4096)
    return dims


def _torchscript_axes(model_name: str, in_name: str) -> dict:
    """The ``dynamic_axes`` of a TorchScript export: batch, and the ViT's height and width."""
    if model_name == "windowed_vit":
        return {in_name: {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    return {in_name: {0: "batch"}, "logits": {0: "batch"}}


def export_one(model_name: str, exporter: str, path: Path, *, dynamic_batch: bool = False,
               opset: int | None = None, training: str = "eval") -> None:
    """Export one fixture to ``path`` (inline weights) and check it."""
    model = _build(model_name)
    x, in_name = _example(model_name)
    kwargs: dict = dict(input_names=[in_name], output_names=["logits"], external_data=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    if exporter == "dynamo":
        if dynamic_batch:
            kwargs["dynamic_shapes"] = {in_name: _dynamo_dims(model_name)}
        onnx_program = torch.onnx.export(model, (x,), dynamo=True, **kwargs)
        onnx_program.save(str(path), external_data=False)
    else:
        if dynamic_batch:
            kwargs["dynamic_axes"] = _torchscript_axes(model_name, in_name)
        if training == "preserve":
            kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
            kwargs["do_constant_folding"] = False
        kwargs.pop("external_data")
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


FIXTURES = [
    # (file stem, model, exporter, dynamic batch, opset, training)
    ("cnn_dynamo", "cnn", "dynamo", False, None, "eval"),
    ("cnn_torchscript", "cnn", "torchscript", False, 17, "eval"),
    ("cnn_torchscript_train", "cnn", "torchscript", False, 17, "preserve"),
    ("transformer_dynamo", "transformer", "dynamo", False, None, "eval"),
    ("transformer_torchscript", "transformer", "torchscript", False, 17, "eval"),
    ("transformer_torchscript_opset14", "transformer", "torchscript", False, 14, "eval"),
    ("transformer_sdpa_dynamo", "transformer_sdpa", "dynamo", False, None, "eval"),
    ("transformer_sdpa_torchscript", "transformer_sdpa", "torchscript", False, 17, "eval"),
    ("transformer_sdpa_dynamo_opset23", "transformer_sdpa", "dynamo", False, 23, "eval"),
    ("cnn_dynamo_dynbatch", "cnn", "dynamo", True, None, "eval"),
    ("transformer_dynamo_dynbatch", "transformer", "dynamo", True, None, "eval"),
    ("transformer_torchscript_dynbatch", "transformer", "torchscript", True, 17, "eval"),
    ("decoder_dynamo", "decoder", "dynamo", True, None, "eval"),
    ("decoder_dynamo_opset23", "decoder", "dynamo", True, 23, "eval"),
    # A training export (no constant folding): eval's folding would bake the gathered
    # relative-position bias into a constant and drop its trainable table.
    ("windowed_vit_torchscript", "windowed_vit", "torchscript", True, 17, "preserve"),
]


def op_summary(path: Path) -> str:
    m = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    ins = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
           for i in m.graph.input]
    return (f"{path.name}: {path.stat().st_size} bytes, opset {opset}, ir {m.ir_version}, "
            f"inputs {ins}, {len(m.graph.initializer)} initializers\n    "
            + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--summary", action="store_true", help="print each file's op types")
    ap.add_argument("--verbose", action="store_true", help="show exporter chatter")
    ap.add_argument("--only", default="", help="comma-separated file stems to export (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.verbose:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}", end="")
    try:
        import onnxscript
        print(f", onnxscript {onnxscript.__version__}")
    except ImportError:
        print()
    only = {x for x in args.only.split(",") if x}
    for stem, model_name, exporter, dyn, opset, training in FIXTURES:
        if only and stem not in only:
            continue
        path = args.out / f"{stem}.onnx"
        sink = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
        with sink, warnings.catch_warnings():
            if not args.verbose:
                warnings.simplefilter("ignore")
            export_one(model_name, exporter, path, dynamic_batch=dyn, opset=opset, training=training)
        size = path.stat().st_size
        if size >= 1 << 20:
            raise SystemExit(f"{path} is {size} bytes; fixtures must stay under 1 MB")
        print(op_summary(path) if args.summary else f"{path.name}: {size} bytes")
    for stray in args.out.glob("*.onnx.data"):  # none expected: weights are inline
        os.remove(stray)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
