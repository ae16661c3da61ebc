"""Subcommands whose modules are imported only when they run: a small job does not pay the imports
(torch, higra, matplotlib, scipy: seconds) of the commands it does not use."""

from __future__ import annotations

import argparse
import importlib
import sys


def register_lazily(commands: argparse._SubParsersAction, modules: dict[str, str], argv: list[str] | None) -> None:
    """Register the subcommands of `modules` ({command: module with a `register(commands)`}): only the module of
    the command named in `argv` (default: sys.argv), or all of them for --help, no command or an unknown one,
    so that argparse lists every choice. Commands already in `commands` are left to their own registration."""
    args = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in args if not arg.startswith("-")), None)
    known = command in modules or command in commands.choices
    for name, module in modules.items():
        if command == name or not known:
            importlib.import_module(module).register(commands)
