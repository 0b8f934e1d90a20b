"""Per-unet settings of a cascading decoder, and fitting the user's unets and VAEs to them.

Many ``Decoder`` keywords may be one value for every unet or a tuple with one value per unet.  This
module turns the keywords into one :class:`StageSettings` per unet and checks them.

A unet's place in the cascade decides some of its constructor flags: upsamplers take a low-resolution
image (``lowres_cond``) and maybe its noise level (``lowres_noise_cond``), unet 1 of a conditional
decoder takes the CLIP image embedding, a unet with a VAE has the VAE's latent channels, and a unet
with learned variance outputs twice its channels.  :func:`configure_unet` asks the Unet for a copy
with those flags (``Unet.with_flags``), which keeps every weight that still fits and refuses to drop
trained weights silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from torch import nn

from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.diffusion import BETA_SCHEDULES
from dalle2_pytorch.validation import check_choice, check_positive_int, check_range
from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE


@dataclass(frozen=True)
class StageSettings:
    """Everything the decoder needs to know about one unet of the cascade (1-based ``number``)."""

    number: int
    image_size: int
    timesteps: int
    sample_timesteps: Optional[int]
    beta_schedule: str
    objective: str                  # 'eps' | 'x0' | 'v'
    learned_variance: bool
    p2_loss_weight_gamma: float
    random_crop_size: Optional[int]
    use_noise_for_lowres_cond: bool
    use_blur_for_lowres_cond: bool


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def per_unet(name: str, value: Any, num_unets: int) -> tuple:
    """A scalar repeated for every unet, or a tuple that must have one entry per unet."""
    if _is_sequence(value):
        if len(value) != num_unets:
            raise ValueError(f"{name}={tuple(value)!r} has {len(value)} entries; expected one value or "
                             f"{num_unets} (one per unet)")
        return tuple(value)
    return (value,) * num_unets


def per_upsampler(name: str, value: Any, num_unets: int, *, first: Any) -> tuple:
    """Settings that only upsamplers have: a scalar for all of them, or a tuple of length
    ``num_unets - 1`` (upsamplers only) or ``num_unets`` whose first entry must be ``first``."""
    if not _is_sequence(value):
        return (first,) + (value,) * (num_unets - 1)
    value = tuple(value)
    if len(value) == num_unets - 1:
        return (first,) + value
    if len(value) == num_unets:
        if value[0] != first and num_unets > 1:
            raise ValueError(f"{name}={value!r}: the first unet has no low-resolution input, so its entry "
                             f"must be {first!r} (or give only the {num_unets - 1} upsamplers' values)")
        return (first,) + value[1:]
    raise ValueError(f"{name}={value!r} has {len(value)} entries; expected one value, {num_unets - 1} "
                     f"(one per upsampler) or {num_unets} (one per unet)")


def learned_variance_per_unet(value: Any, num_unets: int) -> tuple[bool, ...]:
    """As in the reference and the paper: a single bool concerns the base unet only (upsamplers keep a
    fixed variance); a tuple shorter than the cascade is padded with ``False``."""
    values = tuple(value) if _is_sequence(value) else (value,)
    if len(values) > num_unets:
        raise ValueError(f"learned_variance={values!r} has more entries than the {num_unets} unets")
    if not all(isinstance(v, bool) for v in values):
        raise TypeError(f"learned_variance={value!r}: expected bools")
    return values + (False,) * (num_unets - len(values))


def default_beta_schedules(num_unets: int) -> tuple[str, ...]:
    """The reference's rule: cosine for every unet except the last of a cascade, which gets linear."""
    if num_unets == 1:
        return ("cosine",)
    return ("cosine",) * (num_unets - 1) + ("linear",)


def resolve_image_sizes(image_size: Optional[int], image_sizes: Optional[Sequence[int]], num_unets: int,
                        clip_image_size: Optional[int]) -> tuple[int, ...]:
    """Per-unet sizes from ``image_sizes`` or ``image_size`` (one unet) or the CLIP's image size."""
    if image_size is not None and image_sizes is not None:
        raise ValueError("give either image_size or image_sizes, not both")
    if image_sizes is None:
        size = image_size if image_size is not None else clip_image_size
        if size is None:
            raise ValueError("the decoder needs image_size, image_sizes or a clip to know its image size")
        if num_unets != 1:
            raise ValueError(f"a cascade of {num_unets} unets needs image_sizes=(one size per unet), "
                             f"got only image_size={size}")
        image_sizes = (size,)
    sizes = tuple(image_sizes) if _is_sequence(image_sizes) else (image_sizes,)
    if len(sizes) != num_unets:
        raise ValueError(f"image_sizes={sizes!r} has {len(sizes)} entries for {num_unets} unets")
    for size in sizes:
        check_positive_int("each entry of image_sizes", size)
    if any(a >= b for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"image_sizes={sizes!r} must be strictly increasing (low to high resolution)")
    return sizes


def _objective(number: int, predict_x_start: bool, predict_v: bool) -> str:
    if predict_x_start and predict_v:
        raise ValueError(f"unet {number}: predict_x_start and predict_v are both True; choose one objective")
    return "v" if predict_v else ("x0" if predict_x_start else "eps")


def build_stage_settings(*, num_unets: int, image_sizes: Sequence[int], timesteps: Any, sample_timesteps: Any,
                         beta_schedule: Any, predict_x_start: Any, predict_v: Any, learned_variance: Any,
                         p2_loss_weight_gamma: Any, random_crop_sizes: Any, use_noise_for_lowres_cond: Any,
                         use_blur_for_lowres_cond: Any) -> tuple[StageSettings, ...]:
    """Check every per-unet keyword and return one :class:`StageSettings` per unet."""
    n = num_unets
    timesteps_ = per_unet("timesteps", timesteps, n)
    sample_timesteps_ = per_unet("sample_timesteps", sample_timesteps, n)
    schedules = default_beta_schedules(n) if beta_schedule is None else per_unet("beta_schedule", beta_schedule, n)
    x_start = per_unet("predict_x_start", predict_x_start, n)
    v = per_unet("predict_v", predict_v, n)
    learned = learned_variance_per_unet(learned_variance, n)
    gammas = per_unet("p2_loss_weight_gamma", p2_loss_weight_gamma, n)
    crops = per_upsampler("random_crop_sizes", random_crop_sizes, n, first=None)
    noise = per_upsampler("use_noise_for_lowres_cond", use_noise_for_lowres_cond, n, first=False)
    blur = per_upsampler("use_blur_for_lowres_cond", use_blur_for_lowres_cond, n, first=False)

    stages = []
    for i in range(n):
        number = i + 1
        steps = timesteps_[i]
        check_positive_int(f"timesteps (unet {number})", steps)
        sample_steps = sample_timesteps_[i]
        if sample_steps is not None and (not isinstance(sample_steps, int) or not 0 < sample_steps <= steps):
            raise ValueError(f"sample_timesteps for unet {number} is {sample_steps!r}; expected None or an int "
                             f"in [1, {steps}] (its training timesteps)")
        check_choice(f"beta_schedule (unet {number})", schedules[i], BETA_SCHEDULES)
        check_range(f"p2_loss_weight_gamma (unet {number})", gammas[i], 0.0, float("inf"))
        crop = crops[i]
        if crop is not None and (not isinstance(crop, int) or not 0 < crop <= image_sizes[i]):
            raise ValueError(f"random_crop_sizes for unet {number} is {crop!r}; expected None or an int in "
                             f"[1, {image_sizes[i]}] (its image size)")
        if number > 1 and not (noise[i] or blur[i]):
            raise ValueError(f"unet {number} is an upsampler with neither use_noise_for_lowres_cond nor "
                             "use_blur_for_lowres_cond; enable at least one augmentation of its low-res input")
        stages.append(StageSettings(
            number=number, image_size=image_sizes[i], timesteps=steps, sample_timesteps=sample_steps,
            beta_schedule=schedules[i], objective=_objective(number, bool(x_start[i]), bool(v[i])),
            learned_variance=learned[i], p2_loss_weight_gamma=float(gammas[i]), random_crop_size=crop,
            use_noise_for_lowres_cond=bool(noise[i]), use_blur_for_lowres_cond=bool(blur[i])))
    return tuple(stages)



def is_latent_vae(vae: Optional[nn.Module]) -> bool:
    """True for a real autoencoder (latent diffusion), False for None / the identity ``NullVQGanVAE``."""
    return vae is not None and not isinstance(vae, NullVQGanVAE)


def resolve_vaes(vae: Any, num_unets: int, channels: int, image_sizes: Sequence[int]) -> list[nn.Module]:
    """One VAE per unet: the given ones for the first unets, ``NullVQGanVAE`` for the rest."""
    vaes = list(vae) if isinstance(vae, (tuple, list, nn.ModuleList)) else ([] if vae is None else [vae])
    if len(vaes) > num_unets:
        raise ValueError(f"vae has {len(vaes)} entries but the decoder has only {num_unets} unets")
    vaes += [None] * (num_unets - len(vaes))
    out: list[nn.Module] = []
    for number, (one, size) in enumerate(zip(vaes, image_sizes), start=1):
        if not is_latent_vae(one):
            if one is not None and one.channels != channels:
                raise ValueError(f"vae {number} is a NullVQGanVAE with channels={one.channels}; "
                                 f"the decoder has channels={channels}")
            out.append(NullVQGanVAE(channels))
            continue
        for attr in ("encode", "decode", "encoded_dim", "channels", "downsample_factor"):
            if not hasattr(one, attr):
                raise TypeError(f"vae {number} ({type(one).__name__}) lacks {attr!r}; pass a VQGanVAE or None")
        if one.channels != channels:
            raise ValueError(f"vae {number} takes {one.channels}-channel images but the decoder has "
                             f"channels={channels}")
        if size % one.downsample_factor:
            raise ValueError(f"image size {size} of unet {number} is not divisible by its VAE's downsample factor "
                             f"{one.downsample_factor} (2**layers)")
        out.append(one)
    return out


def check_sizes_fit_unets(unets: Sequence[nn.Module], stages: Sequence[Any], vaes: Sequence[nn.Module]) -> None:
    """Each unet's working size (its image size, or random crop, over its VAE's factor) is a multiple of the unet's
    own downsampling factor, so a cascade that could only fail at sampling time fails when it is built."""
    for unet, stage, vae in zip(unets, stages, vaes):
        factor = int(getattr(unet, "downsample_factor", 1))
        vae_factor = int(getattr(vae, "downsample_factor", 1))
        for name, size in (("image size", stage.image_size), ("random crop size", stage.random_crop_size)):
            if size is None:
                continue
            working = size // vae_factor
            if working % factor:
                lower, higher = working // factor * factor * vae_factor, -(-working // factor) * factor * vae_factor
                after_vae = f" ({working} after its VAE)" if vae_factor > 1 else ""
                raise ValueError(
                    f"unet {stage.number}'s {name} {size}{after_vae} is not a multiple of {factor}, the factor its "
                    f"{len(unet.downs)} resolution levels (dim_mults={tuple(getattr(unet, '_config', {}).get('dim_mults', ()))}) "
                    f"downsample by; use {lower or higher} or {higher}, or fewer dim_mults")


def configure_unet(unet: nn.Module, *, stage: StageSettings, vae: nn.Module, channels: int, unconditional: bool,
                   condition_on_text_encodings: Optional[bool], clip: Optional[nn.Module] = None) -> Unet:
    """``unet`` with the flags of its place in the cascade (itself when they already match).

    A unet built without ``image_embed_dim`` / ``text_embed_dim`` takes them from ``clip`` (its ``dim_latent`` /
    ``dim_text_encodings``) when it needs them, so ``Unet(dim=...)`` alone fits a decoder with a CLIP."""
    number = stage.number
    if not isinstance(unet, Unet):
        raise TypeError(f"unet {number} must be a dalle2_pytorch Unet, got {type(unet).__name__}")
    is_first = number == 1
    if unconditional and (unet.cond_on_image_embeds or unet.cond_on_text_encodings):
        raise ValueError(f"unet {number} is built with cond_on_image_embeds={unet.cond_on_image_embeds}, "
                         f"cond_on_text_encodings={unet.cond_on_text_encodings}, but the decoder is unconditional; "
                         "build it without conditioning")
    if condition_on_text_encodings is False and unet.cond_on_text_encodings:
        raise ValueError(f"condition_on_text_encodings=False but unet {number} has cond_on_text_encodings=True")
    text = not unconditional and (unet.cond_on_text_encodings or (is_first and condition_on_text_encodings is True))
    widths = {}
    for name, clip_name, needed in (("text_embed_dim", "dim_text_encodings", text),
                                    ("image_embed_dim", "dim_latent", not unconditional and (
                                        is_first or unet.cond_on_image_embeds))):
        if needed and getattr(unet, name) is None and getattr(clip, clip_name, None) is not None:
            widths[name] = int(getattr(clip, clip_name))
    if widths:
        unet = unet.with_flags(**widths)
    if text and unet.text_embed_dim is None:
        raise ValueError(f"unet {number} must be conditioned on text encodings (condition_on_text_encodings=True) "
                         "but has no text_embed_dim; build it with text_embed_dim=<width of the text encodings>")
    image = not unconditional and (is_first or unet.cond_on_image_embeds)
    if image and unet.image_embed_dim is None:
        raise ValueError(f"unet {number} is conditioned on CLIP image embeddings but has no image_embed_dim; "
                         "build it with image_embed_dim=<CLIP dim_latent> (or use unconditional=True)")
    unet_channels = vae.encoded_dim if is_latent_vae(vae) else channels
    flags = dict(lowres_cond=not is_first, lowres_noise_cond=stage.use_noise_for_lowres_cond,
                 cond_on_image_embeds=image, cond_on_text_encodings=text, channels=unet_channels,
                 channels_out=unet_channels * (2 if stage.learned_variance else 1))
    return unet.with_flags(**flags)
