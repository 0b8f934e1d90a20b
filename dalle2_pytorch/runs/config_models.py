"""The ``model`` section of each training config: exactly the keyword arguments of the model's constructor.

Nothing here restates a keyword: each section is derived from a constructor's signature
(:func:`keyword_section`), with its defaults and, for ``dalle2 config show``, the descriptions of its docstring.
Values are checked for their JSON type here and for everything else by the constructor itself when ``create()``
builds the model.  Only what a JSON file cannot hold is spelled differently: a CLIP is named by a
:class:`ClipSource`, nested models by their own keyword sections, and a decoder's VAE per unet by a checkpoint folder
or VQGanVAE keywords.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, create_model

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.init_config import init_argument_docs, init_parameters
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.runs.config_base import StrictModel
from dalle2_pytorch.vae.vqgan_vae import VQGanVAE

_JSON_SCALARS = (int, float, bool, str, type(None))


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls.__init__`` (an annotation that does not resolve counts as Any)."""
    function = inspect.unwrap(cls.__init__)
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - a name only imported for type checking: resolve one by one
        hints = {}
        for name, annotation in function.__annotations__.items():
            try:
                hints[name] = eval(annotation, function.__globals__) if isinstance(annotation, str) else annotation
            except Exception:  # noqa: BLE001
                hints[name] = Any
        return hints


def json_type(hint: Any) -> Any:
    """The JSON-side type of a constructor annotation: scalars, lists and unions of them; anything else is Any
    (the constructor checks it)."""
    if hint in _JSON_SCALARS or hint is None:
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return hint
    if origin in (Union, types.UnionType):
        mapped = [json_type(a) for a in args]
        return Any if Any in mapped else Union[tuple(mapped)]
    if origin in (list, tuple, collections.abc.Sequence) and args:
        inner = [a for a in args if a is not Ellipsis]
        item = json_type(inner[0]) if len(set(inner)) == 1 else Any
        return collections.abc.Sequence[item]  # JSON lists; tuple defaults stay as they are
    return Any


class ModelSection(StrictModel):
    """A model section: the constructor's keywords; ``create()`` builds the model."""

    target: ClassVar[type]

    def keywords(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The constructor's keyword arguments (nested sections built into models)."""
        return {name: _build(getattr(self, name)) for name in type(self).model_fields if name not in exclude}

    def create(self):
        return self.target(**self.keywords())


def _build(value: Any) -> Any:
    if isinstance(value, (ModelSection, ClipSource)):
        return value.create()
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def keyword_section(cls: type, *, special: Optional[dict[str, tuple[Any, Any]]] = None) -> type[ModelSection]:
    """A :class:`ModelSection` with one field per keyword of ``cls.__init__`` (same name, default, docstring).

    ``special`` gives (type, pydantic Field) for the keywords whose JSON form is not their Python value."""
    special = special or {}
    hints, docs = _hints(cls), init_argument_docs(cls)
    fields: dict[str, Any] = {}
    for name, parameter in init_parameters(cls).items():
        if name in special:
            fields[name] = special[name]
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (json_type(hints.get(name, Any)), Field(default, description=docs.get(name)))
    section = create_model(f"{cls.__name__}Keywords", __base__=ModelSection, **fields)
    section.target = cls
    return section


class ClipSource(StrictModel):
    """Which frozen CLIP embeds text and images for a prior or decoder."""

    kind: Literal["builtin", "openai", "open_clip", "hf"] = Field(
        "builtin", description="builtin: a CLIP trained with `dalle2 train clip` (path = its checkpoint folder)")
    path: Optional[str] = Field(None, description="builtin only: folder written by save_pretrained")
    name: Optional[str] = Field(None, description="openai/open_clip/hf: model name, e.g. ViT-B/32")
    pretrained: Optional[str] = Field(None, description="open_clip only: pretrained tag, e.g. laion400m_e32")

    def create(self):
        from dalle2_pytorch.clip import adapters

        if self.kind == "builtin":
            if not self.path:
                raise ValueError("model.clip.path is required with kind='builtin' (a folder from `dalle2 train clip`)")
            if not (Path(self.path) / "config.json").is_file():
                raise ValueError(f"model.clip.path={self.path!r} holds no saved CLIP (config.json missing)")
            return adapters.BuiltinClipAdapter(CLIP.from_pretrained(self.path))
        if self.kind == "openai":
            return adapters.OpenAIClipAdapter(self.name or "ViT-B/32")
        if self.kind == "open_clip":
            return adapters.OpenClipAdapter(self.name or "ViT-B/32", self.pretrained or "laion400m_e32")
        return adapters.HFClipAdapter(self.name or "openai/clip-vit-base-patch32")


_CLIP_FIELD = (Optional[ClipSource], Field(None, description="a CLIP to embed raw text/images (optional with "
                                                             "precomputed embeddings)"))


class ClipModelConfig(keyword_section(CLIP)):
    """A trainable CLIP: the keywords of :class:`dalle2_pytorch.CLIP`."""


class VaeModelConfig(keyword_section(VQGanVAE)):
    """A VQGAN-VAE (latent diffusion's autoencoder): the keywords of :class:`dalle2_pytorch.VQGanVAE`."""


class PriorNetworkConfig(keyword_section(DiffusionPriorNetwork)):
    """The prior's network: the keywords of :class:`DiffusionPriorNetwork`."""


class PriorModelConfig(keyword_section(DiffusionPrior, special={
        "net": (PriorNetworkConfig, Field(description="the DiffusionPriorNetwork's keywords")),
        "clip": _CLIP_FIELD})):
    """A :class:`DiffusionPrior`: its keywords, with ``net`` the network's keywords."""


class UnetConfig(keyword_section(Unet)):
    """One unet of the decoder cascade: the keywords of :class:`dalle2_pytorch.Unet`."""


def _vae_from_entry(entry: Union[VaeModelConfig, str, None], index: int):
    if entry is None or isinstance(entry, VaeModelConfig):
        return None if entry is None else entry.create()
    if not (Path(entry) / "config.json").is_file():
        raise ValueError(f"model.vae.{index}={entry!r} holds no saved VQGanVAE (config.json missing): give a folder "
                         "written by save_pretrained (e.g. <run>/latest/model of `dalle2 train vae`)")
    return VQGanVAE.from_pretrained(entry).eval()


class DecoderModelConfig(keyword_section(Decoder, special={
        "unet": (list[UnetConfig], Field(min_length=1, description="one Unet's keywords per unet, lowest first")),
        "clip": _CLIP_FIELD,
        "vae": (list[Union[VaeModelConfig, str, None]], Field(
            default_factory=list, description="per unet, from the first: null (pixels), a VQGanVAE checkpoint "
                                              "folder (save_pretrained), or VQGanVAE keywords"))})):
    """A :class:`Decoder` cascade: its keywords, with ``unet`` a list of Unet keywords (one per unet)."""

    def create(self):
        keywords = self.keywords(exclude=("vae",))
        keywords["vae"] = tuple(_vae_from_entry(entry, i) for i, entry in enumerate(self.vae))
        keywords["unet"] = tuple(keywords["unet"])
        return Decoder(**keywords)


SECTIONS: dict[str, type[ModelSection]] = {
    "clip": ClipModelConfig, "prior": PriorModelConfig, "decoder": DecoderModelConfig, "vae": VaeModelConfig}
