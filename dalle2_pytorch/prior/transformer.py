"""The prior's causal transformer: pre-norm blocks of multi-query attention and SwiGLU.

``prefix_key_values(prefix)`` and ``forward(tokens, prefix_key_values)`` let the caller hand over
tokens that sit in front of every batch row and are the same for all rows (the learned null
text-encoding tokens when the prior is not conditioned on text encodings, or when text is dropped
for guidance).  Under a causal mask
those tokens never see the rest of the sequence, so their keys and values are computed once at
batch size 1 and shared, the way a key/value cache is.  The result is exactly the function of the
full sequence, without spending a batch's worth of compute on hundreds of constant tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.prior.attention import KeyValue, MultiQueryAttention
from dalle2_pytorch.prior.layers import GainLayerNorm, RelativePositionBias, RotaryEmbedding, SwiGLUFeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attn: MultiQueryAttention, ff: SwiGLUFeedForward) -> None:
        super().__init__()
        self.attn = attn
        self.ff = ff


class CausalTransformer(nn.Module):
    """Causal transformer with T5 relative position bias and optional rotary embeddings."""

    def __init__(self, *, dim: int, depth: int, dim_head: int = 64, heads: int = 8, ff_mult: float = 4,
                 norm_in: bool = False, norm_out: bool = True, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, final_proj: bool = True, normformer: bool = False,
                 rotary_emb: bool = True, cosine_sim: bool = True, cosine_sim_scale: float = 16.0,
                 stable_norm_out: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.norm_in = GainLayerNorm(dim) if norm_in else None
        self.rel_pos_bias = RelativePositionBias(heads)
        self.rotary = RotaryEmbedding(min(32, dim_head), dim_head) if rotary_emb else None
        self.blocks = nn.ModuleList([
            TransformerBlock(
                MultiQueryAttention(dim, dim_head=dim_head, heads=heads, dropout=attn_dropout,
                                    cosine_sim=cosine_sim, cosine_sim_scale=cosine_sim_scale),
                SwiGLUFeedForward(dim, mult=ff_mult, dropout=ff_dropout, post_activation_norm=normformer),
            )
            for _ in range(depth)
        ])
        self.norm_out = GainLayerNorm(dim, stable=stable_norm_out) if norm_out else None
        self.project_out = nn.Linear(dim, dim, bias=False) if final_proj else None
        self._position_cache: dict = {}  # (start, length, device) -> constant position tensors

    def _positions(self, start: int, length: int, device: torch.device):
        """Bucket indices, additive causal mask and rotary tables for queries at ``start..start+length``.

        Keys are ``[null, token 0, ..., token start+length-1]``.  As in the reference, the bias
        distance counts the null key as position 0, so token ``j`` sits at key position ``j + 1``.
        These depend on positions only, so they are computed once per shape and device.
        """
        key = (start, length, device)
        if key not in self._position_cache:
            query_pos = torch.arange(start, start + length, device=device)
            key_pos = torch.arange(start + length + 1, device=device)
            buckets = self.rel_pos_bias.buckets(query_pos, key_pos)
            causal = torch.zeros(length, 1, start + length + 1, device=device)
            causal.masked_fill_((key_pos[None, :] > query_pos[:, None] + 1)[:, None, :], float("-inf"))
            rotary = None
            if self.rotary is not None:
                cos, sin = self.rotary.tables(query_pos)
                rotary = (cos[:, None, :], sin[:, None, :])
            self._position_cache[key] = (buckets, causal, rotary)
        return self._position_cache[key]

    def attention_bias(self, buckets: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """(n * heads, m) position bias plus causal mask, rows ordered (token, head)."""
        bias = self.rel_pos_bias(buckets) + causal
        return bias.reshape(-1, bias.shape[-1])

    def prefix_key_values(self, prefix: torch.Tensor) -> list[KeyValue]:
        """Per-block keys/values of tokens ``prefix`` (1 or b, p, d) placed at the start of the sequence."""
        if prefix.shape[1] == 0:
            return []
        x = prefix if self.norm_in is None else self.norm_in(prefix)
        buckets, causal, rotary = self._positions(0, x.shape[1], x.device)
        bias = self.attention_bias(buckets, causal)
        key_values = []
        for index, block in enumerate(self.blocks):
            out, kv = block.attn(x, bias, rotary_tables=rotary)
            key_values.append(kv)
            if index != len(self.blocks) - 1:  # the last block's prefix outputs feed nothing
                x = x + out
                x = x + block.ff(x)
        return key_values

    def _flat_rotary(self, prefix_len: int, length: int, batch: int, device: torch.device):
        """Rotary tables for flat tokens [prefix (prefix_len), batch rows of length]: (P + b * n, 1, d)."""
        if self.rotary is None:
            return None
        key = ("flat", prefix_len, length, batch, device)
        if key not in self._position_cache:
            prefix = self._positions(0, prefix_len, device)[2]
            rows = self._positions(prefix_len, length, device)[2]
            self._position_cache[key] = tuple(torch.cat((p, r.repeat(batch, 1, 1)), dim=0)
                                              for p, r in zip(prefix, rows))
        return self._position_cache[key]

    def forward(self, tokens: torch.Tensor, prefix_key_values: list[KeyValue] | None = None, *,
                shared_prefix: torch.Tensor | None = None, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs for ``tokens`` (b, n, d) placed after a prefix shared by every row.

        The prefix is given either as tokens ``shared_prefix`` (1, p, d), run together with the
        rows (training), or by its already computed :meth:`prefix_key_values` (sampling cache).
        ``key_mask`` (b, n) bool, without a prefix: False tokens are hidden from every query as keys
        (the null key stays visible), the explicit padding mask of old reference priors.
        """
        if key_mask is not None:
            if shared_prefix is not None or prefix_key_values:
                raise ValueError("key_mask cannot be combined with a shared prefix or prefix key/values")
            return self._finish(self._forward_masked(tokens, key_mask))
        if shared_prefix is not None and shared_prefix.shape[1] > 0:
            return self._finish(self._forward_with_shared_prefix(tokens, shared_prefix))
        prefix_key_values = prefix_key_values or None
        start = 0 if prefix_key_values is None else prefix_key_values[0][0].shape[1]
        x = tokens if self.norm_in is None else self.norm_in(tokens)
        buckets, causal, rotary = self._positions(start, x.shape[1], x.device)
        bias = self.attention_bias(buckets, causal)
        for index, block in enumerate(self.blocks):
            prefix_kv = None if prefix_key_values is None else prefix_key_values[index]
            attn_out, _ = block.attn(x, bias, rotary_tables=rotary, prefix_kv=prefix_kv)
            x = x + attn_out
            x = x + block.ff(x)
        return self._finish(x)

    def _forward_masked(self, tokens: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = tokens if self.norm_in is None else self.norm_in(tokens)
        buckets, causal, rotary = self._positions(0, x.shape[1], x.device)
        visible = F.pad(key_mask.bool(), (1, 0), value=True)  # the null key is always visible
        hidden = torch.zeros(visible.shape, device=x.device).masked_fill(~visible, float("-inf"))
        bias = self.attention_bias(buckets, causal)[None, None] + hidden[:, None, None, :]
        for block in self.blocks:
            x = x + block.attn(x, bias, rotary_tables=rotary)[0]
            x = x + block.ff(x)
        return x

    def _forward_with_shared_prefix(self, tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        p = prefix.shape[1]
        x = torch.cat((prefix.reshape(p, d).to(tokens.dtype), tokens.reshape(b * n, d)), dim=0)
        if self.norm_in is not None:
            x = self.norm_in(x)
        prefix_bias = self.attention_bias(*self._positions(0, p, x.device)[:2])
        rows_bias = self.attention_bias(*self._positions(p, n, x.device)[:2])
        rotary = self._flat_rotary(p, n, b, x.device)
        for block in self.blocks:
            x = x + block.attn.forward_after_shared_prefix(x, p, b, prefix_bias, rows_bias, rotary)
            x = x + block.ff(x)
        return x[p:].view(b, n, d)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_out is not None:
            x = self.norm_out(x)
        if self.project_out is not None:
            x = self.project_out(x)
        return x
