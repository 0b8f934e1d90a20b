"""Per-level attention switches of the Unet: ``self_attn`` / ``layer_attns`` and ``layer_cross_attns``."""

import json
from pathlib import Path

import pytest
import torch

from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.serialization import CONFIG_NAME

from .test_unet import inputs, tiny

BEFORE = Path(__file__).parent / "fixtures" / "unet_configs_before_level_switches.json"
KW = dict(dim=16, image_embed_dim=12, dim_mults=(1, 2), cond_on_image_embeds=True, num_resnet_blocks=1,
          attn_heads=2, attn_dim_head=8)


def num_params(unet: Unet) -> int:
    return sum(p.numel() for p in unet.parameters())


def cross_attending_levels(unet: Unet) -> tuple[list[bool], list[bool]]:
    """(per down level, per up level from the top) whether its blocks have cross-attention."""
    down = [all(b.cross_attn is not None for b in level.blocks) for level in unet.downs]
    up = [level.init_block.cross_attn is not None and all(b.cross_attn is not None for b in level.blocks)
          for level in unet.ups][::-1]
    return down, up


def test_default_cross_attention_layout_is_every_level_but_the_first():
    assert cross_attending_levels(tiny()) == ([False, True], [False, True])
    explicit = tiny(layer_cross_attns=(False, True))
    assert num_params(explicit) == num_params(tiny())
    assert explicit.state_dict().keys() == tiny().state_dict().keys()


def test_layer_cross_attns_adds_and_removes_cross_attention():
    none, every = tiny(layer_cross_attns=False), tiny(layer_cross_attns=True)
    assert cross_attending_levels(none) == ([False, False], [False, False])
    assert cross_attending_levels(every) == ([True, True], [True, True])
    assert num_params(none) < num_params(tiny()) < num_params(every)
    assert none.mid_block1.cross_attn is not None  # the middle always attends to the conditioning
    x, t, emb = inputs()
    outs = [unet.eval()(x, t, image_embed=emb) for unet in (none, tiny(), every)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_cross_attention_at_the_top_level_makes_it_read_the_conditioning():
    """Only the cross-attention of the first level differs: it is the path by which the image embedding reaches
    the first level's blocks, so zeroing that path makes the two outputs equal again."""
    torch.manual_seed(0)
    unet = tiny(layer_cross_attns=(True, True), add_image_embeds_to_time=False).eval()
    x, t, emb = inputs()
    other = emb + torch.randn_like(emb)
    assert not torch.allclose(unet(x, t, image_embed=emb), unet(x, t, image_embed=other))


def test_layer_attns_is_self_attn_under_another_name():
    by_new, by_old = tiny(layer_attns=(False, True)), tiny(self_attn=(False, True))
    assert by_new.state_dict().keys() == by_old.state_dict().keys()
    assert by_new.downs[1].attn is not None and by_new.downs[0].attn is None
    x, t, emb = inputs()
    assert torch.equal(by_new.eval()(x, t, image_embed=emb), by_old.eval()(x, t, image_embed=emb))
    assert by_new.config == by_old.config and "layer_attns" not in by_new.config
    assert num_params(tiny(layer_attns=True)) > num_params(by_new) > num_params(tiny())
    assert tiny(layer_attns=True, self_attn=True).config["self_attn"] is True  # agreeing values are fine


def test_conflicting_or_malformed_switches_are_errors():
    with pytest.raises(ValueError, match="self_attn=True and layer_attns=False disagree"):
        Unet(**KW, self_attn=True, layer_attns=False)
    with pytest.raises(ValueError, match="disagree"):
        Unet(**KW, self_attn=(False, True), layer_attns=True)
    with pytest.raises(ValueError, match="layer_cross_attns has 3 entries but dim_mults gives 2 levels"):
        Unet(**KW, layer_cross_attns=(False, True, True))
    with pytest.raises(ValueError, match="layer_attns has 1 entries"):
        Unet(**KW, layer_attns=(True,))
    with pytest.raises(ValueError, match="layer_cross_attns='yes'"):
        Unet(**KW, layer_cross_attns="yes")


def test_configs_without_the_new_keywords_are_unchanged():
    before = json.loads(BEFORE.read_text())
    for name, extra in (("default", {}), ("self_attn", {"self_attn": [False, True]})):
        config = Unet(**KW, **extra).config
        assert json.dumps(config, indent=2, sort_keys=True) == json.dumps(before[name], indent=2, sort_keys=True)


def test_switches_round_trip_through_save_pretrained(tmp_path):
    unet = tiny(layer_attns=[False, True], layer_cross_attns=[True, False])
    unet.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())["config"]
    assert saved["self_attn"] == {"__tuple__": [False, True]}
    assert saved["layer_cross_attns"] == {"__tuple__": [True, False]}
    loaded = Unet.from_pretrained(tmp_path)
    assert cross_attending_levels(loaded) == ([True, False], [True, False])
    assert loaded.config == unet.config
    x, t, emb = inputs()
    assert torch.equal(loaded.eval()(x, t, image_embed=emb), unet.eval()(x, t, image_embed=emb))
    flagged = loaded.with_flags(checkpoint_during_training=True)  # a rebuild by with_flags keeps the switches
    assert flagged is not loaded and cross_attending_levels(flagged) == ([True, False], [True, False])
