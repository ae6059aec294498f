"""Small torch modules the hypar plans are proven on (needs torch): an MLP and a Llama-style decoder.

- :class:`MLP`: ``Linear -> ReLU -> Linear -> ReLU -> Linear`` (module paths ``fc1``, ``fc2``,
  ``fc3``), input (batch, ``in_features``) float.
- :class:`Decoder`: a Llama-style decoder LM -- token embedding, ``layers`` pre-norm blocks of
  RMSNorm, grouped-query attention (``q_heads`` query heads sharing ``kv_heads`` key/value heads,
  K/V expanded to the query heads), rotary position embeddings on q and k, causal softmax
  attention, a SwiGLU MLP (``down(silu(gate(x)) * up(x))``), a final RMSNorm and an untied
  vocabulary head. Module paths follow Hugging Face's Llama (``model.layers.0.self_attn.q_proj``).
  No Linear has a bias. With the default :class:`DecoderConfig` it is the module
  ``tests/fixtures/decoder_dynamo.onnx`` was exported from (``scripts/export_fixtures.py``, seed 0).

Both are what :func:`hypar.torch.parallelize` is tested on (``tests/torch/``); build them under
``torch.manual_seed`` so every process of a group holds the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MLP", "Decoder", "DecoderConfig", "decoder_batch", "export_mlp", "mlp_batch", "parameter_count"]


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of ``model`` (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mlp_batch(batch: int = 8, in_features: int = 16, out_features: int = 8, seed: int = 1) -> tuple:
    """A seeded (input, target) pair for :class:`MLP`: (batch, in_features) and (batch, out_features)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_features, generator=g), torch.randn(batch, out_features, generator=g)


def decoder_batch(batch: int = 2, sequence: int = 16, vocab: int = 128, seed: int = 1) -> tuple:
    """Seeded (token ids, target ids) for :class:`Decoder`, both (batch, sequence) int64."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (batch, sequence), generator=g),
            torch.randint(0, vocab, (batch, sequence), generator=g))


def export_mlp(path: str, batch: int = 8) -> None:
    """Export :class:`MLP` (seed 0) with the dynamo exporter to ``path`` (batch dim symbolic,
    "batch"); how ``tests/torch/mlp_dynamo.onnx`` was made. Needs onnxscript
    (``pip install -e ".[export]"``)."""
    torch.manual_seed(0)
    model = MLP().eval()
    x, _target = mlp_batch(batch)
    program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], output_names=["y"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}})
    program.save(path, external_data=False)


class MLP(nn.Module):
    """Three Linear layers with ReLU between them: ``in_features -> hidden -> hidden -> out_features``."""

    def __init__(self, in_features: int = 16, hidden: int = 32, out_features: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder's sizes; the defaults are those of ``tests/fixtures/decoder_dynamo.onnx``."""

    vocab: int = 128
    hidden: int = 64
    q_heads: int = 4
    kv_heads: int = 2
    mlp: int = 128
    layers: int = 2
    sequence: int = 16          # the example input's length (the module takes any)
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        """Features per attention head."""
        return self.hidden // self.q_heads


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last axis, as Llama's rotary embedding does."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """Grouped-query causal self-attention with rotary embeddings on q and k."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.hidden, cfg.q_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.q_heads * cfg.head_dim, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, c.q_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = c.q_heads // c.kv_heads  # GQA: each K/V head serves `group` query heads
        k = k[:, :, None].expand(b, c.kv_heads, group, s, c.head_dim).reshape(b, c.q_heads, s, c.head_dim)
        v = v[:, :, None].expand(b, c.kv_heads, group, s, c.head_dim).reshape(b, c.q_heads, s, c.head_dim)
        scores = torch.matmul(q, k.transpose(-2, -1)) * c.head_dim ** -0.5
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o_proj(ctx.transpose(1, 2).reshape(b, s, c.q_heads * c.head_dim))


class MLPBlock(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.mlp, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.mlp, bias=False)
        self.down_proj = nn.Linear(cfg.mlp, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.hidden, eps=1e-6)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden, eps=1e-6)
        self.mlp = MLPBlock(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """Embedding, the blocks and the final norm (Hugging Face's ``model``)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.hidden, eps=1e-6)
        inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        angles = torch.arange(s, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # (s, head_dim)
        cos, sin = angles.cos(), angles.sin()
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class Decoder(nn.Module):
    """The decoder LM: ``model`` then ``lm_head``; input (batch, sequence) int64 token ids."""

    def __init__(self, cfg: DecoderConfig = DecoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DecoderModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))
