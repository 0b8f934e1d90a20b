"""Decoders written by old reference releases (LAION's published layouts) load and reproduce their outputs."""

import copy
import functools

import pytest
import torch

from dalle2_pytorch.compat.checkpoint import read_reference_checkpoint
from dalle2_pytorch.compat.releases import detect_release, unet_options
from dalle2_pytorch.decoder import Decoder

from tests.compat.legacy_fixtures import legacy_case, needs_legacy
from tests.reference_fixtures import reference_unet_inputs

pytestmark = needs_legacy
CASES = ["laion_decoder_0154", "laion_decoder_110", "decoder_1100"]


@functools.lru_cache(maxsize=None)
def _load(case: str, **options):
    path, meta, io = legacy_case(case)
    return Decoder.from_reference_checkpoint(path, meta["kwargs"], **options).eval(), meta, io


def _max_errors(decoder, io) -> list[tuple[float, float]]:
    errors = []
    for n, unet in enumerate(decoder.unets, start=1):
        x, t = io[f"in.u{n}.x"], io[f"in.u{n}.t"]
        inputs = reference_unet_inputs(unet, io, n)
        with torch.no_grad():
            out = unet(x, t, **inputs)
            guided = unet.forward_with_cond_scale(x, t, cond_scale=3.0, **inputs)
        errors.append(((out - io[f"out.u{n}"]).abs().max().item(),
                       (guided - io[f"out.u{n}.cfg3"]).abs().max().item()))
    return errors


@pytest.mark.parametrize("case", CASES)
def test_legacy_decoder_outputs_and_schedules_match(case):
    decoder, meta, io = _load(case)
    for n, (unet, flags) in enumerate(zip(decoder.unets, meta["unet_flags_after_decoder"]), start=1):
        assert {k: getattr(unet, k) for k in flags if k != "lowres_noise_cond"} == \
            {k: v for k, v in flags.items() if k != "lowres_noise_cond"}
        torch.testing.assert_close(decoder.schedules[n - 1].alphas_cumprod, io[f"out.sched{n}.alphas_cumprod"],
                                   atol=1e-6, rtol=0)
    for out_error, guided_error in _max_errors(decoder, io):
        assert out_error < 1e-4 and guided_error < 1e-4


@pytest.mark.parametrize("case, expected", [
    ("laion_decoder_0154", {"conv4x4_downsample": True, "conv_transpose_upsample": True,
                            "self_attn_sqrt_scale": True, "linear_attn_normalize": False}),
    ("laion_decoder_110", {"conv4x4_downsample": True, "self_attn_sqrt_scale": True, "linear_attn_normalize": False}),
    ("decoder_1100", {}),
])
def test_release_options_are_set_on_the_unets(case, expected):
    decoder, _, _ = _load(case)
    for unet in decoder.unets:
        assert {k: unet.config[k] for k in expected} == expected
    assert unet_options((1, 15, 6)) == {}


@pytest.mark.parametrize("option, value", [("self_attn_sqrt_scale", False), ("linear_attn_normalize", True)])
def test_each_function_option_is_needed(option, value):
    """Turning off one of the options the 1.1.0 decoder needs breaks parity (the options do something)."""
    path, meta, io = legacy_case("laion_decoder_110")
    kwargs = {**meta["kwargs"], "unets": [{**meta["kwargs"]["unets"][0], option: value}]}
    decoder = Decoder.from_reference_checkpoint(path, kwargs).eval()
    assert _max_errors(decoder, io)[0][0] > 1e-3


def test_forcing_a_release_the_keys_contradict_is_one_clear_error():
    path, meta, _ = legacy_case("laion_decoder_110")
    with pytest.raises(ValueError, match=r"version= .1.15.6. does not fit.*cross_attn.fn.*4x4 stride-2 downsample"):
        Decoder.from_reference_checkpoint(path, meta["kwargs"], version="1.15.6")


def test_an_upsampler_without_the_final_low_res_concat():
    """Releases up to 0.23.x: the upsampler's output conv reads only the features (keys: to_out of dim inputs)."""
    from dalle2_pytorch.decoder.unet import Unet

    unet = Unet(8, dim_mults=(1, 2), lowres_cond=True, lowres_cond_final_concat=False)
    assert unet.to_out.weight.shape[1] == 8 and Unet(8, dim_mults=(1, 2), lowres_cond=True).to_out.weight.shape[1] == 11
    x = torch.randn(1, 3, 8, 8)
    assert unet(x, torch.tensor([3]), lowres_cond_img=x).shape == x.shape
    path, meta, _ = legacy_case("decoder_1100")
    state = dict(read_reference_checkpoint(path).state)
    assert detect_release(state, "decoder") == (1, 10, 0)
    state["unets.1.to_out.weight"] = state["unets.1.to_out.weight"][:, :8]
    with pytest.raises(ValueError, match="cannot tell.*without the low-res concat.*SP-conv"):
        detect_release(state, "decoder")
    assert unet_options((0, 23, 0))["lowres_cond_final_concat"] is False


def test_a_legacy_decoder_samples_with_guidance():
    decoder, _, io = _load("laion_decoder_0154")
    with torch.no_grad():
        images = decoder.sample(image_embed=io["in.image_embed"], text_encodings=io["in.text_encodings"],
                                cond_scale=3.0, sampler="ddim", steps=3)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_a_reference_checkpoint_runs_in_channels_last_with_the_same_outputs():
    decoder, _, io = _load("decoder_1100")
    fast = copy.deepcopy(decoder)
    for i, unet in enumerate(decoder.unets):
        fast.unets[i] = unet.with_flags(channels_last=True)
        assert fast.unets[i].to_out.weight.data_ptr() != unet.to_out.weight.data_ptr()
        assert fast.unets[i].memory_format is torch.channels_last
    for out_error, guided_error in _max_errors(fast, io):
        assert out_error < 1e-4 and guided_error < 1e-4
