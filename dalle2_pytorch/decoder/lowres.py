"""Low-resolution conditioning for the upsampling unets of a cascade.

An upsampler learns to turn a low-resolution image into a high-resolution one.  During training
the condition is made from the ground-truth image: it is shrunk to the previous unet's size,
optionally blurred (Cascaded Diffusion Models, Ho et al. 2021, section 3.1: "conditioning
augmentation", so that the upsampler tolerates the previous stage's imperfect samples), grown back
to the unet's own size, and optionally noised with a random diffusion level that the unet is told
about (Imagen's noise conditioning augmentation).  At sampling time the previous unet's output is
grown to size and noised with one fixed level.

All images here are in the decoder's normalised range (``[-1, 1]`` by default); blur and resize are
linear, and the noise is added in that range exactly as the unet was trained.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from dalle2_pytorch.diffusion import NoiseSchedule, randn
from dalle2_pytorch.images import resize_image_to

FloatOrRange = Union[float, Sequence[float]]
IntOrRange = Union[int, Sequence[int]]
Encoder = Callable[[torch.Tensor], torch.Tensor]

NOISE_AUGMENTATION_TIMESTEPS = 1000


def _device_of(generator: Optional[torch.Generator], default: torch.device | str = "cpu") -> torch.device:
    """Random draws happen on the generator's device (so a CUDA generator works), else on ``default``."""
    return generator.device if generator is not None else torch.device(default)


def gaussian_kernel1d(kernel_size: int, sigma: float, *, device=None, dtype=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``kernel_size``."""
    coords = torch.arange(kernel_size, device=device, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return (kernel / kernel.sum()).to(dtype or torch.float32)


def gaussian_blur2d(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (same size out as in)."""
    channels = image.shape[1]
    kernel = gaussian_kernel1d(kernel_size, sigma, device=image.device, dtype=image.dtype)
    pad = kernel_size // 2
    mode = "reflect" if min(image.shape[-2:]) > pad else "replicate"
    out = F.pad(image, (pad, pad, pad, pad), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)
    return out


def _check_sigma(value: FloatOrRange) -> FloatOrRange:
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in value) or value[0] > value[1]:
            raise ValueError(f"blur_sigma={value!r}: expected a positive float or a (low, high) pair with low <= high")
        return (float(value[0]), float(value[1]))
    if not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"blur_sigma={value!r}: expected a positive float or a (low, high) pair")
    return float(value)


def _check_kernel_size(value: IntOrRange) -> IntOrRange:
    if isinstance(value, (tuple, list)):
        ok = len(value) == 2 and all(isinstance(v, int) and v >= 1 for v in value) and value[0] <= value[1]
        if not ok or not any(k % 2 == 1 for k in range(value[0], value[1] + 1)):
            raise ValueError(f"blur_kernel_size={value!r}: expected an odd int or a (low, high) int pair "
                             "that contains an odd size")
        return (int(value[0]), int(value[1]))
    if not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"blur_kernel_size={value!r}: expected an odd positive int or a (low, high) pair")
    return value


class LowresConditioner(nn.Module):
    """Builds the low-resolution condition of one upsampling unet.

    Args:
        downsample_first: shrink to the previous unet's size before growing back (training only);
            without it the training condition keeps the full detail of the target.
        use_blur: Gaussian-blur the training condition (with probability ``blur_prob`` per sample).
        blur_prob: chance that a training sample's condition is blurred.
        blur_sigma: blur standard deviation, or ``(low, high)`` to draw one uniformly per batch.
        blur_kernel_size: odd kernel size, or ``(low, high)`` to draw an odd size per batch.
        use_noise: Imagen noise augmentation: diffuse the condition to a random level of a linear
            1000-step schedule; the level is returned so that the unet can be told (``lowres_noise_cond``).
    """

    def __init__(self, *, downsample_first: bool = True, use_blur: bool = True, blur_prob: float = 0.5,
                 blur_sigma: FloatOrRange = 0.6, blur_kernel_size: IntOrRange = 3, use_noise: bool = False) -> None:
        super().__init__()
        if not 0.0 <= blur_prob <= 1.0:
            raise ValueError(f"blur_prob={blur_prob!r}: expected a probability in [0, 1]")
        self.downsample_first = bool(downsample_first)
        self.use_blur = bool(use_blur)
        self.blur_prob = float(blur_prob)
        self.blur_sigma = _check_sigma(blur_sigma)
        self.blur_kernel_size = _check_kernel_size(blur_kernel_size)
        self.use_noise = bool(use_noise)
        self.noise_schedule = NoiseSchedule("linear", NOISE_AUGMENTATION_TIMESTEPS) if use_noise else None

    # ------------------------------------------------------------------ augmentation pieces
    def _draw_blur(self, generator: Optional[torch.Generator]) -> tuple[int, float]:
        sigma = self.blur_sigma
        if isinstance(sigma, tuple):
            low, high = sigma
            sigma = low + (high - low) * torch.rand((), generator=generator, device=_device_of(generator)).item()
        size = self.blur_kernel_size
        if isinstance(size, tuple):
            odd = [k for k in range(size[0], size[1] + 1) if k % 2 == 1]
            size = odd[int(torch.randint(len(odd), (), generator=generator, device=_device_of(generator)).item())]
        return size, sigma

    def blur(self, image: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Blur each sample with probability ``blur_prob`` (one sigma/kernel drawn for the batch)."""
        if not self.use_blur or self.blur_prob == 0.0:
            return image
        chosen = torch.rand(image.shape[0], generator=generator, device=_device_of(generator)) < self.blur_prob
        if not chosen.any():
            return image
        kernel_size, sigma = self._draw_blur(generator)
        blurred = gaussian_blur2d(image, kernel_size, sigma)
        chosen = chosen.to(image.device).view(-1, *([1] * (image.ndim - 1)))
        return torch.where(chosen, blurred, image)

    def sample_noise_levels(self, batch: int, device: torch.device,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Random augmentation levels (integer steps of the 1000-step schedule) for training."""
        return torch.randint(0, NOISE_AUGMENTATION_TIMESTEPS, (batch,), generator=generator,
                             device=_device_of(generator, device)).to(device)

    @staticmethod
    def fixed_noise_levels(level: float, batch: int, device: torch.device) -> torch.Tensor:
        """The sampling-time level: ``level`` in [0, 1) as an integer step (0.2 -> step 200)."""
        step = min(int(level * NOISE_AUGMENTATION_TIMESTEPS), NOISE_AUGMENTATION_TIMESTEPS - 1)
        return torch.full((batch,), step, dtype=torch.long, device=device)

    def noise_image(self, image: torch.Tensor, noise_levels: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Diffuse ``image`` to ``noise_levels`` (LongTensor (b,)) of the augmentation schedule."""
        if self.noise_schedule is None:
            raise RuntimeError("noise_image called on a LowresConditioner built with use_noise=False")
        noise = randn(image.shape, generator=generator, dtype=image.dtype, device=image.device)
        return self.noise_schedule.q_sample(image, noise_levels.to(image.device), noise)

    # ------------------------------------------------------------------ public entry points
    def forward(self, image: torch.Tensor, *, target_image_size: int, downsample_image_size: Optional[int] = None,
                generator: Optional[torch.Generator] = None, encode: Optional[Encoder] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Training condition from a ground-truth batch: returns ``(cond_image, noise_levels or None)``.

        ``encode`` (a VAE's encoder, for a latent unet) maps the resized condition to latents before the
        noise augmentation, so the noise is added where the unet sees it."""
        cond = image
        if self.downsample_first and downsample_image_size is not None:
            cond = resize_image_to(cond, downsample_image_size)
        cond = self.blur(cond, generator)
        cond = resize_image_to(cond, target_image_size)
        if encode is not None:
            cond = encode(cond)
        levels = None
        if self.use_noise:
            levels = self.sample_noise_levels(cond.shape[0], cond.device, generator)
            cond = self.noise_image(cond, levels, generator)
        return cond, levels

    def for_sampling(self, previous: torch.Tensor, *, target_image_size: int, noise_level: float,
                     generator: Optional[torch.Generator] = None, encode: Optional[Encoder] = None
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Condition from the previous unet's (normalised) output: grow to size, (encode,) noise at a fixed level."""
        cond = resize_image_to(previous, target_image_size)
        if encode is not None:
            cond = encode(cond)
        levels = None
        if self.use_noise:
            levels = self.fixed_noise_levels(noise_level, cond.shape[0], cond.device)
            cond = self.noise_image(cond, levels, generator)
        return cond, levels


def random_crop_pair(image: torch.Tensor, cond: Optional[torch.Tensor], size: int,
                     generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Crop the same random ``size``×``size`` window (one per sample) from the target and its condition."""
    b, _, h, w = image.shape
    if size > h or size > w:
        raise ValueError(f"random_crop_size={size} is larger than the {h}x{w} training image of this unet")
    if cond is not None and cond.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"lowres condition {tuple(cond.shape[-2:])} and target {tuple(image.shape[-2:])} "
                         "differ in size")
    tops = torch.randint(0, h - size + 1, (b,), generator=generator, device=_device_of(generator)).tolist()
    lefts = torch.randint(0, w - size + 1, (b,), generator=generator, device=_device_of(generator)).tolist()

    def crop(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])

    return crop(image), (crop(cond) if cond is not None else None)

