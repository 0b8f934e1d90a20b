"""unCLIP's image manipulations: variations, interpolations, text diffs (DDIM inversion), inpainting, outpainting.

:mod:`.core` holds the functions over a decoder; :class:`ManipulationsMixin` gives ``DALLE2`` its thin methods.
See docs/manipulations.md.
"""

from dalle2_pytorch.manipulations.core import (check_images, check_mask, decode, invert, outpaint_canvas, slerp,
                                               slerp_noise, stage_canvas_sizes, text_diff_embeds)
from dalle2_pytorch.manipulations.mixin import DEFAULT_INVERSION_STEPS, ManipulationsMixin

__all__ = ["DEFAULT_INVERSION_STEPS", "ManipulationsMixin", "check_images", "check_mask", "decode", "invert",
           "outpaint_canvas", "slerp", "slerp_noise", "stage_canvas_sizes", "text_diff_embeds"]
