"""Speed/memory switches of the Unet that must not change what it computes."""

import pytest
import torch

from dalle2_pytorch.decoder.blocks import Block, set_norm_recompute
from tests.decoder.test_unet import inputs, tiny


def _saved_bytes_and_grads(unet):
    """Bytes the autograd graph keeps for backward, and the gradients, of one training forward/backward."""
    x, t, emb = inputs()
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = unet(x, t, image_embed=emb)
    out.square().mean().backward()
    return out.detach(), saved[0], {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("options", [dict(), dict(combine_upsample_fmaps=True, memory_efficient=True)])
def test_norm_recompute_keeps_outputs_and_gradients_and_saves_memory(options):
    fast = tiny(recompute_norm_in_backward=False, **options).train()
    lean = tiny(**options).train()
    blocks = [m for m in lean.modules() if isinstance(m, Block)]
    assert blocks and all(b.recompute_norm for b in blocks)
    assert not any(b.recompute_norm for b in fast.modules() if isinstance(b, Block))
    out_fast, saved_fast, grads_fast = _saved_bytes_and_grads(fast)
    out_lean, saved_lean, grads_lean = _saved_bytes_and_grads(lean)
    torch.testing.assert_close(out_fast, out_lean)
    assert grads_fast.keys() == grads_lean.keys() and len(grads_fast) > 20
    for name in grads_fast:
        torch.testing.assert_close(grads_fast[name], grads_lean[name], atol=1e-6, rtol=1e-4, msg=name)
    assert saved_lean < 0.95 * saved_fast  # the recomputed tails' maps are not kept


def test_set_norm_recompute_switches_every_block_and_survives_with_flags():
    unet = tiny()
    set_norm_recompute(unet, False)
    assert not any(b.recompute_norm for b in unet.modules() if isinstance(b, Block))
    rebuilt = tiny().with_flags(recompute_norm_in_backward=False)
    assert not any(b.recompute_norm for b in rebuilt.modules() if isinstance(b, Block))
    assert rebuilt.config["recompute_norm_in_backward"] is False
    assert "recompute_norm_in_backward" not in tiny().config  # the default leaves saved configs unchanged


def _conv_weights_channels_last(unet) -> bool:
    weights = [p for p in unet.parameters() if p.ndim == 4 and p.shape[2] * p.shape[3] > 1]  # 1x1: both layouts
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                 for p in weights)


@pytest.mark.parametrize("options", [dict(), dict(lowres_cond=True, self_cond=True)])
def test_channels_last_keeps_outputs_and_gradients(options):
    plain, fast = tiny(**options).train(), tiny(channels_last=True, **options).train()
    assert _conv_weights_channels_last(fast) and not _conv_weights_channels_last(plain)
    fast.load_state_dict(plain.state_dict())
    assert _conv_weights_channels_last(fast)  # loading copies into the channels-last weights
    x, t, emb = inputs()
    extra = {"lowres_cond_img": torch.rand_like(x)} if options else {}
    seen = []
    hook = fast.init_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    outs, grads = [], []
    for unet in (plain, fast):
        out = unet(x, t, image_embed=emb, **extra)
        out.square().mean().backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in unet.named_parameters() if p.grad is not None})
    hook.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert outs[1].is_contiguous()  # the caller gets the default layout back
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-3, msg=name)


def test_channels_last_is_recorded_only_when_set_and_survives_rebuilds():
    assert "channels_last" not in tiny().config
    rebuilt = tiny().with_flags(channels_last=True)
    assert rebuilt.config["channels_last"] is True and _conv_weights_channels_last(rebuilt)
    again = type(rebuilt).from_config(rebuilt.config)
    assert _conv_weights_channels_last(again)
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        tiny(channels_last="yes")
