"""Former home of the image-writing helpers, now :mod:`dalle2_pytorch.images`; kept until ``train/demo.py`` imports
them from there (then delete this module)."""

from dalle2_pytorch.images import captioned_grid, save_captioned_grid, save_image, to_pil, write_png

__all__ = ["captioned_grid", "save_captioned_grid", "save_image", "to_pil", "write_png"]
