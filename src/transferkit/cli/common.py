"""What the command modules share: the one key=value override parser, and shared help texts."""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from ..core.errors import UserError

BASE_MODEL_HELP = ("the base model folder of an adapter run, instead of the one its run.json names (needed when "
                   "that folder is elsewhere on this machine, or the run was trained on another one)")


def overrides(args: argparse.Namespace, short_keys: Mapping[str, str], items: list[str] | None = None) -> dict[str, Any]:
    """The config overrides a command line gives: each flag in `short_keys` that was set (as its
    dotted key), then every `key=value` item (from `args.overrides` unless `items` is given)."""
    out: dict[str, Any] = {}
    for flag, key in short_keys.items():
        v = getattr(args, flag, None)
        if v is not None:
            out[key] = v
    for item in args.overrides if items is None else items:
        if "=" not in item:
            raise UserError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
