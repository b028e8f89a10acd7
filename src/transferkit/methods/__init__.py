"""Adaptation methods, one file each (full, lora, adapter, prefix, ia3, bitfit, head_only, setfit), each
registering itself in `core.registry.METHODS` with its options, capabilities and per-row update; `base.py` is
the interface, `artifact.py` / `peft_common.py` / `layout.py` what several share (`layout.py`: where each
encoder family keeps its attention and output projections), `prefix_attention.py` prefix tuning's per-family
attention wrappers. Importing this package imports every module in it, so a new method is a new file (plus
nothing else in src/).
"""
import dataclasses
import importlib
import pkgutil
import typing

from ..core.registry import METHODS
from .base import Method, count_parameters, describe_parameters, is_head_param

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # a method's module registers it on import


def option_fields() -> dict[str, tuple[object, type, list[str]]]:
    """Every method option by name: (its dataclass field, its type hint, the methods that have it)."""

    out: dict[str, tuple[object, type, list[str]]] = {}
    for name in METHODS.names():
        options = METHODS.get(name).Options
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            if f.name in out:
                out[f.name][2].append(name)
            else:
                out[f.name] = (f, hints[f.name], [name])
    return out


__all__ = ["Method", "count_parameters", "describe_parameters", "is_head_param", "option_fields"]
