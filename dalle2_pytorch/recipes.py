"""A whole unCLIP model from a few sizes: what ``DALLE2(dim=..., image_size=...)`` builds for newcomers.

    prior, decoder = build_unclip(dim=512, image_size=256, text_seq_len=256, depth=6, heads=8)

One width ``dim`` is the CLIP's text, image and latent width and the prior's; the decoder's unet gets a quarter of
it (at least 16).  Every part is untrained: train it with :class:`~dalle2_pytorch.trainers.DALLE2Trainer` (the CLIP
first, e.g. with ``ModelTrainer``, since the prior and decoder keep it frozen).
"""

from __future__ import annotations

from typing import Optional

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import VOCAB_SIZE
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.validation import check_positive_int


def build_unclip(*, dim: int, image_size: int, text_seq_len: int = 256, depth: int = 6, heads: int = 8,
                 text_encoder_name: Optional[str] = None, text_encoder_depth: Optional[int] = None,
                 text_decoder_depth: Optional[int] = None, timesteps: int = 1000,
                 sample_timesteps: Optional[int] = 64) -> tuple[DiffusionPrior, Decoder]:
    """A consistent (prior, decoder) pair sharing one new CLIP.

    Args:
        dim: width of the CLIP (text, image and latent) and of the prior; must be divisible by ``heads``.
        image_size: the generated images' size; a multiple of 8 (the CLIP sees 8×8 patches of it and the unet has
            four levels).
        text_seq_len: CLIP tokens per text.  depth, heads: depth and heads of every transformer.
        text_encoder_name: condition the decoder on this Hugging Face text encoder's hidden states (e.g.
            ``'t5-large'``, or a local folder) instead of the CLIP's text encodings (needs the ``hf`` extra).
        text_encoder_depth: depth of the CLIP's text transformer (default ``depth``).
        text_decoder_depth: depth of the prior's causal transformer, which decodes the text into an image
            embedding (default ``depth``).
        timesteps: diffusion steps of training.  sample_timesteps: default DDIM sampling steps (None: all).
    """
    for name, value in (("dim", dim), ("image_size", image_size), ("text_seq_len", text_seq_len),
                        ("depth", depth), ("heads", heads), ("timesteps", timesteps)):
        check_positive_int(name, value)
    for name, value in (("text_encoder_depth", text_encoder_depth), ("text_decoder_depth", text_decoder_depth),
                        ("sample_timesteps", sample_timesteps)):
        check_positive_int(name, value, optional=True)
    if dim % heads:
        raise ValueError(f"dim={dim} must be divisible by heads={heads} (each head gets dim // heads channels)")
    if image_size % 8:
        raise ValueError(f"image_size={image_size} must be a multiple of 8 (8x8 CLIP patches, a 4-level unet)")
    dim_head = dim // heads
    clip = CLIP(dim_text=dim, dim_image=dim, dim_latent=dim, num_text_tokens=VOCAB_SIZE,
                text_enc_depth=text_encoder_depth or depth, text_seq_len=text_seq_len, text_heads=heads,
                text_dim_head=dim_head, visual_enc_depth=depth, visual_heads=heads, visual_dim_head=dim_head,
                visual_image_size=image_size, visual_patch_size=image_size // 8)
    network = DiffusionPriorNetwork(dim, depth=text_decoder_depth or depth, dim_head=dim_head, heads=heads,
                                    max_text_len=text_seq_len)
    prior = DiffusionPrior(network, clip=clip, timesteps=timesteps, sample_timesteps=sample_timesteps,
                           cond_drop_prob=0.2)
    decoder_clip = clip
    if text_encoder_name is not None:
        from dalle2_pytorch.clip.text_encoder import TextEncoderClipAdapter

        decoder_clip = TextEncoderClipAdapter(clip, text_encoder_name)
    unet_dim = max(16, dim // 4)
    unet = Unet(dim=unet_dim, dim_mults=(1, 2, 4, 8), num_resnet_blocks=2, attn_heads=heads,
                attn_dim_head=max(8, unet_dim // heads), max_text_len=text_seq_len,
                layer_attns=(False, False, False, True), layer_cross_attns=(False, True, True, True))
    decoder = Decoder(unet=unet, clip=decoder_clip, image_sizes=image_size, timesteps=timesteps,
                      sample_timesteps=sample_timesteps, condition_on_text_encodings=True)
    return prior, decoder
