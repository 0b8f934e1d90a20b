"""The CLIP conditioning shared by the prior and the decoder: accepted CLIPs, masked padding, learned null
padding, shape checks and the frozen-CLIP train() rule."""

import pytest
import torch
from torch import nn

from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.conditioning import (FrozenClipMixin, check_clip_fits, check_embedding, check_text_encodings,
                                              clip_image_embed, clip_text_condition, frozen_clip_adapter,
                                              null_pad_text, resolve_embed_dim)
from dalle2_pytorch.clip.outputs import EmbeddedText

from tests.factories import tiny_clip


class DuckAdapter:
    """A user-written adapter that is not a BaseClipAdapter; its encodings are not zeroed at padding."""

    dim_latent = 4

    def embed_text(self, tokens):
        mask = tokens != 0
        return EmbeddedText(torch.ones(tokens.shape[0], 4), torch.ones(*tokens.shape, 4), mask)

    def embed_image(self, images):
        return images.mean(dim=(2, 3))[:, :1].expand(-1, 4), None


def test_frozen_clip_adapter_accepts_our_clip_adapters_and_duck_typed_adapters():
    assert frozen_clip_adapter(None) is None
    adapter = frozen_clip_adapter(tiny_clip().train())
    assert isinstance(adapter, BuiltinClipAdapter) and not adapter.training
    assert not any(p.requires_grad for p in adapter.parameters())
    duck = DuckAdapter()
    assert frozen_clip_adapter(duck) is duck
    with pytest.raises(TypeError, match="has no 'embed_text'"):
        frozen_clip_adapter(nn.Linear(2, 2))


def test_text_padding_is_zeroed_once_by_the_mask():
    tokens = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    text_embed, encodings, mask = clip_text_condition(DuckAdapter(), tokens)
    assert text_embed.shape == (2, 4) and torch.equal(mask, tokens != 0)
    assert torch.equal((encodings != 0).any(-1), tokens != 0)  # padding rows are exactly zero
    assert clip_image_embed(DuckAdapter(), torch.ones(2, 3, 2, 2)).shape == (2, 4)


def test_null_pad_text_pads_truncates_and_drops():
    null = torch.full((4, 2), 9.0)
    tokens = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[2.0, 2.0], [3.0, 3.0]]])
    out = null_pad_text(tokens, null, 4)
    assert out.shape == (2, 4, 2)
    assert torch.equal(out[0], torch.tensor([[1.0, 1.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]))  # zero row = padding
    assert torch.equal(out[1, :2], tokens[1])
    dropped = null_pad_text(tokens, null[None], 4, keep=torch.tensor([True, False]))
    assert torch.equal(dropped[1], null) and torch.equal(dropped[0], out[0])
    projected = tokens + 5  # after a projection padding is no longer zero: pass the mask
    masked = null_pad_text(projected, null, 4, mask=torch.tensor([[True, False], [True, True]]))
    assert torch.equal(masked[0, 1], null[1]) and torch.equal(masked[1, 1], projected[1, 1])
    with pytest.warns(UserWarning, match="truncating to the first 1"):
        short = null_pad_text(tokens, null[:1], 1)
    assert torch.equal(short, tokens[:, :1])


def test_shape_checks_name_the_tensor_and_expected_shape():
    assert check_embedding("image_embed", torch.zeros(3, 4), 4) is not None
    with pytest.raises(ValueError, match=r"image_embed must have shape \(batch, 4\), got \(3, 5\)"):
        check_embedding("image_embed", torch.zeros(3, 5), 4)
    with pytest.raises(ValueError, match=r"text_embed must have shape \(2, 4\)"):
        check_embedding("text_embed", torch.zeros(3, 4), 4, batch=2)
    with pytest.raises(ValueError, match=r"text_encodings must have shape \(3, length, 4\), got \(3, 4\); hint"):
        check_text_encodings(torch.zeros(3, 4), 4, 3, "; hint")
    assert resolve_embed_dim(None, 8) == 8 and resolve_embed_dim(DuckAdapter(), None) == 4
    with pytest.raises(ValueError, match="image_embed_dim is required"):
        resolve_embed_dim(None, None)
    with pytest.raises(ValueError, match="differs from the clip's dim_latent=4"):
        resolve_embed_dim(DuckAdapter(), 8)


def test_frozen_clip_mixin_keeps_the_clip_in_eval_mode():
    class Model(FrozenClipMixin, nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip
            self.layer = nn.Dropout(0.5)

    model = Model(nn.Dropout(0.5)).train()
    assert model.training and model.layer.training and not model.clip.training
    assert Model(None).train().training  # no CLIP: nothing to keep

    class WithVaes(Model):
        frozen_submodules = ("clip", "vaes")

        def __init__(self, clip):
            super().__init__(clip)
            self.vaes = nn.ModuleList([nn.Dropout(0.5)])

    model = WithVaes(nn.Dropout(0.5)).train()
    assert model.layer.training and not model.clip.training and not model.vaes[0].training


def test_check_clip_fits_compares_the_widths_the_clip_reports():
    adapter = frozen_clip_adapter(tiny_clip())  # dim_latent 16, text width 32, 3 channels
    check_clip_fits(adapter, "unet 1", image_embed_dim=16, text_embed_dim=32, channels=3)
    check_clip_fits(DuckAdapter(), "prior", image_embed_dim=4, text_embed_dim=99, channels=1)  # reports dim_latent only
    with pytest.raises(ValueError, match="unet 2 has image_embed_dim=8 but the CLIP has dim_latent=16"):
        check_clip_fits(adapter, "unet 2", image_embed_dim=8)
    with pytest.raises(ValueError, match="text_embed_dim=16 but the CLIP has dim_text_encodings=32"):
        check_clip_fits(adapter, "unet 1", text_embed_dim=16)
    with pytest.raises(ValueError, match="decoder has channels=1 but the CLIP has image_channels=3"):
        check_clip_fits(adapter, "decoder", channels=1)
