"""Named registries: methods, datasets, models, tasks, objectives, corpora.

Configs refer to entries by name; adding a method or dataset means registering it in
its own module, never editing the training loop. Each registry imports the package whose
modules register into it on its first lookup, so no caller has to import that package for
its side effects first.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with a helpful error for unknown names."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._loaded = package is None

    def _load(self) -> None:
        """Import the package that registers the entries, once (before the first lookup)."""
        if not self._loaded:
            self._loaded = True  # first: the package's own modules look names up while it imports
            try:
                importlib.import_module(self.package)
            except BaseException:
                self._loaded = False  # the next lookup tries again and shows the real error
                raise

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""
        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o
        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._items))


METHODS: Registry = Registry("method", "transferkit.methods")
DATASETS: Registry = Registry("dataset", "transferkit.data.bundled")
MODELS: Registry = Registry("model", "transferkit.modeling.bundled_models")
TASKS: Registry = Registry("task", "transferkit.tasks")
OBJECTIVES: Registry = Registry("objective", "transferkit.objectives")
CORPORA: Registry = Registry("corpus", "transferkit.data.corpus")
