"""MkDocs hook: render ```` ```python no-run ```` fences as ordinary Python blocks.

The docs mark examples that the test suite must not execute (they need the internet, a GPU or the reader's
own files) with the info string ``python no-run`` (see tests/test_docs_examples.py). GitHub highlights such a
fence by its first word, but Python-Markdown's fenced_code does not accept a second word, so this hook strips it
before the page is converted.
"""

import re

NO_RUN_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})python[ \t]+no-run[ \t]*$", re.MULTILINE)


def on_page_markdown(markdown: str, **kwargs) -> str:
    """The page's Markdown with every ``python no-run`` fence turned into a ``python`` fence."""
    return NO_RUN_FENCE.sub(r"\g<indent>\g<fence>python", markdown)
