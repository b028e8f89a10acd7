"""Experiment tracking: a run's records sent to TensorBoard, MLflow or Weights & Biases through Accelerate's trackers.

`train.report_to` names them ("none", the default, or several joined by commas). The run then creates its Accelerator
with those trackers (`Accelerator(log_with=...)`), starts them with its config as hyperparameters (flattened, the
training values as the run resolved them), logs every record it appends to metrics.jsonl (`train/...` and
`validation/...`, at its optimizer step) and its test metrics (`test/...`, at the last step), and ends them when it
ends. Accelerate logs from the main process only, so a run under several processes reports once.

Where the records go, by default (`place`):
    TensorBoard  RUN_DIR/tracking/tensorboard (so `tensorboard --logdir RUN_DIR` shows them)
    MLflow       the SQLite store `sqlite:///<folder of the run dir>/mlflow.db` (so `mlflow ui --backend-store-uri`
                 opens it), experiment named after that folder, run named after the run; MLFLOW_TRACKING_URI (and
                 MLflow's other variables) win
    W&B          project named after that folder, run named after the run (wandb's own login and WANDB_* settings)
`compare` and `tune` group their runs: each cell or trial is a tracker run named after it, TensorBoard's under
OUT/tracking/tensorboard/<name>, MLflow's in OUT/mlflow.db in one experiment named after OUT (compare's cells, which
run in processes of their own, learn their group from GROUP_ENV and RUN_ENV).

The trackers' packages are an optional extra (`pip install 'transferkit[tracking]'`): a tracker whose package is
missing, like an unknown name, is a one-line UserError before any work (`config.trackers.parse`, called by the
config's checks).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.lock import exclusive

GROUP_ENV = "TRANSFERKIT_TRACKING_GROUP"  # the compare folder a child process's run belongs to
RUN_ENV = "TRANSFERKIT_TRACKING_RUN"  # its name in that group
TRACKING_DIR = "tracking"
MLFLOW_DB = "mlflow.db"


@dataclass(frozen=True)
class Place:
    """Where one run's records go."""

    tensorboard_dir: Path  # the folder of its TensorBoard event files
    mlflow_db: Path  # the default MLflow store (a SQLite file)
    group: str  # MLflow's experiment, W&B's project
    name: str  # the run's name in its group


def place(run_dir: str | Path, group: tuple[str | Path, str] | None = None) -> Place:
    """Where a run's records go: its own folder, or a compare/tune group (folder, name in it); without `group`, the
    one GROUP_ENV and RUN_ENV name, if set."""
    if group is None and os.environ.get(GROUP_ENV):
        group = (os.environ[GROUP_ENV], os.environ.get(RUN_ENV) or Path(run_dir).name)
    if group is not None:
        folder, name = Path(group[0]), str(group[1])
        return Place(folder / TRACKING_DIR / "tensorboard" / name, folder / MLFLOW_DB, folder.resolve().name, name)
    run_dir = Path(run_dir)
    parent = run_dir.resolve().parent
    return Place(run_dir / TRACKING_DIR / "tensorboard", parent / MLFLOW_DB, parent.name, run_dir.name)


def trackers(names: list[str], where: Place) -> list[Any]:
    """Accelerate's tracker objects for `names`, set up for `where` (nothing starts until `start`)."""
    if not names:
        return []
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker  # heavy: only when tracking

    class LocalMLflow(MLflowTracker):
        """MLflow's tracker on the SQLite store beside the runs, unless MLFLOW_TRACKING_URI names another."""

        def start(self) -> None:
            if os.environ.get("MLFLOW_TRACKING_URI"):
                super().start()
                return
            import mlflow  # heavy: only when tracking to MLflow
            where.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(f"sqlite:///{where.mlflow_db.resolve()}")
            self.logging_dir = (where.mlflow_db.parent / "mlartifacts").resolve().as_uri()
            # tune's workers and compare's cells may start at once: one at a time creates the store's tables and
            # the experiment, the others then find them
            with exclusive(where.mlflow_db.with_name(where.mlflow_db.name + ".lock")):
                super().start()

    made = {"tensorboard": lambda: TensorBoardTracker(where.tensorboard_dir.name, str(where.tensorboard_dir.parent)),
            "mlflow": lambda: LocalMLflow(experiment_name=where.group, run_name=where.name),
            "wandb": lambda: WandBTracker(where.group, name=where.name)}
    return [made[n]() for n in names]


def start(accelerator: Any, config: dict[str, Any], train: Any) -> None:
    """Start the accelerator's trackers (if any) with the run's config as hyperparameters: flattened, its `train`
    section replaced by the values the run resolved (`train`, a TrainConfig)."""
    if not accelerator.log_with:
        return
    values = {**config, "train": asdict(train)}
    accelerator.init_trackers(Path(str(config.get("output_dir") or "run")).name, config=hyperparameters(values))


def hyperparameters(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat `section.key` values every tracker takes (numbers, text and booleans)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(hyperparameters(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:  # None and lists, as text
            out[key] = "none" if v is None else str(v)
    return out


def scalars(record: dict[str, Any], split: str | None = None) -> dict[str, float]:
    """A metrics record's finite numbers as `split/name` (the split: "train" for a training record, else the
    record's own, e.g. "validation"); its step and type are left out."""
    split = split or ("train" if record.get("type") == "train" else record.get("split", "validation"))
    return {f"{split}/{k}": float(v) for k, v in record.items()
            if k not in ("type", "split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def log(accelerator: Any, record: dict[str, Any], step: int, split: str | None = None) -> None:
    """Send one record to the accelerator's trackers (nothing without any)."""
    if accelerator is not None and accelerator.trackers:
        accelerator.log(scalars(record, split), step=step)


def end(accelerator: Any) -> None:
    """End the trackers' runs (flushes TensorBoard, closes MLflow's run); nothing without any."""
    if accelerator is not None and accelerator.trackers:
        accelerator.end_training()
        accelerator.trackers = []
