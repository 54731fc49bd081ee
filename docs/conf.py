"""Sphinx configuration for the batchdispatch documentation."""

from __future__ import annotations

import sys
from pathlib import Path

# Document the checkout this file lives in, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import batchdispatch

project = "batchdispatch"
author = "The batchdispatch developers"
copyright = "2026, The batchdispatch developers"
release = batchdispatch.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
# intersphinx is left out on purpose: it fetches inventories over the
# network, and the docs must build with -W on machines that have none.

# MyST is here only to include CHANGELOG.md; everything else is reST.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Type hints go into the parameter list rather than the signature, which
# keeps long signatures readable. The package uses postponed annotations
# written with typing's generics, so autodoc can evaluate them on 3.9 too.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"

html_theme = "furo"
html_title = f"batchdispatch {release}"
