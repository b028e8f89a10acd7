"""Training defaults that respond to the data: small sets train longer, imbalanced sets are judged by
macro-F1, and a model that learned to say one class is called out.

A method's defaults (`Method.train_config`) are set for a few thousand examples. On 600 rows the
LoRA default of 3 epochs is ~90 optimizer steps, too few to leave the majority class; and early
stopping on accuracy cannot see that, since every epoch of a majority-class model scores the
majority share. So, for what the user left unset:

- epochs: raised until the run has at least `train.min_steps` optimizer steps (default 300), and
  then validation runs about `EVALUATIONS` times over the run rather than after every tiny epoch;
- metric: `f1_macro` instead of the task's default when the largest training class is at least
  `IMBALANCE_RATIO` times the smallest (accuracy rewards predicting the majority);
- after training, `metrics.collapse_warning` says so when the model predicts one class for nearly everything.

Each change is logged with its reason, and only the resolved copy of the train config changes:
config.yaml keeps the user's (unset) values, so a resumed run decides the same way again.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

logger = logging.getLogger(__name__)

DEFAULT_MIN_STEPS = 300
EVALUATIONS = 15  # validation passes in a run whose epochs were raised
IMBALANCE_RATIO = 1.5


def steps_per_epoch(n_train: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps per epoch, as `train.Trainer` counts them (`batch_size` is the global batch)."""
    return max(1, math.ceil(math.ceil(n_train / batch_size) / grad_accum))


def adapt(tcfg: Any, user: Any, n_train: int, counts: Sequence[int] | None, label_names: Sequence[str],
          default_metric: str, task_min_steps: int | None = None) -> Any:
    """`tcfg` (the method-resolved TrainConfig) adapted to the data where `user` (as configured) left it unset."""
    changes: dict[str, Any] = {}
    if user.metric is None:
        changes["metric"] = default_metric
        if counts and min(counts) > 0 and max(counts) / min(counts) >= IMBALANCE_RATIO:
            total = sum(counts)
            big, small = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
            changes["metric"] = "f1_macro"
            logger.info(f"imbalanced classes (largest {label_names[big]} {100 * counts[big] / total:.0f}%, smallest "
                        f"{label_names[small]} {100 * counts[small] / total:.0f}% of the training rows): early "
                        f"stopping and the best weights use f1_macro, not {default_metric}, which a model predicting "
                        f"{label_names[big]} for everything would score well on (set train.metric to choose)")
    default_min = DEFAULT_MIN_STEPS if task_min_steps is None else task_min_steps  # the task's, where it has one
    min_steps = default_min if user.min_steps is None else user.min_steps
    if user.epochs is None and user.max_steps is None and tcfg.epochs is not None and min_steps:
        per_epoch = steps_per_epoch(n_train, tcfg.batch_size, tcfg.grad_accum)
        planned = math.ceil(per_epoch * tcfg.epochs)
        if planned < min_steps:
            epochs = math.ceil(min_steps / per_epoch)
            changes["epochs"] = float(epochs)
            every = ""
            if user.eval_steps is None and epochs > EVALUATIONS:
                changes["eval_steps"] = math.ceil(per_epoch * epochs / EVALUATIONS)
                every = f"; validation every {changes['eval_steps']} steps"
            logger.info(f"small training set ({n_train:,} rows, {per_epoch} steps per epoch): {epochs} epochs "
                        f"instead of {tcfg.epochs:g}, so the run takes at least {min_steps} optimizer steps{every} "
                        f"(train.epochs or train.min_steps=0 to choose)")
    return dataclasses.replace(tcfg, **changes)


def class_weights(counts: Sequence[int]) -> list[float]:
    """sklearn's 'balanced' weights: n / (classes * count) (a class absent from training gets 0)."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]
