"""The prior computes the reference DALLE2-pytorch 1.15.6 function on the shared fixtures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dalle2_pytorch.diffusion import NoiseSchedule
from dalle2_pytorch.compat.prior import convert_reference_network_state, convert_reference_prior_state
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior

from tests.reference_fixtures import FIXTURES  # noqa: E402
CASES = ["prior_embed_only", "prior_text_encodings", "prior_options"]


def _load(case: str):
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    io = load_file(str(FIXTURES / f"{case}.io.safetensors"))
    prior = DiffusionPrior.from_reference_checkpoint(FIXTURES / f"{case}.state.safetensors", meta["kwargs"]).eval()
    cond = {"text_embed": io["in.text_embed"], "text_encodings": io.get("in.text_encodings"),
            "self_cond": io.get("in.self_cond")}
    return prior, io, cond


@pytest.mark.parametrize("case", CASES)
def test_network_output_matches_reference(case):
    prior, io, cond = _load(case)
    with torch.no_grad():
        out = prior.net(io["in.image_embed"], io["in.t"], **cond)
    torch.testing.assert_close(out, io["out.net"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_guided_output_matches_reference(case):
    prior, io, cond = _load(case)
    with torch.no_grad():
        out = prior.net.forward_with_cond_scale(io["in.image_embed"], io["in.t"], cond_scale=3.0, **cond)
    torch.testing.assert_close(out, io["out.net.cfg3"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_schedule_and_scale_match_reference(case):
    prior, io, _ = _load(case)
    torch.testing.assert_close(prior.noise_schedule.alphas_cumprod, io["out.sched.alphas_cumprod"], atol=1e-6, rtol=0)
    assert prior.image_embed_scale == pytest.approx(io["out.image_embed_scale"].item(), abs=1e-6)
    kwargs = json.loads((FIXTURES / f"{case}.json").read_text())["kwargs"]["prior"]
    shared = NoiseSchedule(kwargs.get("beta_schedule", "cosine"), kwargs["timesteps"])
    torch.testing.assert_close(shared.alphas_cumprod, io["out.sched.alphas_cumprod"], atol=1e-6, rtol=0)


def test_reference_pth_checkpoint_loads(tmp_path):
    case = "prior_options"
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    state = load_file(str(FIXTURES / f"{case}.state.safetensors"))
    torch.save(state, tmp_path / "prior.pth")
    (tmp_path / "config.json").write_text(json.dumps(meta["kwargs"]))
    from_pth = DiffusionPrior.from_reference_checkpoint(tmp_path / "prior.pth", tmp_path / "config.json")
    from_st, _, _ = _load(case)
    for key, value in from_st.state_dict().items():
        torch.testing.assert_close(from_pth.state_dict()[key], value, atol=0, rtol=0)


def test_converter_rejects_unknown_keys():
    state = load_file(str(FIXTURES / "prior_embed_only.state.safetensors"))
    with pytest.raises(ValueError, match="unknown reference prior parameter"):
        convert_reference_prior_state({**state, "mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown reference prior-network parameter"):
        convert_reference_network_state({"causal_transformer.layers.0.9.weight": torch.zeros(1)})


def test_converter_rejects_custom_rotary_frequencies():
    state = load_file(str(FIXTURES / "prior_embed_only.state.safetensors"))
    key = "net.causal_transformer.layers.0.0.rotary_emb.freqs"
    with pytest.raises(ValueError, match="rotary"):
        convert_reference_prior_state({**state, key: state[key] * 2})


def test_reference_config_errors_are_clear():
    with pytest.raises(ValueError, match="config must have keys"):
        DiffusionPrior.from_reference_checkpoint(FIXTURES / "prior_embed_only.state.safetensors", {"nett": {}})
