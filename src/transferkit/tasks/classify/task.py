"""Sentence classification: one label per text, a pooled-encoder head, cross-entropy, and the
accuracy / precision / recall / F1 family of metrics."""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ...augmentation.apply import augment_texts
from ...core import fs
from ...core.errors import UserError
from ...data.batches import TokenData
from ...data.tokens import tokenize
from ...modeling.forward import predict_logits
from ...modeling.resolve import build_classifier
from ..base import Task
from ..rows import EncodedInputs, finite_probs
from .read import LabelledData, load_table
from .splits import prepare_splits

logger = logging.getLogger(__name__)

# what transformers' text-classification pipeline applies by default for a model's config.problem_type
PROBLEM_FUNCTIONS = {"regression": "none", "multi_label_classification": "sigmoid",
                     "single_label_classification": "softmax"}
# transformers' text-classification pipeline's `function_to_apply`: logits [n, labels] -> scores
SCORE_FUNCTIONS = {"softmax": lambda x: torch.softmax(x.float(), dim=-1), "sigmoid": lambda x: torch.sigmoid(x.float()),
                   "none": lambda x: x.float()}


def classification_loss(outputs: Any, batch: dict[str, torch.Tensor],
                        class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """Summed (optionally class-weighted) cross-entropy, the number of scored items, and how many were right."""
    logits, labels = outputs.logits, batch["labels"]  # [batch, classes], [batch]
    weight = class_weights.to(logits.device) if class_weights is not None else None
    loss = nn.functional.cross_entropy(logits.float(), labels, weight=weight, reduction="sum")
    correct = int((logits.argmax(-1) == labels).sum())
    return loss, int(labels.numel()), correct


class SequenceClassification(Task):
    name = "classify"
    one_label_per_example = True
    pipeline_names = ("text-classification", "sentiment-analysis")
    pipeline_options = ("top_k", "function_to_apply")
    # what transformers' text-classification pipeline applies to the logits by default for this kind of model
    pipeline_function = "softmax"
    problem_type = "single_label_classification"
    runs_csv_columns = ("label", "confidence", "probs")
    augment_formats = (".csv", ".tsv", ".jsonl")
    default_metric = "accuracy"
    headline_metrics = ("accuracy", "precision", "recall", "f1", "f1_macro")
    compare_metrics = (("accuracy", "test acc %", "accuracy"), ("f1_macro", "macro F1 %", "macro F1"))

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        return prepare_splits(data_cfg, seed)

    def texts(self, split: Any) -> Sequence[str]:
        return split.texts  # a list, or mapped texts that are read a chunk at a time

    def build_model(self, resolved: Any, label_names: list[str], pooling: str, dropout: float, head_hidden: int,
                    pool_layers: int, random_init: bool = False) -> nn.Module:
        self.head.setdefault("problem_type", self.problem_type)
        return build_classifier(resolved, label_names, pooling, dropout, head_hidden, pool_layers,
                                random_init=random_init, head=self.head)

    def encode(self, tokenizer: Any, split: Any, max_length: int) -> Any:
        return TokenData(tokenize(tokenizer, split.texts, max_length), list(split.labels))

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        return classification_loss(outputs, batch, class_weights)

    def augment(self, splits: Any, steps: list, seed: int, spec: str) -> Any:
        if not self.one_label_per_example:  # the text steps copy a row's one label onto its new texts
            raise UserError(f"augment: the text steps are for one-label data; {self.name} data is not augmented")
        held_out = [*splits.validation.texts, *splits.test.texts]
        texts, labels, report = augment_texts(list(splits.train.texts), list(splits.train.labels), steps, seed, spec,
                                              exclude=held_out)
        splits.train = LabelledData(texts, labels, splits.train.source)
        splits.summary["augment"] = report.as_dict()
        logger.info(report.describe())
        return splits

    def collapse_warning(self, splits: Any, predictions: torch.Tensor) -> str | None:
        if not self.one_label_per_example:  # "nearly all one class" needs one class per example
            return None
        from ...reporting.metrics import collapse_warning
        return collapse_warning(predictions.argmax(-1).tolist(), list(splits.test.labels), splits.label_names, "test")

    def class_counts(self, splits: Any) -> list[int] | None:
        if not self.one_label_per_example:
            return None
        counts = [0] * len(splits.label_names)
        for y in splits.train.labels:
            counts[y] += 1
        return counts

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> tuple[dict[str, float], torch.Tensor]:
        from ...reporting.metrics import classification_metrics
        logits = predict_logits(model, data, batch_size, pad_id, device)  # [n, classes]
        labels = torch.tensor(data.labels)
        metrics = {"loss": float(nn.functional.cross_entropy(logits, labels))}
        metrics.update(classification_metrics(labels.tolist(), logits.argmax(-1).tolist(), logits.shape[-1]))
        return metrics, logits

    def load_labelled(self, source: str, label_names: list[str], text_column: str | None,
                      label_column: str | None) -> Any:
        table = self.read_labelled(source, text_column, label_column)
        index = {name: i for i, name in enumerate(label_names)}
        labels = []
        for row, label in enumerate(table.labels, start=1):
            key = str(label)
            if key not in index:
                raise UserError(f"{source}: row {row} has label {key!r}, which the model does not know "
                                f"(labels: {', '.join(label_names)})")
            labels.append(index[key])
        return LabelledData(list(table.texts), labels, str(source))

    def split_logits(self, model: nn.Module, tokenizer: Any, inputs: list[Any], max_length: int) -> torch.Tensor:
        """The model's logits [n, outputs] for a labelled split's inputs, encoded as the task encodes them, on the
        model's own device (`score`)."""
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        rows = self.encode_inputs(tokenizer, inputs, max_length).rows
        return predict_logits(model, TokenData(rows), 64, tokenizer.pad_token_id or 0, device)

    def read_labelled(self, source: str, text_column: str | None, label_column: str | None) -> LabelledData:
        """A labelled file's rows as found (labels not yet checked against the run's)."""
        return load_table(source, text_column, label_column)

    def score(self, model: nn.Module, tokenizer: Any, info: Any, split: Any, out: Path, history: list[dict],
              title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        from ...reporting.metrics import full_report
        from ...reporting.run_report import write_report
        texts, y_true = list(split.texts), list(split.labels)
        logits = self.split_logits(model, tokenizer, texts, info.max_length)  # [n, classes]
        probs = finite_probs(torch.softmax(logits, dim=-1))
        report = full_report(y_true, probs.argmax(-1).tolist(), info.label_names)
        paths = write_report(out, report=report, texts=[self.display_text(t) for t in texts], y_true=y_true,
                             probs=probs, label_names=info.label_names,
                             history=history, title=title, extra=extra)
        return report, paths

    def encode_inputs(self, tokenizer: Any, inputs: list[str], max_length: int) -> EncodedInputs:
        return EncodedInputs(list(tokenize(tokenizer, inputs, max_length)), list(range(len(inputs))), len(inputs))

    def serving_results(self, outputs: list[torch.Tensor], encoded: EncodedInputs,
                        label_names: list[str]) -> list[torch.Tensor]:
        """Per text its logits [classes]: the routes answer with probabilities or raw scores from them."""
        return [o.float() for o in outputs]

    def decode(self, outputs: list[torch.Tensor], encoded: EncodedInputs, label_names: list[str],
               **options: Any) -> list[dict[str, Any]]:
        """Per text: label, confidence, and every class probability."""
        if not outputs:
            return []
        probs = finite_probs(torch.softmax(torch.stack(outputs), dim=-1), positions=encoded.positions)
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append({"label": label_names[k], "confidence": float(row[k]),
                        "probs": {n: float(p) for n, p in zip(label_names, row)}})
        return out

    def write_report(self, out: Path, splits: Any, predictions: torch.Tensor, history: list[dict], title: str,
                     extra: dict[str, Any]) -> dict[str, Path]:
        from ...reporting.metrics import full_report
        from ...reporting.run_report import write_report
        probs = torch.softmax(predictions, -1).numpy()
        y_true = list(splits.test.labels)
        report = full_report(y_true, probs.argmax(-1).tolist(), splits.label_names)
        return write_report(out, report=report, texts=[self.display_text(t) for t in splits.test.texts],
                            y_true=y_true, probs=probs,
                            label_names=splits.label_names, history=history, title=title, extra=extra)

    # ---- surfaces: pipeline, prediction CSV, HTTP routes, augmented files -------------------------------
    def pipeline_call(self, predictor: Any, texts: list[str], options: dict[str, Any]) -> list[Any]:
        """Per text [{"label", "score"}] best first, `top_k` of them (None: all labels); without top_k the
        best one's dict alone, as transformers' legacy shape. `function_to_apply` ("softmax", "sigmoid",
        "none") turns logits into scores; its default is the task's, as transformers picks it from the
        model's problem type."""
        legacy = "top_k" not in options
        top_k = options.get("top_k", 1)
        names = predictor.label_names
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise UserError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        # as transformers: the option, else what the model's problem type says (an HF folder opened as
        # text-classification may hold a regressor), else this task's own
        kind = getattr(getattr(getattr(predictor, "model", None), "config", None), "problem_type", None)
        function = options.get("function_to_apply") or PROBLEM_FUNCTIONS.get(kind) or self.pipeline_function
        if function not in SCORE_FUNCTIONS:
            raise UserError(f"function_to_apply must be one of {', '.join(SCORE_FUNCTIONS)}, got {function!r}")
        items = self.check_inputs(texts)
        rows = predictor.outputs(items)  # per input its logits [labels]
        probs = finite_probs(SCORE_FUNCTIONS[function](torch.stack(rows))) if rows else []
        out = []
        for row in probs:
            order = sorted(range(len(names)), key=lambda k: -float(row[k]))[: top_k or len(names)]
            ranked = [{"label": names[k], "score": float(row[k])} for k in order]
            out.append(ranked[0] if legacy else ranked)
        return out

    def pipeline_single(self, result: Any, options: dict[str, Any]) -> Any:
        """transformers gives one text without top_k a list holding its best dict."""
        return [result] if "top_k" not in options else result

    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        return ["label", "confidence"] + [f"p_{n}" for n in label_names]

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        return [row["label"], f"{row['confidence']:.6f}"] + [f"{row['probs'][n]:.6f}" for n in label_names]

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        # the probabilities as one JSON cell: the runs' label sets differ
        return {"label": row["label"], "confidence": f"{row['confidence']:.6f}", "probs": fs.dumps(row["probs"])}

    def classify_item(self, logits: torch.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """One input's item in /v1/classify's data (vLLM's shape; the route adds its index)."""
        probs = torch.softmax(logits.float(), dim=-1)
        k = int(probs.argmax())
        return {"label": label_names[k], "probs": [float(p) for p in probs], "num_classes": len(label_names)}

    def predict_items(self, logits: torch.Tensor, label_names: Sequence[str], raw_scores: bool) -> list[dict[str, Any]]:
        """One input's answer on /predict (TEI's shape): every label with its score, best first."""
        scores = logits.float() if raw_scores else SCORE_FUNCTIONS[self.pipeline_function](logits)
        order = sorted(range(len(label_names)), key=lambda k: -float(scores[k]))
        return [{"label": label_names[k], "score": float(scores[k])} for k in order]

    def add_routes(self, app: Any, answer: Any) -> None:
        from .serving import add_routes  # fastapi and pydantic: imported only when a server starts
        add_routes(app, answer)

    def augment_file(self, data: str, steps: list, seed: int, spec: str, suffix: str, text_column: str | None,
                     label_column: str | None) -> tuple[str, Any]:
        """text, label, origin rows as CSV, TSV or JSONL (by `suffix`)."""

        table = load_table(data, text_column, label_column, role="data")
        texts, labels, report = augment_texts(list(table.texts), list(table.labels), steps, seed, spec)
        rows = [{"text": t, "label": y, "origin": report.origin(k)} for k, (t, y) in enumerate(zip(texts, labels))]
        if suffix == ".jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), report
        buf = io.StringIO()
        delimiter = "\t" if suffix == ".tsv" else ","
        writer = csv.DictWriter(buf, fieldnames=["text", "label", "origin"], delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue(), report

    # ---- model cards -----------------------------------------------------------------------------------------
    # the texts the card's onnxruntime lines tokenize (the tokenizer's positional arguments, as Python source)
    card_onnx_texts = '["A gorgeous, witty, seductive movie."]'

    def card_summary(self, label_names: Sequence[str]) -> str:
        return f"classifies a text into one of {len(label_names)} labels ({', '.join(map(str, label_names))})"

    def card_pipeline(self) -> list[str]:
        return [f'classifier = pipeline("{self.pipeline_tag}", model=model, tokenizer=tokenizer)',
                f'print(classifier({self.card_input}, top_k=None, function_to_apply="{self.pipeline_function}"))'
                + self.card_pipeline_note]

    card_pipeline_note = "  # every label, most likely first"

    def card_onnx(self, max_length: int) -> list[str]:
        return [f'batch = tokenizer({self.card_onnx_texts}, truncation=True, max_length={max_length}, '
                'return_tensors="np")',
                'feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}',
                'logits = session.run(["logits"], feed)[0]  # [texts, labels]', *self.card_onnx_decode()]

    def card_onnx_decode(self) -> list[str]:
        """The card's lines from `logits` [texts, labels] to what it prints (default: each label's probability)."""
        return ["probs = np.exp(logits - logits.max(-1, keepdims=True))",
                "probs /= probs.sum(-1, keepdims=True)",
                "print(labels[int(probs[0].argmax())], dict(zip(labels, probs[0].round(4).tolist())))"]
