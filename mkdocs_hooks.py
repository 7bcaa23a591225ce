"""MkDocs hooks: the repository's README.md and CHANGELOG.md as pages of the docs site.

docs/ links to them as ../README.md and ../CHANGELOG.md, and they link back into docs/ as
docs/<page>.md: links that work on GitHub but point outside the site's docs_dir. These hooks
add the two files as pages and rewrite such links to the pages', so the Markdown stays right
on GitHub and a --strict build still checks every link and anchor.
"""

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).parent
# a file at the repository's root -> its page in the site
PAGES = {"README.md": "repository.md", "CHANGELOG.md": "changelog.md"}
INLINE_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?\)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for source, page in PAGES.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    sources = {page: source for source, page in PAGES.items()}
    uri = page.file.src_uri
    # where the page's Markdown lives in the repository: its relative links start there
    source = sources.get(uri, posixpath.join("docs", uri))
    here = posixpath.dirname(source)

    def rewrite(match: re.Match[str]) -> str:
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        in_repository = posixpath.normpath(posixpath.join(here, target))
        if in_repository in PAGES:
            in_site = PAGES[in_repository]
        elif in_repository.startswith("docs/"):
            in_site = in_repository.removeprefix("docs/")
        else:
            return match[0]  # left for --strict to report
        new = posixpath.relpath(in_site, posixpath.dirname(uri) or ".")
        return f"{match[1]}{new}{match[3] or ''})"

    return INLINE_LINK.sub(rewrite, markdown)
