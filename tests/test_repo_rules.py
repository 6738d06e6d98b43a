"""Rules about the repository itself that no other test would notice breaking.

- Every `docs/contract.md §N` and `docs/domain.md §N` citation in the source names a
  section that exists, and nothing cites the contract or the domain facts by a name that
  is not a file in the repository.
- Every `[text](file.md#anchor)` link between the docs points at a heading that exists.
- No test skips itself when one of our own modules fails to import: that turns a broken
  module into "skipped, green" (it once hid 32 alert tests).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "var", "var.prev", "__pycache__", ".pytest_cache", ".mypy_cache", "node_modules", "build",
             "dist"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".html", ".js", ".css", ".cfg", ".ini", ""}
OUR_PACKAGES = ("citywatch", "ingest", "alerts", "api", "simulators", "app", "devtools", "tests")

CITATION = re.compile(r"docs/(contract|domain)\.md ((?:§\d+(?:\s*[–-]\s*§\d+)?(?:,\s*)?)+)")
SECTION = re.compile(r"§(\d+)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
LINK = re.compile(r"\]\(([\w.-]+\.md)?#([^)\s]+)\)")


def source_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
            out.append(path)
    return out


def read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError:
        return ""


def numbered_sections(doc: Path) -> set[int]:
    """The N of every top-level `## N. Title` heading."""
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", read(doc), re.M)}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_section_citation_resolves_to_a_heading_in_docs():
    sections = {name: numbered_sections(ROOT / "docs" / f"{name}.md") for name in ("contract", "domain")}
    assert sections["contract"] >= {1, 2, 3, 4, 5, 6} and sections["domain"] >= {1, 2, 3, 4, 5}
    cited, broken, foreign = 0, [], []
    for path in source_files():
        text = read(path)
        rel = path.relative_to(ROOT)
        for m in CITATION.finditer(text):
            for number in map(int, SECTION.findall(m.group(2))):
                cited += 1
                if number not in sections[m.group(1)]:
                    broken.append(f"{rel}: {m.group(0)}")
        for m in re.finditer(r"\b(CONTRACT|DOMAIN) §", text):
            foreign.append(f"{rel}: {m.group(0)}")
    assert cited >= 30, f"only {cited} citations found: is the pattern still right?"
    assert not broken, f"citations of sections that do not exist: {broken}"
    assert not foreign, f"cite docs/contract.md or docs/domain.md, documents in the repo: {foreign}"


def test_links_between_the_docs_point_at_existing_headings():
    docs = {p.name: p for p in (ROOT / "docs").glob("*.md")}
    anchors = {name: {slug(h) for _, h in HEADING.findall(read(p))} for name, p in docs.items()}
    broken = []
    for name, path in docs.items():
        for target, anchor in LINK.findall(read(path)):
            target = target or name
            if target in anchors and anchor not in anchors[target]:
                broken.append(f"docs/{name}: {target}#{anchor}")
    assert not broken, f"links to headings that do not exist: {broken}"


def test_no_test_skips_itself_when_our_own_code_fails_to_import():
    pattern = re.compile(r"importorskip\(\s*[\"'](" + "|".join(OUR_PACKAGES) + r")\b")
    offenders = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
                 for p in (ROOT / "tests").rglob("*.py") for text in [read(p)] for m in pattern.finditer(text)]
    assert not offenders, f"import our own modules plainly; importorskip hides a broken one: {offenders}"
