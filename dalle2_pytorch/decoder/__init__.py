"""The cascading decoder: U-Net, low-resolution conditioning, the Decoder, reference conversion."""

from dalle2_pytorch.decoder.cascade import CascadeOptions, CascadeStage
from dalle2_pytorch.decoder.cascade_config import StageSettings
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.lowres import LowresConditioner, gaussian_blur2d, random_crop_pair, resize_image_to
from dalle2_pytorch.decoder.unet import Unet

__all__ = ["CascadeOptions", "CascadeStage", "Decoder", "LowresConditioner", "StageSettings", "Unet", "gaussian_blur2d", "random_crop_pair",
           "resize_image_to"]
