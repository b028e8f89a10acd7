"""The experiment trackers `train.report_to` may name, checked with the rest of a config before any work: an unknown
name, or a tracker whose package is not installed, is one line. Sending records to them is `training.tracking`."""
from __future__ import annotations

import importlib.util

from ..core.errors import UserError

# tracker name -> (the module it needs, what to install)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny (or mlflow)"),
            "wandb": ("wandb", "wandb")}
NONE = "none"


def parse(value: str | None) -> list[str]:
    """The trackers `train.report_to` names, in order ([] for none); an unknown name or one whose package is not
    installed is a one-line UserError."""
    names = [n.strip().lower() for n in str(value or NONE).split(",") if n.strip()]
    names = list(dict.fromkeys(n for n in names if n != NONE))
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"train.report_to: unknown tracker {name!r}; choose {', '.join(TRACKERS)} (several "
                            f"joined by commas) or {NONE}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"train.report_to={name}: the {module} package is not installed; pip install {package} "
                            f"(or pip install 'transferkit[tracking]')")
    return names
