"""unclip-pytorch (import name ``dalle2_pytorch``): DALL-E 2 (unCLIP) in PyTorch.

The public names of the seed README are importable from the top level.  They are loaded
lazily so that `import dalle2_pytorch` stays fast and a part that needs an optional extra
does not break the others.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "2.0.0.dev0"

_EXPORTS = {
    "CLIP": "dalle2_pytorch.clip.model",
    "OpenAIClipAdapter": "dalle2_pytorch.clip.adapters",
    "OpenClipAdapter": "dalle2_pytorch.clip.adapters",
    "Unet": "dalle2_pytorch.decoder.unet",
    "Decoder": "dalle2_pytorch.decoder.decoder",
    "DiffusionPriorNetwork": "dalle2_pytorch.prior.network",
    "DiffusionPrior": "dalle2_pytorch.prior.diffusion_prior",
    "DALLE2": "dalle2_pytorch.dalle2",
    "SamplingDefaults": "dalle2_pytorch.pipeline_files",
    "DecoderTrainer": "dalle2_pytorch.trainers.decoder_trainer",
    "DALLE2Trainer": "dalle2_pytorch.trainers.dalle2_trainer",
    "DiffusionPriorTrainer": "dalle2_pytorch.trainers.prior_trainer",
    "VQGanVAETrainer": "dalle2_pytorch.trainers.vae_trainer",
    "VQGanVAE": "dalle2_pytorch.vae.vqgan_vae",
    "NullVQGanVAE": "dalle2_pytorch.vae.vqgan_vae",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dalle2_pytorch' has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dalle2_pytorch.clip.adapters import OpenAIClipAdapter, OpenClipAdapter
    from dalle2_pytorch.clip.model import CLIP
    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.pipeline_files import SamplingDefaults
    from dalle2_pytorch.decoder.decoder import Decoder
    from dalle2_pytorch.decoder.unet import Unet
    from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
    from dalle2_pytorch.prior.network import DiffusionPriorNetwork
    from dalle2_pytorch.trainers.dalle2_trainer import DALLE2Trainer
    from dalle2_pytorch.trainers.decoder_trainer import DecoderTrainer
    from dalle2_pytorch.trainers.prior_trainer import DiffusionPriorTrainer
    from dalle2_pytorch.trainers.vae_trainer import VQGanVAETrainer
    from dalle2_pytorch.vae.vqgan_vae import NullVQGanVAE, VQGanVAE
