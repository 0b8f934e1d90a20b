"""The one rule by which reference (DALLE2-pytorch 1.15.6) parameter names become ours.

A converter is a list of ``(pattern, replacement)`` regular expressions applied in order, each to
the result of the previous one (so a key may be renamed by several rules: a block prefix, then a
layer suffix).  A key no rule matches keeps its name; whether that is allowed is the converter's
call (the unet checks names against the target model, the prior network refuses unmatched keys).
"""

from __future__ import annotations

import re
from typing import Sequence

Rules = Sequence[tuple[str, str]]


def rename_key(key: str, rules: Rules) -> tuple[str, bool]:
    """``(renamed key, whether any rule matched)`` for one reference key."""
    matched = False
    for pattern, replacement in rules:
        key, count = re.subn(pattern, replacement, key)
        matched = matched or count > 0
    return key, matched
