"""What every typed config shares: YAML and dict in and out, dotted overrides (`train.lr=3e-4`), coercion of
strings to the declared types, and the keys a resumed run may change. Unknown keys and wrong types are
errors that name the key. A section whose keys depend on another choice (the method's options) is a
`DynamicSection`: it reads, writes and sets its own keys.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import UserError



class DynamicSection:
    """A config section whose keys are not fixed dataclass fields (e.g. `method`: its options depend on the
    method chosen). Subclasses implement `from_dict(d, prefix)`, `to_dict()` and `set(key, value, dotted)`."""

    @classmethod
    def from_dict(cls, d: Any, prefix: str) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def set(self, key: str, value: Any, dotted: str) -> None:
        raise NotImplementedError


class ConfigFile:
    """YAML in and out, dict in and out and dotted overrides, shared by the run configs below."""

    @classmethod
    def make(cls, config: Any = None, overrides: dict[str, Any] | None = None,
             short_keys: dict[str, str] | None = None) -> Any:
        """An instance from a YAML path, a dict or an instance (copied), then `overrides` applied
        (dotted keys, or short names that `short_keys` maps to dotted keys)."""
        if isinstance(config, cls):
            cfg = cls.from_dict(config.to_dict())
        elif isinstance(config, dict):
            cfg = cls.from_dict(config)
        elif config is not None:
            cfg = cls.from_yaml(config)
        else:
            cfg = cls()
        dotted = {(short_keys or {}).get(k, k): v for k, v in (overrides or {}).items()}
        # the method first: its options are only known once it is chosen (`--method lora method.lora_r=4`)
        for k in sorted(dotted, key=lambda k: k != "method.name"):
            cfg.override(k, dotted[k])
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, DynamicSection) else (
                dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return _build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Any:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise UserError(f"{p}: expected a mapping at the top level")
        return cls.from_dict(d)

    def override(self, dotted: str, value: Any) -> None:
        """Set `section.key` (e.g. `train.lr`) from a value or its string form."""
        parts = dotted.split(".")
        obj: Any = self
        for p in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
                raise UserError(f"unknown config key {dotted!r}")
            obj = getattr(obj, p)
        key = parts[-1]
        if isinstance(obj, DynamicSection):
            obj.set(key, value, dotted)
            return
        fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if key not in fields or dataclasses.is_dataclass(getattr(obj, key)):
            raise UserError(f"unknown config key {dotted!r}")
        hint = typing.get_type_hints(type(obj))[key]
        setattr(obj, key, _coerce(value, hint, dotted))



def _parse_scalar(s: str) -> Any:
    for conv in (int, float):  # YAML 1.1 reads "3e-4" as a string
        try:
            return conv(s)
        except ValueError:
            pass
    try:
        return yaml.safe_load(s)
    except yaml.YAMLError:
        return s


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; ints widen to floats, strings parse; else a UserError.

    A string meets a `str` hint verbatim ("007" stays "007"); for other hints it is parsed, so
    `train.lr=1e-4` from the command line and `lr: 1e-4` in YAML (a string to YAML 1.1) both work.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("null", "none", "~") and type(None) in args:
            return None
        if isinstance(value, str) and str in args:
            return value
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if isinstance(value, str):
            parsed = _parse_scalar(value) if value.strip().startswith("[") else None
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(_parse_scalar(v) if isinstance(v, str) and args and args[0] is not str else v, args[0], key) for v in value]
    if isinstance(value, str) and hint is not str:
        value = _parse_scalar(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key!r}: expected a number, got {value!r}")
        try:
            finite = math.isfinite(value)  # NaN passes every `x <= 0` check below, so refuse it here
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise UserError(f"config key {key!r}: expected a finite number, got {str(value)[:30]}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def section_from_dict(cls: type, d: Any, where: str) -> Any:
    """A config section (e.g. the method's) from a mapping read off disk; bad keys or types name `where`."""
    try:
        return cls.from_dict(d, "") if issubclass(cls, DynamicSection) else _build(cls, d, "")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise UserError(f"config key {prefix.rstrip('.') or '<top>'!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            raise UserError(f"unknown config key {prefix + k!r}")
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        hint = hints[k]
        if isinstance(hint, type) and issubclass(hint, DynamicSection):
            kwargs[k] = hint.from_dict({} if v is None else v, prefix + k + ".")
        elif dataclasses.is_dataclass(hint):
            # Keys left out keep the parent's own default section (e.g. pretraining's train.metric
            # "loss"), not the section class's defaults.
            if not isinstance(v or {}, dict):
                raise UserError(f"config key {prefix + k!r}: expected a mapping")
            f = fields[k]
            base = f.default_factory() if f.default_factory is not dataclasses.MISSING else hint()
            kwargs[k] = _build(hint, {**dataclasses.asdict(base), **(v or {})}, prefix + k + ".")
        else:
            kwargs[k] = _coerce(v, hint, prefix + k)
    return cls(**kwargs)


# What a resumed run may change: the rates (a diverged run continues with a lower lr), clipping and the
# progress bar. Anything else would make the rest of the run a different run from its first part.
RESUME_KEYS = ("train.lr", "train.head_lr", "train.max_grad_norm", "train.progress")


def apply_resume_overrides(cfg: ConfigFile, overrides: dict[str, Any], short_keys: dict[str, str]) -> bool:
    """Apply `overrides` (dotted or short keys) to a resumed run's config; True if anything changed."""
    before = cfg.to_dict()
    for k, v in overrides.items():
        key = short_keys.get(k, k)
        if key not in RESUME_KEYS:
            raise UserError(f"{key} cannot change when a run resumes (only {', '.join(RESUME_KEYS)} can); "
                            f"start a new run for that")
        cfg.override(key, v)
    return cfg.to_dict() != before
