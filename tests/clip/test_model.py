"""Our trainable CLIP: shapes, options, bad input, save/load, gradients."""

import pytest
import torch

from dalle2_pytorch.clip.model import CLIP

TINY = dict(dim_text=32, dim_image=32, dim_latent=16, num_text_tokens=100, text_enc_depth=1, text_seq_len=10,
            text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8,
            visual_image_size=16, visual_patch_size=4, visual_patch_dropout=0.0)

OPTIONS = {
    "plain": {},
    "filip": dict(use_all_token_embeds=True),
    "dcl": dict(decoupled_contrastive_learning=True),
    "extra_latent_projection": dict(extra_latent_projection=True),
    "mlm": dict(use_mlm=True),
    "simclr": dict(use_visual_ssl=True, visual_ssl_type="simclr"),
    "simsiam": dict(use_visual_ssl=True, visual_ssl_type="simsiam"),
    "patch_dropout": dict(visual_patch_dropout=0.5),
    "all": dict(use_all_token_embeds=True, decoupled_contrastive_learning=True, extra_latent_projection=True,
                use_mlm=True, use_visual_ssl=True, visual_ssl_type="simclr"),
}


def tiny_clip(**overrides) -> CLIP:
    torch.manual_seed(0)
    return CLIP(**{**TINY, **overrides})


def batch(b: int = 3, n: int = 10):
    torch.manual_seed(1)
    text = torch.randint(1, 100, (b, n))
    text[0, 6:] = 0  # padding
    return text, torch.rand(b, 3, 16, 16)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_shapes_and_finite_loss(name):
    clip = tiny_clip(**OPTIONS[name])
    text, images = batch()
    logits = clip(text, images)
    assert logits.shape == (3, 3)
    loss = clip(text, images, return_loss=True)
    assert loss.ndim == 0 and torch.isfinite(loss)
    emb_t = clip.embed_text(text)
    assert emb_t.text_embed.shape == (3, 16) and emb_t.text_encodings.shape == (3, 10, 32)
    assert torch.allclose(emb_t.text_embed.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert emb_t.text_mask.tolist()[0] == [True] * 6 + [False] * 4
    assert (emb_t.text_encodings[0, 6:] == 0).all()
    emb_i = clip.eval().embed_image(images)
    assert emb_i.image_embed.shape == (3, 16) and emb_i.image_encodings.shape == (3, 16, 32)
    assert torch.allclose(emb_i.image_embed.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_similarity_is_scaled_cosine_of_embeddings():
    clip = tiny_clip().eval()
    text, images = batch()
    expected = clip.embed_text(text).text_embed @ clip.embed_image(images).image_embed.t() * clip.logit_scale.exp()
    assert torch.allclose(clip(text, images), expected, atol=1e-5)


def test_padding_does_not_change_text_embedding():
    clip = tiny_clip().eval()
    text = torch.randint(1, 100, (2, 5))
    padded = torch.cat((text, torch.zeros(2, 5, dtype=torch.long)), dim=1)
    assert torch.allclose(clip.embed_text(text).text_embed, clip.embed_text(padded).text_embed, atol=1e-5)


def test_batch_matches_single_items():
    clip = tiny_clip().eval()
    text, images = batch()
    full = clip.embed_image(images).image_embed
    single = torch.cat([clip.embed_image(images[i:i + 1]).image_embed for i in range(3)])
    assert torch.allclose(full, single, atol=1e-5)


def test_patch_dropout_only_while_training():
    clip = tiny_clip(visual_patch_dropout=0.5)
    images = torch.rand(2, 3, 16, 16)
    assert clip.train().visual_encoder(images).shape == (2, 1 + 8, 32)
    assert clip.eval().visual_encoder(images).shape == (2, 1 + 16, 32)


def test_dcl_leaves_positive_out_of_denominator():
    from dalle2_pytorch.clip.losses import contrastive_loss
    logits = torch.tensor([[5.0, 1.0], [0.0, 3.0]])
    expected_rows = torch.tensor([1.0 - 5.0, 0.0 - 3.0])  # logsumexp over the single negative minus positive
    expected_cols = torch.tensor([0.0 - 5.0, 1.0 - 3.0])
    loss = contrastive_loss(logits, logits.t(), decoupled=True)
    assert torch.allclose(loss, (expected_rows.mean() + expected_cols.mean()) / 2)


def test_filip_similarity_by_hand():
    from dalle2_pytorch.clip.losses import filip_similarity
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # last token is padding
    mask = torch.tensor([[True, True, False]])
    image = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    t2i, i2t = filip_similarity(text, mask, image)
    assert torch.allclose(t2i, torch.tensor([[(1.0 + 0.8) / 2]]))
    assert torch.allclose(i2t, torch.tensor([[(1.0 + 0.8) / 2]]))


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError, match="visual_patch_sise"):
        CLIP(**TINY, visual_patch_sise=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(visual_image_size=18), "divisible by visual_patch_size"),
    (dict(visual_ssl_type="byol"), "visual_ssl_type"),
    (dict(visual_patch_dropout=1.0), "visual_patch_dropout"),
    (dict(dim_text=0), "dim_text"),
    (dict(use_mlm=True, use_visual_ssl=True, text_ssl_loss_weight=0.6, image_ssl_loss_weight=0.5), "below 1"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLIP(**{**TINY, **kwargs})


def test_bad_inputs_raise_clear_errors():
    clip = tiny_clip()
    text, images = batch()
    with pytest.raises(ValueError, match=r"\(batch, 3, 16, 16\), got \(3, 3, 32, 32\)"):
        clip(text, torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(3, 1, 16, 16\)"):
        clip.embed_image(torch.rand(3, 1, 16, 16))
    with pytest.raises(ValueError, match="token id 100, outside .0, num_text_tokens=100"):
        clip(torch.full((3, 4), 100), images)
    with pytest.raises(ValueError, match="11 tokens, more than text_seq_len=10"):
        clip.embed_text(torch.ones(3, 11, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        clip(text.float(), images)
    with pytest.raises(ValueError, match="as many texts as images"):
        clip(text[:2], images, return_loss=True)


@pytest.mark.parametrize("name", ["plain", "all", "simsiam"])
def test_gradients_reach_every_parameter(name):
    clip = tiny_clip(**OPTIONS[name])
    text, images = batch(b=4)
    clip(text, images, return_loss=True).backward()
    missing = [n for n, p in clip.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"


def test_option_parameters_exist_only_when_enabled():
    plain = {n for n, _ in tiny_clip().named_parameters()}
    for name, prefixes in [("mlm", ["mlm."]), ("simclr", ["visual_ssl.projector"]),
                           ("simsiam", ["visual_ssl.projector", "visual_ssl.predictor"]),
                           ("extra_latent_projection", ["to_text_latent_extra", "to_visual_latent_extra"])]:
        added = {n for n, _ in tiny_clip(**OPTIONS[name]).named_parameters()} - plain
        for prefix in prefixes:
            assert any(n.startswith(prefix) for n in added), (name, prefix, added)
    assert not any(n.startswith(("mlm", "visual_ssl", "to_text_latent_extra")) for n in plain)


def test_save_load_round_trip(tmp_path):
    clip = tiny_clip(**OPTIONS["all"]).eval()
    text, images = batch()
    clip.save_pretrained(tmp_path / "clip")
    loaded = CLIP.from_pretrained(tmp_path / "clip").eval()
    assert loaded.config == clip.config
    assert torch.equal(clip(text, images), loaded(text, images))


@pytest.mark.slow
def test_seed_readme_example_runs():
    """The seed README's first CLIP example, unchanged except for .cuda()."""
    torch.manual_seed(0)
    clip = CLIP(
        dim_text=512, dim_image=512, dim_latent=512, num_text_tokens=49408, text_enc_depth=1, text_seq_len=256,
        text_heads=8, visual_enc_depth=1, visual_image_size=256, visual_patch_size=32, visual_heads=8,
        use_all_token_embeds=True, decoupled_contrastive_learning=True, extra_latent_projection=True,
        use_visual_ssl=True, visual_ssl_type='simclr', use_mlm=False, text_ssl_loss_weight=0.05,
        image_ssl_loss_weight=0.05)
    text = torch.randint(0, 49408, (4, 256))
    images = torch.randn(4, 3, 256, 256)
    loss = clip(text, images, return_loss=True)
    loss.backward()
    assert torch.isfinite(loss)
