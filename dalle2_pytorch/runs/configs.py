"""Training configs: one per model kind, each with the sections model, data, trainer, evaluation, tracker and
checkpointing.  ``load_train_config(kind, path)`` reads and validates a file (JSON, TOML or YAML)."""

from __future__ import annotations

import os
import re
import typing
from typing import Any, Union

from pydantic import Field

from dalle2_pytorch.runs.config_base import ConfigError, StrictModel, load_config, section_types, validate_config
from dalle2_pytorch.runs.config_models import ClipModelConfig, DecoderModelConfig, PriorModelConfig, VaeModelConfig
from dalle2_pytorch.runs.config_sections import (CheckpointSection, ClipRetrievalData, EvaluationSection,
                                                  ImageFolderData, ToyData, TrackerSection, TrainerSection,
                                                  WebdatasetData)


class _RunConfig(StrictModel):
    kind: str
    trainer: TrainerSection = TrainerSection()
    evaluation: EvaluationSection = EvaluationSection()
    tracker: TrackerSection = TrackerSection()
    checkpointing: CheckpointSection = CheckpointSection()


class ClipTrainConfig(_RunConfig):
    kind: str = Field("clip", pattern="^clip$")
    model: ClipModelConfig
    data: Union[ToyData, ImageFolderData, WebdatasetData] = Field(discriminator="source")


class PriorTrainConfig(_RunConfig):
    kind: str = Field("prior", pattern="^prior$")
    model: PriorModelConfig
    data: Union[ClipRetrievalData, ToyData, ImageFolderData] = Field(discriminator="source")


class DecoderTrainConfig(_RunConfig):
    kind: str = Field("decoder", pattern="^decoder$")
    model: DecoderModelConfig
    data: Union[ToyData, ImageFolderData, WebdatasetData] = Field(discriminator="source")


class VaeTrainConfig(_RunConfig):
    kind: str = Field("vae", pattern="^vae$")
    model: VaeModelConfig
    data: Union[ToyData, ImageFolderData, WebdatasetData] = Field(discriminator="source")


CONFIG_CLASSES: dict[str, type[_RunConfig]] = {
    "clip": ClipTrainConfig, "prior": PriorTrainConfig, "decoder": DecoderTrainConfig, "vae": VaeTrainConfig}
TrainConfig = Union[ClipTrainConfig, PriorTrainConfig, DecoderTrainConfig, VaeTrainConfig]


def config_class(kind: str) -> type[_RunConfig]:
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"kind={kind!r}: choose one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[kind]


def load_train_config(path: str | os.PathLike, kind: str | None = None) -> TrainConfig:
    """Read ``path``; its ``kind`` key picks the config class (and must equal ``kind`` when that is given)."""
    from dalle2_pytorch.runs.config_base import read_config_file

    data = read_config_file(path)
    found = data.get("kind")
    if found is None:
        raise ConfigError(f"{path}: kind: missing (one of {sorted(CONFIG_CLASSES)})")
    if kind is not None and found != kind:
        raise ConfigError(f"{path}: kind is {found!r} but this command trains a {kind!r}")
    return validate_config(config_class(found), data, str(path))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return validate_config(config_class(data.get("kind", "")), data)


SECTION_ORDER = ("kind", "model", "data", "trainer", "evaluation", "tracker", "checkpointing")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|pydantic|dalle2_pytorch)\.[\w.]*?(\w+)\b", r"\2", repr(annotation)).replace("NoneType", "None")


def describe_fields(model: type[StrictModel], prefix: str = "") -> list[str]:
    """Lines ``field: type = default  # description`` (nested sections indented) for ``dalle2 config show``."""
    lines = []
    names = sorted(model.model_fields, key=lambda n: SECTION_ORDER.index(n) if n in SECTION_ORDER else len(SECTION_ORDER))
    for name in names:
        field = model.model_fields[name]
        nested = section_types(field.annotation)
        if nested:
            for option in nested:
                doc = (option.__doc__ or "").strip().splitlines()
                choice = " (one of these)" if len(nested) > 1 else \
                    " (a list of these)" if typing.get_origin(field.annotation) is list else ""
                about = field.description or (doc[0] if doc else option.__name__)
                lines.append(f"{prefix}{name}:{choice}  # {about}")
                lines.extend(describe_fields(option, prefix + "  "))
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        comment = f"  # {field.description}" if field.description else ""
        lines.append(f"{prefix}{name}: {_type_name(field.annotation)} = {default}{comment}")
    return lines


__all__ = ["ClipTrainConfig", "PriorTrainConfig", "DecoderTrainConfig", "VaeTrainConfig", "TrainConfig",
           "CONFIG_CLASSES", "config_class", "load_train_config", "config_from_dict", "describe_fields",
           "load_config", "ConfigError"]
