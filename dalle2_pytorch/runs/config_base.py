"""Base of every training config: strict pydantic models, file loading, and errors that name the field."""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message names the file, each bad field and what was wrong."""


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types are errors (``extra='forbid'``, strict assignment)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def section_types(annotation: Any) -> list[type[StrictModel]]:
    """The config sections an annotation may hold (through Optional, Union and list)."""
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return [annotation]
    return [found for arg in typing.get_args(annotation) for found in section_types(arg)]


def _names_at(root: type[StrictModel] | None, path: tuple) -> list[str]:
    """Every field name the section(s) at ``path`` accept (list indices and union tags are stepped over)."""
    if root is None:
        return []
    sections = [root]
    for part in path:
        if isinstance(part, int):
            continue
        found = [s.model_fields[part] for s in sections if part in s.model_fields]
        if found:
            sections = [t for field in found for t in section_types(field.annotation)]
        else:  # a union's tag (e.g. 'toy' in data.toy.colour): keep the sections that have that tag
            tagged = [s for s in sections if any(f.default == part for f in s.model_fields.values())]
            sections = tagged or sections
    return sorted({name for s in sections for name in s.model_fields})


def describe_validation_error(error: ValidationError, source: str, root: type[StrictModel] | None = None) -> str:
    """One line naming each bad field; an unknown field also gets the close names the section accepts."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (not allowed here)"
            close = difflib.get_close_matches(str(item["loc"][-1]), _names_at(root, item["loc"][:-1]), n=3)
            if close:
                message += f"; did you mean {' or '.join(map(repr, close))}?"
        got = item.get("input")
        shown = "" if item["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{field}: {message}{shown}")
    plural = "s" if len(lines) > 1 else ""
    return f"{source}: invalid config, {len(lines)} error{plural}: " + "; ".join(lines)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A dict from a .json, .toml or .yaml/.yml file (YAML needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as error:
                raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use .json/.toml") \
                    from error
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .json, .toml or .yaml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def validate_config(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source, cls)) from None


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    return validate_config(cls, read_config_file(path), str(path))
