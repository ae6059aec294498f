#!/usr/bin/env python
"""Export a real, large (>= 400 MB) decoder for scripts/bench_solver.py's ``--export`` figure
(partition seconds / ``onnx.load`` seconds): hypar/torch/examples.py's Llama-style ``Decoder``
at bigger dims, through the torch dynamo exporter as scripts/export_fixtures.py does, weights
inline in one file. Dev-only (needs torch: ``/work/venv-torch/bin/python``); the file goes where
you say (a temporary folder), never into the repository.

Default dims: 6 blocks, hidden 1024, 16 query / 4 key-value heads, MLP 3072, vocabulary 32000,
sequence 128 -- 137.6 M float32 parameters, about 550 MB.

Usage::

    /work/venv-torch/bin/python scripts/export_large_decoder.py /tmp/large_decoder.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hypar.torch.examples import Decoder, DecoderConfig, parameter_count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--q-heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--sequence", type=int, default=128)
    a = ap.parse_args(argv)
    cfg = DecoderConfig(vocab=a.vocab, hidden=a.hidden, q_heads=a.q_heads, kv_heads=a.kv_heads, mlp=a.mlp,
                        layers=a.layers, sequence=a.sequence)
    torch.manual_seed(0)
    model = Decoder(cfg).eval()
    ids = torch.randint(0, a.vocab, (2, a.sequence))
    program = torch.onnx.export(model, (ids,), dynamo=True, input_names=["input_ids"],
                                output_names=["logits"], external_data=False)
    program.save(a.out, external_data=False)
    size = Path(a.out).stat().st_size
    print(f"wrote {a.out}: {size / 1e6:.0f} MB, {parameter_count(model):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
