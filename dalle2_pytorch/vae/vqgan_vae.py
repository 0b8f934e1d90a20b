"""VQGAN autoencoder (Esser et al. 2021) for latent diffusion, and its identity stand-in.

Interface used by the Decoder (both classes): ``encode(img in [-1, 1]) -> continuous latent``
(b, encoded_dim, h / downsample_factor, w / downsample_factor); ``decode(latent) -> img`` (quantise, then
decode); properties ``encoded_dim``, ``layers``, ``image_size``, ``channels``, ``downsample_factor``.

Training: ``vae(img, return_loss=True)`` is the generator loss (L1/L2 reconstruction + VQ commitment +
perceptual + adaptively weighted adversarial); ``vae(img, return_discr_loss=True)`` is the PatchGAN
discriminator's loss (hinge or BCE, optional gradient penalty).  Vector quantisation comes from
``vector-quantize-pytorch``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from dalle2_pytorch.serialization import PretrainedMixin, register_to_config
from dalle2_pytorch.vae.discriminator import (Discriminator, adaptive_gan_weight, bce_discr_loss, bce_gen_loss,
                                              gradient_penalty, hinge_discr_loss, hinge_gen_loss)
from dalle2_pytorch.vae.perceptual import build_perceptual
from dalle2_pytorch.vae.resnet_encdec import ResnetEncDec
from dalle2_pytorch.vae.vit_encdec import ViTEncDec
from dalle2_pytorch.validation import strict_keywords

VAE_TYPES = ("resnet", "vit")


def check_images(img: torch.Tensor, channels: int, downsample_factor: int, name: str = "img") -> None:
    """Raise a clear error unless ``img`` is a float (b, channels, h, w) batch in [-1, 1] of divisible size."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor scaled to [-1, 1], got dtype {img.dtype} "
                        "(convert uint8 images with img.float() / 127.5 - 1)")
    if img.ndim != 4:
        raise ValueError(f"{name} must have shape (batch, channels, height, width), got {tuple(img.shape)}")
    if img.shape[1] != channels:
        raise ValueError(f"{name} has {img.shape[1]} channels but the VAE was built with channels={channels}")
    h, w = img.shape[-2:]
    if h % downsample_factor or w % downsample_factor:
        raise ValueError(f"{name} size {h}x{w} is not divisible by the VAE's downsample factor "
                         f"{downsample_factor}")
    if img.numel() and (img.detach().amax() > 1.5 or img.detach().amin() < -1.5):
        raise ValueError(f"{name} values span [{img.min().item():.3g}, {img.max().item():.3g}]; the VAE expects "
                         "images scaled to [-1, 1]")


class NullVQGanVAE(nn.Module):
    """Identity autoencoder with the VQGanVAE interface, for unets that diffuse in pixel space."""

    @strict_keywords()
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encoded_dim = channels
        self.channels = channels
        self.layers = 0
        self.downsample_factor = 1
        self.image_size = None

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        return img

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def get_encoded_fmap_size(self, image_size: int) -> int:
        return image_size


def _recorded_vae_argument(name: str, value: object) -> object:
    """What a saved VQGanVAE config holds: ``layer_mults`` as a tuple, ``perceptual`` only if JSON-able."""
    if name == "layer_mults" and value is not None:
        return tuple(value)  # type: ignore[arg-type]
    if name == "perceptual" and not isinstance(value, (str, type(None), PretrainedMixin)):
        return None
    return value


class VQGanVAE(PretrainedMixin, nn.Module):
    """VQGAN with a ``'resnet'`` (conv) or ``'vit'`` (ViT-VQGAN) encoder/decoder; see the module docstring."""

    @strict_keywords()
    @register_to_config(convert=_recorded_vae_argument)
    def __init__(self, *, dim: int, image_size: int, channels: int = 3, layers: int = 4,
                 layer_mults: tuple[int, ...] | None = None, num_resnet_blocks: int | None = None,
                 vae_type: str = "resnet", patch_size: int | None = None, attn_heads: int = 8,
                 attn_dim_head: int = 64, l2_recon_loss: bool = False, use_hinge_loss: bool = True,
                 vq_codebook_dim: int = 256, vq_codebook_size: int = 512, vq_decay: float = 0.8,
                 vq_commitment_weight: float = 1.0, vq_kmeans_init: bool = True, vq_use_cosine_sim: bool = True,
                 vq_threshold_ema_dead_code: float = 2.0,
                 use_vgg_and_gan: bool = True, perceptual: object = "auto", perceptual_weight: float = 1.0,
                 discr_layers: int = 4, grad_penalty_weight: float = 10.0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("image_size", image_size), ("channels", channels), ("layers", layers),
                            ("vq_codebook_dim", vq_codebook_dim), ("vq_codebook_size", vq_codebook_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if vae_type not in VAE_TYPES:
            raise ValueError(f"vae_type must be one of {VAE_TYPES}, got {vae_type!r}")

        if vae_type == "resnet":
            if patch_size is not None:
                raise ValueError("patch_size only applies to vae_type='vit'")
            layer_mults = tuple(2 ** i for i in range(layers)) if layer_mults is None else tuple(layer_mults)
            if len(layer_mults) != layers:
                raise ValueError(f"layer_mults needs one multiplier per layer: got {layer_mults} for layers={layers}")
            self.encdec: nn.Module = ResnetEncDec(
                dim=dim, channels=channels, layers=layers, layer_mults=layer_mults,
                num_resnet_blocks=1 if num_resnet_blocks is None else num_resnet_blocks,
                attn_heads=attn_heads, attn_dim_head=attn_dim_head)
            self.downsample_factor = 2 ** layers
        else:
            if layer_mults is not None or num_resnet_blocks is not None:
                raise ValueError("layer_mults and num_resnet_blocks only apply to vae_type='resnet'")
            patch_size = 8 if patch_size is None else patch_size
            self.encdec = ViTEncDec(dim=dim, channels=channels, layers=layers, patch_size=patch_size,
                                    heads=attn_heads, dim_head=attn_dim_head)
            self.downsample_factor = patch_size
        if image_size % self.downsample_factor:
            raise ValueError(f"image_size={image_size} is not divisible by the downsample factor "
                             f"{self.downsample_factor} (2**layers for 'resnet', patch_size for 'vit')")

        self.dim, self.image_size, self.channels, self.layers = dim, image_size, channels, layers
        self.encoded_dim = self.encdec.encoded_dim
        self.vq = VectorQuantize(
            dim=self.encoded_dim, codebook_size=vq_codebook_size, codebook_dim=vq_codebook_dim, decay=vq_decay,
            commitment_weight=vq_commitment_weight, kmeans_init=vq_kmeans_init, use_cosine_sim=vq_use_cosine_sim,
            threshold_ema_dead_code=vq_threshold_ema_dead_code,
            accept_image_fmap=True)
        self.l2_recon_loss = l2_recon_loss
        self.register_buffer("training_steps_seen", torch.zeros((), dtype=torch.long))

        self.use_vgg_and_gan = use_vgg_and_gan
        if not use_vgg_and_gan and perceptual not in ("auto", None):
            raise ValueError(f"use_vgg_and_gan=False turns the perceptual loss off, but perceptual={perceptual!r}")
        self._perceptual, self.perceptual_kind = (build_perceptual(perceptual, channels) if use_vgg_and_gan
                                                  else (None, "none"))
        self.perceptual_weight = perceptual_weight
        self.grad_penalty_weight = grad_penalty_weight
        self.discr = Discriminator(dim=dim, channels=channels, layers=discr_layers) if use_vgg_and_gan else None
        self.discr_loss_fn = hinge_discr_loss if use_hinge_loss else bce_discr_loss
        self.gen_loss_fn = hinge_gen_loss if use_hinge_loss else bce_gen_loss

    # ------------------------------------------------------------------ interface for latent diffusion
    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.codebook

    @property
    def codebook_size(self) -> int:
        return self.vq.codebook_size

    @property
    def has_been_trained(self) -> bool:
        """True once ``forward(return_loss=True)`` has run in training mode (survives save/load)."""
        return bool(self.training_steps_seen.item() > 0)

    def get_encoded_fmap_size(self, image_size: int) -> int:
        return image_size // self.downsample_factor

    def set_perceptual(self, perceptual: object) -> None:
        """Re-attach a perceptual feature network (e.g. a custom module after ``from_pretrained``)."""
        if not self.use_vgg_and_gan:
            raise ValueError("this VAE was built with use_vgg_and_gan=False and has no perceptual loss")
        self._perceptual, self.perceptual_kind = build_perceptual(perceptual, self.channels)

    def _check_dtype(self, tensor: torch.Tensor, name: str) -> None:
        weight_dtype = self.encdec.last_decoder_weight.dtype
        if tensor.dtype != weight_dtype and not torch.is_autocast_enabled(tensor.device.type):
            raise TypeError(f"{name} has dtype {tensor.dtype} but the VAE's weights are {weight_dtype}; convert "
                            f"with .to({weight_dtype}), or run under torch.autocast")

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Continuous (pre-quantisation) latent, (b, encoded_dim, h/downsample_factor, w/downsample_factor)."""
        check_images(img, self.channels, self.downsample_factor)
        self._check_dtype(img, "img")
        return self.encdec.encode(img)

    def quantize(self, latent: torch.Tensor, freeze_codebook: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Snap ``latent`` to the codebook: (quantised latent, code indices (b, h, w), commitment loss).

        In training mode the codebook follows the latents by EMA unless ``freeze_codebook``."""
        if latent.ndim != 4 or latent.shape[1] != self.encoded_dim:
            raise ValueError(f"latent must have shape (batch, {self.encoded_dim}, h, w), got {tuple(latent.shape)}")
        with torch.autocast(latent.device.type, enabled=False):
            quantized, indices, commit_loss = self.vq(latent.float(), freeze_codebook=freeze_codebook)
        return quantized.to(latent.dtype), indices, commit_loss.sum()

    def decode(self, latent: torch.Tensor, return_indices_and_loss: bool = False):
        """Quantise then decode to an image in roughly [-1, 1] (not clamped)."""
        quantized, indices, commit_loss = self.quantize(latent)
        self._check_dtype(latent, "latent")
        img = self.encdec.decode(quantized)
        return (img, indices, commit_loss) if return_indices_and_loss else img

    @torch.no_grad()
    def codebook_indices(self, img: torch.Tensor) -> torch.Tensor:
        """The code index chosen at each latent position, (b, h/downsample_factor, w/downsample_factor)."""
        return self.quantize(self.encode(img))[1]

    # ------------------------------------------------------------------ training
    def forward(self, img: torch.Tensor, return_loss: bool = False, return_discr_loss: bool = False,
                return_recons: bool = False, add_gradient_penalty: bool = True):
        """Reconstruct ``img``; or the generator loss (``return_loss``); or the discriminator loss."""
        if return_loss and return_discr_loss:
            raise ValueError("ask for either return_loss or return_discr_loss, not both")
        if return_discr_loss:
            return self._discr_loss(img, return_recons, add_gradient_penalty)
        recons, _, commit_loss = self.decode(self.encode(img), return_indices_and_loss=True)
        if not return_loss:
            return recons
        loss = self._generator_loss(img, recons, commit_loss)
        if self.training:
            self.training_steps_seen += 1
        return (loss, recons) if return_recons else loss

    def _generator_loss(self, img: torch.Tensor, recons: torch.Tensor, commit_loss: torch.Tensor) -> torch.Tensor:
        recon_loss = F.mse_loss(recons, img) if self.l2_recon_loss else F.l1_loss(recons, img)
        loss = recon_loss + commit_loss
        target_loss = recon_loss
        if self._perceptual is not None:
            perceptual_loss = self.perceptual_weight * self._perceptual(recons, img)
            loss = loss + perceptual_loss
            target_loss = perceptual_loss
        if self.discr is None:
            return loss
        gen_loss = self.gen_loss_fn(self.discr(recons))
        if torch.is_grad_enabled() and recons.requires_grad:
            weight = adaptive_gan_weight(target_loss, gen_loss, self.encdec.last_decoder_weight)
        else:  # evaluation without autograd: report the unweighted adversarial term
            weight = torch.ones((), device=img.device)
        return loss + weight * gen_loss

    def _discr_loss(self, img: torch.Tensor, return_recons: bool, add_gradient_penalty: bool):
        if self.discr is None:
            raise ValueError("return_discr_loss=True needs a discriminator; this VAE has use_vgg_and_gan=False")
        with torch.no_grad():
            quantized = self.quantize(self.encode(img), freeze_codebook=True)[0]
            recons = self.encdec.decode(quantized).detach()
        real = img.detach().requires_grad_(add_gradient_penalty)
        fake_logits, real_logits = self.discr(recons), self.discr(real)
        loss = self.discr_loss_fn(fake_logits, real_logits)
        if add_gradient_penalty:
            loss = loss + gradient_penalty(real, real_logits, self.grad_penalty_weight)
        return (loss, recons) if return_recons else loss
