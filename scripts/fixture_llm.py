"""Two torch models for the real-export fixtures of issue 11 (dev-only; needs torch), exported by
scripts/export_fixtures.py:

- :class:`Decoder`: a Llama-style decoder LM -- token embedding, ``LAYERS`` pre-norm blocks of
  RMSNorm, grouped-query attention (``Q_HEADS`` query heads sharing ``KV_HEADS`` key/value heads,
  K/V expanded to the query heads), rotary position embeddings on q and k, causal softmax
  attention, a SwiGLU MLP (``down(silu(gate(x)) * up(x))``), a final RMSNorm and an untied
  vocabulary head. Module paths follow Hugging Face's Llama (``model.layers.0.self_attn.q_proj``)
  so the plan's ``module`` names read as a user of such a model expects. No Linear has a bias.
- :class:`WindowedViT`: a windowed-attention vision transformer in the Swin style -- a patch
  embedding convolution, one block of LayerNorm, attention inside ``WINDOW`` x ``WINDOW`` windows
  (the feature map padded up to whole windows at run time, a learned relative-position bias table
  gathered with constant indices), the windows merged back and cropped, an MLP, then a mean over
  the tokens and a class head. Exported with dynamic batch, height and width, so the padding is
  computed from the input's shape (Shape -> Gather -> arithmetic -> Pad / Reshape / Slice).

Parameter counts (tests/onnx/test_llm_fixtures.py checks the plans hold exactly these):
:func:`parameter_count` of each model.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 128
HIDDEN = 64
Q_HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // Q_HEADS
MLP = 128
LAYERS = 2
SEQ = 16
ROPE_BASE = 10000.0

PATCH = 4
EMBED = 32
VIT_HEADS = 2
WINDOW = 4
VIT_MLP = 64
CLASSES = 10


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of ``model`` (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last axis, as Llama's rotary embedding does."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """Grouped-query causal self-attention with rotary embeddings on q and k."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(HIDDEN, Q_HEADS * HEAD_DIM, bias=False)
        self.k_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.v_proj = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.o_proj = nn.Linear(Q_HEADS * HEAD_DIM, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, Q_HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, s, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(x).view(b, s, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = Q_HEADS // KV_HEADS  # GQA: each K/V head serves `group` query heads
        k = k[:, :, None].expand(b, KV_HEADS, group, s, HEAD_DIM).reshape(b, Q_HEADS, s, HEAD_DIM)
        v = v[:, :, None].expand(b, KV_HEADS, group, s, HEAD_DIM).reshape(b, Q_HEADS, s, HEAD_DIM)
        scores = torch.matmul(q, k.transpose(-2, -1)) * HEAD_DIM ** -0.5
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o_proj(ctx.transpose(1, 2).reshape(b, s, Q_HEADS * HEAD_DIM))


class MLPBlock(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(HIDDEN, MLP, bias=False)
        self.up_proj = nn.Linear(HIDDEN, MLP, bias=False)
        self.down_proj = nn.Linear(MLP, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(HIDDEN, eps=1e-6)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.RMSNorm(HIDDEN, eps=1e-6)
        self.mlp = MLPBlock()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """Embedding, the blocks and the final norm (Hugging Face's ``model``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = nn.RMSNorm(HIDDEN, eps=1e-6)
        inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = ids.shape[1]
        angles = torch.arange(s, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # (s, HEAD_DIM)
        cos, sin = angles.cos(), angles.sin()
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class Decoder(nn.Module):
    """The decoder LM: ``model`` then ``lm_head``; input (batch, sequence) int64 token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.model = DecoderModel()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))


def _relative_index(window: int) -> torch.Tensor:
    """(window^2, window^2) indices into a (2 window - 1)^2 relative-position table (Swin's)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack((ys.flatten(), xs.flatten()))  # (2, w^2)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head attention inside each window, with a learned relative-position bias."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(EMBED, 3 * EMBED)
        self.proj = nn.Linear(EMBED, EMBED)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * WINDOW - 1) ** 2, VIT_HEADS) * 0.02)
        self.register_buffer("relative_position_index", _relative_index(WINDOW), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nw, t, c = x.shape  # (windows x batch, tokens per window, channels)
        d = c // VIT_HEADS
        qkv = self.qkv(x).reshape(nw, t, 3, VIT_HEADS, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * d ** -0.5
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        scores = scores + bias.reshape(t, t, VIT_HEADS).permute(2, 0, 1)[None]
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.proj(ctx.transpose(1, 2).reshape(nw, t, c))


class WindowedViT(nn.Module):
    """Patch embedding, one windowed-attention block, token mean, class head; input (B, 3, H, W)
    with H and W any multiple of ``PATCH`` (the windows are padded at run time)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, EMBED, PATCH, stride=PATCH)
        self.norm1 = nn.LayerNorm(EMBED)
        self.attn = WindowAttention()
        self.norm2 = nn.LayerNorm(EMBED)
        self.fc1 = nn.Linear(EMBED, VIT_MLP)
        self.fc2 = nn.Linear(VIT_MLP, EMBED)
        self.head = nn.Linear(EMBED, CLASSES)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).permute(0, 2, 3, 1)  # (B, h, w, C)
        b, h, w, c = x.shape
        pad_h, pad_w = (WINDOW - h % WINDOW) % WINDOW, (WINDOW - w % WINDOW) % WINDOW
        y = nn.functional.pad(self.norm1(x), (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        y = y.reshape(b, hp // WINDOW, WINDOW, wp // WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
        y = self.attn(y.reshape(-1, WINDOW * WINDOW, c))
        y = y.reshape(b, hp // WINDOW, wp // WINDOW, WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, hp, wp, c)[:, :h, :w, :]
        x = x + y
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(dim=(1, 2)))
