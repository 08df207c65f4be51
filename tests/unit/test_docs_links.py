"""The docs a stranger reads point only at things that exist.

- Every relative Markdown link (and image) in the repository's .md files names a file or directory that is
  in the repository, and a `#fragment` names a heading of its target (GitHub's anchor rules).
- No product file mentions the design document that is not in the repository.
- The README's set-up block is the two commands, and `.ci/run` runs the second one (the test suite).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The name is assembled so this file does not mention it itself.
DESIGN_DOC = "DESIGN" + ".md"

_LINK_RE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN_RE = re.compile(r"`[^`\n]*`")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         check=True, timeout=60).stdout.decode().split("\0")
    return [p for p in out if p and (ROOT / p).exists()]


def _markdown_files() -> list[str]:
    return [p for p in _tracked() if p.endswith(".md") and "/vendor/" not in p]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped except '-' and '_', spaces to '-'."""
    text = re.sub(r"\]\([^)]*\)", "", heading.strip()).lower()  # a link in a heading keeps its text only
    return "".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_")


def _anchors(path: Path) -> set[str]:
    text = _FENCE_RE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = _anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _links(path: Path) -> list[str]:
    text = _FENCE_RE.sub("", path.read_text(encoding="utf-8"))
    text = _CODE_SPAN_RE.sub("", text)
    return _LINK_RE.findall(text)


@pytest.mark.parametrize("md", _markdown_files())
def test_relative_links_point_at_files_and_headings_that_exist(md: str) -> None:
    source = ROOT / md
    tracked = set(_tracked())
    tracked_dirs = {str(Path(p).parent) for p in tracked}
    broken = []
    for target in _links(source):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = source if not file_part else (source.parent / file_part).resolve()
        try:
            rel = str(dest.relative_to(ROOT))
        except ValueError:
            broken.append(f"{target} (outside the repository)")
            continue
        if file_part and rel not in tracked and rel.rstrip("/") not in tracked_dirs:
            broken.append(f"{target} (no such file in the repository)")
            continue
        if fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {rel})")
    assert broken == [], f"{md}: broken links: {broken}"


def test_no_product_file_mentions_the_design_document() -> None:
    this = str(Path(__file__).resolve().relative_to(ROOT))
    offenders = []
    for rel in _tracked():
        if rel == this:
            continue
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        if DESIGN_DOC in text:
            offenders.append(rel)
    assert offenders == []


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/bootstrap-cluster.sh", "scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == "exec scripts/test.sh", "the CI entry point must end by running the README's test command"
