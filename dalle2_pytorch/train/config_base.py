"""Base of every training config: strict pydantic models, file loading, and errors that name the field."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message names the file, each bad field and what was wrong."""


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types are errors (``extra='forbid'``, strict assignment)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def describe_validation_error(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown field (not allowed here)" if item["type"] == "extra_forbidden" else item["msg"]
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
        raise ConfigError(describe_validation_error(error, source)) from None


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    return validate_config(cls, read_config_file(path), str(path))
