"""Record a model's config from its ``__init__`` call: the one place a model's keywords are declared.

``@register_to_config`` (the idea of diffusers' decorator of that name) wraps a constructor: it binds the call's
arguments to the signature, fills in the defaults and, once the constructor has returned, stores them as
``self._config`` for :meth:`~dalle2_pytorch.serialization.PretrainedMixin.save_pretrained`.  The signature is thus
the single declaration of every keyword, its default and (through the class docstring) its meaning: the training
configs derive their ``model`` sections from it (:func:`init_parameters`) instead of restating it.

Two hooks keep constructors that adjust what they were given expressible:

* ``convert``: a function ``(name, value) -> value`` applied to every recorded argument (e.g. lists to tuples);
* ``exclude``: arguments that are saved elsewhere (DALLE2's sampling defaults live in ``pipeline.json``);
* ``self.override_config(name=value, ...)`` inside the constructor: replace recorded values after the fact (the
  decoder records the unets it configured, not the ones it was given).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, Optional

Converter = Callable[[str, Any], Any]
_RECORDING = "_config_overrides"  # in the instance __dict__ while its outermost recorded __init__ runs


def lists_as_tuples(name: str, value: Any) -> Any:
    """A ``convert`` for :func:`register_to_config`: record list arguments as tuples (JSON writes them tagged)."""
    return tuple(value) if isinstance(value, list) else value


def register_to_config(init: Optional[Callable] = None, *, convert: Optional[Converter] = None,
                       exclude: tuple[str, ...] = ()) -> Callable:
    """Decorate ``__init__`` so the object records the arguments it was built with (defaults filled in).

    Usable bare (``@register_to_config``) or with a ``convert`` function and the names of arguments to ``exclude``
    (saved elsewhere).  Only the outermost decorated ``__init__`` of an object records (a subclass's call of
    ``super().__init__`` does not overwrite it)."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        unknown = sorted(set(exclude) - set(signature.parameters))
        if unknown:
            raise TypeError(f"register_to_config(exclude=...) names {unknown}, not parameters of {function.__qualname__}")

        @functools.wraps(function)
        def wrapper(self, *args: Any, **kwargs: Any) -> None:
            if _RECORDING in self.__dict__:  # an inner (super) constructor: the outer one records
                return function(self, *args, **kwargs)
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:  # let the constructor itself raise its usual error
                return function(self, *args, **kwargs)
            bound.apply_defaults()
            values = _flatten(signature, bound.arguments)
            self.__dict__[_RECORDING] = {}
            try:
                function(self, *args, **kwargs)
                overrides = self.__dict__[_RECORDING]
            finally:
                self.__dict__.pop(_RECORDING, None)
            config = {name: (convert(name, value) if convert else value) for name, value in values.items()
                      if name not in exclude}
            config.update(overrides)
            self._config = config

        wrapper.registers_config = True  # type: ignore[attr-defined]
        return wrapper

    return decorate(init) if init is not None else decorate


def _flatten(signature: inspect.Signature, arguments: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for index, (name, value) in enumerate(arguments.items()):
        if index == 0:  # self
            continue
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            values.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"register_to_config cannot record *{name}: give the constructor named parameters")
        else:
            values[name] = value
    return values


def override_config(owner: Any, **values: Any) -> None:
    """Replace recorded arguments from inside a decorated constructor (see the module docstring)."""
    recording = owner.__dict__.get(_RECORDING)
    if recording is None:
        raise RuntimeError("override_config is only valid inside an __init__ decorated with @register_to_config")
    recording.update(values)


# ----------------------------------------------------------------------------- introspection for configs
def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls.__init__`` (what a config of ``cls`` may set), in signature order."""
    signature = inspect.signature(cls.__init__)
    return {name: p for name, p in list(signature.parameters.items())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


_NAME = r"[\w*]+(?:\s*\([^)]*\))?"  # a keyword, maybe with a remark in brackets: "gamma (*per unet*)"
_ARG_LINE = re.compile(rf"^(\s+)({_NAME}(?:\s*[,/]\s*{_NAME})*):\s+(.*)$")


def init_argument_docs(cls: type) -> dict[str, str]:
    """``{keyword: first sentence}`` from the ``Args:`` section of ``cls``'s docstring (for ``config show``)."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return {}
    docs: dict[str, str] = {}
    indent: Optional[int] = None
    current: list[str] = []
    text: list[str] = []

    def flush() -> None:
        sentence = " ".join(text).strip()
        for name in current:
            docs.setdefault(name, sentence)

    for line in lines[start:]:
        if not line.strip():
            break
        match = _ARG_LINE.match(line)
        width = len(line) - len(line.lstrip())
        if match and (indent is None or width == indent):
            flush()
            indent = width
            names = re.sub(r"\([^)]*\)", "", match.group(2))
            current = [n.strip() for n in re.split(r",|/", names) if n.strip()]
            text = [match.group(3)]
        elif indent is not None and width > indent:
            text.append(line.strip())
        else:
            break
    flush()
    return docs
