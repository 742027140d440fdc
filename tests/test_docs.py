"""The documentation lives in the repository: every relative link of README.md and docs/ resolves inside
it, no file points at notes outside it, the README stays a front page, and docs/methods.md covers every
registered method."""
import re
from pathlib import Path

from taetlib.methods import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# notes that lived beside the repository once; a clone does not have them
OUTSIDE = re.compile(r"\.\./" + "shared|" + r"\b(METHODS(-ZOO)?|FIDELITY)\.md")
SOURCES = ("taetlib", "tests", "notebooks", "benchmarks", "docs", ".ci")


def relative_links(text: str) -> list[str]:
    """Markdown link and image targets that are paths, not URLs or anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def broken_links(pages: list[Path], root: Path) -> list[str]:
    out = []
    for page in pages:
        for target in relative_links(page.read_text()):
            path = (page.parent / target).resolve()
            if not path.is_relative_to(root) or not path.exists():
                out.append(f"{page.relative_to(root)}: {target}")
    return out


def outside_references(root: Path) -> list[str]:
    files = [root / "README.md", root / "Makefile", root / "pyproject.toml",
             *(p for d in SOURCES for p in (root / d).rglob("*") if p.is_file() and p.suffix in
               (".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", "") and ".venv" not in p.parts)]
    return [f"{p.relative_to(root)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if OUTSIDE.search(line)]


def test_every_relative_link_resolves_inside_the_repository():
    assert len(PAGES) >= 10   # the README and its nine pages
    assert broken_links(PAGES, ROOT) == []


def test_nothing_points_outside_the_repository():
    assert outside_references(ROOT) == []


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines: move detail into docs/"
    linked = set(relative_links("\n".join(lines)))
    assert {f"docs/{p.name}" for p in PAGES[1:]} <= linked   # every page is reachable from it


def test_methods_page_covers_every_registered_method():
    text = (ROOT / "docs" / "methods.md").read_text()
    missing = [m for m in OBJECTIVES if f"`{m}`" not in text]
    assert missing == []
    for section in range(8):   # §0..§7, which the modules and tests cite
        assert f"§{section}" in text


def test_the_checks_see_a_broken_link_and_an_outside_reference(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("[ok](b.md) [gone](missing.md) [up](../../x.md) [web](https://x.org)")
    (tmp_path / "docs" / "b.md").write_text("see " + "../" + "shared/" + "METHODS" + ".md\n")
    (tmp_path / "README.md").write_text("")
    (tmp_path / "Makefile").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    assert broken_links(sorted((tmp_path / "docs").glob("*.md")), tmp_path) == ["docs/a.md: missing.md",
                                                                                 "docs/a.md: ../../x.md"]
    assert outside_references(tmp_path) == ["docs/b.md:1"]
