"""What a finished run directory holds and how to load its model back.

`run.json` records the method, the encoder it started from, the label names and the token
limit: enough to rebuild the model from the saved artefact (a full model folder or an adapter).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

RUN_FILE = "run.json"


def new_run_dir(output_dir: str | None, label: str) -> Path:
    """The run directory to create: `output_dir` if new or empty, else runs/<time>-<label>[-N]."""
    import datetime as dt
    if output_dir:
        p = Path(output_dir)
        if p.exists() and any(p.iterdir()):
            raise UserError(f"output directory {p} exists and is not empty; choose another or remove it")
        return p
    base = Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{label}"
    p, i = base, 1
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary name, so a reader never sees half of it."""
    import os
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class RunInfo:
    run_dir: str
    method: str
    model_name: str
    model_path: str
    label_names: list[str]
    max_length: int
    pooling: str
    classifier_dropout: float
    head_hidden: int = 0
    pool_layers: int = 1
    method_options: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_dir(self) -> Path:
        from .registry import METHODS
        return Path(self.run_dir) / METHODS.get(self.method).artifact

    def write(self) -> None:
        path = Path(self.run_dir) / RUN_FILE
        tmp = path.with_suffix(".tmp")
        d = asdict(self)
        d.pop("run_dir")
        tmp.write_text(json.dumps(d, indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunInfo":
        path = Path(run_dir) / RUN_FILE
        if not Path(run_dir).is_dir():
            raise UserError(f"run directory not found: {run_dir}")
        if not path.is_file():
            raise UserError(f"{run_dir} is not a finished transferkit run (no {RUN_FILE}); "
                            f"an interrupted run continues with: transferkit finetune --resume {run_dir}")
        return cls(run_dir=str(run_dir), **json.loads(path.read_text(encoding="utf-8")))

    def method_instance(self) -> Any:
        from . import methods  # noqa: F401  (registers methods)
        from .config import MethodConfig
        from .registry import METHODS
        return METHODS.get(self.method)(MethodConfig(**self.method_options))

    def load_model(self, merge: bool = False) -> Any:
        """The trained model; `merge=True` gives the fastest equivalent for inference."""
        from .models import ResolvedModel, build_classifier
        method = self.method_instance()
        base = lambda: build_classifier(ResolvedModel(self.model_name, self.model_path, self.pooling),  # noqa: E731
                                        self.label_names, self.pooling, self.classifier_dropout, self.head_hidden,
                                        self.pool_layers)
        model = method.load(self.artifact_dir, base)
        return method.for_inference(model) if merge else model
