"""One error type for bad input: its message says what is wrong and how to fix it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (missing dataset, corrupt file, foreign checkpoint, ...).

    The message must name the fix; command-line entry points print it alone, without a
    traceback, and exit with status 2.
    """


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a `python -m <package>` entry point, turning a UserError into one clear line."""
    try:
        main(argv)
    except UserError as err:
        tqdm = sys.modules.get("tqdm")
        if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):  # a progress bar left stderr mid-line
            print(file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
