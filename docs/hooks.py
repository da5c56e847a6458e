"""MkDocs hook: render the Sphinx roles of numpydoc docstrings as plain code.

mkdocstrings shows ``:class:`~sklearn.pipeline.Pipeline``` as the literal
text ":class:" before the code; the docstrings keep the roles, which
``help()`` and numpydoc tools read, and the site shows ``Pipeline``.
"""

from __future__ import annotations

import re

_ROLE = re.compile(
    r":(?:py:)?(?:meth|class|func|mod|data|attr|obj|exc|term):<code>(~?)([^<]+)</code>"
)


def _plain(match: re.Match) -> str:
    short, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_plain, html)
