"""Compatibility with the reference DALLE2-pytorch (0.15.x to 1.15.6): its checkpoints loaded into our models.

* :mod:`.keys` - the one renaming rule (ordered regular expressions);
* :mod:`.unet` / :mod:`.prior` - the U-Net and prior-network name mappings and state-dict converters;
* :mod:`.checkpoint` - reading the published file layouts (bare, ``model``, ``ema_model``) safely;
* :mod:`.releases` - which release wrote a file, and the model keywords reproducing its function;
* :mod:`.train_config` - the reference's training-config JSON files and their ``clip`` section;
* :mod:`.reference` - reading reference files and the two loaders behind
  ``Decoder.from_reference_checkpoint`` and ``DiffusionPrior.from_reference_checkpoint``.
"""

from dalle2_pytorch.compat.checkpoint import ReferenceCheckpoint, read_reference_checkpoint
from dalle2_pytorch.compat.keys import rename_key
from dalle2_pytorch.compat.prior import convert_reference_network_state, convert_reference_prior_state
from dalle2_pytorch.compat.reference import (load_reference_decoder, load_reference_prior, read_reference_kwargs,
                                             read_reference_state, split_reference_kwargs)
from dalle2_pytorch.compat.releases import detect_release
from dalle2_pytorch.compat.train_config import reference_clip_adapter
from dalle2_pytorch.compat.unet import convert_reference_unet_state, load_reference_unet_state, reference_key_to_ours

__all__ = ["ReferenceCheckpoint", "read_reference_checkpoint", "detect_release", "reference_clip_adapter", "rename_key", "convert_reference_network_state", "convert_reference_prior_state", "load_reference_decoder",
           "load_reference_prior", "read_reference_kwargs", "read_reference_state", "split_reference_kwargs",
           "convert_reference_unet_state", "load_reference_unet_state", "reference_key_to_ours"]
