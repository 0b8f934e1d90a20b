"""Attention layers of the U-Net, all on (b, c, h, w) feature maps or (b, n, c) sequences.

* :class:`CrossAttention` – pixels attend to conditioning tokens (time/image/text) plus a learned
  null key/value, so a sample whose conditioning is fully masked still has something to attend to.
  With only a few tokens it runs re-associated (see ``_attend_few_keys``), which is exact and cheaper.
* :class:`FullSelfAttention` – multi-query self-attention over all pixels (one shared key/value head).
* :class:`LinearSelfAttention` – O(n) attention (softmax over features for queries, over positions
  for keys); the reference calls this "sparse" attention.
* :class:`WindowSelfAttention` – full self-attention inside non-overlapping k×k windows.

The other softmax attention layers run through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelLayerNorm, LayerNorm

COSINE_SIM_SCALE = 16.0


def _attention_scale(dim_head: int, cosine_sim: bool) -> float:
    return COSINE_SIM_SCALE if cosine_sim else dim_head ** -0.5


class CrossAttention(nn.Module):
    """Queries from a (b, n, dim) sequence, keys/values from (b, m, context_dim) tokens + a null token."""

    def __init__(self, dim: int, *, context_dim: int, dim_head: int = 64, heads: int = 8,
                 cosine_sim: bool = False):
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dim_head, self.cosine_sim = heads, dim_head, cosine_sim
        self.scale = _attention_scale(dim_head, cosine_sim)
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.out_norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        h, d = self.heads, self.dim_head
        k, v = self.to_kv(context).view(b, -1, 2, h, d).permute(2, 0, 3, 1, 4)
        null_k, null_v = (t.to(k.dtype).view(1, 1, 1, d).expand(b, h, 1, d) for t in self.null_kv)
        k, v = torch.cat((null_k, k), dim=2), torch.cat((null_v, v), dim=2)
        if mask is not None:
            mask = F.pad(mask, (1, 0), value=True)[:, None, None, :]
        normed = self.norm(x)
        if not self.cosine_sim and k.shape[2] < d:  # few tokens: the cheaper, exact re-association
            return self.out_norm(self._attend_few_keys(normed, k, v, mask))
        q = self.to_q(normed).view(b, n, h, d).transpose(1, 2)
        if self.cosine_sim:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.out_norm(self.to_out(out.transpose(1, 2).reshape(b, n, h * d)))

    def _attend_few_keys(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         mask: torch.Tensor | None) -> torch.Tensor:
        """Softmax attention re-associated for the case "many pixels, a handful of tokens".

        Instead of projecting every pixel to heads*dim_head queries and back, fold the query
        projection into the keys (``Wq_hᵀ k``) and the output projection into the values (``v Wo_h``):
        the same numbers with about dim_head/(tokens+1) times fewer FLOPs and stored activations.
        """
        b, n, dim = x.shape
        h, d, m = self.heads, self.dim_head, k.shape[2]
        w_q = self.to_q.weight.view(h, d, dim)
        w_o = self.to_out.weight.view(dim, h, d)
        keys = torch.einsum("hdc,bhmd->bchm", w_q, k).reshape(b, dim, h * m) * self.scale
        values = torch.einsum("bhmd,chd->bhmc", v, w_o).reshape(b, h * m, dim)
        logits = torch.bmm(x, keys).view(b, n, h, m)
        if mask is not None:
            logits = logits.masked_fill(~mask.view(b, 1, 1, m), torch.finfo(logits.dtype).min)
        return torch.bmm(logits.softmax(dim=-1).view(b, n, h * m), values)


class FullSelfAttention(nn.Module):
    """Residual multi-query self-attention over every pixel of a (b, c, h, w) map."""

    def __init__(self, dim: int, *, dim_head: int = 32, heads: int = 16, cosine_sim: bool = False,
                 sqrt_scale: bool = False):
        super().__init__()
        self.heads, self.dim_head, self.cosine_sim = heads, dim_head, cosine_sim
        # the reference (from 1.4.3) scales queries twice here, so its logits are q·k / dim_head (not
        # / sqrt(dim_head)); trained checkpoints depend on that temperature, so it is kept.
        # ``sqrt_scale``: q·k / sqrt(dim_head), what releases up to 1.4.2 computed.
        self.scale = COSINE_SIM_SCALE if cosine_sim else dim_head ** (-0.5 if sqrt_scale else -1.0)
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.out_norm = LayerNorm(dim)

    def attend(self, seq: torch.Tensor) -> torch.Tensor:
        """(b, n, dim) -> (b, n, dim) attention output (without the residual)."""
        b, n, _ = seq.shape
        h, d = self.heads, self.dim_head
        normed = self.norm(seq)
        q = self.to_q(normed).view(b, n, h, d).transpose(1, 2)
        k, v = self.to_kv(normed).unsqueeze(1).chunk(2, dim=-1)
        null_k, null_v = (t.to(k.dtype).view(1, 1, 1, d).expand(b, 1, 1, d) for t in self.null_kv)
        k, v = torch.cat((null_k, k), dim=2), torch.cat((null_v, v), dim=2)
        if self.cosine_sim:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        k, v = k.expand(b, h, n + 1, d), v.expand(b, h, n + 1, d)  # one key/value head shared by all
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out_norm(self.to_out(out.transpose(1, 2).reshape(b, n, h * d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        seq = x.flatten(2).transpose(1, 2)
        return x + self.attend(seq).transpose(1, 2).reshape(b, c, hgt, wid)


class WindowSelfAttention(FullSelfAttention):
    """Residual self-attention restricted to non-overlapping ``window``×``window`` tiles of the map."""

    def __init__(self, dim: int, *, window: int, dim_head: int = 32, heads: int = 16, cosine_sim: bool = False,
                 sqrt_scale: bool = False):
        super().__init__(dim, dim_head=dim_head, heads=heads, cosine_sim=cosine_sim, sqrt_scale=sqrt_scale)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        w = self.window
        if hgt % w or wid % w:
            raise ValueError(f"sparse_attn_window={w} must divide the feature map size, got {hgt}x{wid}")
        tiles = x.view(b, c, hgt // w, w, wid // w, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, w * w, c)
        out = self.attend(tiles).view(b, hgt // w, wid // w, w, w, c).permute(0, 5, 1, 3, 2, 4)
        return x + out.reshape(b, c, hgt, wid)


class LinearSelfAttention(nn.Module):
    """Residual linear attention over a (b, c, h, w) map (cost linear in the number of pixels).

    ``normalize=False`` leaves out the l2-normalised values and the 1/sqrt(h·w) on keys and values,
    as reference releases up to 1.3.x did.
    """

    def __init__(self, dim: int, *, dim_head: int = 32, heads: int = 16, normalize: bool = True):
        super().__init__()
        self.heads, self.dim_head, self.normalize = heads, dim_head, normalize
        inner = dim_head * heads
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, inner * 3, 1, bias=False)
        self.to_out = nn.Conv2d(inner, dim, 1, bias=False)
        self.out_norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        n, h, d = hgt * wid, self.heads, self.dim_head
        q, k, v = self.to_qkv(self.norm(x)).view(b, 3, h, d, n).unbind(dim=1)
        q = q.softmax(dim=-2) * (d ** -0.5)           # over features
        k = k.softmax(dim=-1)                         # over positions
        if self.normalize:
            k, v = k / math.sqrt(n), F.normalize(v, dim=-2) / math.sqrt(n)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, h * d, hgt, wid)
        return x + self.out_norm(self.to_out(F.gelu(out)))
