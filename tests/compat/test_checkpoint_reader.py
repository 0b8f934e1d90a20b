"""Reading reference checkpoint layouts safely, and telling which release wrote a file."""

import collections
import datetime

import pytest
import torch

from dalle2_pytorch.compat.checkpoint import read_reference_checkpoint
from dalle2_pytorch.compat.releases import detect_release, normalize_legacy_keys, parse_release, prior_options

from tests.compat.legacy_fixtures import legacy_case, needs_legacy


@needs_legacy
def test_each_published_layout_gives_its_recorded_entry_and_version():
    prior, meta, _ = legacy_case("laion_prior_0154")  # trainer save with a pickled packaging Version
    ckpt = read_reference_checkpoint(prior)
    assert (ckpt.entry, ckpt.saved_version) == ("ema_model", "0.15.4")
    assert set(ckpt.state) == set(meta["state_keys"])
    assert read_reference_checkpoint(prior, use_ema=False).entry == "model"
    decoder, _, _ = legacy_case("laion_decoder_110")  # DecoderTrainer save, version a plain string
    assert (read_reference_checkpoint(decoder).entry, read_reference_checkpoint(decoder).saved_version) == \
        ("model", "1.1.0")
    bare, _, _ = legacy_case("laion_prior_110")
    assert (read_reference_checkpoint(bare).entry, read_reference_checkpoint(bare).saved_version) == ("<file>", None)


def test_objects_other_than_packaging_versions_are_never_unpickled(tmp_path):
    path = tmp_path / "save.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "when": datetime.date(2022, 6, 1)}, path)
    with pytest.raises(ValueError, match="not unpickled for safety"):
        read_reference_checkpoint(path)


def test_a_save_without_model_entries_is_refused(tmp_path):
    path = tmp_path / "save.pth"
    torch.save({"optimizer": {"lr": 1.0}, "step": 3}, path)
    with pytest.raises(ValueError, match="neither a state dict nor a trainer save.*'optimizer', 'step'"):
        read_reference_checkpoint(path)
    torch.save({"ema_model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"'model' \(use_ema=False\)"):
        read_reference_checkpoint(path, use_ema=False)
    torch.save(collections.OrderedDict(w=torch.ones(2)), path)
    assert read_reference_checkpoint(path).entry == "<file>"


def _decoder_state(**shapes):
    return {k: torch.zeros(s) for k, s in shapes.items()}


def test_release_detection_from_keys_and_shapes():
    old = {"unets.0.downs.0.0.weight": torch.zeros(8, 8, 4, 4), "unets.0.ups.0.3.weight": torch.zeros(8, 8, 4, 4),
           "unets.0.mid_block1.cross_attn.fn.norm.gamma": torch.zeros(4),
           "unets.0.mid_block1.cross_attn.fn.norm.beta": torch.zeros(4)}
    assert detect_release(old, "decoder") == (0, 15, 4)
    mid = {"unets.0.downs.0.0.weight": torch.zeros(8, 8, 4, 4), "unets.0.ups.0.3.net.0.weight": torch.zeros(32, 8, 1, 1),
           "unets.0.mid_block1.cross_attn.fn.norm.g": torch.zeros(4)}
    assert detect_release(mid, "decoder") == (1, 1, 0)
    assert detect_release(mid, "decoder", saved_version="1.5.0") == (1, 5, 0)
    assert detect_release({"net.null_text_embed": torch.zeros(1)}, "prior") == (1, 1, 0)
    assert detect_release({"net.null_text_encodings": torch.zeros(1), "net.null_text_embeds": torch.zeros(1),
                           "net.null_image_embed": torch.zeros(1)}, "prior") == (1, 15, 6)


def test_inconsistent_or_unsupported_files_are_one_clear_error():
    mixed = {"unets.0.downs.0.0.1.weight": torch.zeros(8, 32, 1, 1),  # SP-conv (>= 1.10) ...
             "unets.0.mid_block1.cross_attn.fn.norm.gamma": torch.zeros(4)}  # ... with gamma norms (<= 0.15)
    with pytest.raises(ValueError, match="cannot tell.*gamma/beta.*SP-conv downsample"):
        detect_release(mixed, "decoder")
    with pytest.raises(ValueError, match="0.20.0 are not supported"):
        detect_release({"net.learned_query": torch.zeros(1)}, "prior", version="0.20.0")
    with pytest.raises(ValueError, match="version must look like"):
        parse_release("latest")


def test_key_normalisation_and_the_position_bias_factor():
    state = {"a.norm.gamma": torch.ones(2), "a.norm.beta": torch.zeros(2), "u.cross_attn.fn.to_q.weight": torch.ones(1),
             "net.null_text_embed": torch.ones(1)}
    assert sorted(normalize_legacy_keys(state)) == ["a.norm.g", "net.null_text_encodings", "u.cross_attn.to_q.weight"]
    with pytest.raises(ValueError, match="a.norm.beta is not zero"):
        normalize_legacy_keys({**state, "a.norm.beta": torch.ones(2)})
    assert prior_options((1, 1, 0))[1] == 128.0 and prior_options((1, 4, 3))[1] == 1.0
    assert prior_options((1, 15, 6)) == ({}, 1.0)


def test_a_file_showing_nothing_old_is_taken_as_the_latest_release():
    assert detect_release({"unets.0.init_conv.weight": torch.zeros(8, 3, 7, 7)}, "decoder") == (1, 15, 6)
    sp_conv_fn = {"unets.0.downs.0.4.1.weight": torch.zeros(8, 32, 1, 1),
                  "unets.0.mid_block1.cross_attn.fn.norm.g": torch.zeros(4)}
    assert detect_release(sp_conv_fn, "decoder") == (1, 10, 0)
