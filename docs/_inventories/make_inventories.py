"""Write the intersphinx inventories kept here, so that the docs build offline.

The inventories come from Debian's documentation packages (the same
Sphinx builds the projects publish), unpacked anywhere::

    apt-get download python3.11-doc python-requests-doc python-flask-doc python-django-doc
    for deb in *.deb; do dpkg-deb -x "$deb" unpacked; done
    python docs/_inventories/make_inventories.py unpacked/usr/share/doc

Debian builds every site as ``page.html``; requests, Flask and Django
publish theirs as ``page/``, so their links are rewritten to match.
"""

from __future__ import annotations

import os
import re
import sys
import zlib

#: Inventory name: (Debian's html directory, whether the published site uses page/ URLs).
SOURCES = {
    "python": ("python3.11/html", False),
    "requests": ("python-requests-doc/html", True),
    "flask": ("python-flask-doc/html", True),
    "django": ("python-django-doc/html", True),
}
HERE = os.path.dirname(os.path.abspath(__file__))


def dirhtml(uri: str) -> str:
    """``api.html#x`` -> ``api/#x``; ``index.html`` -> ````; ``a/index.html#y`` -> ``a/#y``."""
    page, sep, anchor = uri.partition("#")
    page = re.sub(r"(^|/)index\.html$", r"\1", page)
    page = re.sub(r"\.html$", "/", page)
    return page + sep + anchor


def convert(source: str, target: str, rewrite: bool) -> int:
    with open(source, "rb") as file:
        header = [file.readline() for _ in range(4)]
        body = zlib.decompress(file.read()).decode("utf-8")
    lines = []
    for line in body.splitlines():
        match = re.match(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line)
        if match is None:
            continue
        name, role, priority, uri, shown = match.groups()
        if rewrite:
            uri = dirhtml(uri)
        lines.append(f"{name} {role} {priority} {uri} {shown}")
    with open(target, "wb") as file:
        file.writelines(header)
        file.write(zlib.compress(("\n".join(lines) + "\n").encode("utf-8"), 9))
    return len(lines)


def main(root: str) -> None:
    for name, (directory, rewrite) in SOURCES.items():
        count = convert(os.path.join(root, directory, "objects.inv"), os.path.join(HERE, f"{name}.inv"),
                        rewrite)
        print(f"{name}.inv: {count} entries")


if __name__ == "__main__":
    main(sys.argv[1])
