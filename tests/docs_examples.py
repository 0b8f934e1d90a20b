"""The fenced code blocks of README.md and docs/*.md, so tests can run the examples users read.

A block fenced as ```` ```python ```` is executed by tests/test_docs_examples.py; one fenced as
```` ```python no-run ```` (it needs the internet, a GPU or the reader's own files) is only compiled and checked
for public imports. No other info string may introduce Python code, so no example can silently escape the tests.
"""

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN = "python"
NO_RUN = "python no-run"

OPENING_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: the page it is on (relative to the repository root), its first line, info string, code."""

    page: str
    line: int
    info: str
    code: str

    @property
    def language(self) -> str:
        """The info string's first word (what GitHub highlights the block as), lower-cased."""
        words = self.info.split()
        return words[0].lower() if words else ""

    @property
    def runs(self) -> bool:
        return self.info == RUN

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def documentation_pages() -> list[Path]:
    """README.md and every Markdown page under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def page_name(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def code_blocks(text: str, page: str = "<text>") -> list[CodeBlock]:
    """Every fenced block of a Markdown text; indented fences (inside list items) are dedented."""
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = OPENING_FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: a code fence is never closed")
        blocks.append(CodeBlock(page, i + 1, opening["info"].strip(), "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def page_blocks(path: Path) -> list[CodeBlock]:
    return code_blocks(path.read_text(encoding="utf-8"), page_name(path))


def executable_blocks(path: Path) -> list[CodeBlock]:
    """The blocks of one page that the tests execute, in page order."""
    return [block for block in page_blocks(path) if block.runs]
