"""KarloPipeline: Kakao Brain's Karlo (a diffusers unCLIP folder) behind DALLE2's call signature and our samplers.

    pipe = DALLE2.from_pretrained("karlo-v1-alpha")          # a KarloPipeline for a diffusers unCLIP folder
    images = pipe(["a red cat"], sampler="dpmpp_2m", steps=15, prior_sampler="dpmpp_2m", prior_steps=15, seed=0)

The decoder "unets" are Karlo's two image stages (64 px decoder, 256 px super-resolution): ``sampler``/``steps``
take one value or a pair.  ``cond_scale`` guides the 64 px decoder (the super-resolution models are not
conditioned: a pair must end with 1).  The defaults are Karlo's own (DDPM 25 + 25 + 7 steps, guidance 4 and 8).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from dalle2_pytorch.diffusion import RowGenerators
from dalle2_pytorch.images import to_pil_images
from dalle2_pytorch.karlo.components import KarloComponents, load_components
from dalle2_pytorch.karlo.stages import KarloDecoder, KarloPrior, KarloTextEncoder
from dalle2_pytorch.pipeline_files import SamplingDefaults

TextInput = Union[str, Sequence[str], torch.Tensor]

# UnCLIPPipeline's defaults: 25 prior, 25 decoder and 7 super-resolution DDPM steps; guidance 4 (prior), 8 (decoder)
KARLO_DEFAULTS = SamplingDefaults(prior_sampler="ddpm", prior_steps=25, prior_cond_scale=4.0,
                                  sampler=("ddpm", "ddpm"), steps=(25, 7), cond_scale=(8.0, 1.0))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def decoder_guidance(cond_scale: Any) -> float:
    """The 64 px decoder's guidance scale from a ``cond_scale`` of one number or one per stage (the second 1)."""
    if isinstance(cond_scale, (tuple, list)):
        if len(cond_scale) != 2 or cond_scale[1] != 1:
            raise ValueError(f"cond_scale={cond_scale!r}: Karlo has two image stages and its super-resolution "
                             "models are not conditioned; give one number (the decoder's) or (scale, 1.0)")
        cond_scale = cond_scale[0]
    return float(cond_scale)


def per_stage(value: Any) -> list:
    """A decoder setting (sampler or steps) as one value per stage (decoder, super-resolution)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{value!r}: Karlo has 2 image stages (decoder, super-resolution); give one value "
                             "or two")
        return list(value)
    return [value, value]


class KarloPipeline(nn.Module):
    """Karlo's modules as our text-to-image pipeline; build it with :meth:`from_pretrained`.

    Args:
        components: what :func:`~dalle2_pytorch.karlo.components.load_components` read from the folder.
        low_memory: keep every module on the CPU and move each to the execution device only while it runs
            (set the execution device with ``.to(device)``); peak accelerator memory is then the largest module.
    """

    def __init__(self, components: KarloComponents, *, low_memory: bool = False) -> None:
        super().__init__()
        modules = components.modules
        self.text_encoder = KarloTextEncoder(modules["text_encoder"], components.tokenizer)
        self.prior = KarloPrior(modules["prior"], components.schedulers["prior"])
        self.decoder = KarloDecoder(modules["text_proj"], modules["decoder"], modules["super_res_first"],
                                    modules["super_res_last"], components.schedulers["decoder"],
                                    components.schedulers["super_res"])
        self.low_memory = bool(low_memory)
        self.execution_device = torch.device("cpu")
        self.prior_num_samples = 1  # Karlo keeps its one prior sample (there is no CLIP image encoder to rank)
        self.sampling_defaults = KARLO_DEFAULTS

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu", *,
                        dtype: Union[None, str, torch.dtype] = None, low_memory: bool = False) -> "KarloPipeline":
        """Load a diffusers unCLIP folder (``kakaobrain/karlo-v1-alpha`` or the same layout).

        ``dtype``: ``torch.float16``/``torch.bfloat16`` (or their names) halve the memory on a GPU; ``map_location``:
        the execution device; ``low_memory``: see the class docstring."""
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
            dtype = DTYPES[dtype]
        if dtype is not None and dtype not in DTYPES.values():
            raise ValueError(f"dtype={dtype!r}: expected one of torch.float32, torch.float16, torch.bfloat16")
        return cls(load_components(Path(directory), dtype), low_memory=low_memory).to(map_location)

    # ------------------------------------------------------------------ settings and devices
    @property
    def sampling_defaults(self) -> SamplingDefaults:
        """Settings a call leaves out (Karlo's own unless replaced)."""
        return self._sampling_defaults

    @sampling_defaults.setter
    def sampling_defaults(self, value: Union[SamplingDefaults, Mapping[str, Any]]) -> None:
        value = SamplingDefaults.for_models(value, self.prior, self.decoder)
        decoder_guidance(value.cond_scale)
        self._sampling_defaults = value

    @property
    def device(self) -> torch.device:
        """Where the models run (with ``low_memory`` their weights wait on the CPU)."""
        return self.execution_device

    def to(self, *args: Any, **kwargs: Any) -> "KarloPipeline":
        """``nn.Module.to``, which also sets the execution device; with ``low_memory`` the weights stay on the CPU."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self.execution_device = torch.device(device)
        if self.low_memory:
            return super().to(dtype=dtype) if dtype is not None else self
        return super().to(*args, **kwargs)

    @contextlib.contextmanager
    def _place(self, *modules: nn.Module) -> Iterator[None]:
        """Run ``modules`` on the execution device; with ``low_memory``, only for the duration of the block."""
        if not self.low_memory:
            yield
            return
        for module in modules:
            module.to(self.execution_device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")
            if self.execution_device.type == "cuda":
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ sampling
    def _texts(self, text: TextInput) -> Union[list, torch.Tensor]:
        if isinstance(text, torch.Tensor):
            return text
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string, a non-empty list of strings or a tensor of token ids")
        return texts

    @torch.no_grad()
    def forward(self, text: TextInput, cond_scale: Any = None, prior_cond_scale: Optional[float] = None,
                return_pil_images: bool = False, *, sampler: Any = None, steps: Any = None,
                prior_sampler: Optional[str] = None, prior_steps: Optional[int] = None,
                generator: Union[torch.Generator, RowGenerators, None] = None, seed: Optional[int] = None,
                callback: Optional[Callable[[dict], None]] = None):
        """Images for ``text``, exactly as :meth:`DALLE2.forward` (same keywords, same outputs).

        Returns (b, 3, H, W) in [0, 1] ((3, H, W) for one string) or PIL images.  ``seed`` seeds a CPU generator,
        so a seed gives the same noise on every device.  ``callback`` receives every step of both image stages
        (``unet_number`` 1 = 64 px decoder, 2 = super-resolution)."""
        settings = self.sampling_defaults.resolve(cond_scale=cond_scale, prior_cond_scale=prior_cond_scale,
                                                  sampler=sampler, steps=steps, prior_sampler=prior_sampler,
                                                  prior_steps=prior_steps)
        scale, prior_scale = decoder_guidance(settings["cond_scale"]), float(settings["prior_cond_scale"])
        samplers, step_counts = per_stage(settings["sampler"]), per_stage(settings["steps"])
        texts = self._texts(text)
        if seed is not None:
            if generator is not None:
                raise ValueError("pass seed= or generator=, not both")
            generator = torch.Generator().manual_seed(int(seed))
        device = self.execution_device

        with self._place(self.text_encoder):
            cond = self.text_encoder(texts, device)
            null = self.text_encoder([""], device).expand(cond.embeds.shape[0]) \
                if prior_scale != 1 or scale != 1 else None
        image_embed = self.prior.sample(cond, null, cond_scale=prior_scale, sampler=settings["prior_sampler"],
                                        steps=settings["prior_steps"], generator=generator, device=device,
                                        place=self._place)
        images = self.decoder.sample(image_embed, cond, null, cond_scale=scale, sampler=samplers, steps=step_counts,
                                     generator=generator, device=device, place=self._place, callback=callback)
        images = ((images.float() + 1) * 0.5).clamp(0, 1)
        single = isinstance(text, str)
        if return_pil_images:
            pil = to_pil_images(images)
            return pil[0] if single else pil
        return images[0] if single else images
