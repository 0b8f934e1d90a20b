"""The decoder U-Net of DALL-E 2: a denoiser of images conditioned on time, a CLIP image embedding,
optional text encodings and (in a cascade) a low-resolution image."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..diffusion.guidance import classifier_free_guidance
from ..init_config import lists_as_tuples
from ..serialization import PretrainedMixin, register_to_config
from .attention import FullSelfAttention, LinearSelfAttention, WindowSelfAttention
from .blocks import (Conv4x4Downsample, ConvTransposeUpsample, CrossEmbedLayer, Downsample, DownLevel,
                     NearestUpsample, PixelShuffleUpsample, ResnetBlock, UpLevel, UpsampleCombiner, run_checkpointed,
                     run_direct, set_norm_recompute)
from .unet_conditioning import UnetConditioning
from ..validation import strict_keywords
from .unet_checks import check_constructor_args, check_forward_inputs

# keywords of the reference Unet that did nothing there and were removed here
_REMOVED = {"out_dim": "it did nothing in the reference; the number of output channels is channels_out"}


def _per_level(value, num_levels: int, name: str) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * num_levels
    if len(values) != num_levels:
        raise ValueError(f"{name} has {len(values)} entries but dim_mults gives {num_levels} levels")
    return values


def _level_switches(unet: "Unet", self_attn, layer_attns, layer_cross_attns,
                    num_levels: int) -> tuple[tuple, tuple]:
    """Per-level (self-attention, cross-attention) switches from the constructor's keywords.

    ``layer_attns`` is another name of ``self_attn``: the config records it as ``self_attn`` (so a config
    saved without the new keywords is unchanged) and ``layer_cross_attns`` only when it was given."""
    if self_attn is not None and layer_attns is not None and \
            _per_level(self_attn, num_levels, "self_attn") != _per_level(layer_attns, num_levels, "layer_attns"):
        raise ValueError(f"self_attn={self_attn!r} and layer_attns={layer_attns!r} disagree: they are two names of "
                         "one setting (per-level self-attention); give one of them")
    chosen = layer_attns if layer_attns is not None else (False if self_attn is None else self_attn)
    chosen_name = "layer_attns" if layer_attns is not None else "self_attn"
    for name, value in ((chosen_name, chosen), ("layer_cross_attns", layer_cross_attns)):
        for flag in (value if isinstance(value, (list, tuple)) else (value,)):
            if flag is not None and not isinstance(flag, bool):
                raise ValueError(f"{name}={value!r}: expected a bool or one bool per level")
    unet.override_config(self_attn=lists_as_tuples("self_attn", chosen))
    if layer_cross_attns is None:
        cross = (False,) + (True,) * (num_levels - 1)
    else:
        cross = _per_level(layer_cross_attns, num_levels, "layer_cross_attns")
        unet.override_config(layer_cross_attns=lists_as_tuples("layer_cross_attns", layer_cross_attns))
    return _per_level(chosen, num_levels, chosen_name), cross


class Unet(PretrainedMixin, nn.Module):
    """U-Net denoiser (keyword names as in the reference DALLE2-pytorch ``Unet``).

    Args:
        dim: base width; level i has ``dim * dim_mults[i]`` channels. Must be even.
        image_embed_dim: width of the CLIP image embedding (needed with ``cond_on_image_embeds``).
        text_embed_dim: width of the text encodings (needed with ``cond_on_text_encodings``).
        cond_dim: width of the cross-attention conditioning tokens (default ``dim``).
        num_image_tokens: the image embedding becomes this many conditioning tokens.
        num_time_tokens: the time embedding becomes this many conditioning tokens.
        dim_mults: width multiplier per level; one level per entry.
        channels: input image channels. channels_out: output channels (default ``channels``;
            a Decoder with learned variance sets ``2 * channels``).
        self_attn / layer_attns: full (multi-query) self-attention after each level's blocks; bool or one per
            level (default False).  ``self_attn`` is the canonical name (saved configs hold it); ``layer_attns`` is
            accepted too, and giving both with different values is a ValueError.
        layer_cross_attns: whether each level's resnet blocks cross-attend to the conditioning tokens (time,
            image-embedding and text tokens); bool or one per level.  Default (None): every level but the
            first (full-resolution) one, as in the reference.  The middle blocks always cross-attend.
        attn_dim_head, attn_heads: shape of the self-/linear/window attention layers.
        lowres_cond: concatenate a low-resolution conditioning image to the input and before the output
            conv (upsampler of a cascade).
        lowres_noise_cond: condition on the noise level of that image (Imagen noise augmentation).
        self_cond: concatenate a previous x0 estimate (zeros when absent) to the input (Analog Bits).
        sparse_attn: linear attention at levels without ``self_attn``.
        sparse_attn_window: with ``sparse_attn``, use full attention within non-overlapping
            windows of this size instead of linear attention (None: linear attention).
        cosine_sim_cross_attn, cosine_sim_self_attn: cosine-similarity attention (scale 16).
        attend_at_middle: full self-attention between the two middle blocks.
        cond_on_text_encodings: cross-attend to projected text encodings in the middle blocks;
            padding rows (all zero, or ``text_mask`` False) and dropped text use learned null tokens.
        max_text_len: text encodings are truncated / null-padded to this many tokens.
        cond_on_image_embeds: condition on the image embedding (tokens, plus the time-embedding term below).
        add_image_embeds_to_time: also add an MLP of the image embedding to the time embedding.
        init_dim: width after the first conv (default ``dim``).
        init_conv_kernel_size: kernel of the first conv when ``init_cross_embed`` is False.
        resnet_groups: GroupNorm groups (int or per level).
        resnet_weight_standardization: weight-standardised convs in the resnet blocks.
        num_resnet_blocks: cross-attending resnet blocks per level (int or per level), after one
            initial resnet block.
        init_cross_embed, init_cross_embed_kernel_sizes: multi-kernel (CrossFormer) first conv.
        cross_embed_downsample, cross_embed_downsample_kernel_sizes: multi-kernel stride-2 downsample
            instead of the 2×2 SP-conv.
        memory_efficient: Imagen "efficient U-Net": downsample at the start of each level (the top
            level runs at half resolution), with an extra initial resnet block.
        scale_skip_connection: multiply skip connections by 2^-1/2.
        pixel_shuffle_upsample: pixel-shuffle upsampling (else nearest + 3×3 conv).
        final_conv_kernel_size: kernel of the zero-initialised output conv.
        combine_upsample_fmaps: feed every up-level's output (resized) to the final block.
        checkpoint_during_training: gradient checkpointing of blocks and attention while training.
        recompute_norm_in_backward: recompute each block's GroupNorm/FiLM/SiLU in backward (False: store it).
        channels_last: keep the conv weights and feature maps in ``torch.channels_last`` memory format (the unet
            converts its inputs itself; the output is returned in the default format). Same results, sometimes faster.

    Options for weights written by old reference releases (the defaults are today's function;
    ``dalle2_pytorch.compat`` sets them when it loads such a checkpoint):

        conv4x4_downsample: downsample with a 4×4 stride-2 conv (releases up to 1.9.x) instead of the 2×2 SP-conv.
        conv_transpose_upsample: upsample with a 4×4 stride-2 transposed conv (releases 0.15-0.20).
        self_attn_sqrt_scale: full self-attention logits q·k/sqrt(attn_dim_head) (releases up to 1.4.2)
            instead of q·k/attn_dim_head.
        linear_attn_normalize: False leaves out the value l2-norm and 1/sqrt(h·w) of the linear
            (``sparse_attn``) attention (releases up to 1.3.x).
        lowres_cond_final_concat: False: an upsampler (``lowres_cond``) does not concatenate the low-res
            image again before its output conv (releases up to 0.23.x).
    """

    @strict_keywords(hints=_REMOVED)
    @register_to_config(convert=lists_as_tuples, exclude=("layer_attns", "layer_cross_attns",
                                                                     "recompute_norm_in_backward", "channels_last"))
    def __init__(
        self,
        dim: int,
        *,
        image_embed_dim: int | None = None,
        text_embed_dim: int | None = None,
        cond_dim: int | None = None,
        num_image_tokens: int = 4,
        num_time_tokens: int = 2,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 3,
        channels_out: int | None = None,
        self_attn: bool | Sequence[bool] | None = None,
        layer_attns: bool | Sequence[bool] | None = None,
        layer_cross_attns: bool | Sequence[bool] | None = None,
        attn_dim_head: int = 32,
        attn_heads: int = 16,
        lowres_cond: bool = False,
        lowres_noise_cond: bool = False,
        self_cond: bool = False,
        sparse_attn: bool = False,
        sparse_attn_window: int | None = None,
        cosine_sim_cross_attn: bool = False,
        cosine_sim_self_attn: bool = False,
        attend_at_middle: bool = True,
        cond_on_text_encodings: bool = False,
        max_text_len: int = 256,
        cond_on_image_embeds: bool = False,
        add_image_embeds_to_time: bool = True,
        init_dim: int | None = None,
        init_conv_kernel_size: int = 7,
        resnet_groups: int | Sequence[int] = 8,
        resnet_weight_standardization: bool = False,
        num_resnet_blocks: int | Sequence[int] = 2,
        init_cross_embed: bool = True,
        init_cross_embed_kernel_sizes: Sequence[int] = (3, 7, 15),
        cross_embed_downsample: bool = False,
        cross_embed_downsample_kernel_sizes: Sequence[int] = (2, 4),
        memory_efficient: bool = False,
        scale_skip_connection: bool = False,
        pixel_shuffle_upsample: bool = True,
        final_conv_kernel_size: int = 1,
        combine_upsample_fmaps: bool = False,
        checkpoint_during_training: bool = False,
        recompute_norm_in_backward: bool = True,
        channels_last: bool = False,
        conv4x4_downsample: bool = False,
        conv_transpose_upsample: bool = False,
        self_attn_sqrt_scale: bool = False,
        linear_attn_normalize: bool = True,
        lowres_cond_final_concat: bool = True,
    ):
        config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in locals().items()
                  if k not in ("self", "__class__")}
        super().__init__()
        check_constructor_args(config)
        dim_mults = tuple(dim_mults)
        num_levels = len(dim_mults)
        self_attn, cross_attns = _level_switches(self, self_attn, layer_attns, layer_cross_attns, num_levels)
        self.channels, self.channels_out = channels, channels_out if channels_out is not None else channels
        self.lowres_cond, self.lowres_noise_cond, self.self_cond = lowres_cond, lowres_noise_cond, self_cond
        self.cond_on_image_embeds, self.cond_on_text_encodings = cond_on_image_embeds, cond_on_text_encodings
        self.image_embed_dim, self.text_embed_dim = image_embed_dim, text_embed_dim
        self.memory_efficient, self.checkpoint_during_training = memory_efficient, checkpoint_during_training
        self.downsample_factor = 2 ** (num_levels if memory_efficient else num_levels - 1)

        init_dim = init_dim if init_dim is not None else dim
        cond_dim = cond_dim if cond_dim is not None else dim
        time_cond_dim = dim * 4
        in_channels = channels * (1 + int(lowres_cond) + int(self_cond))
        self.init_conv = (CrossEmbedLayer(in_channels, init_dim, kernel_sizes=init_cross_embed_kernel_sizes, stride=1)
                          if init_cross_embed else
                          nn.Conv2d(in_channels, init_dim, init_conv_kernel_size, padding=init_conv_kernel_size // 2))
        self.cond = UnetConditioning(
            dim=dim, cond_dim=cond_dim, time_cond_dim=time_cond_dim, num_time_tokens=num_time_tokens,
            image_embed_dim=image_embed_dim, cond_on_image_embeds=cond_on_image_embeds,
            num_image_tokens=num_image_tokens, add_image_embeds_to_time=add_image_embeds_to_time,
            text_embed_dim=text_embed_dim, cond_on_text_encodings=cond_on_text_encodings,
            max_text_len=max_text_len, lowres_noise_cond=lowres_noise_cond)

        groups = _per_level(resnet_groups, num_levels, "resnet_groups")
        blocks_per_level = _per_level(num_resnet_blocks, num_levels, "num_resnet_blocks")
        level_self_attn = _per_level(self_attn, num_levels, "self_attn")

        def resnet(d_in, d_out, g, cond=None):
            return ResnetBlock(d_in, d_out, time_cond_dim=time_cond_dim, cond_dim=cond, groups=g,
                               weight_standardization=resnet_weight_standardization,
                               cosine_sim_cross_attn=cosine_sim_cross_attn)

        def attention(d, full):
            shape = dict(dim_head=attn_dim_head, heads=attn_heads)
            if full:
                return FullSelfAttention(d, cosine_sim=cosine_sim_self_attn, sqrt_scale=self_attn_sqrt_scale, **shape)
            if sparse_attn and sparse_attn_window is not None:
                return WindowSelfAttention(d, window=sparse_attn_window, cosine_sim=cosine_sim_self_attn,
                                           sqrt_scale=self_attn_sqrt_scale, **shape)
            return LinearSelfAttention(d, normalize=linear_attn_normalize, **shape) if sparse_attn else None

        def downsample(d_in, d_out):
            if cross_embed_downsample:
                return CrossEmbedLayer(d_in, d_out, kernel_sizes=cross_embed_downsample_kernel_sizes, stride=2)
            return Conv4x4Downsample(d_in, d_out) if conv4x4_downsample else Downsample(d_in, d_out)

        upsample = (ConvTransposeUpsample if conv_transpose_upsample
                    else PixelShuffleUpsample if pixel_shuffle_upsample else NearestUpsample)
        self.init_resnet_block = resnet(init_dim, init_dim, groups[0]) if memory_efficient else None

        dims = [init_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.downs, skip_dims = nn.ModuleList(), []
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == num_levels - 1
            d_layer = d_out if memory_efficient else d_in
            skip_dims.append(d_layer)
            self.downs.append(DownLevel(
                downsample_in=downsample(d_in, d_out) if memory_efficient else None,
                init_block=resnet(d_layer, d_layer, groups[i]),
                blocks=[resnet(d_layer, d_layer, groups[i], cond_dim if cross_attns[i] else None)
                        for _ in range(blocks_per_level[i])],
                attn=attention(d_layer, level_self_attn[i]),
                to_next_stage=(downsample(d_layer, d_out) if not (last or memory_efficient)
                               else nn.Conv2d(d_layer, d_out, 1))))

        mid_dim = dims[-1]
        self.mid_block1 = resnet(mid_dim, mid_dim, groups[-1], cond_dim)
        self.mid_attn = attention(mid_dim, True) if attend_at_middle else None
        self.mid_block2 = resnet(mid_dim, mid_dim, groups[-1], cond_dim)

        skip_scale = 2 ** -0.5 if scale_skip_connection else 1.0
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            level = num_levels - 1 - i
            last = i == num_levels - 1
            skip = skip_dims.pop()
            cond = cond_dim if cross_attns[level] else None
            self.ups.append(UpLevel(
                init_block=resnet(d_out + skip, d_out, groups[level], cond),
                blocks=[resnet(d_out + skip, d_out, groups[level], cond) for _ in range(blocks_per_level[level])],
                attn=attention(d_out, level_self_attn[level]),
                upsample=upsample(d_out, d_in) if not last or memory_efficient else None,
                skip_scale=skip_scale))

        up_dims = [d_out for _, d_out in reversed(in_out)]
        self.upsample_combiner = UpsampleCombiner(up_dims, dim) if combine_upsample_fmaps else None
        top_dim = init_dim if memory_efficient else dims[1]  # width of the last up level's output
        extra = self.upsample_combiner.extra_channels if combine_upsample_fmaps else 0
        final_in = top_dim + extra + init_dim
        self.final_resnet_block = resnet(final_in, dim, groups[0])
        self.lowres_cond_final_concat = lowres_cond and lowres_cond_final_concat
        self.to_out = nn.Conv2d(dim + (channels if self.lowres_cond_final_concat else 0), self.channels_out,
                                final_conv_kernel_size, padding=final_conv_kernel_size // 2)
        nn.init.zeros_(self.to_out.weight)  # start as "predict zero", as OpenAI and k-diffusion do
        nn.init.zeros_(self.to_out.bias)
        self._loaded_weights = False
        self.register_load_state_dict_post_hook(_mark_loaded)
        set_norm_recompute(self, recompute_norm_in_backward)
        if not recompute_norm_in_backward:  # recorded only when set, so saved configs stay as they were
            self.override_config(recompute_norm_in_backward=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:  # recorded only when set, like recompute_norm_in_backward
            self.to(memory_format=torch.channels_last)
            self.override_config(channels_last=True)

    # ------------------------------------------------------------------ cascade flags
    @property
    def has_trained_weights(self) -> bool:
        """True once weights were loaded, or once training moved the output conv off its zero initialisation
        (any optimiser step does: it is the one layer every loss gradient reaches).  Read from the weights
        themselves, so forward passes carry no hidden state.  Weights on the ``meta`` device (a model built only to
        check its configuration) hold no values: untrained."""
        if self.to_out.weight.is_meta:
            return self._loaded_weights
        return self._loaded_weights or bool(self.to_out.weight.detach().any() or self.to_out.bias.detach().any())

    def with_flags(self, **flags) -> "Unet":
        """A Unet like this one with some constructor keywords changed (what a cascade needs:
        lowres_cond, lowres_noise_cond, cond_on_image_embeds, cond_on_text_encodings, channels, ...).

        Returns ``self`` when nothing changes. Parameters whose name and shape survive are copied;
        if this unet has trained/loaded weights and the change would drop, reshape or add any
        parameter, a ValueError is raised instead of silently discarding or re-initialising weights.
        """
        accepted = Unet.__init__.accepted_keywords
        unknown = sorted(set(flags) - set(accepted))
        if unknown:
            raise TypeError(f"with_flags got unknown keyword(s) {unknown}; accepted: {', '.join(accepted)}")
        current = dict(self._config)
        changed = {k: v for k, v in flags.items() if current.get(k) != (tuple(v) if isinstance(v, list) else v)}
        if not changed:
            return self
        new = type(self)(**{**current, **changed})
        old_state, new_state = self.state_dict(), new.state_dict()
        differing = sorted(k for k in old_state.keys() | new_state.keys()
                           if k not in old_state or k not in new_state or old_state[k].shape != new_state[k].shape)
        if differing and self.has_trained_weights:
            shown = ", ".join(differing[:6]) + (" ..." if len(differing) > 6 else "")
            raise ValueError(
                f"changing {changed} would discard or re-initialise trained weights of this Unet ({shown}); "
                f"build the Unet with these flags before training/loading it")
        first = next(self.parameters())
        new = new.to(device=first.device, dtype=first.dtype)
        target = new.state_dict()
        with torch.no_grad():
            for key, value in target.items():
                if key in old_state and old_state[key].shape == value.shape:
                    value.copy_(old_state[key])
        new._loaded_weights = self._loaded_weights
        return new.train(self.training)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, time: torch.Tensor, *, image_embed: torch.Tensor | None = None,
                lowres_cond_img: torch.Tensor | None = None, lowres_noise_level: torch.Tensor | None = None,
                text_encodings: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                image_cond_drop_prob: float = 0.0, text_cond_drop_prob: float = 0.0,
                self_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predict from noisy ``x`` (b, channels, h, w) at ``time`` (b,) -> (b, channels_out, h, w).

        ``text_mask`` (b, n) bool marks real text tokens; without it all-zero rows of
        ``text_encodings`` are padding. The drop probabilities replace the image / text condition
        by learned null embeddings per sample (classifier-free guidance training).
        Each conditioning input is required exactly when the unet was built for it (``image_embed``
        with cond_on_image_embeds, ``text_encodings`` with cond_on_text_encodings, ``lowres_cond_img``
        with lowres_cond, ``lowres_noise_level`` with lowres_noise_cond); passing one it was not built
        for is a ValueError rather than being ignored. ``self_cond`` is optional (zeros) with self_cond.
        """
        time = check_forward_inputs(self, x, time, image_embed=image_embed, lowres_cond_img=lowres_cond_img,
                                    lowres_noise_level=lowres_noise_level, text_encodings=text_encodings,
                                    text_mask=text_mask, image_cond_drop_prob=image_cond_drop_prob,
                                    text_cond_drop_prob=text_cond_drop_prob, self_cond=self_cond)
        batch = x.shape[0]
        if self.self_cond:
            x = torch.cat((x, self_cond if self_cond is not None else torch.zeros_like(x)), dim=1)
        if self.lowres_cond:
            x = torch.cat((x, lowres_cond_img), dim=1)
        channels_last = self.memory_format is torch.channels_last
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        x = self.init_conv(x)
        init_features = x
        time_cond, cond, mid_cond = self.cond(
            time, batch=batch, image_embed=image_embed, text_encodings=text_encodings, text_mask=text_mask,
            lowres_noise_level=lowres_noise_level, image_cond_drop_prob=image_cond_drop_prob,
            text_cond_drop_prob=text_cond_drop_prob)

        use_checkpoint = self.checkpoint_during_training and self.training and torch.is_grad_enabled()
        run = run_checkpointed if use_checkpoint else run_direct

        if self.init_resnet_block is not None:
            x = run(self.init_resnet_block, x, time_cond)
        skips: list[torch.Tensor] = []
        for level in self.downs:
            x = level(x, time_cond, cond, skips, run)
        x = run(self.mid_block1, x, time_cond, mid_cond)
        if self.mid_attn is not None:
            x = run(self.mid_attn, x)
        x = run(self.mid_block2, x, time_cond, mid_cond)
        up_outputs = []
        for level in self.ups:
            x, level_out = level(x, time_cond, cond, skips, run)
            up_outputs.append(level_out)
        if self.upsample_combiner is not None:
            x = self.upsample_combiner(x, up_outputs)
        x = run(self.final_resnet_block, torch.cat((x, init_features), dim=1), time_cond)
        if self.lowres_cond_final_concat:
            x = torch.cat((x, lowres_cond_img), dim=1)
        out = self.to_out(x)
        return out.contiguous() if channels_last else out

    def forward_with_cond_scale(self, x: torch.Tensor, time: torch.Tensor, *, cond_scale: float = 1.0,
                                **inputs) -> torch.Tensor:
        """Classifier-free guidance: ``null + (cond - null) * cond_scale``; the null pass drops the
        image embedding and the text together. ``cond_scale == 1`` costs a single forward."""
        for key in ("image_cond_drop_prob", "text_cond_drop_prob"):
            if key in inputs:
                raise TypeError(f"forward_with_cond_scale sets {key} itself; do not pass it")
        out = self.forward(x, time, **inputs)
        if cond_scale == 1:
            return out
        null = self.forward(x, time, image_cond_drop_prob=1.0, text_cond_drop_prob=1.0, **inputs)
        return classifier_free_guidance(out, null, cond_scale)


def _mark_loaded(module: Unet, incompatible_keys) -> None:
    module._loaded_weights = True
