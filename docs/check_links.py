"""Check every internal link of the built HTML docs: run after ``sphinx-build -b html``.

``python docs/check_links.py docs/_build/html`` reads each page, and for each
``href`` or ``src`` that stays inside the site checks that the file exists
and, for ``page.html#anchor``, that the page has an element with that id.
It exits 1 listing the broken ones. Links to other sites are not followed:
the build must pass offline. Sphinx's own ``-b linkcheck`` would fetch them.
"""

from __future__ import annotations

import os
import sys
from html.parser import HTMLParser
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: Set[str] = set()
        self.links: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name in ("href", "src") and value and tag in ("a", "img", "link", "script"):
                self.links.append(value)


def broken_links(root: str) -> List[str]:
    pages: Dict[str, _Page] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(directory, name)
                page = _Page()
                with open(path, encoding="utf-8") as file:
                    page.feed(file.read())
                pages[os.path.normpath(path)] = page
    broken = []
    for path, page in sorted(pages.items()):
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # another site: not followed
            target = os.path.normpath(os.path.join(os.path.dirname(path), unquote(parts.path))) \
                if parts.path else path
            if os.path.isdir(target):
                target = os.path.join(target, "index.html")
            where = f"{os.path.relpath(path, root)}: {link}"
            if not os.path.exists(target):
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target in pages and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{where} (no such anchor)")
    return broken


def main(argv: List[str]) -> int:
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build", "html")
    broken = broken_links(root)
    for line in broken:
        print(f"broken link: {line}")
    print(f"check_links: {len(broken)} broken internal link(s) in {root}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
