"""Behaviour of the decoder Unet: options, guidance, checkpointing, errors, save/load, cascade flags."""

import warnings

import pytest
import torch

from dalle2_pytorch.decoder.unet import Unet


def tiny(perturb_output: bool = True, **overrides) -> Unet:
    """A small Unet; ``perturb_output`` gives the zero-initialised output conv signal (which, like training,
    makes the weights count as trained)."""
    kwargs = dict(dim=16, image_embed_dim=12, cond_dim=16, dim_mults=(1, 2), cond_on_image_embeds=True,
                  num_resnet_blocks=1, attn_heads=2, attn_dim_head=8)
    kwargs.update(overrides)
    torch.manual_seed(0)
    unet = Unet(**kwargs)
    if perturb_output:
        with torch.no_grad():  # the output conv starts at zero; give it signal so outputs can differ
            unet.to_out.weight.normal_(0, 0.1)
    return unet


def inputs(batch=2, size=16, channels=3, embed=12):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, channels, size, size, generator=g), torch.randint(0, 1000, (batch,), generator=g),
            torch.randn(batch, embed, generator=g))


def test_output_shape_and_channels_out():
    unet = tiny(channels_out=6).eval()
    x, t, emb = inputs()
    assert unet(x, t, image_embed=emb).shape == (2, 6, 16, 16)


def test_unknown_keyword_names_accepted_ones():
    with pytest.raises(TypeError, match=r"'cond_dims' \(did you mean 'cond_dim'.*Accepted keywords: dim, image_embed_dim"):
        Unet(dim=16, cond_dims=8)
    with pytest.raises(TypeError, match="channels_out"):
        Unet(dim=16, out_dim=3)


def test_cfg_scale_one_is_conditional_and_scale_follows_formula():
    unet = tiny().eval()
    x, t, emb = inputs()
    with torch.no_grad():
        cond = unet(x, t, image_embed=emb)
        null = unet(x, t, image_embed=emb, image_cond_drop_prob=1.0)
        torch.testing.assert_close(unet.forward_with_cond_scale(x, t, image_embed=emb, cond_scale=1.0), cond)
        torch.testing.assert_close(unet.forward_with_cond_scale(x, t, image_embed=emb, cond_scale=3.0),
                                   null + (cond - null) * 3.0)
    assert (cond - null).abs().max() > 1e-4  # the condition matters


def test_text_mask_explicit_equals_zero_padding_and_text_changes_output():
    unet = tiny(cond_on_text_encodings=True, text_embed_dim=10, max_text_len=6).eval()
    x, t, emb = inputs()
    text = torch.randn(2, 5, 10)
    text[1, 3:] = 0
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    with torch.no_grad():
        derived = unet(x, t, image_embed=emb, text_encodings=text)
        explicit = unet(x, t, image_embed=emb, text_encodings=text, text_mask=mask)
        other = unet(x, t, image_embed=emb, text_encodings=torch.randn(2, 5, 10))
    torch.testing.assert_close(derived, explicit)
    assert (derived - other).abs().max() > 1e-5


def test_batch_matches_single_samples():
    unet = tiny(self_attn=(False, True), sparse_attn=True).eval()
    x, t, emb = inputs(batch=3)
    with torch.no_grad():
        batched = unet(x, t, image_embed=emb)
        single = torch.cat([unet(x[i:i + 1], t[i:i + 1], image_embed=emb[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("options", [
    dict(),
    dict(memory_efficient=True, cross_embed_downsample=True, combine_upsample_fmaps=True, self_cond=True),
    dict(sparse_attn=True, sparse_attn_window=4, pixel_shuffle_upsample=False, resnet_weight_standardization=True),
])
def test_gradient_checkpointing_gives_same_gradients(options):
    x, t, emb = inputs()
    grads = []
    for use_checkpoint in (False, True):
        unet = tiny(checkpoint_during_training=use_checkpoint, **options).train()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # checkpointing as torch recommends it: no warning at any layer
            unet(x, t, image_embed=emb).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_image_embed_dim_equal_to_cond_dim_works():
    # the reference used an Identity projection here and failed with a shape error
    unet = tiny(image_embed_dim=16, cond_dim=16).eval()
    x, t, _ = inputs()
    assert unet(x, t, image_embed=torch.randn(2, 16)).shape == x.shape


def test_sparse_attn_window_is_windowed_attention_and_attend_at_middle_switches_mid_attention():
    from dalle2_pytorch.decoder.attention import LinearSelfAttention, WindowSelfAttention
    assert isinstance(tiny(sparse_attn=True).downs[0].attn, LinearSelfAttention)
    assert isinstance(tiny(sparse_attn=True, sparse_attn_window=2).downs[0].attn, WindowSelfAttention)
    assert tiny(attend_at_middle=False).mid_attn is None
    with pytest.raises(ValueError, match="sparse_attn_window"):
        tiny(sparse_attn_window=2)


@pytest.mark.parametrize("call,match", [
    (lambda u, x, t, e: u(x[:, :2], t, image_embed=e), r"x must have shape \(batch, 3"),
    (lambda u, x, t, e: u(x, t, image_embed=e[:, :5]), "image_embed_dim"),
    (lambda u, x, t, e: u(x, t), "pass image_embed"),
    (lambda u, x, t, e: u(x, t, image_embed=e, text_encodings=torch.randn(2, 3, 12)), "cond_on_text_encodings=False"),
    (lambda u, x, t, e: u(x, t, image_embed=e, lowres_cond_img=x), "lowres_cond=False"),
    (lambda u, x, t, e: u(x, t, image_embed=e, self_cond=x), "self_cond=False"),
    (lambda u, x, t, e: u(x[..., :15, :15], t, image_embed=e), "multiples of 2"),
    (lambda u, x, t, e: u(x, t[:1], image_embed=e), "time must have shape"),
    (lambda u, x, t, e: u(x, t, image_embed=e, image_cond_drop_prob=1.5), "image_cond_drop_prob"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    unet = tiny().eval()
    x, t, emb = inputs()
    with pytest.raises(ValueError, match=match):
        call(unet, x, t, emb)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="image_embed_dim"):
        Unet(dim=16, cond_on_image_embeds=True)
    with pytest.raises(ValueError, match="text_embed_dim"):
        Unet(dim=16, cond_on_text_encodings=True)
    with pytest.raises(ValueError, match="num_resnet_blocks has 3 entries"):
        Unet(dim=16, dim_mults=(1, 2), num_resnet_blocks=(1, 1, 1))


def test_save_and_load_round_trip(tmp_path):
    unet = tiny(cond_on_text_encodings=True, text_embed_dim=10, max_text_len=4, self_attn=(False, True)).eval()
    unet.save_pretrained(tmp_path)
    loaded = Unet.from_pretrained(tmp_path).eval()
    x, t, emb = inputs()
    text = torch.randn(2, 4, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, image_embed=emb, text_encodings=text),
                                   unet(x, t, image_embed=emb, text_encodings=text))
    assert loaded.has_trained_weights


def test_with_flags_keeps_weights_and_refuses_to_drop_trained_ones():
    unet = tiny(perturb_output=False, cond_on_image_embeds=False)
    assert unet.with_flags(cond_on_image_embeds=False) is unet
    upsampler = unet.with_flags(lowres_cond=True, lowres_noise_cond=True)
    assert upsampler.lowres_cond and upsampler.lowres_noise_cond
    torch.testing.assert_close(upsampler.mid_block1.block1.project.weight, unet.mid_block1.block1.project.weight)
    x, t, _ = inputs()
    unet.train()
    optimizer = torch.optim.SGD(unet.parameters(), lr=0.1)
    unet(x, t).mean().backward()
    assert not unet.has_trained_weights      # gradients alone change no weight
    optimizer.step()                         # a training step moves the zero-initialised output conv
    assert unet.has_trained_weights
    with pytest.raises(ValueError, match="would discard or re-initialise trained weights"):
        unet.with_flags(lowres_cond=True)
    with pytest.raises(TypeError, match="unknown keyword"):
        unet.with_flags(lowres_conditioning=True)


@pytest.mark.slow
def test_learns_to_recover_the_image_named_by_its_embedding():
    torch.manual_seed(0)
    unet = Unet(dim=8, dim_mults=(1, 2), num_resnet_blocks=1, image_embed_dim=4, cond_on_image_embeds=True,
                init_cross_embed=False, init_conv_kernel_size=3, attn_heads=2, attn_dim_head=8)
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    images = torch.stack([torch.ones(3, 8, 8), -torch.ones(3, 8, 8)])
    embeds = torch.eye(4)[:2]
    losses = []
    for _ in range(40):
        noise = torch.randn_like(images)
        level = torch.rand(2, 1, 1, 1)
        noisy = (1 - level).sqrt() * images + level.sqrt() * noise
        pred = unet(noisy, (level.flatten() * 999).long(), image_embed=embeds)
        loss = (pred - images).square().mean()  # predict x0: the image its embedding names
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5


@pytest.mark.parametrize("tokens", [3, 70])
def test_cross_attention_paths_agree_with_plain_attention(tokens):
    from dalle2_pytorch.decoder.attention import CrossAttention
    torch.manual_seed(0)
    attn = CrossAttention(24, context_dim=16, dim_head=64, heads=4)
    x, context = torch.randn(2, 30, 24), torch.randn(2, tokens, 16)
    mask = torch.rand(2, tokens) > 0.3
    # written out by hand: per-head softmax(q kᵀ / sqrt(d)) v with the null key/value first
    q = attn.to_q(attn.norm(x)).view(2, 30, 4, 64).transpose(1, 2)
    k, v = attn.to_kv(context).view(2, tokens, 2, 4, 64).permute(2, 0, 3, 1, 4)
    null_k, null_v = (t.expand(2, 4, 1, 64) for t in attn.null_kv)
    k, v = torch.cat((null_k, k), 2), torch.cat((null_v, v), 2)
    logits = q @ k.transpose(-1, -2) / 8.0
    logits = logits.masked_fill(~torch.cat((torch.ones(2, 1, dtype=torch.bool), mask), 1)[:, None, None], -1e30)
    expected = attn.out_norm(attn.to_out((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 30, 256)))
    torch.testing.assert_close(attn(x, context, mask), expected, atol=1e-5, rtol=1e-4)


def test_window_attention_with_one_window_is_full_attention_and_windows_are_independent():
    from dalle2_pytorch.decoder.attention import FullSelfAttention, WindowSelfAttention
    torch.manual_seed(0)
    full = FullSelfAttention(8, dim_head=4, heads=2)
    window = WindowSelfAttention(8, window=4, dim_head=4, heads=2)
    window.load_state_dict(full.state_dict())
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(window(x), full(x))
    big = torch.randn(1, 8, 8, 8)
    changed = big.clone()
    changed[..., :4, :4] += 1.0  # only the top-left window changes
    diff = (window(big) - window(changed)).abs().sum(dim=1)[0]
    assert diff[:4, :4].min() > 0 and diff[4:, :].max() == 0 and diff[:, 4:].max() == 0


def test_non_square_images_and_loading_through_a_parent_marks_weights_trained():
    unet = tiny(perturb_output=False, combine_upsample_fmaps=True, memory_efficient=True).eval()
    x = torch.randn(1, 3, 8, 16)
    with torch.no_grad():
        assert unet(x, torch.tensor([5]), image_embed=torch.randn(1, 12)).shape == x.shape
    assert not unet.has_trained_weights
    parent = torch.nn.ModuleList([unet])
    parent.load_state_dict(parent.state_dict())
    assert unet.has_trained_weights
