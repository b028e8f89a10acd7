"""The search space of `transferkit tune`: the default one per method, and a YAML file's changes to it.

The default space is around the method's own defaults (`default_space`), plus every option the
method marks with `search` metadata in its Options. A space file (`read_space`) gives a config key
a range (`{low, high[, log]}`), a choice (`{choices: [...]}`) or a fixed value; every key and bound
is checked against the config before a trial runs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.checks import validate
from ..config.finetune import RunConfig
from ..core.errors import UserError
from ..core.registry import METHODS


@dataclass
class Param:
    """One searched config key: a float or int range (optionally log-scaled), a choice, or a fixed value."""

    key: str  # dotted config key, e.g. train.lr or method.lora_r
    low: Any = None
    high: Any = None
    log: bool = False
    choices: list[Any] | None = None
    value: Any = None  # fixed: not searched
    fixed: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool):
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def values_to_check(self) -> list[Any]:
        """The values whose validity stands for the whole entry (the bounds, or every choice)."""
        if self.fixed:
            return [self.value]
        return list(self.choices) if self.choices is not None else [self.low, self.high]


def default_space(method_name: str) -> dict[str, Param]:
    """The default search space of one method, around its own defaults."""
    method = METHODS.get(method_name)
    lr = method.default_lr
    head = method.default_head_lr or lr
    epochs = method.default_epochs
    space = {
        "train.lr": Param("train.lr", lr / 10, lr * 10, log=True),
        "train.head_lr": Param("train.head_lr", head / 10, head * 10, log=True),
        "train.batch_size": Param("train.batch_size", choices=[b * method.default_batch_size // 16 for b in (8, 16, 32)]),
        "train.warmup": Param("train.warmup", 0.0, 0.2),
        "train.weight_decay": Param("train.weight_decay", 1e-4, 0.1, log=True),
        "train.epochs": Param("train.epochs", max(1, int(epochs) // 2), max(2, int(math.ceil(epochs * 2)))),
    }
    if method.trains_encoder:  # only full fine-tuning trains every encoder layer's weights
        space["train.layer_lr_decay"] = Param("train.layer_lr_decay", 0.6, 1.0)
    for f in dataclasses.fields(method.Options):
        search = f.metadata.get("search")
        if search:
            key = f"method.{f.name}"
            space[key] = Param(key, search.get("low"), search.get("high"), search.get("log", False),
                               search.get("choices"))
    return space


def read_space(path: str | Path, method_names: list[str]) -> dict[str, Any]:
    """A YAML space file: {dotted key: {low, high[, log]} | {choices: [...]} | a fixed value}."""
    import yaml
    p = Path(path)
    if not p.is_file():
        raise UserError(f"space file {p} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"space file {p}: not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"space file {p}: expected a mapping of config keys to ranges, e.g. 'train.lr: {{low: 1e-5, high: 1e-3, log: true}}'")
    out = {}
    for key, spec in raw.items():
        if not isinstance(key, str):
            raise UserError(f"space file {p}: key {key!r} is not a config key")
        if isinstance(spec, dict):
            extra = set(spec) - {"low", "high", "log", "choices"}
            if extra:
                raise UserError(f"space file {p}: {key}: unknown field {sorted(extra)[0]!r} (use low, high, log or choices)")
            if "choices" in spec:
                if not isinstance(spec["choices"], list) or not spec["choices"]:
                    raise UserError(f"space file {p}: {key}: choices must be a non-empty list")
                out[key] = Param(key, choices=spec["choices"])
                continue
            low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
            for name, v in (("low", low), ("high", high)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise UserError(f"space file {p}: {key}: {name} must be a finite number, got {v!r}")
            if not low < high:
                raise UserError(f"space file {p}: {key}: low {low} must be below high {high}")
            if not isinstance(log, bool) or (log and low <= 0):
                raise UserError(f"space file {p}: {key}: a log range needs low > 0, got {low}")
            out[key] = Param(key, low, high, log)
        else:
            out[key] = Param(key, value=spec, fixed=True)
    _check_keys(out, method_names, str(p))
    return out


def _check_keys(space: dict[str, Param], method_names: list[str], where: str) -> None:
    """Every key must be a config key some searched method takes, and every bound a valid value there."""
    for key, param in space.items():
        if key in ("method.name", "output_dir", "data.data", "data.train", "data.validation", "data.test", "task"):
            raise UserError(f"space file {where}: {key} is not searchable (use --method auto to search the method)")
        takers = [m for m in method_names if takes(m, key)] if key.startswith("method.") else method_names
        if not takers:
            raise UserError(f"space file {where}: {key} is not an option of {', '.join(method_names)}")
        for m in takers:
            for v in param.values_to_check():
                cfg = RunConfig()
                cfg.override("method.name", m)
                try:
                    cfg.override(key, v)
                    validate(cfg)
                except UserError as e:
                    raise UserError(f"space file {where}: {key} = {v!r}: {e}") from None


def takes(method_name: str, key: str) -> bool:
    """True when `key` (method.X) is one of `method_name`'s own options."""
    cfg = RunConfig()
    cfg.override("method.name", method_name)
    return key.split(".", 1)[1] in cfg.method.options_dict()
