"""The ``model`` section of each training config; ``create()`` builds the model (keywords as the constructors')."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field

from dalle2_pytorch.train.config_base import StrictModel

BetaSchedule = Literal["cosine", "linear", "quadratic", "sigmoid", "jsd"]
LossType = Literal["l1", "l2", "huber"]


class ClipSource(StrictModel):
    """Which frozen CLIP embeds text and images for a prior or decoder."""

    kind: Literal["builtin", "openai", "open_clip", "hf"] = Field(
        "builtin", description="builtin: a CLIP trained with `dalle2 train clip` (path = its checkpoint folder)")
    path: Optional[str] = Field(None, description="builtin only: folder written by save_pretrained")
    name: Optional[str] = Field(None, description="openai/open_clip/hf: model name, e.g. ViT-B/32")
    pretrained: Optional[str] = Field(None, description="open_clip only: pretrained tag, e.g. laion400m_e32")

    def create(self):
        from dalle2_pytorch.clip import adapters

        if self.kind == "builtin":
            if not self.path:
                raise ValueError("model.clip.path is required with kind='builtin' (a folder from `dalle2 train clip`)")
            from dalle2_pytorch.clip.model import CLIP

            if not (Path(self.path) / "config.json").is_file():
                raise ValueError(f"model.clip.path={self.path!r} holds no saved CLIP (config.json missing)")
            return adapters.BuiltinClipAdapter(CLIP.from_pretrained(self.path))
        if self.kind == "openai":
            return adapters.OpenAIClipAdapter(self.name or "ViT-B/32")
        if self.kind == "open_clip":
            return adapters.OpenClipAdapter(self.name or "ViT-B/32", self.pretrained or "laion400m_e32")
        return adapters.HFClipAdapter(self.name or "openai/clip-vit-base-patch32")


class ClipModelConfig(StrictModel):
    """A trainable CLIP (see :class:`dalle2_pytorch.CLIP`)."""

    dim_text: int = 512
    dim_image: int = 512
    dim_latent: int = 512
    num_text_tokens: int = Field(49408, description="vocabulary size; 49408 fits the bundled CLIP tokenizer")
    text_enc_depth: int = 6
    text_seq_len: int = Field(77, description="tokens per caption (longer captions are cut)")
    text_heads: int = 8
    text_dim_head: int = 64
    visual_enc_depth: int = 6
    visual_heads: int = 8
    visual_dim_head: int = 64
    visual_image_size: int = 256
    visual_patch_size: int = 32
    visual_patch_dropout: float = 0.5
    use_all_token_embeds: bool = False
    decoupled_contrastive_learning: bool = False
    extra_latent_projection: bool = False
    use_mlm: bool = False
    use_visual_ssl: bool = False
    visual_ssl_type: Literal["simsiam", "simclr"] = "simsiam"

    def create(self):
        from dalle2_pytorch.clip.model import CLIP

        return CLIP(**self.model_dump())


class PriorNetworkConfig(StrictModel):
    dim: int = Field(512, description="must equal the CLIP embedding width")
    depth: int = 6
    dim_head: int = 64
    heads: int = 8
    ff_mult: float = 4
    num_timesteps: Optional[int] = None
    max_text_len: int = 77
    self_cond: bool = False
    norm_in: bool = False
    norm_out: bool = True
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    final_proj: bool = True
    normformer: bool = False
    rotary_emb: bool = True


class PriorModelConfig(StrictModel):
    """A :class:`DiffusionPrior` and its network."""

    net: PriorNetworkConfig = PriorNetworkConfig()
    clip: Optional[ClipSource] = Field(None, description="needed to train from raw text/images; not for embeddings")
    image_embed_dim: Optional[int] = Field(None, description="embedding width when there is no clip")
    timesteps: int = 1000
    sample_timesteps: Optional[int] = 64
    cond_drop_prob: float = 0.1
    loss_type: LossType = "l2"
    predict_x_start: bool = True
    predict_v: bool = False
    beta_schedule: BetaSchedule = "cosine"
    condition_on_text_encodings: bool = False
    sampling_clamp_l2norm: bool = False
    sampling_final_clamp_l2norm: bool = False
    training_clamp_l2norm: bool = False

    def create(self):
        from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
        from dalle2_pytorch.prior.network import DiffusionPriorNetwork

        options = self.model_dump(exclude={"net", "clip"})
        clip = self.clip.create() if self.clip is not None else None
        return DiffusionPrior(DiffusionPriorNetwork(**self.net.model_dump()), clip=clip, **options)


class UnetConfig(StrictModel):
    """One unet of the decoder cascade (see :class:`dalle2_pytorch.Unet`)."""

    dim: int = 128
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    image_embed_dim: Optional[int] = Field(None, description="CLIP embedding width (unet 1 of a conditional decoder)")
    text_embed_dim: Optional[int] = None
    cond_dim: Optional[int] = None
    cond_on_text_encodings: bool = False
    max_text_len: int = 77
    self_attn: Union[bool, tuple[bool, ...]] = False
    attn_dim_head: int = 32
    attn_heads: int = 16
    num_resnet_blocks: Union[int, tuple[int, ...]] = 2
    resnet_groups: Union[int, tuple[int, ...]] = 8
    memory_efficient: bool = False
    self_cond: bool = False
    checkpoint_during_training: bool = False

    def create(self):
        from dalle2_pytorch.decoder.unet import Unet

        return Unet(**self.model_dump())


class DecoderModelConfig(StrictModel):
    """A :class:`Decoder` cascade: one entry of ``unets`` (and of ``image_sizes``) per stage, lowest first."""

    unets: list[UnetConfig] = Field(default_factory=lambda: [UnetConfig()], min_length=1)
    image_sizes: list[int] = Field(default_factory=lambda: [64], min_length=1)
    clip: Optional[ClipSource] = Field(None, description="to embed images on the fly (else data must carry them)")
    unconditional: bool = False
    channels: int = 3
    timesteps: int = 1000
    sample_timesteps: Optional[int] = Field(None, description="DDIM steps when sampling (None: all, ancestral)")
    loss_type: LossType = "l2"
    beta_schedule: Optional[BetaSchedule] = None
    predict_x_start: bool = False
    predict_v: bool = False
    learned_variance: bool = True
    image_cond_drop_prob: float = 0.1
    text_cond_drop_prob: float = 0.5
    condition_on_text_encodings: Optional[bool] = None

    def create(self):
        from dalle2_pytorch.decoder.decoder import Decoder

        if len(self.unets) != len(self.image_sizes):
            raise ValueError(f"model.image_sizes has {len(self.image_sizes)} entries but model.unets has "
                             f"{len(self.unets)}; give one size per unet")
        options = self.model_dump(exclude={"unets", "clip", "image_sizes"})
        clip = self.clip.create() if self.clip is not None else None
        return Decoder(unet=tuple(u.create() for u in self.unets), clip=clip, image_sizes=tuple(self.image_sizes),
                       **options)


class VaeModelConfig(StrictModel):
    """A :class:`VQGanVAE` (latent diffusion's autoencoder)."""

    dim: int = 64
    image_size: int = 256
    channels: int = 3
    layers: int = 4
    vae_type: Literal["resnet", "vit"] = "resnet"
    vq_codebook_dim: int = 256
    vq_codebook_size: int = 512
    l2_recon_loss: bool = False
    use_vgg_and_gan: bool = True
    attn_heads: int = 8
    attn_dim_head: int = 64

    def create(self):
        from dalle2_pytorch.vae.vqgan_vae import VQGanVAE

        return VQGanVAE(**self.model_dump())
