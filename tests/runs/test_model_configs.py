"""One declaration per model keyword: constructors record their config from their signature (register_to_config),
and a training config's model section is derived from the same signatures (every keyword, the same defaults)."""

import inspect

import pytest
import torch
from torch import nn

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.decoder import Decoder, Unet
from dalle2_pytorch.init_config import init_argument_docs, init_parameters, lists_as_tuples, register_to_config
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.linear_prior import LinearPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.serialization import PretrainedMixin
from dalle2_pytorch.runs.config_base import ConfigError
from dalle2_pytorch.runs.config_models import (SECTIONS, ClipModelConfig, DecoderModelConfig, PriorModelConfig,
                                                PriorNetworkConfig, UnetConfig, VaeModelConfig)
from dalle2_pytorch.runs.configs import CONFIG_CLASSES, config_from_dict, describe_fields
from dalle2_pytorch.vae.vqgan_vae import VQGanVAE

SAVEABLE = [CLIP, DiffusionPriorNetwork, DiffusionPrior, LinearPrior, Unet, Decoder, VQGanVAE, DALLE2]


# ----------------------------------------------------------------------------- the mechanism
class Toy(PretrainedMixin, nn.Module):
    @register_to_config(convert=lists_as_tuples)
    def __init__(self, width: int, *, depth: int = 2, sizes=(1, 2), doubled: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)
        if doubled:
            self.override_config(width=width * 2)


class ToyChild(Toy):
    @register_to_config
    def __init__(self, *, colour: str = "red") -> None:
        super().__init__(4, depth=3)
        self.colour = colour


def test_the_call_is_recorded_with_defaults_and_conversions():
    toy = Toy(3, sizes=[4, 5])
    assert toy.config == {"width": 3, "depth": 2, "sizes": {"__tuple__": [4, 5]}, "doubled": False}
    assert Toy(3, doubled=True).config["width"] == 6  # the override hook


def test_only_the_outermost_constructor_records():
    assert ToyChild(colour="blue").config == {"colour": "blue"}


class Saved(PretrainedMixin, nn.Module):
    @register_to_config(exclude=("extras",))
    def __init__(self, *, size: int = 2, extras=None) -> None:
        super().__init__()


def test_excluded_arguments_are_not_recorded():
    assert Saved(extras={"kept": "elsewhere"}).config == {"size": 2}
    with pytest.raises(TypeError, match=r"names \['missing'\], not parameters"):
        register_to_config(exclude=("missing",))(Saved.__init__.__wrapped__)


def test_override_outside_a_constructor_is_an_error():
    with pytest.raises(RuntimeError, match="only valid inside an __init__"):
        Toy(3).override_config(width=1)


def test_a_bad_call_raises_the_constructors_own_error():
    with pytest.raises(TypeError, match="width"):
        Toy()


@pytest.mark.parametrize("cls", SAVEABLE, ids=lambda c: c.__name__)
def test_every_saveable_model_records_its_signature(cls):
    assert getattr(cls.__init__, "registers_config", False), f"{cls.__name__}.__init__ lacks @register_to_config"


def test_recorded_configs_hold_every_keyword_and_what_the_decoder_configured():
    unet = Unet(dim=8, dim_mults=[1, 2], num_resnet_blocks=1, attn_heads=1, attn_dim_head=8)
    # layer_attns is recorded as self_attn, and layer_cross_attns / recompute_norm_in_backward / channels_last only
    # when given (configs saved before they existed stay byte-identical)
    assert set(unet.config) == set(init_parameters(Unet)) - {"layer_attns", "layer_cross_attns",
                                                             "recompute_norm_in_backward", "channels_last"}
    assert "layer_cross_attns" in Unet(dim=8, dim_mults=[1, 2], layer_cross_attns=True).config
    assert "recompute_norm_in_backward" in Unet(dim=8, dim_mults=[1, 2], recompute_norm_in_backward=False).config
    assert Unet(dim=8, dim_mults=[1, 2], channels_last=True).config["channels_last"] is True
    assert unet.config["dim_mults"] == {"__tuple__": [1, 2]}
    decoder = Decoder(unet=(unet, Unet(dim=8, dim_mults=(1, 2), num_resnet_blocks=1, attn_heads=1, attn_dim_head=8)),
                      image_sizes=(8, 16), timesteps=20, unconditional=True)
    saved = decoder.config
    assert set(saved) == set(init_parameters(Decoder))
    assert saved["unet"]["__tuple__"][1]["config"]["lowres_cond"] is True  # the configured unet, not the given one
    rebuilt = Decoder.from_config(saved)
    assert rebuilt.config == saved


def test_docstring_arguments_are_read():
    docs = init_argument_docs(Decoder)
    assert docs["p2_loss_weight_gamma"].startswith("P2 loss weighting")
    assert docs["image_cond_drop_prob"] == docs["text_cond_drop_prob"]
    assert "base width" in init_argument_docs(Unet)["dim"]


# ----------------------------------------------------------------------------- the config sections
@pytest.mark.parametrize("section, cls", [(ClipModelConfig, CLIP), (PriorNetworkConfig, DiffusionPriorNetwork),
                                          (PriorModelConfig, DiffusionPrior), (UnetConfig, Unet),
                                          (DecoderModelConfig, Decoder), (VaeModelConfig, VQGanVAE)],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_a_section_is_exactly_the_constructors_keywords_with_its_defaults(section, cls):
    parameters = init_parameters(cls)
    assert list(section.model_fields) == list(parameters)
    for name, parameter in parameters.items():
        field = section.model_fields[name]
        if name in ("vae",):  # JSON-side: a list with one entry per unet
            assert field.get_default(call_default_factory=True) == list(parameter.default)
        elif name not in ("clip",) and parameter.default is not inspect.Parameter.empty:
            assert field.get_default() == parameter.default, name
        elif parameter.default is inspect.Parameter.empty:
            assert field.is_required(), name


@pytest.mark.parametrize("kind", sorted(CONFIG_CLASSES))
def test_config_show_lists_every_keyword(kind):
    text = "\n".join(describe_fields(CONFIG_CLASSES[kind]))
    classes = {"clip": [CLIP], "prior": [DiffusionPrior, DiffusionPriorNetwork], "decoder": [Decoder, Unet, VQGanVAE],
               "vae": [VQGanVAE]}[kind]
    for cls in classes:
        for name in init_parameters(cls):
            assert f" {name}:" in text, f"{cls.__name__}.{name} missing from `config show --kind {kind}`"
    assert SECTIONS[kind] is CONFIG_CLASSES[kind].model_fields["model"].annotation


def decoder_config(**model):
    return config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1,
                            "attn_dim_head": 8}] * 2,
                  "image_sizes": [8, 16], "timesteps": 20, "unconditional": True, **model},
        "data": {"source": "toy"}})


def test_decoder_keywords_missing_before_reach_the_model():
    decoder = decoder_config(use_dynamic_thres=True, p2_loss_weight_gamma=[0.5, 1.0],
                             use_noise_for_lowres_cond=True).model.create()
    assert decoder.options.use_dynamic_thres
    assert [s.p2_loss_weight_gamma for s in decoder.stage_settings] == [0.5, 1.0]
    assert decoder.stage_settings[1].use_noise_for_lowres_cond
    unet = config_from_dict({"kind": "decoder", "data": {"source": "toy"}, "model": {
        "unet": [{"dim": 8, "dim_mults": [1, 2], "sparse_attn": True, "num_resnet_blocks": 1}], "image_sizes": [8],
        "unconditional": True}}).model.unet[0].create()
    assert unet.config["sparse_attn"] is True


def test_values_are_checked_by_the_constructor():
    config = config_from_dict({"kind": "decoder", "data": {"source": "toy"}, "model": {
        "unet": [{"dim": 7}], "image_sizes": [8], "unconditional": True}})
    with pytest.raises(ValueError, match="dim must be even"):
        config.model.create()
    with pytest.raises(ConfigError, match="model.unet.0.dim: Input should be a valid integer"):
        config_from_dict({"kind": "decoder", "data": {"source": "toy"},
                          "model": {"unet": [{"dim": "wide"}], "unconditional": True}})


def test_a_decoder_config_builds_latent_diffusion_with_a_saved_or_described_vae(tmp_path):
    vae_keywords = {"dim": 8, "image_size": 16, "layers": 1, "vq_codebook_dim": 4, "vq_codebook_size": 16,
                    "use_vgg_and_gan": False, "attn_heads": 1, "attn_dim_head": 8}
    torch.manual_seed(0)
    VQGanVAE(**vae_keywords).save_pretrained(tmp_path / "vae")
    for entry in (str(tmp_path / "vae"), vae_keywords):
        decoder = decoder_config(vae=[entry]).model.create()
        assert isinstance(decoder.vaes[0], VQGanVAE) and decoder.unets[0].channels != 3  # latent channels
    with pytest.raises(ValueError, match=r"model.vae.0=.*holds no saved VQGanVAE"):
        decoder_config(vae=[str(tmp_path / "nothing")]).model.create()
