"""A Decoder loaded with ``from_reference_checkpoint`` reproduces the reference 1.15.6 fixtures:
noise schedules, unet flags set by the reference Decoder, unet outputs and guided outputs."""

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dalle2_pytorch.decoder import Decoder

from tests.reference_fixtures import FIXTURES, reference_unet_inputs  # noqa: E402

CASES = ["decoder_basic", "decoder_cascade_text", "decoder_unet_options"]


@functools.lru_cache(maxsize=None)
def _load_cached(case: str):
    return _load(case)


def _load(case: str, path: Path | None = None):
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    decoder = Decoder.from_reference_checkpoint(path or FIXTURES / f"{case}.state.safetensors", meta["kwargs"])
    return decoder.eval(), meta, load_file(str(FIXTURES / f"{case}.io.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_schedules_and_flags_match_reference(case):
    decoder, meta, io = _load_cached(case)
    assert decoder.num_unets == len(meta["kwargs"]["unets"])
    for n, (unet, flags) in enumerate(zip(decoder.unets, meta["unet_flags_after_decoder"]), start=1):
        assert {k: getattr(unet, k) for k in flags} == flags
        torch.testing.assert_close(decoder.schedules[n - 1].alphas_cumprod, io[f"out.sched{n}.alphas_cumprod"],
                                   atol=1e-6, rtol=0)


def test_default_beta_schedule_rule():
    decoder, _, _ = _load_cached("decoder_cascade_text")
    assert [s.beta_schedule for s in decoder.stages] == ["cosine", "linear"]


@pytest.mark.parametrize("case", CASES)
def test_unet_outputs_match_reference(case):
    decoder, _, io = _load_cached(case)
    for n, unet in enumerate(decoder.unets, start=1):
        x, t = io[f"in.u{n}.x"], io[f"in.u{n}.t"]
        inputs = reference_unet_inputs(unet, io, n)
        with torch.no_grad():
            out = unet(x, t, **inputs)
            guided = unet.forward_with_cond_scale(x, t, cond_scale=3.0, **inputs)
        torch.testing.assert_close(out, io[f"out.u{n}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(guided, io[f"out.u{n}.cfg3"], atol=1e-4, rtol=0)


def test_reference_pth_checkpoint_loads(tmp_path):
    """A reference ``.pth`` (``{'model': state_dict}`` as DecoderTrainer saved it) loads without unpickling."""
    state = load_file(str(FIXTURES / "decoder_basic.state.safetensors"))
    path = tmp_path / "decoder.pth"
    torch.save({"model": state, "version": "1.15.6"}, path)
    from_pth, _, io = _load("decoder_basic", path)
    from_st, _, _ = _load_cached("decoder_basic")
    for a, b in zip(from_pth.state_dict().values(), from_st.state_dict().values()):
        assert torch.equal(a, b)


def test_reference_checkpoint_with_foreign_keys_is_rejected(tmp_path):
    state = load_file(str(FIXTURES / "decoder_basic.state.safetensors"))
    state["vaes.0.enc.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="does not convert"):
        _load("decoder_basic", path)
