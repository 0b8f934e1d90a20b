"""Karlo (Kakao Brain's unCLIP, published in diffusers' layout) behind our samplers and DALLE2's call signature.

``DALLE2.from_pretrained(folder)`` returns a :class:`KarloPipeline` for a diffusers unCLIP folder; the
diffusers networks run behind our denoiser interface (:mod:`dalle2_pytorch.karlo.denoisers`), so every sampler
of :mod:`dalle2_pytorch.diffusion` drives them at any step count.  Needs the ``karlo`` extra (diffusers,
transformers), imported only when a folder is loaded.  See docs/karlo.md.
"""

from dalle2_pytorch.karlo.components import KarloComponents, load_components
from dalle2_pytorch.karlo.pipeline import KARLO_DEFAULTS, KarloPipeline
from dalle2_pytorch.karlo.tiny import build_tiny_components, save_components, save_tiny_karlo

__all__ = ["KARLO_DEFAULTS", "KarloComponents", "KarloPipeline", "build_tiny_components", "load_components",
           "save_components", "save_tiny_karlo"]
