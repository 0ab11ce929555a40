"""The documentation: README.md stays short enough to read in one sitting, every page of docs/ is on its map,
and every relative link of README.md, REPORT.md and docs/ leads to a file of this repository and, where it
names one, to a heading of that file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "REPORT.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str) -> list[str]:
    """The lines a reader sees as text: fenced code is left out, since a `# comment` there is no heading
    and a `[x](y)` there is no link."""
    lines, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept),
    spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6} (.+)$", line)
        if match:
            name = anchor(match.group(1))
            count = seen.get(name, 0)
            seen[name] = count + 1
            found.add(name if count == 0 else f"{name}-{count}")  # GitHub numbers repeated headings
    return found


def relative_links(path: Path) -> list[str]:
    links = [target for line in prose_lines(path.read_text(encoding="utf-8")) for target in LINK.findall(line)]
    return [target for target in links if not re.match(r"^[a-z]+:", target)]  # http:, https:, mailto:


def test_the_anchor_rule_is_githubs():
    assert anchor("Photo collections (`folder`)") == "photo-collections-folder"
    assert anchor("Does training learn from the first epoch? (bench/learning.py)") == (
        "does-training-learn-from-the-first-epoch-benchlearningpy"
    )
    assert anchor("Precision, memory format and compilation") == "precision-memory-format-and-compilation"


def test_the_readme_reads_in_one_sitting():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_every_page_of_docs_is_on_the_readmes_map():
    linked = set(relative_links(ROOT / "README.md"))
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert len(pages) >= 10
    assert sorted(pages - linked) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_of_the_repository(document):
    broken = []
    for target in relative_links(document):
        file_part, _, fragment = target.partition("#")
        file = (document.parent / file_part).resolve() if file_part else document
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(f"{target}: no such file in the repository")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert broken == []


def test_the_links_are_found():
    # The checks above pass trivially if no link is found; the README links its map and REPORT.md's sections.
    assert "docs/exit-codes.md" in relative_links(ROOT / "README.md")
    assert any(target.startswith("../REPORT.md#") for target in relative_links(ROOT / "docs" / "training.md"))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_document_names_a_file_outside_the_repository(document):
    text = document.read_text(encoding="utf-8")
    # A `../` outside a link, or a Markdown file named in code, would send a reader to a file this
    # repository does not hold (as a design note kept beside the repository once was).
    outside = [line for line in prose_lines(text) if "../" in LINK.sub("", line)]
    named = re.findall(r"`([\w.-]+/[\w./-]+\.md)`", text)  # a page in a folder: a file a command writes has none
    missing = [name for name in named if not (ROOT / name).is_file() and not (document.parent / name).is_file()]
    assert outside == [] and missing == []
