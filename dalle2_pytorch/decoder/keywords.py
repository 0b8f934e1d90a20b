"""Constructor keyword checking: an unknown keyword is a TypeError that lists the accepted ones."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Callable, Mapping


def strict_keywords(hints: Mapping[str, str] | None = None) -> Callable:
    """Decorate an ``__init__`` so a misspelt or removed keyword fails loudly and helpfully.

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
                owner = type(self).__name__
                lines = []
                for key in unknown:
                    if key in hints:
                        lines.append(f"{key!r}: {hints[key]}")
                    else:
                        close = difflib.get_close_matches(key, accepted, n=2)
                        lines.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
                raise TypeError(f"{owner}() got unknown keyword argument(s) {'; '.join(lines)}. "
                                f"Accepted keywords: {', '.join(accepted)}")
            return init(self, *args, **kwargs)

        wrapper.accepted_keywords = tuple(accepted)  # type: ignore[attr-defined]
        return wrapper

    return decorate
