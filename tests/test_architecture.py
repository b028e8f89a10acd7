"""The package's shape, checked from its source with `ast`: no import circles (function-level imports
included), no module outside `tasks/` that steers by a task's name (the code asks the task object; methods:
tests/test_method_names.py), and every atomic rename through `core/fs`."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from transferkit import tasks

SRC = Path(__file__).resolve().parents[1] / "src" / "transferkit"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere in its file (a module, or the module a name comes from)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circles():
    mods = _modules()
    known = set(mods)
    # a package imports its own submodules (to register or re-export them); that edge is not a circle
    graph = {n: {m for m in _imports(n, p, known) if not (p.name == "__init__.py" and m.startswith(n + "."))}
             for n, p in mods.items()}
    assert _circles(graph) == []


def _literal_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _literal_names(e)]
    return []


def _steering(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison with, match on, or dict keyed by one of `names`."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                hits += [(node.lineno, s) for s in _literal_names(side) if s in names]
        elif isinstance(node, ast.MatchValue):
            hits += [(node.lineno, s) for s in _literal_names(node.value) if s in names]
        elif isinstance(node, ast.Dict):
            hits += [(node.lineno, s) for k in node.keys if k is not None for s in _literal_names(k) if s in names]
    return hits


def test_no_module_outside_tasks_steers_by_a_task_name():
    names = set(tasks.TASKS.names())
    found = []
    for name, path in _modules().items():
        if name.startswith("transferkit.tasks"):
            continue
        found += [f"{path.relative_to(SRC)}:{line}: {s!r}" for line, s in
                  _steering(ast.parse(path.read_text(encoding="utf-8")), names)]
    assert found == []


def test_every_rename_goes_through_the_one_writer():
    """A file or folder appears by an atomic rename, and only `core/fs.replace` does one (it turns a full or
    read-only disk into a one-line error); `os.replace`, `os.rename` or `Path.rename` elsewhere would not."""
    found = []
    for name, path in _modules().items():
        if name == "transferkit.core.fs":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr == "rename" or (f.attr == "replace" and isinstance(f.value, ast.Name) and f.value.id == "os"):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_no_function_imports_the_standard_library():
    """Imports sit at the top of a module; one inside a function is of a heavy library the module's own
    imports do not load (torch, transformers, datasets, fastapi, onnxruntime, optuna, ...), so that it loads
    only when used. The standard library is never that."""
    stdlib = set(sys.stdlib_module_names) - {"__future__"}
    found = []
    for path in _modules().values():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            optional = {id(n) for t in ast.walk(fn) if isinstance(t, ast.Try) for s in t.body for n in ast.walk(s)}
            for node in ast.walk(fn):
                if id(node) in optional:  # tried, for a module some platforms lack (resource on Windows)
                    continue
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                found += [f"{path.relative_to(SRC)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in stdlib]
    assert found == []


def test_the_check_sees_a_comparison():
    tree = ast.parse("if task == 'ner':\n    x = {'classify': 1}\n")
    assert [s for _, s in _steering(tree, {"ner", "classify"})] == ["ner", "classify"]
