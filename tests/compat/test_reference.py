"""The reference-compat package: one renaming rule, one reader, one loader signature for prior and decoder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dalle2_pytorch.compat import (load_reference_decoder, load_reference_prior, read_reference_kwargs,
                                   read_reference_state, rename_key)
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior

from tests.reference_fixtures import FIXTURES  # noqa: E402


def test_rename_rule_applies_every_rule_in_order_and_reports_a_match():
    rules = [(r"^a\.(\d+)\.", r"blocks.\1."), (r"\.g$", ".weight")]
    assert rename_key("a.3.norm.g", rules) == ("blocks.3.norm.weight", True)  # both rules, in turn
    assert rename_key("a.3.norm.bias", rules) == ("blocks.3.norm.bias", True)
    assert rename_key("final.bias", rules) == ("final.bias", False)  # no rule: name kept, reported


def test_reader_takes_dicts_json_files_and_whole_fixture_descriptions(tmp_path):
    meta = json.loads((FIXTURES / "decoder_basic.json").read_text())
    (tmp_path / "fixture.json").write_text(json.dumps(meta))
    assert read_reference_kwargs(meta["kwargs"]) == meta["kwargs"]
    assert read_reference_kwargs(tmp_path / "fixture.json") == meta["kwargs"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_reference_state(tmp_path / "missing.safetensors")


def test_both_loaders_share_the_signature_and_accept_a_json_description(tmp_path):
    for case, cls, loader in (("decoder_basic", Decoder, load_reference_decoder),
                              ("prior_embed_only", DiffusionPrior, load_reference_prior)):
        (tmp_path / f"{case}.json").write_text((FIXTURES / f"{case}.json").read_text())
        path = FIXTURES / f"{case}.state.safetensors"
        from_file = loader(cls, path, tmp_path / f"{case}.json", clip=None, strict=True)
        from_dict = cls.from_reference_checkpoint(path, json.loads((FIXTURES / f"{case}.json").read_text())["kwargs"])
        for key, value in from_dict.state_dict().items():
            assert torch.equal(from_file.state_dict()[key], value), key


def test_strict_false_skips_keys_the_prior_loader_does_not_convert(tmp_path):
    state = load_file(str(FIXTURES / "prior_embed_only.state.safetensors"))
    state["mystery.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "prior.safetensors"))
    kwargs = FIXTURES / "prior_embed_only.json"
    with pytest.raises(ValueError, match="unknown reference prior parameter 'mystery.weight'"):
        load_reference_prior(DiffusionPrior, tmp_path / "prior.safetensors", kwargs)
    loaded = DiffusionPrior.from_reference_checkpoint(tmp_path / "prior.safetensors", kwargs, strict=False)
    reference = DiffusionPrior.from_reference_checkpoint(FIXTURES / "prior_embed_only.state.safetensors", kwargs)
    assert torch.equal(loaded.net.learned_query, reference.net.learned_query)
