"""The Unet reproduces the reference DALLE2-pytorch 1.15.6 unets (weights and outputs in shared fixtures)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from dalle2_pytorch.compat.unet import load_reference_unet_state, reference_key_to_ours
from dalle2_pytorch.decoder.unet import Unet

from tests.reference_fixtures import FIXTURES, reference_unet_inputs  # noqa: E402

CASES = [("decoder_basic", 0), ("decoder_cascade_text", 0), ("decoder_cascade_text", 1), ("decoder_unet_options", 0)]


def _build(case: str, index: int):
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    kwargs = {**meta["kwargs"]["unets"][index], **meta["unet_flags_after_decoder"][index]}
    unet = Unet(**kwargs).eval()
    load_reference_unet_state(unet, load_file(str(FIXTURES / f"{case}.state.safetensors")), index)
    return unet, load_file(str(FIXTURES / f"{case}.io.safetensors"))


@pytest.mark.parametrize("case,index", CASES)
def test_unet_matches_reference(case, index):
    unet, io = _build(case, index)
    n = index + 1
    x, t = io[f"in.u{n}.x"], io[f"in.u{n}.t"]
    inputs = reference_unet_inputs(unet, io, n)
    with torch.no_grad():
        out = unet(x, t, **inputs)
        guided = unet.forward_with_cond_scale(x, t, cond_scale=3.0, **inputs)
    assert out.abs().max() > 1e-2  # the fixture carries signal
    torch.testing.assert_close(out, io[f"out.u{n}"], atol=1e-4, rtol=0)
    torch.testing.assert_close(guided, io[f"out.u{n}.cfg3"], atol=1e-4, rtol=0)


def test_converter_names_are_readable():
    assert reference_key_to_ours("downs.1.2.0.cross_attn.to_out.1.g") == "downs.1.blocks.0.cross_attn.out_norm.weight"
    assert reference_key_to_ours("ups.0.3.net.0.weight") == "ups.0.upsample.conv.weight"
    assert reference_key_to_ours("mid_attn.fn.fn.to_q.weight") == "mid_attn.to_q.weight"
    assert reference_key_to_ours("to_time_hiddens.1.bias") == "cond.time_to_hidden.linear.bias"


def test_converter_rejects_mismatched_unet():
    unet, _ = _build("decoder_basic", 0)
    state = load_file(str(FIXTURES / "decoder_basic.state.safetensors"))
    wrong = Unet(dim=16, image_embed_dim=32, cond_dim=16, dim_mults=(1, 2, 4), cond_on_image_embeds=True, channels_out=6)
    with pytest.raises(ValueError, match="built with"):
        load_reference_unet_state(wrong, state, 0)
