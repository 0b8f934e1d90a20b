"""The manipulations of unCLIP (Ramesh et al. 2022, Section 3) as functions over a decoder cascade.

An image is, to unCLIP, a CLIP image embedding plus the decoder's starting noise.  These functions
embed and invert images, move the embedding (slerp between images, rotation towards a text diff) and
decode again, and inpaint or outpaint with any sampler.  Images are tensors (b, c, h, w) in [0, 1] at the
decoder's output size; masks are bool, True where the image is kept.  The choices, and the errors measured
on the toy model, are in docs/manipulations.md.

Only unet 1 is inverted: it alone sees the image embedding and decides the content.  The upsamplers
(conditioned on unet 1's output) run as usual from noise of a fixed seed, so a reconstruction is a pure
function of ``(image_embed, noise, seed)``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from dalle2_pytorch.decoder.cascade import paste_known
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.diffusion.noise import Generator

Pad = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------- input checks
def check_images(images: Any, decoder: Decoder, name: str = "images") -> Tensor:
    """``images`` as a float (b, c, h, w) batch in [0, 1] at the decoder's output size, else a clear error."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (batch, {decoder.channels}, height, width) in [0, 1], "
                        f"got {getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    size = decoder.image_sizes[-1]
    if images.ndim != 4 or images.shape[1] != decoder.channels:
        raise ValueError(f"{name} must have shape (batch, {decoder.channels}, {size}, {size}) (channels first), "
                         f"got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{name} are {images.shape[-2]}x{images.shape[-1]}; this pipeline works on {size}x{size} "
                         "images: resize them first (dalle2_pytorch.images.resize_image_to)")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"{name} must be in [0, 1], got values in [{images.min().item():.3g}, "
                         f"{images.max().item():.3g}]")
    return images


def check_mask(mask: Any, images: Tensor) -> Tensor:
    """``mask`` as a bool (b, 1, h, w) tensor matching ``images`` (True = keep); (h, w) and (b, h, w) broadcast."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor (True where the image is kept), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not torch.all((mask == 0) | (mask == 1)):
            raise ValueError(f"mask must be boolean, True where the image is kept (or 0/1), got {mask.dtype} "
                             "with other values")
        mask = mask.bool()
    b, _, h, w = images.shape
    if mask.ndim == 2:
        mask = mask.expand(b, h, w) if tuple(mask.shape) == (h, w) else mask
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w) or mask.shape[0] not in (1, b):
        raise ValueError(f"mask must have shape ({h}, {w}), ({b}, {h}, {w}) or ({b}, 1, {h}, {w}) to match the "
                         f"images {tuple(images.shape)}, got {tuple(mask.shape)}")
    return mask.expand(b, 1, h, w)


def _check_steps(steps: Any, decoder: Decoder) -> int:
    limit = decoder.stage(1).schedule.num_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ValueError(f"steps={steps!r}: expected an int from 1 to {limit} (unet 1's training timesteps)")
    return steps


# ---------------------------------------------------------------------------------- embeddings
def slerp(a: Tensor, b: Tensor, t: Union[float, Tensor]) -> Tensor:
    """Spherical interpolation of the rows of ``a`` and ``b`` (norms interpolated linearly); ``t`` a float or a
    (n,) tensor broadcast against the rows.  ``t = 0`` gives ``a`` and ``t = 1`` gives ``b`` exactly."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1, *((1,) * (a.ndim - 1)))
    a_dir, b_dir = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = (a_dir * b_dir).sum(-1, keepdim=True).clamp(-1.0, 1.0).acos()
    sin = omega.sin()
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, ((1 - t) * omega).sin() / sin.where(safe, torch.ones_like(sin)), 1 - t)
    wb = torch.where(safe, (t * omega).sin() / sin.where(safe, torch.ones_like(sin)), t)
    norm = (1 - t) * a.norm(dim=-1, keepdim=True) + t * b.norm(dim=-1, keepdim=True)
    out = F.normalize(wa * a_dir + wb * b_dir, dim=-1) * norm
    return torch.where(t == 0, a, torch.where(t == 1, b, out))


def slerp_noise(a: Tensor, b: Tensor, t: Union[float, Tensor]) -> Tensor:
    """:func:`slerp` of two noise tensors (1, ...) as flat vectors: intermediate rows stay noise-like (norm kept)."""
    return slerp(a.flatten(1), b.flatten(1), t).reshape(-1, *a.shape[1:])


def text_diff_embeds(image_embed: Tensor, from_embed: Tensor, to_embed: Tensor, amounts: Sequence[float]) -> Tensor:
    """The paper's text diff (3.3): ``slerp(z_i, z_d, θ)`` for each θ in ``amounts``, z_d = normalize(z_to − z_from).

    ``image_embed`` (b, d) and the text embeddings (b, d) or (1, d); returns (b × len(amounts), d), image-major.
    z_d is scaled to the image embedding's norm, so the norm of the result stays that of the image's."""
    diff = F.normalize(to_embed - from_embed, dim=-1).expand_as(image_embed) * image_embed.norm(dim=-1, keepdim=True)
    theta = torch.tensor([float(a) for a in amounts], dtype=image_embed.dtype, device=image_embed.device)
    return torch.cat([slerp(z.expand(len(theta), -1), d.expand(len(theta), -1), theta)
                      for z, d in zip(image_embed, diff)])


def check_amounts(amounts: Any) -> list[float]:
    """Text-diff amounts θ: a non-empty sequence of numbers in [0, 1]."""
    values = [amounts] if isinstance(amounts, (int, float)) else list(amounts)
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
        raise ValueError(f"amounts={amounts!r}: expected numbers in [0, 1] (0 = the image, 1 = the text diff alone)")
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------- outpainting canvas
def outpaint_canvas(images: Tensor, *, pad: Optional[Sequence[int]] = None,
                    scale: Optional[float] = None) -> tuple[Tensor, Tensor, Pad]:
    """``(canvas, mask, (left, top, right, bottom))``: the images on a larger zero canvas, mask True on them.

    Give ``pad`` in pixels, or ``scale`` (≥ 1: the canvas side over the image side, margins split evenly)."""
    if (pad is None) == (scale is None):
        raise ValueError("outpaint: give exactly one of pad=(left, top, right, bottom) or scale= (e.g. 2)")
    h, w = images.shape[-2:]
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1 < scale <= 8:
            raise ValueError(f"scale={scale!r}: expected a number in (1, 8], the canvas side over the image side")
        extra_h, extra_w = round(h * scale) - h, round(w * scale) - w
        pad = (extra_w // 2, extra_h // 2, extra_w - extra_w // 2, extra_h - extra_h // 2)
    pad = tuple(pad)
    if len(pad) != 4 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pad) \
            or not any(pad):
        raise ValueError(f"pad={pad!r}: expected 4 non-negative ints (left, top, right, bottom), not all 0")
    left, top, right, bottom = pad
    canvas = F.pad(images, (left, right, top, bottom), value=0.0)  # F.pad: last dim first
    mask = F.pad(torch.ones_like(images[:, :1], dtype=torch.bool), (left, right, top, bottom), value=False)
    return canvas, mask, pad  # type: ignore[return-value]


def stage_canvas_sizes(decoder: Decoder, height: int, width: int) -> list[tuple[int, int]]:
    """The ``(h, w)`` each unet draws for a final ``height`` × ``width`` canvas, checked to fit every unet."""
    final = decoder.image_sizes[-1]
    sizes = []
    for stage in decoder.stages:
        multiple = final // stage.image_size * 2 ** len(getattr(stage.unet, "downs", ()))
        if final % stage.image_size or height % multiple or width % multiple:
            raise ValueError(f"an outpainting canvas of {height}x{width} does not fit unet {stage.number} "
                             f"({stage.image_size} px of {final}): height and width must be multiples of {multiple}")
        sizes.append((height * stage.image_size // final, width * stage.image_size // final))
    return sizes


# ---------------------------------------------------------------------------------- the cascade
def _per_unet(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value] * n


@torch.no_grad()
def decode(decoder: Decoder, image_embed: Tensor, *, text_encodings: Optional[Tensor] = None,
           noise: Optional[Tensor] = None, sampler: Any = None, steps: Any = None, cond_scale: Any = 1.0,
           eta: Optional[float] = None, generator: Generator = None,
           inpaint: Optional[tuple[Tensor, Tensor]] = None, resample_times: Optional[int] = None,
           canvas: Optional[tuple[int, int]] = None, callback: Optional[Callable[[dict], None]] = None) -> Tensor:
    """Images in [0, 1] from image embeddings through every unet; like ``Decoder.sample`` plus unet 1's starting
    ``noise`` and DDIM ``eta``, and a ``canvas`` (h, w) other than the output square (outpainting).
    ``sampler``/``steps``/``cond_scale`` take one value or one per unet; ``inpaint`` is ``(images, mask)``."""
    batch = image_embed.shape[0]
    n = decoder.num_unets
    samplers, steps_, scales = _per_unet(sampler, n), _per_unet(steps, n), _per_unet(cond_scale, n)
    embeds = decoder.conditions.prepare(image=None, text=None, image_embed=image_embed, text_encodings=text_encodings,
                                        batch=batch, unets=list(decoder.unets))
    sizes = [None] * n if canvas is None else stage_canvas_sizes(decoder, *canvas)
    known = None if inpaint is None else (inpaint[0] * 2 - 1, inpaint[1])  # the unets work in [-1, 1]
    was_training = decoder.training
    decoder.eval()
    try:
        previous = None
        for i, stage in enumerate(decoder.stages):
            first = i == 0
            previous = stage.sample(previous, decoder.conditions.unet_kwargs(stage.unet, embeds), batch=batch,
                                    cond_scale=scales[i], sampler=samplers[i], steps=steps_[i], generator=generator,
                                    callback=callback, inpaint=known, inpaint_resample_times=resample_times,
                                    noise=noise if first else None, eta=eta if first else None, size=sizes[i])
    finally:
        decoder.train(was_training)
    output = ((previous + 1) * 0.5).clamp(0.0, 1.0)
    return output if inpaint is None else paste_known(output, inpaint[0], inpaint[1])


@torch.no_grad()
def invert(decoder: Decoder, images: Tensor, image_embed: Tensor, *, steps: int, cond_scale: float = 1.0,
           text_encodings: Optional[Tensor] = None, fixed_point_iters: Optional[int] = None) -> Tensor:
    """Unet 1's DDIM-inverted noise of ``images`` ([0, 1]) under ``image_embed``: :func:`decode` with it,
    ``sampler='ddim'``, ``eta=0`` and the same ``steps``/``cond_scale`` for unet 1 gives the images back closely."""
    steps = _check_steps(steps, decoder)
    stage = decoder.stage(1)
    embeds = decoder.conditions.prepare(image=None, text=None, image_embed=image_embed, text_encodings=text_encodings,
                                        batch=images.shape[0], unets=[stage.unet])
    was_training = decoder.training
    decoder.eval()
    try:
        return stage.invert(images * 2 - 1, None, decoder.conditions.unet_kwargs(stage.unet, embeds), steps=steps,
                            cond_scale=cond_scale, fixed_point_iters=fixed_point_iters)
    finally:
        decoder.train(was_training)
