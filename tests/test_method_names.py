"""Outside `methods/` (and `tasks/`), no module steers by a method's name: what plan, tune, compare,
config checks or serving need from a method is an attribute or hook of it (`Method.trains_encoder`,
`shares_base`, `mixes_per_row`, `row_mixer`, `plan_rank`, `plan_picks`, ...), read through
`registry.METHODS`. A literal method name may still appear as a default (`method="lora"`) or in text.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from transferkit.core.registry import METHODS

SRC = Path(__file__).resolve().parents[1] / "src" / "transferkit"
OWN = ("methods", "tasks")  # the methods themselves, and tasks (which may name the methods they suit)
# (module relative to src/transferkit, name): a literal that spells a method name but means something else.
EXEMPT = {
    # the "adapter" field of a prediction row from several served runs (the run that answered it), not
    # the bottleneck-adapter method
    ("inference/files.py", "adapter"),
}
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def name_uses(tree: ast.AST, names: set[str]) -> list[tuple[int, str, str]]:
    """(line, method name, what) for each place `tree` steers by a literal method name: a comparison
    (==, !=, in, not in) with it or with a literal collection holding it, a `case` on it, a dict literal
    or `dict(...)` with two or more method names as keys, a tuple/list/set literal of two or more
    (a table of methods, e.g. a preference order), or a subscript by one (reading such a table)."""
    def name(node: ast.AST | None) -> str | None:
        ok = isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
        return node.value if ok else None  # type: ignore[union-attr]

    def names_in(nodes: list[ast.expr | None]) -> list[str]:
        return [n for n in map(name, nodes) if n is not None]

    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and any(isinstance(op, COMPARISONS) for op in node.ops):
            for side in [node.left, *node.comparators]:
                elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [(line, n, "compared") for n in names_in(elts)]
        elif isinstance(node, ast.MatchValue) and name(node.value):
            found.append((line, name(node.value), "matched by case"))  # type: ignore[arg-type]
        elif isinstance(node, ast.Dict) and len(names_in(node.keys)) >= 2:
            found += [(line, n, "a dict key") for n in names_in(node.keys)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
              and len([k for k in node.keywords if k.arg in names]) >= 2):
            found += [(line, k.arg, "a dict key") for k in node.keywords if k.arg in names]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(names_in(node.elts)) >= 2:
            found += [(line, n, "listed in a table of methods") for n in names_in(node.elts)]
        elif isinstance(node, ast.Subscript) and name(node.slice):
            found.append((line, name(node.slice), "a subscript"))  # type: ignore[arg-type]
    return found


def test_no_module_outside_methods_steers_by_a_method_name():
    names = set(METHODS.names())
    assert {"full", "lora", "head_only"} <= names
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.split("/")[0] in OWN:
            continue
        for line, n, what in name_uses(ast.parse(path.read_text(encoding="utf-8"), rel), names):
            if (rel, n) not in EXEMPT:
                problems.append(f"{rel}:{line}: method name {n!r} {what}; ask the method (an attribute or "
                                f"hook on methods.base.Method) instead")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("code", [
    "if cfg.method.name == 'full': pass",
    "ok = name != 'lora'",
    "ok = name in ('lora', 'ia3')",
    "ok = 'setfit' in candidates",
    "match m:\n    case 'bitfit':\n        pass",
    "TABLE = {'lora': 1, 'full': 2}",
    "TABLE = dict(lora=1, full=2)",
    "ORDER = ('lora', 'ia3', 'head_only')",
    "x = by['full']",
])
def test_the_check_finds_name_steering(code):
    assert name_uses(ast.parse(code), set(METHODS.names()))


@pytest.mark.parametrize("code", [
    "def tune(method: str = 'lora'): pass",
    "name = d.get('name', 'full')",
    "method = args.method or 'lora'",
    "row = {'adapter': name, 'label': label}",
    "print(f'method {name} is lora-like')",
    "ok = method.trains_encoder",
])
def test_the_check_lets_defaults_and_text_be(code):
    assert not name_uses(ast.parse(code), set(METHODS.names()))
