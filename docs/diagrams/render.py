"""Render the .dot diagrams of this folder to the SVGs the docs show: ``python docs/diagrams/render.py``.

It needs Graphviz's ``dot`` (Debian: ``apt-get install graphviz``). The
SVGs are committed, so that building the docs needs no Graphviz.
"""

from __future__ import annotations

import glob
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    for source in sorted(glob.glob(os.path.join(HERE, "*.dot"))):
        target = source[:-4] + ".svg"
        subprocess.run(["dot", "-Tsvg", source, "-o", target], check=True)
        print(f"wrote {target}")
