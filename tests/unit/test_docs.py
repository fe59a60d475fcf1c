"""Citations of the documentation point at files and sections that exist (no Ray, no imports).

Code comments cite a document by path (``docs/<name>.md``) and, where useful, a section by its
heading in single quotes right after it: ``<path>, 'Heading'``. The design notes the project
started from live outside the repository, so the package must not cite them any more.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# Where citations are looked for: the package, tests, benchmarks and the other tracked text.
SCANNED = ("jumpray", "tests", "benchmarks", "pipelines", "configs", "scripts", "deploy", "docs")
SCANNED_FILES = ("README.md", "constraints.txt")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt"}
# A cited document: docs/<name>.md, or the benchmarks' README (it holds the measurement tables).
DOC = r"(docs/[A-Za-z0-9_.-]+\.md|benchmarks/README\.md)"
CITED_DOC = re.compile(DOC)
CITED_SECTION = re.compile(DOC + r",\s*'([^'\n]+(?:\n[^'\n]+)?)'")
# The files outside the repository that code used to cite.
OUTSIDE = ("reference §", "CONTRACT §", "DESIGN §", "ray-stack-notes", "style-anchors")


def _texts() -> list[tuple[Path, str]]:
    paths = [ROOT / name for name in SCANNED_FILES]
    for folder in SCANNED:
        paths += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES)
    return [(p, p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def _joined(text: str) -> str:
    """Comment continuation lines joined, so a heading wrapped over two ``#`` lines reads whole."""
    return re.sub(r"\n[ \t]*#[ \t]*", " ", text)


def _headings(path: Path) -> set[str]:
    """The headings of a Markdown file, each also without a trailing "(`script.py`)" note."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*$", line)):
            found |= {m.group(1), re.sub(r"\s*\(`[^`]*`[^)]*\)$", "", m.group(1))}
    return found


def _citations() -> list[tuple[Path, str, str | None]]:
    cited = []
    for path, text in _texts():
        text = _joined(text)
        cited += [(path, doc, None) for doc in CITED_DOC.findall(text)]
        for doc, heading in CITED_SECTION.findall(text):
            cited.append((path, doc, " ".join(heading.split())))
    return cited


def test_docs_exist_and_are_cited():
    for name in ("contract.md", "method.md", "architecture.md"):
        assert (ROOT / "docs" / name).is_file(), f"docs/{name} is missing"
    cited_in_package = {doc for path, doc, _ in _citations() if ROOT / "jumpray" in path.parents}
    assert {"docs/contract.md", "docs/method.md", "docs/architecture.md"} <= cited_in_package


def test_every_cited_doc_exists():
    missing = sorted(
        {
            f"{path.relative_to(ROOT)} cites {doc}"
            for path, doc, _ in _citations()
            if not (ROOT / doc).is_file()
        }
    )
    assert not missing, "cited documents that do not exist:\n" + "\n".join(missing)


def test_every_cited_section_exists():
    problems = []
    for path, doc, heading in _citations():
        if heading is None or not (ROOT / doc).is_file():
            continue
        if heading not in _headings(ROOT / doc):
            problems.append(f"{path.relative_to(ROOT)}: {doc} has no heading {heading!r}")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("marker", OUTSIDE, ids=lambda m: m.split()[0])
def test_package_cites_no_file_outside_the_repository(marker):
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path, text in _texts()
        if ROOT / "jumpray" in path.parents
        for n, line in enumerate(text.splitlines(), 1)
        if marker in line
    ]
    assert not hits, f"{marker!r} cites a file outside the repository: {', '.join(hits)}"


def test_the_section_check_reads_headings_and_wrapped_citations(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n## Real section (`run.py`)\n\n```\n# not a heading\n```\n")
    assert _headings(doc) == {"Title", "Real section (`run.py`)", "Real section"}
    name = "docs/" + "x.md"  # built here, so this file cites no missing document
    text = _joined(f"see {name}, 'Real\n    section' and {name}, 'Ray notes: long\n# name'")
    found = [(d, " ".join(h.split())) for d, h in CITED_SECTION.findall(text)]
    assert found == [(name, "Real section"), (name, "Ray notes: long name")]
