"""A torch model for the real-export fixtures of issue 11 (dev-only; needs torch), exported by
scripts/export_fixtures.py. (The Llama-style decoder of tests/fixtures/decoder_dynamo.onnx lives
in :mod:`hypar.torch.examples`, where hypar.torch's tests run it: ``Decoder``, ``DecoderConfig``.)

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

PATCH = 4
EMBED = 32
VIT_HEADS = 2
WINDOW = 4
VIT_MLP = 64
CLASSES = 10


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of ``model`` (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
