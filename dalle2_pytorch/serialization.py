"""Safe, atomic persistence: JSON configs beside safetensors weights.

Every model that a checkpoint must rebuild mixes in :class:`PretrainedMixin` and decorates its
``__init__`` with :func:`register_to_config` (from :mod:`dalle2_pytorch.init_config`), which records the
arguments of the call with the signature's defaults filled in; ``save_pretrained(dir)`` writes ``config.json`` (the class, the format version and those
arguments, with nested models written as nested configs) and ``model.safetensors`` (the
state dict).  ``from_pretrained(dir)`` rebuilds the object from the config and loads the
weights.  Nothing is ever unpickled, and every file is written to a temporary name,
fsynced and renamed, so a process killed mid-save leaves the previous file intact.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dalle2_pytorch.atomic import atomic_write_bytes, atomic_write_with
from dalle2_pytorch.errors import BadFileError, loading_state_dict, reading
from dalle2_pytorch.hub import loading_checkpoint, resolve_pretrained
from dalle2_pytorch.init_config import override_config, register_to_config

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_PACKAGE = "dalle2_pytorch"
MAX_PARAMETERS_ENV = "DALLE2_MAX_PARAMETERS"
DEFAULT_MAX_PARAMETERS = 4_000_000_000
"""The most parameters :meth:`PretrainedMixin.from_pretrained` builds unless told otherwise: twice the largest
published DALL-E 2 checkpoint, far below what a crafted ``config.json`` (``dim: 65536, depth: 64``) asks for."""


# ----------------------------------------------------------------------------- atomic files
# The atomic writes live in dalle2_pytorch.atomic (files and folders); re-exported here for existing importers.


def save_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; a truncated or corrupt file is a :class:`~dalle2_pytorch.errors.BadFileError` naming it."""
    with reading(path, "JSON file"):
        try:
            with open(path, "r", encoding="utf-8") as handle:
                return json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadFileError(f"{path}: not valid JSON ({error}); re-create the file (it may be truncated)") \
                from error


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically write a flat dict of tensors as safetensors (shared storage is cloned apart)."""
    path = Path(path)
    seen: dict[tuple[int, int], str] = {}
    flat = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or not tensor.is_contiguous():
            tensor = tensor.clone().contiguous()
        seen[key] = name
        flat[name] = tensor
    atomic_write_with(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a truncated or corrupt file is a ``BadFileError`` naming it."""
    with reading(path, "safetensors file"):
        return load_file(str(path), device=str(device))


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` file without running pickle code (``weights_only=True``)."""
    with reading(path, "checkpoint"):
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return obj


# ----------------------------------------------------------------------------- optimiser state
def flatten_optimizer_state(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


# ----------------------------------------------------------------------------- configs
def _encode(value: Any) -> Any:
    if isinstance(value, PretrainedMixin):
        return {"__model__": _class_path(type(value)), "config": value.config}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(v) for v in value]
        return {"__tuple__": encoded} if isinstance(value, tuple) else encoded
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.nn.Module):
        raise TypeError(
            f"cannot save a config holding a {type(value).__name__}: it is not a dalle2_pytorch model "
            "with save_pretrained; wrap it in an adapter of dalle2_pytorch.clip.adapters or save it yourself")
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} into a JSON config")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__model__" in value:
            cls = resolve_class(value["__model__"])
            return cls.from_config(value["config"])
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _class_path(cls: type) -> str:
    """``module:Class`` of ``cls``; for a module FSDP sharded in place (its class swapped for a generated
    ``FSDP<Class>`` subclass), the original class, so that a config written under FSDP rebuilds in one process."""
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FSDPModule

        if issubclass(cls, FSDPModule):
            cls = next(base for base in cls.__mro__[1:] if not issubclass(base, FSDPModule))
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str) -> type:
    """Import ``module:Class``; only classes inside this package may be named by a config."""
    module_name, _, qualname = path.partition(":")
    if not (module_name == _PACKAGE or module_name.startswith(_PACKAGE + ".")):
        raise ValueError(f"config names class {path!r} outside {_PACKAGE}; refusing to import it")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, PretrainedMixin)):
        raise ValueError(f"{path!r} is not a saveable dalle2_pytorch model")
    return obj


def check_config_size(cls: type, config: dict[str, Any], source: str | os.PathLike,
                      max_parameters: int | None = None) -> int:
    """The parameter count of ``cls.from_config(config)``, counted on the meta device (nothing allocated); a
    :class:`~dalle2_pytorch.errors.BadFileError` when it exceeds ``max_parameters`` (default: the environment
    variable ``DALLE2_MAX_PARAMETERS``, else :data:`DEFAULT_MAX_PARAMETERS`)."""
    if max_parameters is None:
        setting = os.environ.get(MAX_PARAMETERS_ENV, str(DEFAULT_MAX_PARAMETERS))
        if not setting.isdigit():
            raise ValueError(f"{MAX_PARAMETERS_ENV}={setting!r}: expected a whole number of parameters")
        max_parameters = int(setting)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        empty = cls.from_config(config)
    count = sum(parameter.numel() for parameter in empty.parameters())
    if count > max_parameters:
        raise BadFileError(
            f"{source}: describes a {cls.__name__} of {count:,} parameters ({count * 4 / 2 ** 30:.1f} GiB in "
            f"float32), more than the {max_parameters:,} allowed; refusing to allocate it. If the file is what you "
            f"meant, pass max_parameters= or set {MAX_PARAMETERS_ENV}")
    return count


def save_pretrained_state(model: "PretrainedMixin", state: dict[str, torch.Tensor],
                          directory: str | os.PathLike) -> Path:
    """``model.save_pretrained(directory)`` with ``state`` as its weights (e.g. gathered from FSDP shards)."""
    directory = Path(directory)
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"refusing to save non-finite weights (first: {bad[0]}); the model has diverged")
    save_tensors(state, directory / WEIGHTS_NAME, metadata={"format_version": str(FORMAT_VERSION)})
    from dalle2_pytorch import __version__

    save_json({"class": _class_path(type(model)), "format_version": FORMAT_VERSION,
               "library_version": __version__, "config": model.config}, directory / CONFIG_NAME)
    return directory


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for an ``nn.Module`` built from keyword arguments.

    Decorate ``__init__`` with ``@register_to_config``: the arguments of the call (nested models are fine)
    are what rebuilds the object; ``self.override_config(name=value)`` inside ``__init__`` replaces one.
    The weights are the module's ``state_dict``.
    """

    _config: dict[str, Any]

    def override_config(self, **values: Any) -> None:
        """Inside a ``@register_to_config`` constructor: record ``values`` instead of the arguments given."""
        override_config(self, **values)

    @property
    def config(self) -> dict[str, Any]:
        if "_config" not in self.__dict__:
            raise TypeError(f"{type(self).__name__} recorded no config: decorate its __init__ with "
                            "@register_to_config")
        return {key: _encode(value) for key, value in self._config.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        kwargs = {key: _decode(value) for key, value in config.items()}
        return cls(**kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        return save_pretrained_state(self, self.state_dict(), directory)  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                        strict: bool = True, *, revision: str | None = None, allow_download: bool | None = None,
                        max_parameters: int | None = None):
        """Rebuild a model saved by :meth:`save_pretrained`, from a folder or a Hugging Face Hub id
        (:func:`dalle2_pytorch.hub.resolve_pretrained`; ``revision`` as there).

        Models the config names (CLIP adapters) are built without downloading unless ``allow_download``
        (see :func:`dalle2_pytorch.hub.loading_checkpoint`); the saved weights replace theirs.  The config is built
        on the meta device first, and refused when it describes more than ``max_parameters`` parameters (see
        :func:`check_config_size`), so a corrupt or crafted file cannot exhaust memory."""
        directory = resolve_pretrained(directory, revision)
        with loading_checkpoint(allow_download):
            return cls._from_local_folder(directory, map_location, strict, max_parameters)

    @classmethod
    def _from_local_folder(cls, directory: Path, map_location: str | torch.device, strict: bool,
                           max_parameters: int | None = None):
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: is {directory} a folder written by save_pretrained?")
        meta = load_json(config_path)
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{config_path} has format_version {version!r}; this library reads {FORMAT_VERSION}")
        saved_cls = resolve_class(meta["class"])
        if not issubclass(saved_cls, cls):
            raise TypeError(f"{directory} holds a {saved_cls.__name__}, not a {cls.__name__}")
        check_config_size(saved_cls, meta["config"], config_path, max_parameters)
        model = saved_cls.from_config(meta["config"])
        state = load_tensors(directory / WEIGHTS_NAME, device=map_location)
        with loading_state_dict(directory / WEIGHTS_NAME, saved_cls.__name__):
            model.load_state_dict(state, strict=strict)  # type: ignore[attr-defined]
        return model.to(map_location)  # type: ignore[attr-defined]
