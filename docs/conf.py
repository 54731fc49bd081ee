"""Sphinx configuration for the batchdispatch documentation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Document the checkout this file lives in, not an installed copy.
sys.path.insert(0, str(HERE.parent))

import batchdispatch  # noqa: E402 (after the sys.path line above)

project = "batchdispatch"
author = "The batchdispatch developers"
copyright = "2026, The batchdispatch developers"
release = batchdispatch.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "myst_parser",
]

# The inventories are kept in docs/_inventories (make_inventories.py there
# says where they came from), so that the build never needs the network.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(HERE / "_inventories" / "python.inv")),
    "requests": ("https://requests.readthedocs.io/en/latest/", str(HERE / "_inventories" / "requests.inv")),
    "flask": ("https://flask.palletsprojects.com/en/stable/", str(HERE / "_inventories" / "flask.inv")),
    "django": ("https://docs.djangoproject.com/en/stable/", str(HERE / "_inventories" / "django.inv")),
}
intersphinx_timeout = 1

# MyST is here only to include CHANGELOG.md; everything else is reST.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "snippets/README.md", "charts/README.md", "diagrams/README.md"]
# A bare ``::`` block is output or a shell session, never Python to run:
# Python is shown only through code-block:: python or literalinclude, and
# tests/test_docs.py checks that each such block is run by a test.
highlight_language = "text"

# Type hints go into the parameter list rather than the signature, which
# keeps long signatures readable. The package uses postponed annotations
# written with typing's generics, so autodoc can evaluate them on 3.9 too.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"

html_theme = "furo"
html_title = f"batchdispatch {release}"
html_static_path = ["_static"]
html_css_files = ["tables.css"]

# The copy button leaves out the prompts of console and pycon blocks.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False


class _NoMystConfigDump(logging.Filter):
    """myst-parser logs its whole configuration at every build: keep the build log readable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "MdParserConfig(" not in str(record.msg) + str(record.args)


#: Exceptions importable from the top level, documented once, where they are defined.
_ALIASES = {
    f"batchdispatch.{name}": f"batchdispatch.exceptions.{name}"
    for name in ("BatchDispatchError", "PartialFailure", "QueueFullError", "SpoolError")
}


def _resolve_alias(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Let :class:`batchdispatch.PartialFailure` find batchdispatch.exceptions.PartialFailure."""
    target = _ALIASES.get(node.get("reftarget"))
    if target is None or node.get("refdomain") != "py":
        return None
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)


def setup(app: Any) -> None:
    logging.getLogger("sphinx.myst_parser.sphinx_ext.main").addFilter(_NoMystConfigDump())
    app.connect("missing-reference", _resolve_alias)
