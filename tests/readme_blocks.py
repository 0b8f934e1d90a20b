"""The Python code blocks of one README.md section, so tests can run the examples users read."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """Code blocks under the ``## {section}`` heading (up to the next ``## `` heading)."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    if match is None:
        raise AssertionError(f"README.md has no section '## {section}'")
    return re.findall(r"```python\n(.*?)```", match.group(1), flags=re.S)
