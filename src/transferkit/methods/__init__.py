"""Adaptation methods; importing this package registers them all in `registry.METHODS`."""
from . import adapter, bitfit, full, head_only, ia3, lora, prefix, setfit  # noqa: F401  (registration side effects)
from .base import Method, count_parameters, describe_parameters, is_head_param


def option_fields() -> dict[str, tuple[object, type, list[str]]]:
    """Every method option by name: (its dataclass field, its type hint, the methods that have it)."""
    import dataclasses
    import typing

    from ..core.registry import METHODS
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
