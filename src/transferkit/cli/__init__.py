"""The `transferkit` command line: `main.py` wires the command modules (finetune, predict, info, lm),
each of which adds its subparsers and calls `transferkit.api`; `common.py` holds the one
key=value override parser they share."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
