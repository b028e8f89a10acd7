"""Regression: numbers per text from a linear head over the pooled text.

Targets are standardised for training: the loss is the mean squared error (or Huber, `train.loss=huber`)
of (prediction - target) / sd, with each target's training mean and sd. The model itself answers in the
targets' own units: its config's `output_scale` and `output_shift` are those sds and means (see
`modeling.classifier`), so the head starts at the mean and a stock `AutoModelForSequenceClassification`
(`problem_type="regression"`) or `pipeline(..., function_to_apply="none")` gives the same numbers this
project's predictor does.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...core import fs
from ...core.errors import UserError
from ...modeling.forward import predict_logits
from ..classify.splits import prepare_splits
from ..classify.task import SequenceClassification
from ..rows import EncodedInputs, finite_probs
from .read import TargetRule, load_targets
from .report import write_regression_report

logger = logging.getLogger(__name__)


class Regression(SequenceClassification):
    name = "regression"
    one_label_per_example = False
    pipeline_names = ("text-classification",)
    pipeline_function = "none"
    problem_type = "regression"
    losses = ("auto", "mse", "huber")
    runs_csv_columns = ("values",)
    augment_formats = ()
    serving_task = "classify"  # classify's routes, with this task's items
    default_metric = "pearson"
    headline_metrics = ("mse", "mae", "pearson", "spearman")
    compare_metrics = (("pearson", "test Pearson x100", "Pearson r"), ("spearman", "Spearman x100", "Spearman r"))

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        splits = prepare_splits(data_cfg, seed, TargetRule())
        y = np.asarray(splits.train.labels, dtype=np.float64)  # [n, targets]
        mean, sd = y.mean(axis=0), y.std(axis=0)
        flat = [n for n, s in zip(splits.label_names, sd) if not s > 1e-12]
        if flat:
            raise UserError(f"target {flat[0]!r} has the same value in every training row; there is nothing to learn")
        self.head.update({"problem_type": self.problem_type, "output_scale": [float(s) for s in sd],
                          "output_shift": [float(m) for m in mean]})
        logger.info("targets standardised for training (predictions are in their own units): " + ", ".join(
            f"{n} mean {m:.4g}, sd {s:.4g}" for n, m, s in zip(splits.label_names, mean, sd)))
        return splits

    def _sd(self, device: Any) -> torch.Tensor:
        return torch.tensor(self.head["output_scale"], dtype=torch.float32, device=device)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        pred = outputs.logits.float()  # [batch, targets], in the targets' units
        sd = self._sd(pred.device)
        z_pred, z_true = pred / sd, batch["labels"].float().view_as(pred) / sd
        if self.loss_name == "huber":
            loss = nn.functional.huber_loss(z_pred, z_true, reduction="sum", delta=1.0)
        else:
            loss = nn.functional.mse_loss(z_pred, z_true, reduction="sum")
        return loss, int(pred.numel()), 0

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> tuple[dict[str, float], torch.Tensor]:
        from .metrics import regression_metrics
        pred = predict_logits(model, data, batch_size, pad_id, device)  # [n, targets]
        true = torch.tensor(data.labels, dtype=torch.float32).view_as(pred)
        metrics = regression_metrics(true.numpy(), pred.numpy(), [f"t{k}" for k in range(pred.shape[-1])])
        metrics.pop("per_target")
        sd = self._sd(pred.device)
        metrics["loss"] = float(nn.functional.mse_loss(pred / sd, true / sd)) if len(pred) else 0.0
        return metrics, pred

    def load_labelled(self, source: str, label_names: list[str], text_column: str | None,
                      label_column: str | None) -> Any:
        data = load_targets(source, text_column, label_column or ",".join(label_names))
        if label_column is not None and len(data.label_columns) != len(label_names):
            raise UserError(f"{source}: {len(data.label_columns)} target column(s) given, the model predicts "
                            f"{len(label_names)} ({', '.join(label_names)})")
        return data

    def score(self, model: nn.Module, tokenizer: Any, info: Any, split: Any, out: Path, history: list[dict],
              title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        texts = list(split.texts)
        pred = finite_probs(self.split_logits(model, tokenizer, texts, info.max_length))  # [n, targets]
        return write_regression_report(out, texts, split.labels, pred, info.label_names, title, extra)

    def write_report(self, out: Path, splits: Any, predictions: torch.Tensor, history: list[dict], title: str,
                     extra: dict[str, Any]) -> dict[str, Path]:
        return write_regression_report(out, list(splits.test.texts), splits.test.labels, predictions.numpy(),
                                       splits.label_names, title, extra)[1]

    def gate_view(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The values in training units ((value - mean) / sd: an absolute limit means the same for any target scale);
        there is no decision to flip (every item agrees)."""
        values = logits.float()
        shift = torch.tensor(self.head.get("output_shift") or [0.0] * values.shape[-1])
        scale = torch.tensor(self.head.get("output_scale") or [1.0] * values.shape[-1])
        return (values - shift) / scale, torch.zeros(len(values), dtype=torch.bool)

    def decode(self, outputs: list[torch.Tensor], encoded: EncodedInputs, label_names: list[str],
               **options: Any) -> list[dict[str, Any]]:
        """Per text: {"values": {target: number}}, in the targets' units."""
        if not outputs:
            return []
        values = finite_probs(torch.stack(outputs).float(), positions=encoded.positions)  # [n, targets]
        return [{"values": {n: float(v) for n, v in zip(label_names, row)}} for row in values]

    def classify_item(self, logits: torch.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        return {"values": {n: float(v) for n, v in zip(label_names, logits)}, "num_classes": len(label_names)}

    def predict_items(self, logits: torch.Tensor, label_names: Sequence[str], raw_scores: bool) -> list[dict[str, Any]]:
        """Every target with its value, in the targets' order (TEI gives a regressor's raw score)."""
        return [{"label": n, "score": float(v)} for n, v in zip(label_names, logits)]

    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        return list(label_names)

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        return [f"{row['values'][n]:.6g}" for n in label_names]

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        return {"values": fs.dumps(row["values"])}

    def add_routes(self, app: Any, answer: Any) -> None:
        """None of its own: classify's routes answer regression runs too (`serving_task`)."""


    # ---- model cards: the logits are the predicted values, in the data's units --------------------------------
    card_pipeline_note = "  # the predicted value of each target, in the data's units"

    def card_summary(self, label_names: Sequence[str]) -> str:
        return (f"predicts {'a number' if len(label_names) == 1 else f'{len(label_names)} numbers'} per text "
                f"({', '.join(map(str, label_names))}), in the units of the training data")

    def card_onnx_decode(self) -> list[str]:
        return ["print(dict(zip(labels, logits[0].tolist())))  # the predicted value of each target"]
