"""The README and the docs pages keep their promises.

Every Python code block of ``README.md`` and ``docs/**/*.md`` whose first line starts with
``# runnable`` runs as a new user would run it: pasted into a file, in a fresh interpreter, in an
empty folder. A block that appears on several pages (the README's example is also on the getting
started page) runs once. Unmarked blocks are fragments (the three lines, a torchrun script) and
are not run. Relative links must point to files and headings that exist, so they work on GitHub
as well as on the MkDocs site, and the API reference must cover every public name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import bls

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
FENCED_PYTHON = re.compile(r"```python\n(.*?)```", flags=re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _where(page: Path, offset: int) -> str:
    line = page.read_text()[:offset].count("\n") + 1
    return f"{page.relative_to(ROOT)}:{line}"


def _runnable_blocks() -> dict[str, list[str]]:
    """Each distinct runnable block, with every ``file:line`` where it appears."""
    blocks: dict[str, list[str]] = {}
    for page in PAGES:
        for match in FENCED_PYTHON.finditer(page.read_text()):
            if match.group(1).startswith("# runnable"):
                blocks.setdefault(match.group(1), []).append(_where(page, match.start()))
    return blocks


BLOCKS = _runnable_blocks()


def test_readme_has_a_runnable_example() -> None:
    in_readme = [where for places in BLOCKS.values() for where in places if "README" in where]
    assert in_readme, "README.md lost its runnable example"


@pytest.mark.parametrize("block", list(BLOCKS), ids=[places[0] for places in BLOCKS.values()])
def test_doc_block_runs(block: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(block)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{BLOCKS[block]}:\n{result.stderr[-3000:]}"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub (and MkDocs' default toc) gives a heading: lower case, punctuation
    dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no file {linked.relative_to(ROOT)})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_api_reference_covers_the_public_names() -> None:
    reference = "".join(p.read_text() for p in sorted((ROOT / "docs" / "api").glob("*.md")))
    directives = set(re.findall(r"^::: (\S+)", reference, flags=re.MULTILINE))
    missing = [name for name in bls.__all__ if f"bls.{name}" not in directives]
    assert not missing, f"docs/api/*.md has no '::: bls.NAME' for {missing}"
    assert "bls.integrations" in directives
