"""The checks that public entry points run on user input, each with a message that names the argument, the
value and what is expected.  Internal code trusts what these checked and carries no guards of its own."""

from __future__ import annotations

import difflib
import functools
import inspect
import numbers
from typing import Any, Callable, Collection, Mapping, Optional


def strict_keywords(hints: Optional[Mapping[str, str]] = None) -> Callable:
    """Decorate an ``__init__`` so a misspelt or removed keyword is a TypeError listing the accepted ones.

    ``hints`` maps keywords that other versions accepted to an explanation (e.g. what replaced them).
    """
    hints = dict(hints or {})

    def decorate(init: Callable) -> Callable:
        params = inspect.signature(init).parameters
        accepted = [name for name, p in params.items()
                    if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        @functools.wraps(init)
        def wrapper(self, *args, **kwargs):
            unknown = [key for key in kwargs if key not in accepted]
            if unknown:
                lines = []
                for key in unknown:
                    if key in hints:
                        lines.append(f"{key!r}: {hints[key]}")
                    else:
                        close = difflib.get_close_matches(key, accepted, n=2)
                        lines.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
                raise TypeError(f"{type(self).__name__}() got unknown keyword argument(s) {'; '.join(lines)}. "
                                f"Accepted keywords: {', '.join(accepted)}")
            return init(self, *args, **kwargs)

        wrapper.accepted_keywords = tuple(accepted)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` is an int to Python, never a size to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, *, optional: bool = False, what: str = "") -> None:
    """``value`` is an int >= 1 (or None when ``optional``); ``what`` says what it sizes."""
    if optional and value is None:
        return
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int{' (' + what + ')' if what else ''}"
                         f"{' or None' if optional else ''}")


MAX_SEED = 2 ** 64 - 1
"""The largest seed a ``torch.Generator`` takes (seeds are unsigned 64-bit integers)."""


def check_seed(name: str, value: Any) -> int:
    """``value`` is an int from 0 to 2**64 - 1, what ``torch.Generator.manual_seed`` takes; returned as an int."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name}={value!r}: expected an int from 0 to 2**64 - 1 (a torch generator's seed)")
    return int(value)


def check_finite(name: str, value: Any) -> None:
    """A floating tensor ``value`` holds no NaN or inf (those would only turn into NaN losses or samples)."""
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} holds {bad} NaN or inf value(s) of {value.numel()}; drop or repair those rows "
                         "before passing them")


def check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """``low <= value <= high`` (each end optionally open), e.g. probabilities in [0, 1]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}={value!r}: expected a number in {interval}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {sorted(choices)}")
