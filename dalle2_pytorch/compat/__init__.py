"""Compatibility with the reference DALLE2-pytorch 1.15.6: its checkpoints loaded into our models.

* :mod:`.keys` - the one renaming rule (ordered regular expressions);
* :mod:`.unet` / :mod:`.prior` - the U-Net and prior-network name mappings and state-dict converters;
* :mod:`.reference` - reading reference files and the two loaders behind
  ``Decoder.from_reference_checkpoint`` and ``DiffusionPrior.from_reference_checkpoint``.
"""

from dalle2_pytorch.compat.keys import rename_key
from dalle2_pytorch.compat.prior import convert_reference_network_state, convert_reference_prior_state
from dalle2_pytorch.compat.reference import (load_reference_decoder, load_reference_prior, read_reference_kwargs,
                                             read_reference_state, split_reference_kwargs)
from dalle2_pytorch.compat.unet import convert_reference_unet_state, load_reference_unet_state, reference_key_to_ours

__all__ = ["rename_key", "convert_reference_network_state", "convert_reference_prior_state", "load_reference_decoder",
           "load_reference_prior", "read_reference_kwargs", "read_reference_state", "split_reference_kwargs",
           "convert_reference_unet_state", "load_reference_unet_state", "reference_key_to_ours"]
