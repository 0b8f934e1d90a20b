"""DiffusionPriorNetwork: the causal transformer that denoises a CLIP image embedding.

Following the DALL-E 2 paper (section 2.2), the network reads the token sequence

    [text encodings (max_text_len), text embed, diffusion time, noised image embed, (self-cond), query]

and the output at the learned query token is the prediction (x0, eps or v, as the owning
``DiffusionPrior`` decides).  Text-encoding padding is replaced by learned per-position null tokens
(DALL-E 1's learned padding); dropped conditions (classifier-free guidance) are replaced by learned
null text/image embeddings.  The function is the one of the reference DALLE2-pytorch 1.15.6, whose
checkpoints load through :mod:`dalle2_pytorch.compat.prior`.

When no text encodings are given (``condition_on_text_encodings=False``) or all text is dropped,
the ``max_text_len`` null tokens are the same for every row and are computed once at batch size 1
(see :mod:`dalle2_pytorch.prior.transformer`), and with a sampling loop's :class:`PrefixCache` once for all steps: same
output, a fraction of the compute.
"""

from __future__ import annotations

import torch
from torch import nn

from dalle2_pytorch.clip.conditioning import check_embedding, check_text_encodings, null_pad_text
from dalle2_pytorch.diffusion.guidance import classifier_free_guidance, condition_keep_mask as keep_mask
from dalle2_pytorch.prior.layers import SinusoidalTimeEmbedding
from dalle2_pytorch.prior.transformer import CausalTransformer
from dalle2_pytorch.serialization import PretrainedMixin, register_to_config
from dalle2_pytorch.validation import strict_keywords

NULL_CONDITIONING = ("learned", "padding", "mask")


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


class TimeEmbedding(nn.Module):
    """Diffusion time → ``num_tokens`` tokens: a table for discrete steps, or sinusoids + MLP."""

    def __init__(self, dim: int, num_tokens: int, num_timesteps: int | None) -> None:
        super().__init__()
        self.dim, self.num_tokens = dim, num_tokens
        self.continuous = num_timesteps is None
        out_dim = dim * num_tokens
        if self.continuous:
            hidden = 2 * out_dim
            self.sinusoidal = SinusoidalTimeEmbedding(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, out_dim))
        else:
            self.table = nn.Embedding(num_timesteps, out_dim)
        self.num_timesteps = num_timesteps

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.continuous:
            emb = self.mlp(self.sinusoidal(t).to(self.mlp[0].weight.dtype))
        else:
            if t.is_floating_point():
                raise TypeError("diffusion_timesteps must be integers for a network built with num_timesteps")
            emb = self.table(t)
        return emb.view(t.shape[0], self.num_tokens, self.dim)


class DiffusionPriorNetwork(PretrainedMixin, nn.Module):
    """Causal transformer mapping (noised image embed, time, text) to a denoised image embed.

    Args:
        dim: token width; must equal the image-embedding dimension.
        depth, dim_head, heads, ff_mult: transformer size (SwiGLU feed-forward of width ``ff_mult*dim``).
        num_timesteps: if given, a learned table of that many discrete time steps; if None, a
            continuous sinusoidal embedding followed by an MLP.
        num_time_embeds, num_image_embeds, num_text_embeds: how many tokens each of these vectors
            is expanded into (a linear map when more than one).
        max_text_len: text-encoding slots; longer encodings are truncated (with a warning),
            shorter ones padded with learned null tokens.
        self_cond: add a self-conditioning token (the previous x0 estimate, zeros when absent).
        norm_in, norm_out: LayerNorm on the input tokens / (stable) LayerNorm on the output.
        attn_dropout, ff_dropout: dropout on attention weights / inside the feed-forward.
        final_proj: a final bias-free linear map after the output norm.
        normformer: NormFormer's extra LayerNorm after the feed-forward activation.
        rotary_emb: rotary position embedding on queries and keys (first ``min(32, dim_head)`` features).
        cosine_sim: cosine-similarity attention (l2-normalised q, k; the reference's behaviour);
            False gives ordinary dot-product attention scaled by ``dim_head ** -0.5``.
        cosine_sim_scale: the logit scale (inverse temperature) of cosine-similarity attention.
        stable_norm_out: the output norm divides by the max first (False: a plain LayerNorm, as
            reference releases up to 0.16.1 had).
        null_conditioning: how padding and dropped conditions are represented, for weights of old
            reference releases (:mod:`dalle2_pytorch.compat` sets it):

            * ``"learned"`` (today): padding and dropped text become learned null tokens, a dropped
              text embed / image embed learned null embeddings;
            * ``"padding"`` (releases 0.23.1-1.8.x): learned null tokens for text padding only;
              dropping a condition has no effect, so guidance returns the conditional output;
            * ``"mask"`` (releases up to 0.23.0): no null tokens; text padding (all-zero rows) is
              masked out of attention as keys in every layer, and a dropped text condition masks
              every text-encoding token and the text-embed token.  The image embed is never dropped.
    """

    @strict_keywords()
    @register_to_config
    def __init__(self, dim: int, *, depth: int, dim_head: int = 64, heads: int = 8, ff_mult: float = 4,
                 num_timesteps: int | None = None, num_time_embeds: int = 1, num_image_embeds: int = 1,
                 num_text_embeds: int = 1, max_text_len: int = 256, self_cond: bool = False,
                 norm_in: bool = False, norm_out: bool = True, attn_dropout: float = 0.0, ff_dropout: float = 0.0,
                 final_proj: bool = True, normformer: bool = False, rotary_emb: bool = True,
                 cosine_sim: bool = True, cosine_sim_scale: float = 16.0, stable_norm_out: bool = True,
                 null_conditioning: str = "learned") -> None:
        super().__init__()
        if null_conditioning not in NULL_CONDITIONING:
            raise ValueError(f"null_conditioning must be one of {NULL_CONDITIONING}, got {null_conditioning!r}")
        for name, value in (("dim", dim), ("depth", depth), ("dim_head", dim_head), ("heads", heads),
                            ("num_time_embeds", num_time_embeds), ("num_image_embeds", num_image_embeds),
                            ("num_text_embeds", num_text_embeds)):
            _check_positive_int(name, value)
        _check_positive_int("max_text_len", max_text_len, minimum=0)
        if num_timesteps is not None:
            _check_positive_int("num_timesteps", num_timesteps)
        if rotary_emb and dim_head % 2:
            raise ValueError(f"rotary_emb needs an even dim_head, got dim_head={dim_head}")
        if not ff_mult > 0:
            raise ValueError(f"ff_mult must be > 0, got {ff_mult!r}")
        _check_probability("attn_dropout", attn_dropout)
        _check_probability("ff_dropout", ff_dropout)

        self.dim = dim
        self.null_conditioning = null_conditioning
        self.max_text_len = max_text_len
        self.self_cond = self_cond
        self.num_text_embeds, self.num_image_embeds = num_text_embeds, num_image_embeds

        self.text_embed_proj = nn.Linear(dim, dim * num_text_embeds) if num_text_embeds > 1 else None
        self.image_embed_proj = nn.Linear(dim, dim * num_image_embeds) if num_image_embeds > 1 else None
        self.time_embed = TimeEmbedding(dim, num_time_embeds, num_timesteps)
        self.learned_query = nn.Parameter(torch.randn(dim))
        if null_conditioning != "mask":
            self.null_text_encodings = nn.Parameter(torch.randn(1, max_text_len, dim))
        if null_conditioning == "learned":
            self.null_text_embeds = nn.Parameter(torch.randn(1, num_text_embeds, dim))
            self.null_image_embed = nn.Parameter(torch.randn(1, dim))
        self.transformer = CausalTransformer(
            dim=dim, depth=depth, dim_head=dim_head, heads=heads, ff_mult=ff_mult, norm_in=norm_in,
            norm_out=norm_out, attn_dropout=attn_dropout, ff_dropout=ff_dropout, final_proj=final_proj,
            normformer=normformer, rotary_emb=rotary_emb, cosine_sim=cosine_sim, cosine_sim_scale=cosine_sim_scale,
            stable_norm_out=stable_norm_out)

    # ------------------------------------------------------------------ helpers
    def _tokens(self, vector: torch.Tensor, proj: nn.Linear | None, count: int) -> torch.Tensor:
        out = vector if proj is None else proj(vector)
        return out.view(vector.shape[0], count, self.dim)

    def _check_inputs(self, image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond, cache) -> None:
        if cache is not None and (cache.net is not self or self.training or torch.is_grad_enabled()):
            raise ValueError("cache= is for sampling: build it with this network's prefix_cache() and call the "
                             "network in eval mode under torch.no_grad() (its keys/values assume fixed weights)")
        batch = check_embedding("image_embed", image_embed, self.dim).shape[0]
        if text_embed is None:
            raise TypeError("text_embed is required")
        check_embedding("text_embed", text_embed, self.dim, batch)
        if diffusion_timesteps.shape != (batch,):
            raise ValueError(f"diffusion_timesteps must have shape ({batch},), got {tuple(diffusion_timesteps.shape)}")
        if text_encodings is not None:
            check_text_encodings(text_encodings, self.dim, batch)
        if self_cond is not None and not self.self_cond:
            raise ValueError("self_cond was given but this network was built with self_cond=False")
        if self_cond is not None:
            check_embedding("self_cond", self_cond, self.dim, batch)

    def _text_encoding_tokens(self, text_encodings: torch.Tensor, text_keep: torch.Tensor) -> torch.Tensor:
        """``max_text_len`` slots; padding (all-zero rows) and dropped text become learned null tokens."""
        return null_pad_text(text_encodings, self.null_text_encodings, self.max_text_len, keep=text_keep)

    def prefix_cache(self) -> "PrefixCache":
        """A fresh key/value cache for one sampling loop; pass it as ``cache=`` to every call of the loop."""
        return PrefixCache(self)

    # ------------------------------------------------------------------ forward
    def forward(self, image_embed: torch.Tensor, diffusion_timesteps: torch.Tensor, *,
                text_embed: torch.Tensor, text_encodings: torch.Tensor | None = None,
                self_cond: torch.Tensor | None = None, text_cond_drop_prob: float = 0.0,
                image_cond_drop_prob: float = 0.0, cache: "PrefixCache | None" = None) -> torch.Tensor:
        """Predict from ``image_embed`` (b, dim) noised at ``diffusion_timesteps`` (b,); returns (b, dim).

        ``text_cond_drop_prob``/``image_cond_drop_prob`` drop each row's text (embed and encodings)
        or noised image embed in favour of the learned nulls, for classifier-free guidance training.
        ``cache``: a :meth:`prefix_cache` reused by every step of a sampling loop (eval mode, no grad).
        """
        self._check_inputs(image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond, cache)
        _check_probability("text_cond_drop_prob", text_cond_drop_prob)
        _check_probability("image_cond_drop_prob", image_cond_drop_prob)
        return self._forward(image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond,
                             text_cond_drop_prob, image_cond_drop_prob, cache)

    def _forward(self, image_embed: torch.Tensor, diffusion_timesteps: torch.Tensor, text_embed: torch.Tensor,
                 text_encodings: torch.Tensor | None, self_cond: torch.Tensor | None, text_cond_drop_prob: float,
                 image_cond_drop_prob: float, cache: "PrefixCache | None") -> torch.Tensor:
        if self.null_conditioning != "learned":
            return self._forward_legacy(image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond,
                                        text_cond_drop_prob)
        batch, device, dtype = image_embed.shape[0], image_embed.device, image_embed.dtype
        text_keep = keep_mask(batch, text_cond_drop_prob, device)
        image_keep = keep_mask(batch, image_cond_drop_prob, device)

        text_tokens = self._tokens(text_embed, self.text_embed_proj, self.num_text_embeds)
        text_tokens = torch.where(text_keep[:, None, None], text_tokens, self.null_text_embeds.to(text_tokens.dtype))
        image_tokens = self._tokens(image_embed, self.image_embed_proj, self.num_image_embeds)
        null_image = self.null_image_embed.to(image_tokens.dtype)
        image_tokens = torch.where(image_keep[:, None, None], image_tokens, null_image)
        time_tokens = self.time_embed(diffusion_timesteps).to(dtype)

        query = self._query(self_cond, batch, dtype)

        # The text-encoding slots come first and, under the causal mask, see only each other.  When
        # no encodings are given or all text is dropped they are the same for every row: run them
        # once beside the rows, or take their keys/values from the sampling loop's cache.
        per_row = torch.cat([text_tokens, time_tokens, image_tokens, query], dim=1)
        if text_encodings is None or text_cond_drop_prob >= 1:
            if cache is not None:
                tokens = self.transformer(per_row, cache.null_key_values(dtype))
            else:
                tokens = self.transformer(per_row, shared_prefix=self.null_text_encodings.to(dtype))
        elif cache is not None and text_cond_drop_prob <= 0:
            tokens = self.transformer(per_row, cache.text_key_values(text_encodings, dtype))
        else:
            text_tokens = self._text_encoding_tokens(text_encodings.to(dtype), text_keep)
            tokens = self.transformer(torch.cat((text_tokens, per_row), dim=1))
        return tokens[:, -1]

    def _query(self, self_cond: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The learned query token, after the self-conditioning token when the network has one."""
        query = self.learned_query.to(dtype).expand(batch, 1, -1)
        if self.self_cond:
            cond = self_cond if self_cond is not None else query.new_zeros(batch, self.dim)
            query = torch.cat((cond[:, None, :], query), dim=1)
        return query

    def _forward_legacy(self, image_embed: torch.Tensor, diffusion_timesteps: torch.Tensor, text_embed: torch.Tensor,
                        text_encodings: torch.Tensor | None, self_cond: torch.Tensor | None,
                        text_cond_drop_prob: float) -> torch.Tensor:
        """The ``"padding"`` and ``"mask"`` null conditionings (see the class doc); no prefix cache."""
        batch, device, dtype = image_embed.shape[0], image_embed.device, image_embed.dtype
        text_tokens = self._tokens(text_embed, self.text_embed_proj, self.num_text_embeds)
        image_tokens = self._tokens(image_embed, self.image_embed_proj, self.num_image_embeds)
        time_tokens = self.time_embed(diffusion_timesteps).to(dtype)
        per_row = torch.cat([text_tokens, time_tokens, image_tokens, self._query(self_cond, batch, dtype)], dim=1)
        if self.null_conditioning == "padding":  # dropping has no effect in these releases
            if text_encodings is None:
                return self.transformer(per_row, shared_prefix=self.null_text_encodings.to(dtype))[:, -1]
            text = null_pad_text(text_encodings.to(dtype), self.null_text_encodings, self.max_text_len)
            return self.transformer(torch.cat((text, per_row), dim=1))[:, -1]
        if text_encodings is None:
            text_encodings = image_embed.new_zeros(batch, 0, self.dim)
        keep = keep_mask(batch, text_cond_drop_prob, device)
        text_present = (text_encodings != 0).any(dim=-1) & keep[:, None]
        key_mask = torch.cat((text_present, keep[:, None].expand(batch, self.num_text_embeds),
                              keep.new_ones(batch, per_row.shape[1] - self.num_text_embeds)), dim=1)
        tokens = torch.cat((text_encodings.to(dtype), per_row), dim=1)
        return self.transformer(tokens, key_mask=key_mask)[:, -1]

    def forward_with_cond_scale(self, image_embed: torch.Tensor, diffusion_timesteps: torch.Tensor, *,
                                text_embed: torch.Tensor, text_encodings: torch.Tensor | None = None,
                                self_cond: torch.Tensor | None = None, cond_scale: float = 1.0,
                                text_cond_drop_prob: float = 0.0, image_cond_drop_prob: float = 0.0,
                                cache: "PrefixCache | None" = None) -> torch.Tensor:
        """Classifier-free guidance (:func:`~dalle2_pytorch.diffusion.classifier_free_guidance`).

        The null pass drops text and the noised image embed together (as the reference does);
        ``cond_scale == 1`` is the plain conditional forward.
        """
        self._check_inputs(image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond, cache)
        _check_probability("text_cond_drop_prob", text_cond_drop_prob)
        _check_probability("image_cond_drop_prob", image_cond_drop_prob)
        return self.guided(image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond, cond_scale,
                           text_cond_drop_prob, image_cond_drop_prob, cache)

    def guided(self, image_embed: torch.Tensor, diffusion_timesteps: torch.Tensor, text_embed: torch.Tensor,
               text_encodings: torch.Tensor | None, self_cond: torch.Tensor | None, cond_scale: float,
               text_cond_drop_prob: float = 0.0, image_cond_drop_prob: float = 0.0,
               cache: "PrefixCache | None" = None) -> torch.Tensor:
        """:meth:`forward_with_cond_scale` without its input checks, for a caller that checked them once
        (a sampling loop calls this at every step with the same, already validated conditioning)."""
        args = (image_embed, diffusion_timesteps, text_embed, text_encodings, self_cond)
        cond = self._forward(*args, text_cond_drop_prob, image_cond_drop_prob, cache)
        if cond_scale == 1 or self.null_conditioning == "padding":  # "padding": the null pass equals cond
            return cond
        null = self._forward(*args, 1.0, 1.0, cache)
        return classifier_free_guidance(cond, null, cond_scale)


class PrefixCache:
    """Keys/values of a :class:`DiffusionPriorNetwork`'s text-encoding slots, for one sampling loop.

    Under the causal mask the text-encoding tokens see only each other, so their keys/values depend
    on the weights and the encodings only, not on the noised embedding or the time: a sampling loop
    computes them once instead of at every step.  Build one per loop (``net.prefix_cache()``), pass
    it to every call, and drop it with the loop; it is valid while the weights do not change, which
    is why it is refused in training mode or with gradients enabled.  The null slots (shared by
    every row) and the slots of the given encodings are kept apart; other encodings (a different
    tensor, or the same one changed in place) are recomputed.
    """

    def __init__(self, net: DiffusionPriorNetwork) -> None:
        self.net = net
        self._null: dict[torch.dtype, list] = {}
        self._text: tuple | None = None  # (encodings, their version, dtype, keys/values)

    def null_key_values(self, dtype: torch.dtype) -> list:
        """Per-block keys/values of the ``max_text_len`` learned null tokens (batch 1)."""
        if dtype not in self._null:
            self._null[dtype] = self.net.transformer.prefix_key_values(self.net.null_text_encodings.to(dtype))
        return self._null[dtype]

    def text_key_values(self, text_encodings: torch.Tensor, dtype: torch.dtype) -> list:
        """Per-block keys/values of the slots filled from ``text_encodings`` (b, n, dim)."""
        cached = self._text
        if cached is None or cached[0] is not text_encodings or cached[1] != text_encodings._version \
                or cached[2] != dtype:
            keep_all = torch.ones(text_encodings.shape[0], dtype=torch.bool, device=text_encodings.device)
            prefix = self.net._text_encoding_tokens(text_encodings.to(dtype), keep_all)
            cached = (text_encodings, text_encodings._version, dtype, self.net.transformer.prefix_key_values(prefix))
            self._text = cached
        return cached[3]
