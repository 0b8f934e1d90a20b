"""DiffusionPriorNetwork: shapes, the shared null-token prefix, guidance, options and bad input."""

from __future__ import annotations

import pytest
import torch

from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from tests.factories import tiny_prior_network

DIM = 16


def make_net(**kwargs) -> DiffusionPriorNetwork:
    torch.manual_seed(0)
    return tiny_prior_network(DIM, **{"depth": 2, "heads": 2, "max_text_len": 6, **kwargs}).eval()


def inputs(batch: int = 3, text_len: int = 4):
    torch.manual_seed(1)
    return (torch.randn(batch, DIM), torch.randint(0, 100, (batch,)), torch.randn(batch, DIM),
            torch.randn(batch, text_len, DIM))


@pytest.mark.parametrize("options", [
    {},
    {"num_timesteps": 100, "self_cond": True, "norm_in": True, "normformer": True, "num_text_embeds": 2,
     "num_image_embeds": 2, "num_time_embeds": 2},
    {"rotary_emb": False, "cosine_sim": False, "final_proj": False, "norm_out": False},
    {"max_text_len": 1},  # a prefix of one null token
])
def test_shared_null_prefix_equals_full_sequence(options):
    """Without text encodings the null tokens are computed once for the batch: same function as padding every row."""
    net = make_net(**options)
    x, t, text_embed, _ = inputs()
    with torch.no_grad():
        cached = net(x, t, text_embed=text_embed, cache=net.prefix_cache())  # sampling: keys/values from a cache
        padded = net(x, t, text_embed=text_embed, text_encodings=torch.zeros(3, 1, DIM))  # all padding: full path
    shared = net(x, t, text_embed=text_embed)  # training: null tokens run once, beside the rows
    torch.testing.assert_close(cached, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.detach(), padded, atol=1e-5, rtol=0)


def test_a_padding_conditioned_legacy_network_without_text_encodings_sees_only_null_padding():
    """Old releases' ``"padding"`` networks (e.g. LAION's 1.1.0 prior) given no text encodings read the learned null
    padding in every text slot: the same output as encodings that are all padding, unlike real encodings."""
    net = make_net(null_conditioning="padding")
    x, t, text_embed, enc = inputs()
    with torch.no_grad():
        without = net(x, t, text_embed=text_embed)
        all_padding = net(x, t, text_embed=text_embed, text_encodings=torch.zeros(3, 2, DIM))
        with_text = net(x, t, text_embed=text_embed, text_encodings=enc)
    assert without.shape == (3, DIM)
    torch.testing.assert_close(without, all_padding, atol=1e-5, rtol=0)
    assert (without - with_text).abs().amax(dim=-1).min() > 1e-3


def test_dropped_text_ignores_encodings_and_matches_shared_path():
    net = make_net()
    x, t, text_embed, enc = inputs()
    with torch.no_grad():
        dropped = net(x, t, text_embed=text_embed, text_encodings=enc, text_cond_drop_prob=1.0)
        dropped_without = net(x, t, text_embed=torch.randn(3, DIM), text_cond_drop_prob=1.0)
    torch.testing.assert_close(dropped, dropped_without, atol=1e-5, rtol=0)


def test_padding_rows_are_replaced_by_learned_nulls():
    net = make_net()
    x, t, text_embed, enc = inputs()
    padded = torch.cat([enc[:, :2], torch.zeros(3, 2, DIM)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text_embed=text_embed, text_encodings=padded),
                                   net(x, t, text_embed=text_embed, text_encodings=enc[:, :2]), atol=1e-6, rtol=0)
        changed = net(x, t, text_embed=text_embed, text_encodings=enc)
    assert not torch.allclose(changed, net(x, t, text_embed=text_embed, text_encodings=padded))


def test_rows_are_independent():
    net = make_net()
    x, t, text_embed, enc = inputs(batch=4)
    with torch.no_grad():
        batched = net(x, t, text_embed=text_embed, text_encodings=enc)
        single = torch.cat([net(x[i:i + 1], t[i:i + 1], text_embed=text_embed[i:i + 1], text_encodings=enc[i:i + 1])
                            for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_guidance_scale_one_is_conditional_and_zero_is_null():
    net = make_net()
    x, t, text_embed, enc = inputs()
    with torch.no_grad():
        cond = net(x, t, text_embed=text_embed, text_encodings=enc)
        null = net(x, t, text_embed=text_embed, text_encodings=enc, text_cond_drop_prob=1.0, image_cond_drop_prob=1.0)
        kw = dict(text_embed=text_embed, text_encodings=enc)
        torch.testing.assert_close(net.forward_with_cond_scale(x, t, cond_scale=1.0, **kw), cond)
        torch.testing.assert_close(net.forward_with_cond_scale(x, t, cond_scale=0.0, **kw), null, atol=1e-6, rtol=0)
        torch.testing.assert_close(net.forward_with_cond_scale(x, t, cond_scale=3.0, **kw),
                                   null + 3 * (cond - null), atol=1e-5, rtol=0)
    # the null prediction depends on neither the text nor the noised image embed
    with torch.no_grad():
        other = net(torch.randn(3, DIM), t, text_embed=torch.randn(3, DIM), text_cond_drop_prob=1.0,
                    image_cond_drop_prob=1.0)
    torch.testing.assert_close(other, null, atol=1e-5, rtol=0)


def test_self_conditioning_token_changes_output():
    net = make_net(self_cond=True)
    x, t, text_embed, _ = inputs()
    with torch.no_grad():
        zeros = net(x, t, text_embed=text_embed)
        torch.testing.assert_close(net(x, t, text_embed=text_embed, self_cond=torch.zeros(3, DIM)), zeros)
        assert not torch.allclose(net(x, t, text_embed=text_embed, self_cond=torch.randn(3, DIM)), zeros)


def test_continuous_and_discrete_time():
    x, t, text_embed, _ = inputs()
    continuous = make_net()
    out = continuous(x, t.float() + 0.5, text_embed=text_embed)
    assert out.shape == (3, DIM)
    discrete = make_net(num_timesteps=100)
    with pytest.raises(TypeError, match="integers"):
        discrete(x, t.float(), text_embed=text_embed)


def test_long_text_encodings_are_truncated_with_a_warning():
    net = make_net()
    x, t, text_embed, _ = inputs()
    enc = torch.randn(3, 9, DIM)
    with pytest.warns(UserWarning, match="truncating"):
        long = net(x, t, text_embed=text_embed, text_encodings=enc)
    torch.testing.assert_close(long, net(x, t, text_embed=text_embed, text_encodings=enc[:, :6]))


def test_gradients_reach_every_parameter():
    net = make_net(num_text_embeds=2, num_image_embeds=2, self_cond=True, normformer=True, norm_in=True).train()
    x, t, text_embed, enc = inputs()
    net(x, t, text_embed=text_embed, text_encodings=enc, self_cond=torch.randn(3, DIM)).sum().backward()
    net(x, t, text_embed=text_embed, text_cond_drop_prob=1.0, image_cond_drop_prob=1.0).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_bad_input_raises_clear_errors():
    net = make_net()
    x, t, text_embed, enc = inputs()
    with pytest.raises(ValueError, match="image_embed must have shape"):
        net(torch.randn(3, DIM + 1), t, text_embed=text_embed)
    with pytest.raises(ValueError, match="text_embed must have shape"):
        net(x, t, text_embed=torch.randn(3, DIM + 1))
    with pytest.raises(TypeError, match="text_embed is required"):
        net(x, t, text_embed=None)
    with pytest.raises(ValueError, match="text_encodings must have shape"):
        net(x, t, text_embed=text_embed, text_encodings=torch.randn(3, 4, DIM + 1))
    with pytest.raises(ValueError, match="diffusion_timesteps"):
        net(x, t[:2], text_embed=text_embed)
    with pytest.raises(ValueError, match="self_cond=False"):
        net(x, t, text_embed=text_embed, self_cond=torch.zeros(3, DIM))
    with pytest.raises(ValueError, match="text_cond_drop_prob"):
        net(x, t, text_embed=text_embed, text_cond_drop_prob=1.5)


def test_bad_construction_raises():
    with pytest.raises(TypeError):
        DiffusionPriorNetwork(DIM, depth=1, dimhead=8)  # typo
    with pytest.raises(ValueError, match=r"^depth must be an integer >= 1, got 0$"):  # names the argument as given
        DiffusionPriorNetwork(DIM, depth=0)
    with pytest.raises(ValueError, match="dim_head"):
        DiffusionPriorNetwork(DIM, depth=1, dim_head=7)
    with pytest.raises(ValueError, match="attn_dropout"):
        DiffusionPriorNetwork(DIM, depth=1, attn_dropout=2.0)


def test_save_and_load_round_trip(tmp_path):
    net = make_net(num_timesteps=50, self_cond=True, normformer=True)
    x, t, text_embed, enc = inputs()
    t = t % 50
    net.save_pretrained(tmp_path)
    loaded = DiffusionPriorNetwork.from_pretrained(tmp_path).eval()
    assert loaded.config == net.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, text_embed=text_embed, text_encodings=enc),
                                   net(x, t, text_embed=text_embed, text_encodings=enc), atol=0, rtol=0)


def test_prefix_cache_is_explicit_and_built_per_loop():
    """The network holds no cache: a loop builds one; after a weight update a new cache sees the new weights,
    and a cache is refused where weights may change (training mode, gradients)."""
    net = make_net()
    x, t, text_embed, _ = inputs()
    with torch.no_grad():
        cache = net.prefix_cache()
        first = net(x, t, text_embed=text_embed, cache=cache)
        torch.testing.assert_close(net(x, t, text_embed=text_embed, cache=cache), first, atol=0, rtol=0)
        torch.testing.assert_close(first, net(x, t, text_embed=text_embed), atol=1e-5, rtol=0)  # no cache: exact too
    assert not any(isinstance(v, dict) and v for k, v in vars(net).items() if "cache" in k)  # no hidden cache
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x, t, text_embed=text_embed).sum().backward()
    opt.step()
    with torch.no_grad():
        cached = net(x, t, text_embed=text_embed, cache=net.prefix_cache())
    fresh = net(x, t, text_embed=text_embed).detach()
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=0)
    assert not torch.allclose(cached, first, atol=1e-3)
    with pytest.raises(ValueError, match="cache= is for sampling"):
        net(x, t, text_embed=text_embed, cache=net.prefix_cache())  # gradients enabled
    with torch.no_grad(), pytest.raises(ValueError, match="cache= is for sampling"):
        net.train()(x, t, text_embed=text_embed, cache=net.prefix_cache())
    with torch.no_grad(), pytest.raises(ValueError, match="cache= is for sampling"):
        net.eval()(x, t, text_embed=text_embed, cache=make_net().prefix_cache())  # another network's cache


def test_text_encoding_cache_is_exact_and_follows_the_encodings():
    """While sampling, the text-encoding tokens' keys/values are reused across steps: same outputs."""
    net = make_net(self_cond=True)
    x, t, text_embed, enc = inputs()
    reference = net(x, t, text_embed=text_embed, text_encodings=enc).detach()  # grad mode: no cache
    with torch.no_grad():
        cache = net.prefix_cache()
        for step in range(3):  # same encodings, new noised embeds and times: cache hits
            x_step, t_step = torch.randn_like(x), (t + step) % 100
            torch.testing.assert_close(net(x_step, t_step, text_embed=text_embed, text_encodings=enc, cache=cache),
                                       net(x_step, t_step, text_embed=text_embed, text_encodings=enc),
                                       atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x, t, text_embed=text_embed, text_encodings=enc, cache=cache), reference,
                                   atol=1e-5, rtol=0)
        enc.mul_(2.0)  # in-place change of the encodings must not reuse stale keys/values
        changed = net(x, t, text_embed=text_embed, text_encodings=enc, cache=cache)
        torch.testing.assert_close(changed, net(x, t, text_embed=text_embed, text_encodings=enc), atol=1e-5, rtol=0)
        assert not torch.allclose(changed, reference, atol=1e-3)
        other = torch.randn_like(enc)  # another tensor: recomputed too
        torch.testing.assert_close(net(x, t, text_embed=text_embed, text_encodings=other, cache=cache),
                                   net(x, t, text_embed=text_embed, text_encodings=other), atol=1e-5, rtol=0)
