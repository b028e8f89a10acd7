"""Multi-label classification: one sigmoid per label over the pooled text, binary cross-entropy, and a
decision threshold per label tuned on the validation split after training.

The thresholds (each label's best F1 on validation, on a 0.05 grid) are folded into the head: its config's
`output_shift` subtracts logit(threshold) from each label's logit (see `modeling.classifier`), so a label
applies where its score is >= 0.5 here, in a stock `pipeline(..., function_to_apply="sigmoid", top_k=None)`
and in an ONNX graph alike. The thresholds themselves are kept in run.json's head and the model's config
(`thresholds`) and logged.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...core import fs
from ...core.errors import UserError
from ...modeling.forward import predict_logits
from ...modeling.resolve import set_head
from ..classify.read import LabelledData
from ..classify.splits import prepare_splits
from ..classify.task import SequenceClassification
from ..rows import EncodedInputs, finite_probs
from .metrics import multilabel_metrics, tune_thresholds
from .read import LabelSetRule, load_label_sets, multi_hot
from .report import write_multilabel_report

logger = logging.getLogger(__name__)


class MultiLabel(SequenceClassification):
    name = "multilabel"
    one_label_per_example = False
    weighs_labels = True
    pipeline_names = ("text-classification",)
    pipeline_function = "sigmoid"
    problem_type = "multi_label_classification"
    runs_csv_columns = ("probs", "labels")
    augment_formats = ()
    serving_task = "classify"
    default_metric = "f1_micro"
    headline_metrics = ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy")
    compare_metrics = (("f1_micro", "micro F1 %", "micro F1"), ("f1_macro", "macro F1 %", "macro F1"))

    def __init__(self) -> None:
        super().__init__()
        self.balanced = False  # train.class_weights=balanced, once `configure` has seen the run's config
        self.pos_weight: list[float] | None = None  # per label, negatives / positives (balanced)

    def configure(self, cfg: Any) -> None:
        super().configure(cfg)
        self.balanced = cfg.train.class_weights == "balanced"

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        splits = prepare_splits(data_cfg, seed, LabelSetRule())
        y = np.asarray(splits.train.labels, dtype=np.float64)
        self.head["problem_type"] = self.problem_type
        self.head["label_separator"] = data_cfg.label_separator  # a labelled file given to evaluate is read alike
        self.pos_weight = None
        if self.balanced:  # negatives over positives per label, at most 100
            pos = y.sum(axis=0)
            self.pos_weight = [float(min((len(y) - p) / max(p, 1.0), 100.0)) for p in pos]
            logger.info("positive weights (balanced): " + ", ".join(
                f"{n} {w:.2f}" for n, w in zip(splits.label_names, self.pos_weight)))
        return splits

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        logits = outputs.logits.float()  # [batch, labels]
        target = batch["labels"].float().view_as(logits)
        weight = self.pos_weight
        pos = torch.tensor(weight, device=logits.device) if weight is not None else None
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos, reduction="sum")
        correct = int(((logits >= 0) == target.bool()).sum())
        return loss, int(logits.numel()), correct

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> tuple[dict[str, float], torch.Tensor]:
        logits = predict_logits(model, data, batch_size, pad_id, device)  # [n, labels]
        true = torch.tensor(data.labels, dtype=torch.float32).view_as(logits)
        names = [f"l{k}" for k in range(logits.shape[-1])]
        metrics = multilabel_metrics(true.numpy(), (logits >= 0).numpy(), names)
        metrics.pop("per_label")
        metrics["loss"] = float(nn.functional.binary_cross_entropy_with_logits(logits, true)) if len(true) else 0.0
        return metrics, logits

    def after_training(self, model: nn.Module, data: dict[str, Any], pad_id: int, device: Any) -> None:
        """Tune each label's threshold on the validation split and fold it into the head (module docstring)."""
        val = data.get("validation")
        if val is None or not len(val):
            logger.info("thresholds: no validation split; every label applies at probability 0.5")
            return
        logits = predict_logits(model, val, 64, pad_id, device)
        probs = torch.sigmoid(logits).numpy()
        thresholds = tune_thresholds(probs, np.asarray(val.labels))
        self.head["thresholds"] = thresholds
        self.head["output_shift"] = [-math.log(t / (1 - t)) for t in thresholds]
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        set_head(base.config, self.head)
        names = list(base.config.id2label.values())
        logger.info("decision thresholds tuned on the validation split (best F1 per label): " + ", ".join(
            f"{n} {t:.2f}" for n, t in zip(names, thresholds)))

    def load_labelled(self, source: str, label_names: list[str], text_column: str | None,
                      label_column: str | None) -> Any:
        data = load_label_sets(source, text_column, label_column, self.head.get("label_separator", ","))
        index = {n: i for i, n in enumerate(label_names)}
        for row, labels in enumerate(data.labels, start=1):
            unknown = [n for n in labels if n not in index]
            if unknown:
                raise UserError(f"{source}: row {row} has label {unknown[0]!r}, which the model does not know "
                                f"(labels: {', '.join(label_names)})")
        return LabelledData(list(data.texts), [multi_hot(y, index) for y in data.labels], str(source))

    def score(self, model: nn.Module, tokenizer: Any, info: Any, split: Any, out: Path, history: list[dict],
              title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        texts = list(split.texts)
        probs = finite_probs(torch.sigmoid(self.split_logits(model, tokenizer, texts, info.max_length)))
        return write_multilabel_report(out, texts, split.labels, probs, info.label_names, title, extra)

    def write_report(self, out: Path, splits: Any, predictions: torch.Tensor, history: list[dict], title: str,
                     extra: dict[str, Any]) -> dict[str, Path]:
        probs = torch.sigmoid(predictions).numpy()
        return write_multilabel_report(out, list(splits.test.texts), splits.test.labels, probs, splits.label_names,
                                       title, {**extra, "thresholds": self.head.get("thresholds")})[1]

    def gate_view(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each label's probability and whether it applies."""
        probs = torch.sigmoid(logits.float())
        return probs, probs >= 0.5

    def decode(self, outputs: list[torch.Tensor], encoded: EncodedInputs, label_names: list[str],
               **options: Any) -> list[dict[str, Any]]:
        """Per text: the labels that apply (score >= 0.5, best first) and every label's score."""
        if not outputs:
            return []
        probs = finite_probs(torch.sigmoid(torch.stack(outputs).float()), positions=encoded.positions)
        out = []
        for row in probs:
            order = sorted(range(len(label_names)), key=lambda k: -float(row[k]))
            out.append({"labels": [label_names[k] for k in order if row[k] >= 0.5],
                        "probs": {n: float(p) for n, p in zip(label_names, row)}})
        return out

    def classify_item(self, logits: torch.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        probs = torch.sigmoid(logits.float())
        k = int(probs.argmax())
        return {"label": label_names[k], "labels": [n for n, p in zip(label_names, probs) if p >= 0.5],
                "probs": [float(p) for p in probs], "num_classes": len(label_names)}

    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        return ["labels"] + [f"p_{n}" for n in label_names]

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        return [self.head.get("label_separator", ",").join(row["labels"])] + [f"{row['probs'][n]:.6f}" for n in label_names]

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        return {"labels": fs.dumps(row["labels"]), "probs": fs.dumps(row["probs"])}

    def add_routes(self, app: Any, answer: Any) -> None:
        """None of its own: classify's routes answer multi-label runs too (`serving_task`)."""

    # ---- model cards: each label's own sigmoid; the tuned thresholds are folded into the head ---------------
    card_pipeline_note = "  # a label applies when its score is over 0.5 (its tuned threshold is folded in)"

    def card_summary(self, label_names: Sequence[str]) -> str:
        tuned = ("the decision thresholds tuned on the validation split are folded into the head, so a label applies "
                 "when its score is over 0.5" if "thresholds" in self.head else
                 "with no validation split to tune thresholds on, a label applies when its probability is over 0.5")
        return (f"gives a text any number of {len(label_names)} labels ({', '.join(map(str, label_names))}), each "
                f"with its own score; {tuned}")

    def card_onnx_decode(self) -> list[str]:
        return ["probs = 1 / (1 + np.exp(-logits))",
                "print([label for label, p in zip(labels, probs[0]) if p > 0.5], probs[0].round(4).tolist())"]
