"""Argument validation for :class:`~dalle2_pytorch.decoder.unet.Unet`: every mistake a user can
make raises a ValueError/TypeError naming the argument, the value and what is expected."""

from __future__ import annotations

from typing import Any

import torch

from dalle2_pytorch.validation import check_positive_int, check_range


def check_constructor_args(cfg: dict[str, Any]) -> None:
    check_positive_int("dim", cfg["dim"])
    if cfg["dim"] % 2:
        raise ValueError(f"dim must be even (it sizes a sin/cos time embedding), got {cfg['dim']}")
    mults = cfg["dim_mults"]
    if not isinstance(mults, tuple) or not mults:
        raise ValueError(f"dim_mults must be a non-empty sequence of positive ints, got {mults!r}")
    for m in mults:
        check_positive_int("each entry of dim_mults", m)
    for name in ("channels", "num_image_tokens", "num_time_tokens", "attn_dim_head", "attn_heads", "max_text_len"):
        check_positive_int(name, cfg[name])
    for name in ("channels_out", "cond_dim", "init_dim", "image_embed_dim", "text_embed_dim", "sparse_attn_window"):
        check_positive_int(name, cfg[name], optional=True)
    if cfg["cond_on_image_embeds"] and cfg["image_embed_dim"] is None:
        raise ValueError("cond_on_image_embeds=True needs image_embed_dim (the width of the CLIP image embedding)")
    if cfg["cond_on_text_encodings"] and cfg["text_embed_dim"] is None:
        raise ValueError("cond_on_text_encodings=True needs text_embed_dim (the width of the text encodings)")
    if cfg["sparse_attn_window"] is not None and not cfg["sparse_attn"]:
        raise ValueError(f"sparse_attn_window={cfg['sparse_attn_window']} only applies with sparse_attn=True")
    if cfg["conv4x4_downsample"] and cfg["cross_embed_downsample"]:
        raise ValueError("conv4x4_downsample and cross_embed_downsample are two different downsamplers; choose one")
    if not isinstance(cfg["channels_last"], bool):
        raise TypeError(f"channels_last must be True or False, got {cfg['channels_last']!r}")
    for name in ("final_conv_kernel_size", "init_conv_kernel_size"):
        if cfg[name] % 2 == 0:
            raise ValueError(f"{name} must be odd so the output keeps its size, got {cfg[name]}")


def _check_batch(name: str, tensor: torch.Tensor, batch: int) -> None:
    if tensor.shape[0] != batch:
        raise ValueError(f"{name} has batch size {tensor.shape[0]} but x has {batch}")


def check_forward_inputs(unet, x: torch.Tensor, time: torch.Tensor, *, image_embed, lowres_cond_img,
                         lowres_noise_level, text_encodings, text_mask, image_cond_drop_prob,
                         text_cond_drop_prob, self_cond) -> torch.Tensor:
    """Validate the inputs of ``Unet.forward``; returns ``time`` as a (b,) tensor."""
    if x.ndim != 4 or x.shape[1] != unet.channels:
        raise ValueError(f"x must have shape (batch, {unet.channels}, height, width), got {tuple(x.shape)}")
    batch, _, height, width = x.shape
    f = unet.downsample_factor
    if height % f or width % f:
        raise ValueError(f"x height and width must be multiples of {f} for this Unet's "
                         f"{len(unet.downs)} resolution levels, got {height}x{width}")
    time = torch.as_tensor(time, device=x.device)
    if time.ndim == 0:
        time = time.expand(batch)
    if time.shape != (batch,):
        raise ValueError(f"time must have shape ({batch},), got {tuple(time.shape)}")
    check_range("image_cond_drop_prob", float(image_cond_drop_prob), 0.0, 1.0)
    check_range("text_cond_drop_prob", float(text_cond_drop_prob), 0.0, 1.0)

    if unet.cond_on_image_embeds:
        if image_embed is None:
            raise ValueError("this Unet is conditioned on image embeddings (cond_on_image_embeds=True); pass image_embed")
        if image_embed.shape != (batch, unet.image_embed_dim):
            raise ValueError(f"image_embed must have shape ({batch}, {unet.image_embed_dim}) "
                             f"(image_embed_dim), got {tuple(image_embed.shape)}")
    elif image_embed is not None:
        raise ValueError("image_embed was given but this Unet has cond_on_image_embeds=False")

    if unet.cond_on_text_encodings:
        if text_encodings is None:
            raise ValueError("this Unet is conditioned on text (cond_on_text_encodings=True); pass text_encodings")
        if text_encodings.ndim != 3 or text_encodings.shape[-1] != unet.text_embed_dim:
            raise ValueError(f"text_encodings must have shape (batch, tokens, {unet.text_embed_dim}) "
                             f"(text_embed_dim), got {tuple(text_encodings.shape)}")
        _check_batch("text_encodings", text_encodings, batch)
        if text_mask is not None and (text_mask.dtype != torch.bool or text_mask.shape != text_encodings.shape[:2]):
            raise ValueError(f"text_mask must be a bool tensor of shape {tuple(text_encodings.shape[:2])}, "
                             f"got {text_mask.dtype} {tuple(text_mask.shape)}")
    elif text_encodings is not None or text_mask is not None:
        raise ValueError("text_encodings/text_mask were given but this Unet has cond_on_text_encodings=False")

    if unet.lowres_cond:
        expected = (batch, unet.channels, height, width)
        if lowres_cond_img is None or lowres_cond_img.shape != expected:
            got = None if lowres_cond_img is None else tuple(lowres_cond_img.shape)
            raise ValueError(f"this Unet has lowres_cond=True: lowres_cond_img must have shape {expected} "
                             f"(upsampled to x's size), got {got}")
    elif lowres_cond_img is not None:
        raise ValueError("lowres_cond_img was given but this Unet has lowres_cond=False")

    if unet.lowres_noise_cond:
        if lowres_noise_level is None or lowres_noise_level.shape != (batch,):
            got = None if lowres_noise_level is None else tuple(lowres_noise_level.shape)
            raise ValueError(f"this Unet has lowres_noise_cond=True: lowres_noise_level must have shape ({batch},), got {got}")
    elif lowres_noise_level is not None:
        raise ValueError("lowres_noise_level was given but this Unet has lowres_noise_cond=False")

    if self_cond is not None:
        if not unet.self_cond:
            raise ValueError("self_cond was given but this Unet was built with self_cond=False")
        if self_cond.shape != x.shape:
            raise ValueError(f"self_cond must have x's shape {tuple(x.shape)}, got {tuple(self_cond.shape)}")
    return time
