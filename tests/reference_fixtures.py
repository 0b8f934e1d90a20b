"""Where the reference DALLE2-pytorch 1.15.6 fixtures live (committed under tests/fixtures/, see its README)."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dalle2_pytorch_1.15.6"


def reference_unet_inputs(unet, io: dict, n: int) -> dict:
    """The conditioning inputs of unet ``n`` (1-based) in a decoder fixture, as far as that unet takes them."""
    inputs = {}
    if unet.cond_on_image_embeds:
        inputs["image_embed"] = io["in.image_embed"]
    if unet.cond_on_text_encodings:
        inputs["text_encodings"] = io["in.text_encodings"]
    if unet.lowres_cond:
        inputs["lowres_cond_img"] = io[f"in.u{n}.lowres_cond_img"]
    if unet.lowres_noise_cond:
        inputs["lowres_noise_level"] = io[f"in.u{n}.lowres_noise_level"]
    return inputs
