"""The `--augment SPEC` string: one or more augmentations joined by `+`, each `KIND[:key=value,...]`.

    eda:synonym=0.1,delete=0.1,copies=4
    paraphrase:model=smollm2-135m,copies=2
    backtranslate:model=smollm2-135m,via=French
    mixup:alpha=0.2
    eda:swap=0.1+mixup                      (several at once)

Parsing checks every key and value (names, ranges, finite numbers) and fails with one line naming
the key, so a bad spec stops a run before any data is read. What each kind does lives in
`eda.py`, `generative.py` and `mixup.py`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserError

EDA_OPERATIONS = ("synonym", "insert", "swap", "delete")
KINDS = ("eda", "paraphrase", "backtranslate", "mixup")
# text-making kinds run before training on the training split; mixup runs inside the training step
TEXT_KINDS = ("eda", "paraphrase", "backtranslate")
MAX_COPIES = 32

# key -> (type, low, high, default); bounds inclusive
_KEYS: dict[str, dict[str, tuple[type, float | None, float | None, Any]]] = {
    "eda": {**{op: (float, 0.0, 1.0, 0.0) for op in EDA_OPERATIONS},
            "copies": (int, 1, MAX_COPIES, 4), "synonyms": (str, None, None, "wordnet")},
    "paraphrase": {"model": (str, None, None, "smollm2-135m"), "copies": (int, 1, 8, 1),
                   "temperature": (float, 0.0, 5.0, 0.8), "batch": (int, 1, 512, 16),
                   "max_drift": (float, 0.0, 10.0, 0.5)},
    "backtranslate": {"model": (str, None, None, "smollm2-135m"), "back_model": (str, None, None, ""),
                      "via": (str, None, None, "French"), "copies": (int, 1, 8, 1),
                      "temperature": (float, 0.0, 5.0, 0.0), "batch": (int, 1, 512, 16),
                      "max_drift": (float, 0.0, 10.0, 0.5)},
    "mixup": {"alpha": (float, 0.0, 100.0, 0.4)},
}


@dataclass
class Step:
    """One augmentation of the spec: its kind and every option (defaults filled in)."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def parse_spec(spec: str | None) -> list[Step]:
    """The steps of `spec` in order; an empty or None spec is no augmentation."""
    if spec is None or not str(spec).strip():
        return []
    steps = []
    # '+' separates steps only where a kind name follows (a model path may hold a '+')
    for part in re.split(r"\+(?=\s*(?:%s)\s*(?::|$|\+))" % "|".join(KINDS), str(spec)):
        part = part.strip()
        kind, _, rest = part.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise UserError(f"augment: unknown augmentation {kind!r} in {spec!r} (choose from {', '.join(KINDS)})")
        steps.append(Step(kind, _options(kind, rest, spec)))
    kinds = [s.kind for s in steps]
    if len(set(kinds)) != len(kinds):
        raise UserError(f"augment: {spec!r} names {max(kinds, key=kinds.count)} twice; give its options once")
    return steps


def _options(kind: str, rest: str, spec: str) -> dict[str, Any]:
    keys = _KEYS[kind]
    out = {k: v[3] for k, v in keys.items()}
    given = set()
    for item in (x.strip() for x in rest.split(",")):
        if not item:
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in keys:
            raise UserError(f"augment: {kind} has no option {key!r} (its options: {', '.join(keys)})")
        if not eq or not value:
            raise UserError(f"augment: {kind}:{key} needs a value ({kind}:{key}=...)")
        out[key] = _value(kind, key, value, keys[key])
        given.add(key)
    if kind == "eda" and not any(out[op] > 0 for op in EDA_OPERATIONS):
        raise UserError(f"augment: eda in {spec!r} sets no operation; give a rate for at least one of "
                        f"{', '.join(EDA_OPERATIONS)} (e.g. eda:synonym=0.1)")
    return out


def _value(kind: str, key: str, text: str, rule: tuple[type, float | None, float | None, Any]) -> Any:
    typ, low, high, _ = rule
    if typ is str:
        return text
    try:
        number = float(text) if typ is float else int(text)
    except ValueError:
        what = "a number" if typ is float else "an integer"
        raise UserError(f"augment: {kind}:{key} must be {what}, got {text!r}") from None
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        raise UserError(f"augment: {kind}:{key} must be in [{low:g}, {high:g}], got {text}")
    return number


def text_steps(steps: list[Step]) -> list[Step]:
    """The steps that add training texts before training (all but mixup)."""
    return [s for s in steps if s.kind in TEXT_KINDS]


def mixup_alpha(steps: list[Step]) -> float | None:
    """The mixup alpha the spec asks for, or None when it asks for no mixup."""
    return next((float(s.options["alpha"]) for s in steps if s.kind == "mixup"), None)
