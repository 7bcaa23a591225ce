"""The template's documentation builds as a site (mkdocs.yml at the root), strictly: a broken
link or anchor, in docs/ or in the README and changelog it brings in, fails the build."""

import shutil
import sys
from pathlib import Path

from tests.helpers import ROOT, run

# what mkdocs.yml builds from
SOURCES = ["mkdocs.yml", "mkdocs_hooks.py", "docs", "README.md", "CHANGELOG.md"]
QUIET = {"NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, printed on every build


def build(source: Path, site: Path) -> tuple[int, str]:
    result = run(
        sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site,
        cwd=source, env=QUIET,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def copy_sources(to: Path) -> Path:
    to.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, to / name)
        else:
            shutil.copy2(ROOT / name, to / name)
    return to


def test_the_docs_build_strictly_with_the_readme_changelog_and_a_mermaid_diagram(
    tmp_path: Path,
) -> None:
    code, output = build(ROOT, tmp_path / "site")
    assert code == 0, output
    site = tmp_path / "site"
    # the diagram reaches the page as a block Material's Mermaid draws, not as code
    assert '<pre class="mermaid"><code>flowchart TD' in (site / "tour/index.html").read_text()
    assert (site / "changelog/index.html").is_file()
    # the README's docs/ links, rewritten to the site's pages
    assert 'href="../getting-started/"' in (site / "repository/index.html").read_text()


def test_a_broken_link_fails_the_docs_build(tmp_path: Path) -> None:
    source = copy_sources(tmp_path / "source")
    page = source / "docs" / "tour.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    code, output = build(source, tmp_path / "site")
    assert code != 0
    assert "no-such-page.md" in output


def test_a_broken_anchor_fails_the_docs_build(tmp_path: Path) -> None:
    source = copy_sources(tmp_path / "source")
    readme = source / "README.md"  # outside docs/: its links are checked too
    readme.write_text(readme.read_text() + "\nSee [updating](docs/updating.md#no-such-part).\n")
    code, output = build(source, tmp_path / "site")
    assert code != 0
    assert "no-such-part" in output
