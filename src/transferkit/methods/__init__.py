"""Adaptation methods; importing this package registers them all in `registry.METHODS`."""
from . import adapter, bitfit, full, head_only, ia3, lora, prefix  # noqa: F401  (registration side effects)
from .base import Method, count_parameters, describe_parameters, is_head_param

__all__ = ["Method", "count_parameters", "describe_parameters", "is_head_param"]
