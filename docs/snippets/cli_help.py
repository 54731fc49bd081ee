"""Print ``python -m batchdispatch COMMAND --help`` for each command, 80 columns wide, for docs/cli.rst.

cli_help.out is what it prints; tests/test_docs.py checks that it is
still what the commands say, so the CLI page follows the code.
"""

import contextlib
import io
import os

os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal: make it the same everywhere

from batchdispatch._cli import build_parser  # the parser the command uses

for command in ([], ["demo"], ["send"], ["bench"], ["spool"]):
    out = io.StringIO()
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):
        build_parser().parse_args([*command, "--help"])
    title = " ".join(["python -m batchdispatch", *command, "--help"])
    print(f"$ {title}\n{out.getvalue()}")
