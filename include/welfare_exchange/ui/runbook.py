"""``docs/RUNBOOK.md`` as a page of the Exchanges view, so a failure's cause links to its section.

Rendered with markdown-it (CommonMark and tables; raw HTML in the file is escaped, not passed
through), each heading given the id GitHub gives it, so ``#the-key-connection-is-missing-or-wrong``
works here and on the repository alike.
"""

from __future__ import annotations

import functools
import re

from markdown_it import MarkdownIt

from welfare_exchange.failures import RUNBOOK
from welfare_exchange.settings import REPO_ROOT

PATH = REPO_ROOT / RUNBOOK


def anchor(section: str) -> str:
    """The id of a heading, as GitHub makes it: ``The agency's S/MIME identity …`` → ``the-agencys-smime-identity-…``."""
    return re.sub(r"[^\w\- ]", "", section.strip().lower()).replace(" ", "-")


@functools.lru_cache(maxsize=4)
def _render(mtime: float) -> str:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(PATH.read_text(encoding="utf-8"))
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            token.attrSet("id", anchor(tokens[i + 1].content))
    return md.renderer.render(tokens, md.options, {})


def html() -> str | None:
    """The runbook as HTML; ``None`` when the file is not where it belongs (a partial install)."""
    try:
        return _render(PATH.stat().st_mtime)
    except FileNotFoundError:
        return None
