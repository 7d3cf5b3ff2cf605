"""The README answers first: the two commands and the two headline figures on its first
screen, and every link in it and in docs/ leads somewhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_the_first_screen_has_the_answer_the_two_commands_and_the_two_headline_figures():
    first = README.splitlines()[:40]
    text = "\n".join(first)
    assert re.search(r"^\./run_all\.sh\b", text, re.M) and re.search(r"^\./run_tests\.sh\b", text, re.M)
    answer = text[text.index("What we found"):text.index("```")]  # before the commands
    assert len(re.findall(r"^\d\. \*\*", answer, re.M)) == 5
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(figures) == 2 and all((REPO / f).is_file() for f in figures)


@pytest.mark.parametrize("path", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))])
def test_every_relative_link_resolves(path):
    text = (REPO / path).read_text(encoding="utf-8")
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        resolved = (REPO / path).parent / file if file else REPO / path
        if not resolved.exists():
            broken.append(target)
        elif anchor and not file and anchor not in anchors:
            broken.append(target)
        elif anchor and file.endswith("README.md"):
            readme_anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", README, re.M)}
            if anchor not in readme_anchors:
                broken.append(target)
    assert not broken, f"{path}: links that lead nowhere: {broken}"
