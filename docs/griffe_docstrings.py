"""A griffe extension that lets mkdocstrings render bls-prune's docstrings as written.

The docstrings are Google style with a few reStructuredText habits that Markdown reads
differently. This extension rewrites them for the docs build only (the source is not changed):

* ``Example:`` heads a Google "Examples" section (griffe only knows the plural), so its
  ``>>>`` lines render as a code example instead of nested block quotes;
* a paragraph ending in ``::`` (reST's "literal block follows") ends in ``:``; the indented
  block after it is already a Markdown code block;
* roles such as ``:class:`~bls.handler.PruningDataset``` become code spans
  (`` `PruningDataset` ``; the ``~`` keeps only the last name, as in Sphinx).

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEAD = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)
_LITERAL_MARKER = re.compile(r"(\S)::$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)([^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    shorten, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if shorten else target}`"


def markdown_docstring(text: str) -> str:
    """Return ``text`` with the reST habits above rewritten for Markdown."""
    text = _EXAMPLE_HEAD.sub(r"\1Examples:", text)
    text = _LITERAL_MARKER.sub(r"\1:", text)
    return _ROLE.sub(_role_to_code, text)


class MarkdownDocstrings(griffe.Extension):
    """Rewrite every loaded object's docstring before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
