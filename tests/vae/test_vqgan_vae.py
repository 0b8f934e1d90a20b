"""VQGanVAE / NullVQGanVAE: interface, losses, perceptual options, save/load, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dalle2_pytorch.vae import NullVQGanVAE, RandomFeatureNet, VQGanVAE
from dalle2_pytorch.vae.perceptual import lpips_available
from tests.factories import tiny_vae


def images(b: int = 2, size: int = 16, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.filterwarnings("ignore:VQGanVAE\\(perceptual='auto'\\)")
def test_seed_readme_construction_runs_unchanged():
    torch.manual_seed(0)
    vae = VQGanVAE(dim=32, image_size=256, layers=3, layer_mults=(1, 2, 4))
    assert (vae.encoded_dim, vae.layers, vae.image_size, vae.channels, vae.downsample_factor) == (128, 3, 256, 3, 8)
    assert vae.get_encoded_fmap_size(256) == 32
    assert vae.discr is not None and not vae.has_been_trained


@pytest.mark.parametrize("vae_type", ["resnet", "vit"])
def test_encode_decode_shapes_and_losses_backpropagate(vae_type):
    torch.manual_seed(0)
    extra = {"patch_size": 4} if vae_type == "vit" else {}
    vae = tiny_vae(vae_type=vae_type, **extra)
    img = images()
    latent = vae.encode(img)
    assert latent.shape == (2, vae.encoded_dim, 16 // vae.downsample_factor, 16 // vae.downsample_factor)
    assert vae.decode(latent).shape == img.shape
    loss, recons = vae(img, return_loss=True, return_recons=True)
    assert recons.shape == img.shape and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert vae.encdec.last_decoder_weight.grad is not None
    assert vae.has_been_trained
    discr_loss = vae(img, return_discr_loss=True)
    discr_loss.backward()
    assert all(p.grad is not None for p in vae.discr.parameters())


@pytest.mark.parametrize("use_hinge_loss", [True, False])
@pytest.mark.parametrize("gradient_penalty", [True, False])
def test_discriminator_loss_with_and_without_penalty(use_hinge_loss, gradient_penalty):
    torch.manual_seed(0)
    vae = tiny_vae(use_hinge_loss=use_hinge_loss)
    img = images()
    loss = vae(img, return_discr_loss=True, add_gradient_penalty=gradient_penalty)
    assert torch.isfinite(loss)
    loss.backward()
    # The discriminator step must not train the autoencoder.
    assert all(p.grad is None for p in vae.encdec.parameters())


def test_gradient_penalty_adds_to_the_discriminator_loss():
    torch.manual_seed(0)
    vae = tiny_vae()
    vae.eval()  # fixed codebook, so both calls see the same reconstructions
    img = images()
    with_penalty = vae(img, return_discr_loss=True, add_gradient_penalty=True)
    without = vae(img, return_discr_loss=True, add_gradient_penalty=False)
    assert with_penalty.item() > without.item()


def test_without_gan_the_loss_is_reconstruction_plus_commitment():
    torch.manual_seed(0)
    vae = tiny_vae(use_vgg_and_gan=False, l2_recon_loss=True)
    vae.eval()
    img = images()
    recons, _, commit = vae.decode(vae.encode(img), return_indices_and_loss=True)
    expected = torch.nn.functional.mse_loss(recons, img) + commit
    assert torch.allclose(vae(img, return_loss=True), expected, atol=1e-6)
    with pytest.raises(ValueError, match="use_vgg_and_gan=False"):
        vae(img, return_discr_loss=True)


def test_perceptual_options():
    torch.manual_seed(0)
    img = images()
    random_features = tiny_vae(perceptual="random")
    assert random_features.perceptual_kind == "random"
    assert not any("perceptual" in name for name in random_features.state_dict())  # frozen net is not saved
    assert torch.isfinite(random_features(img, return_loss=True))

    custom_net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    custom = tiny_vae(perceptual=custom_net)
    assert custom.perceptual_kind == "custom" and torch.isfinite(custom(img, return_loss=True))
    assert not any(p.requires_grad for p in custom_net.parameters())

    # Same seed -> same random features, so a saved 'random' VAE rebuilds the same loss.
    a, b = RandomFeatureNet(channels=3, seed=3), RandomFeatureNet(channels=3, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))

    custom.set_perceptual("random")
    assert custom.perceptual_kind == "random"

    with pytest.raises(TypeError, match="perceptual must be one of"):
        tiny_vae(perceptual="vgg")
    with pytest.raises(ValueError, match="use_vgg_and_gan=False"):
        tiny_vae(perceptual="random", use_vgg_and_gan=False)


@pytest.mark.skipif(lpips_available(), reason="the lpips extra is installed here")
def test_lpips_without_the_extra_is_a_clear_error_and_auto_falls_back(monkeypatch):
    from dalle2_pytorch.vae import perceptual

    with pytest.raises(ImportError, match="pip install lpips"):
        tiny_vae(perceptual="lpips")
    monkeypatch.setattr(perceptual, "_warned_auto", False)
    with pytest.warns(UserWarning, match="lpips"):
        vae = tiny_vae(perceptual="auto")
    assert vae.perceptual_kind == "none"


@pytest.mark.parametrize("vae_type", ["resnet", "vit"])
def test_save_load_round_trip_is_exact(tmp_path, vae_type):
    torch.manual_seed(0)
    vae = tiny_vae(perceptual="random", vae_type=vae_type, **({"patch_size": 4} if vae_type == "vit" else {}))
    img = images()
    vae(img, return_loss=True).backward()  # initialise the codebook (k-means) and count a step
    vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    loaded = VQGanVAE.from_pretrained(tmp_path / "vae").eval()
    assert loaded.perceptual_kind == "random" and loaded.has_been_trained
    for (name, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(vae.encode(img), loaded.encode(img))
    assert torch.equal(vae(img), loaded(img))


def test_null_vae_is_identity_with_the_same_interface():
    null = NullVQGanVAE(3)
    img = images()
    assert null.encode(img) is img and null.decode(img) is img
    assert (null.encoded_dim, null.channels, null.downsample_factor, null.layers) == (3, 3, 1, 0)


def test_codebook_indices_shape():
    torch.manual_seed(0)
    vae = tiny_vae()
    indices = vae.codebook_indices(images())
    assert indices.shape == (2, 4, 4) and indices.dtype == torch.long
    assert int(indices.max()) < vae.codebook_size


def test_bad_input_errors():
    with pytest.raises(ValueError, match="not divisible by the downsample factor"):
        tiny_vae(image_size=18)
    with pytest.raises(ValueError, match="layer_mults"):
        tiny_vae(layer_mults=(1, 2, 4))
    with pytest.raises(ValueError, match="vae_type"):
        tiny_vae(vae_type="convnext")
    with pytest.raises(ValueError, match="patch_size only applies"):
        tiny_vae(patch_size=4)
    with pytest.raises(TypeError):
        tiny_vae(typo_keyword=1)
    vae = tiny_vae()
    with pytest.raises(ValueError, match="channels"):
        vae.encode(images(channels=1))
    with pytest.raises(TypeError, match="floating-point"):
        vae.encode((images() * 127 + 128).to(torch.uint8))
    with pytest.raises(ValueError, match="not divisible"):
        vae.encode(images(size=18))
    with pytest.raises(TypeError, match="float64"):
        vae.encode(images().double())
    with pytest.raises(TypeError, match="float64"):
        vae.decode(torch.randn(1, vae.encoded_dim, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        vae.encode(images() * 127.5 + 127.5)
    with pytest.raises(ValueError, match="latent must have shape"):
        vae.decode(torch.randn(1, vae.encoded_dim + 1, 4, 4))
    with pytest.raises(ValueError, match="either return_loss or return_discr_loss"):
        vae(images(), return_loss=True, return_discr_loss=True)


def test_bfloat16_autocast_forward():
    torch.manual_seed(0)
    vae = tiny_vae()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vae(images(), return_loss=True)
    loss.backward()
    assert torch.isfinite(loss)
