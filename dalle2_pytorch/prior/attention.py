"""Multi-query causal self-attention of the prior, with a learned null key/value.

Every query head reads one shared key/value head (multi-query attention, Shazeer 2019), which
keeps the key/value cache small.  A learned "null" key/value sits in front of the sequence so a
query always has something to attend to, even when everything it could see was dropped for
classifier-free guidance.  With ``cosine_sim`` (the reference's choice) queries and keys are
l2-normalised and the logits are ``cosine_sim_scale * cos(q, k)``.

Queries, the key and the value come from one projection (``to_qkv``: ``heads`` query heads, then
the key, then the value).  Because all heads share the keys, the heads are folded into the query
length and attention runs as one single-head ``scaled_dot_product_attention`` over ``n * heads``
queries: exact, with no per-head copies of keys and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.prior.layers import GainLayerNorm, RotaryEmbedding

KeyValue = tuple[torch.Tensor, torch.Tensor]


class MultiQueryAttention(nn.Module):
    """Pre-norm multi-query attention; the causal mask and position bias come in as ``attn_bias``."""

    def __init__(self, dim: int, *, dim_head: int = 64, heads: int = 8, dropout: float = 0.0,
                 cosine_sim: bool = True, cosine_sim_scale: float = 16.0) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.cosine_sim = cosine_sim
        self.scale = cosine_sim_scale if cosine_sim else dim_head ** -0.5
        self.dropout = dropout
        self.norm = GainLayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_qkv = nn.Linear(dim, dim_head * (heads + 2), bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)
        self.out_norm = GainLayerNorm(dim)

    def project(self, x: torch.Tensor, rotary_tables: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (..., heads, d), key (..., d) and value (..., d) of tokens ``x`` (..., dim).

        ``rotary_tables`` (cos, sin) broadcast against (..., 1, d).  Keys and queries come out
        rotated and, with ``cosine_sim``, l2-normalised.
        """
        qkv = self.to_qkv(self.norm(x)).unflatten(-1, (self.heads + 2, self.dim_head))
        qk, v = qkv[..., : self.heads + 1, :], qkv[..., self.heads + 1, :]
        if rotary_tables is not None:
            cos, sin = rotary_tables
            qk = RotaryEmbedding.rotate(qk, cos.to(qk.dtype), sin.to(qk.dtype))
        if self.cosine_sim:
            qk = F.normalize(qk, dim=-1)
        return qk[..., : self.heads, :], qk[..., self.heads, :], v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: torch.Tensor,
               prefix_kv: KeyValue | None = None) -> torch.Tensor:
        """Attention of queries (b, n, heads, d) over ``[null, prefix_kv, (k, v)]``; returns (b, n, heads * d).

        ``attn_bias`` (n * heads, m), rows ordered (token, head), holds the position bias with
        ``-inf`` where the causal mask forbids a key; m = 1 + prefix + n.
        """
        b, n = q.shape[:2]
        null_k, null_v = self.null_kv.to(v.dtype).unbind(0)
        if self.cosine_sim:
            null_k = F.normalize(null_k, dim=-1)
        keys, values = [null_k.expand(b, 1, -1)], [null_v.expand(b, 1, -1)]
        if prefix_kv is not None:
            keys.append(prefix_kv[0].expand(b, -1, -1))
            values.append(prefix_kv[1].expand(b, -1, -1))
        keys.append(k)
        values.append(v)
        k_all = torch.cat(keys, dim=1).unsqueeze(1)  # (b, 1, m, d): one key/value head for all query heads
        v_all = torch.cat(values, dim=1).unsqueeze(1)
        out = F.scaled_dot_product_attention(
            q.reshape(b, 1, n * self.heads, self.dim_head), k_all, v_all, attn_mask=attn_bias.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        return out.view(b, n, self.heads * self.dim_head)

    def output(self, attended: torch.Tensor) -> torch.Tensor:
        return self.out_norm(self.to_out(attended))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, *,
                rotary_tables: tuple[torch.Tensor, torch.Tensor] | None = None,
                prefix_kv: KeyValue | None = None) -> tuple[torch.Tensor, KeyValue]:
        """Attend from ``x`` (b, n, dim) to ``[null, prefix_kv, x]``.

        ``rotary_tables`` are (cos, sin) of shape (n, 1, dim_head).  ``prefix_kv`` are keys/values
        (1 or b, p, dim_head) of tokens before ``x`` computed earlier (e.g. the input-independent
        null text tokens, computed once for the whole batch).  Returns the output and this call's
        own (keys, values), ready to be a later call's ``prefix_kv``.
        """
        q, k, v = self.project(x, rotary_tables)
        return self.output(self.attend(q, k, v, attn_bias, prefix_kv)), (k, v)

    def forward_after_shared_prefix(self, x: torch.Tensor, prefix_len: int, batch: int,
                                    prefix_bias: torch.Tensor, rows_bias: torch.Tensor,
                                    rotary_tables: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """One layer over flat tokens ``x`` (prefix_len + batch * n, dim): a shared prefix, then the rows.

        Projections run once over all tokens; attention runs for the prefix (causal over itself)
        and for each row (over the prefix's keys/values and its own).  Same as running every row
        with its own copy of the prefix, at a fraction of the cost.
        """
        q, k, v = self.project(x, rotary_tables)
        n = (x.shape[0] - prefix_len) // batch
        pq, pk, pv = q[None, :prefix_len], k[None, :prefix_len], v[None, :prefix_len]
        prefix_out = self.attend(pq, pk, pv, prefix_bias)
        rows_q = q[prefix_len:].view(batch, n, self.heads, self.dim_head)
        rows_k = k[prefix_len:].view(batch, n, self.dim_head)
        rows_v = v[prefix_len:].view(batch, n, self.dim_head)
        rows_out = self.attend(rows_q, rows_k, rows_v, rows_bias, prefix_kv=(pk, pv))
        return self.output(torch.cat((prefix_out[0], rows_out.flatten(0, 1)), dim=0))
