"""The on-disk layouts of a DALLE2 pipeline and its default sampling settings (used by :mod:`dalle2_pytorch.dalle2`).

The layout :meth:`DALLE2.save_pretrained` writes (the diffusers ``model_index.json`` idea)::

    <dir>/pipeline.json        class, format version, component folders, prior_num_samples, sampling defaults
    <dir>/prior/               DiffusionPrior.save_pretrained (config.json + model.safetensors, its CLIP inside)
    <dir>/decoder/             Decoder.save_pretrained        (config.json + model.safetensors, its CLIP inside)

Two older layouts still load: a folder written by the first ``DALLE2.save_pretrained`` (one ``config.json`` naming
``DALLE2`` + ``model.safetensors``) and the ``dalle2 demo`` output (``clip/``, ``prior/``, ``decoder/`` and a
``sampling.json`` with the sampling settings, which maps onto :class:`SamplingDefaults`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from dalle2_pytorch.diffusion.samplers import resolve_sampler
from dalle2_pytorch.serialization import CONFIG_NAME, FORMAT_VERSION, load_json
from dalle2_pytorch.validation import strict_keywords

PIPELINE_FILE = "pipeline.json"
LEGACY_SAMPLING_FILE = "sampling.json"  # the settings the demo wrote beside prior/ and decoder/ before pipeline.json
COMPONENTS = ("prior", "decoder")  # each is a subfolder of the same name
SAMPLING_KEYS = ("sampler", "steps", "cond_scale")  # of each section of the sampling dict


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_one(kind: str, value: Any, name: Optional[str] = None) -> Any:
    """One ``kind`` (sampler, steps or cond_scale) value, checked; samplers come back under their canonical name.
    ``name`` labels it in messages (default ``kind``)."""
    name = name or kind
    if kind.endswith("sampler"):
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{name}={value!r}: expected a sampler name or None")
        try:
            return resolve_sampler(value)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    if kind.endswith("steps"):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r}: expected a positive int or None (the model's own default)")
        return value
    if not _is_number(value):
        raise ValueError(f"{name}={value!r}: expected a finite number (1 = no guidance)")
    return float(value)


@dataclass(frozen=True)
class SamplingDefaults:
    """The settings :class:`~dalle2_pytorch.dalle2.DALLE2` uses where a call leaves them out.

    The names are ``DALLE2.__call__``'s keywords.  ``prior_*`` configure the prior; ``sampler``, ``steps`` and
    ``cond_scale`` the decoder, each one value or a tuple with one entry per unet.  ``None`` sampler/steps mean the
    model's own default (full DDPM, or DDIM over ``sample_timesteps``); a ``cond_scale`` of 1 means no guidance.
    On disk (``pipeline.json``'s ``"sampling"``, and the demo's old ``sampling.json``) they are
    ``{"prior": {"sampler", "steps", "cond_scale"}, "decoder": {"sampler", "steps", "cond_scale"}}``.
    """

    prior_sampler: Optional[str] = None
    prior_steps: Optional[int] = None
    prior_cond_scale: float = 1.0
    sampler: Union[None, str, tuple] = None
    steps: Union[None, int, tuple] = None
    cond_scale: Union[float, tuple] = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            name = field.name
            value = getattr(self, name)
            if not name.startswith("prior_") and isinstance(value, (list, tuple)):
                if not value:
                    raise ValueError(f"{name}=(): give one value, or one per unet")
                value = tuple(_check_one(name, v, f"{name}[{i}]") for i, v in enumerate(value))
            else:
                value = _check_one(name, value)
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> "SamplingDefaults":
        """A copy with ``changes`` (the same keyword names), checked again."""
        return dataclasses.replace(self, **changes)

    def resolve(self, **given: Any) -> dict[str, Any]:
        """Every setting: the ``given`` value where it is not None, else this default."""
        unknown = set(given) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown sampling settings {sorted(unknown)}")
        return {field.name: getattr(self, field.name) if given.get(field.name) is None else given[field.name]
                for field in dataclasses.fields(self)}

    def per_unet(self, name: str, num_unets: int) -> list:
        """The decoder setting ``name`` (``sampler``, ``steps`` or ``cond_scale``) as a list of ``num_unets``."""
        value = getattr(self, name)
        return list(value) if isinstance(value, tuple) else [value] * num_unets

    def with_first_unet_guidance(self, cond_scale: float, num_unets: int) -> list:
        """The decoder's guidance scales with the first unet's set to ``cond_scale``; upsamplers keep theirs."""
        scales = self.per_unet("cond_scale", num_unets)
        scales[0] = _check_one("cond_scale", cond_scale)
        return scales

    @classmethod
    def for_models(cls, value: Any, prior: Any, decoder: Any) -> "SamplingDefaults":
        """``value`` (a SamplingDefaults or its dict form) checked against this prior and decoder: what a pipeline's
        ``sampling_defaults`` setter stores."""
        if isinstance(value, Mapping):
            value = cls.from_dict(value)
        if not isinstance(value, cls):
            raise TypeError(f"sampling defaults must be a SamplingDefaults or its dict form, got {type(value).__name__}")
        value.check_for(prior, decoder)
        return value

    def check_for(self, prior: Any, decoder: Any) -> None:
        """Raise if a value does not fit this prior and decoder (one entry per unet; guidance they can do)."""
        for name in ("sampler", "steps", "cond_scale"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != decoder.num_unets:
                raise ValueError(f"{name}={value!r} has {len(value)} entries; the decoder has {decoder.num_unets} "
                                 "unets (give one value, or one per unet)")
        if any(s != 1 for s in self.per_unet("cond_scale", decoder.num_unets)) and not decoder.can_classifier_guidance:
            raise ValueError(f"cond_scale={self.cond_scale!r}: this decoder was trained without classifier-free "
                             "guidance (no condition dropout), so its default must be 1")
        if self.prior_cond_scale != 1 and not prior.can_classifier_guidance:
            raise ValueError(f"prior_cond_scale={self.prior_cond_scale!r}: this prior was trained without "
                             "classifier-free guidance (no condition dropout), so its default must be 1")

    def without_unusable_guidance(self, prior: Any, decoder: Any) -> "SamplingDefaults":
        """Guidance scales set to 1 where the model cannot guide (how the old sampling.json readers used them)."""
        changes: dict[str, Any] = {}
        if not decoder.can_classifier_guidance:
            changes["cond_scale"] = 1.0
        if not prior.can_classifier_guidance:
            changes["prior_cond_scale"] = 1.0
        return self.replace(**changes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The JSON form: ``{"prior": {...}, "decoder": {...}}`` (tuples as lists)."""
        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {"prior": {key: plain(getattr(self, f"prior_{key}")) for key in SAMPLING_KEYS},
                "decoder": {key: plain(getattr(self, key)) for key in SAMPLING_KEYS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "sampling") -> "SamplingDefaults":
        """Read the JSON form (missing keys keep their defaults); ``source`` names it in error messages."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected an object with 'prior' and 'decoder' sections, got "
                             f"{type(data).__name__}")
        unknown = set(data) - {"prior", "decoder"}
        if unknown:
            raise ValueError(f"{source}: unknown sections {sorted(unknown)}; expected 'prior' and 'decoder'")
        kwargs: dict[str, Any] = {}
        for section, prefix in (("prior", "prior_"), ("decoder", "")):
            values = data.get(section, {})
            if not isinstance(values, Mapping):
                raise ValueError(f"{source}.{section}: expected an object with keys {list(SAMPLING_KEYS)}")
            unknown = set(values) - set(SAMPLING_KEYS)
            if unknown:
                raise ValueError(f"{source}.{section}: unknown keys {sorted(unknown)}; expected {list(SAMPLING_KEYS)}")
            kwargs.update({prefix + key: value for key, value in values.items()})
        try:
            return cls(**kwargs)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None


# a misspelt setting names the accepted ones (the dataclass's own __init__ would only say "unexpected keyword")
SamplingDefaults.__init__ = strict_keywords()(SamplingDefaults.__init__)  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- layouts
def _describe(directory: Path) -> str:
    if directory.is_file():
        return "it is a file; give the folder that holds it"
    if not directory.is_dir():
        return "it does not exist"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    return f"it holds {entries[:12]}" if entries else "it is empty"


def is_diffusers_unclip(directory: Path) -> bool:
    """Whether ``directory`` is a diffusers unCLIP pipeline folder (Karlo's layout: ``model_index.json`` naming
    ``UnCLIPPipeline``), which :meth:`DALLE2.from_pretrained` loads as a ``dalle2_pytorch.karlo.KarloPipeline``."""
    index = Path(directory) / "model_index.json"
    return index.is_file() and load_json(index).get("_class_name") == "UnCLIPPipeline"


def find_layout(directory: Path) -> str:
    """``"pipeline"`` (pipeline.json), ``"config"`` (an old DALLE2 config.json) or ``"components"`` (the demo's
    prior/ + decoder/); a FileNotFoundError that lists what was expected otherwise."""
    if (directory / PIPELINE_FILE).is_file():
        return "pipeline"
    config = directory / CONFIG_NAME
    saved_class = str(load_json(config).get("class", "")) if config.is_file() else ""
    if saved_class.endswith(":DALLE2"):
        return "config"
    if all((directory / part / CONFIG_NAME).is_file() for part in COMPONENTS):
        return "components"
    found = f"it holds a saved {saved_class.rpartition(':')[2]} (config.json), not a pipeline" if saved_class \
        else _describe(directory)
    raise FileNotFoundError(
        f"{directory} is not a saved DALLE2 pipeline ({found}). Expected one of: {PIPELINE_FILE} with prior/ and "
        f"decoder/ (DALLE2.save_pretrained); config.json + model.safetensors naming DALLE2 (an older "
        f"DALLE2.save_pretrained); prior/config.json and decoder/config.json, optionally with {LEGACY_SAMPLING_FILE} "
        "(what `dalle2 demo` wrote, e.g. outputs/checkpoints); a diffusers unCLIP folder (model_index.json "
        "naming UnCLIPPipeline, e.g. Karlo)")


def read_pipeline_file(directory: Path) -> dict[str, Any]:
    """``pipeline.json``, checked: its format version, component classes and sampling defaults."""
    path = directory / PIPELINE_FILE
    spec = load_json(path)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {spec.get('format_version')!r}; this library reads "
                         f"{FORMAT_VERSION}")
    components = spec.get("components")
    if not isinstance(components, dict) or set(components) != set(COMPONENTS):
        raise ValueError(f"{path}: 'components' must name the classes of {list(COMPONENTS)}, got {components!r}")
    missing = [part for part in COMPONENTS if not (directory / part / CONFIG_NAME).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} names components {missing} but {[f'{p}/{CONFIG_NAME}' for p in missing]} "
                                f"is missing: was the folder copied only in part?")
    return {"components": components, "prior_num_samples": spec.get("prior_num_samples", 2),
            "decoder_num_samples": spec.get("decoder_num_samples", 1), "return_best": spec.get("return_best", True),
            "sampling": SamplingDefaults.from_dict(spec.get("sampling", {}), source=f"{path} 'sampling'")}


def read_legacy_sampling(directory: Path) -> Optional[SamplingDefaults]:
    """The demo's ``sampling.json`` beside an older layout, as :class:`SamplingDefaults` (None if absent)."""
    path = directory / LEGACY_SAMPLING_FILE
    return SamplingDefaults.from_dict(load_json(path), source=str(path)) if path.is_file() else None


def pipeline_file_contents(components: Mapping[str, str], prior_num_samples: int,
                           sampling: SamplingDefaults, *, decoder_num_samples: int = 1,
                           return_best: bool = True) -> dict[str, Any]:
    """What ``pipeline.json`` holds (``components``: folder name -> ``module:Class`` of what it holds).

    ``decoder_num_samples`` and ``return_best`` are written only when they differ from their defaults (1, True),
    so the file of a pipeline that does not use them is what it always was."""
    from dalle2_pytorch import __version__

    contents = {"class": "dalle2_pytorch.dalle2:DALLE2", "format_version": FORMAT_VERSION,
                "library_version": __version__, "components": dict(components),
                "prior_num_samples": prior_num_samples, "sampling": sampling.to_dict()}
    if decoder_num_samples != 1:
        contents["decoder_num_samples"] = decoder_num_samples
    if not return_best:
        contents["return_best"] = False
    return contents
