"""The Task interface: everything a fine-tuning run needs to know about what it predicts.

A run (`recipes.finetune.FinetuneRun`) prepares the splits, builds the model and scores it only
through these methods, so a second task (token classification) is a second implementation, not
a branch in the run, the loop or the predictor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..core.errors import UserError
from ..core.registry import DATASETS
from ..data.tables import is_blank
from ..modeling.forward import pooled_features
from ..modeling.transferability import logme, targets
from ..objectives import batches_of
from .rows import EncodedInputs, check_texts

TRANSFER_BATCH = 64  # rows a batch when a sample is scored for plan --models


def bundled_task(source: str | None) -> str | None:
    """The task a bundled dataset name's rows are for (None: not a bundled name, or a file of that name exists)."""
    if source is None or source not in DATASETS or Path(str(source)).expanduser().exists():
        return None
    return getattr(DATASETS.get(source), "task", "classify")



class Task:
    """One kind of prediction. Subclasses set `name` and implement every method below that has no default."""

    name: ClassVar[str]
    # The validation metric that picks the best weights when the user names none.
    default_metric: ClassVar[str]
    # True when one pooled vector per example feeds the head, so a frozen encoder's outputs can be
    # computed once and cached (head_only); per-token heads read every position.
    pooled_features: ClassVar[bool] = True
    # True when runs of this task can share one base encoder in `Predictor.from_runs` / serving.
    shares_base: ClassVar[bool] = True
    # True when a server loads this task's runs of one base whose method saves a stock adapter (`Method.stock_base`)
    # onto one copy of the base, each a named adapter made active for its own calls (`inference.switched`:
    # generation, whose causal LM generates with one run at a time); such runs never share an encoder pass.
    switches_adapters: ClassVar[bool] = False
    # The head over the encoder: "sequence" (one output per text) or "token" (one per token);
    # `modeling.HEAD_CLASSES` maps it to the model class.
    head_kind: ClassVar[str] = "sequence"
    # True when every example has one label (so class counts, class weights and per-class sampling mean something).
    one_label_per_example: ClassVar[bool] = False
    # The test metrics `compare` tabulates, (key in metrics.json, column title, name in prose); the
    # first is the one it compares with full fine-tuning, plots and re-checks through the saved model.
    compare_metrics: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    # The metrics `evaluate` prints, in order.
    headline_metrics: ClassVar[tuple[str, ...]] = ()

    # Training defaults of this task's own, by method name ({"lr", "head_lr", "epochs"}), where measurement showed
    # the methods' defaults (tuned on sentence classification) do not suit it; the user's settings still win.
    train_defaults: ClassVar[dict[str, dict[str, float]]] = {}
    # The fewest optimizer steps a run takes when its epochs are left to the defaults (None: train.min_steps's own
    # default; a task whose steps cost seconds sets its own)
    min_steps: ClassVar[int | None] = None
    # The (text column(s), label column) of the sampled CSV files `compare` writes for runs of this task
    sample_columns: ClassVar[tuple[str, str]] = ("text", "label")
    # The task whose HTTP routes answer this task's runs (None: its own, from `add_routes`): a task whose
    # outputs fit another's routes (a pair classifier's on classify's) adds none of its own.
    serving_task: ClassVar[str | None] = None
    # True when the task weighs its own labels' losses under train.class_weights=balanced (multi-label: per-label
    # positive weights); a task with one label per example gets the run's class weights instead
    weighs_labels: ClassVar[bool] = False
    # the values train.loss may take for this task ("auto": the task's own loss)
    losses: ClassVar[tuple[str, ...]] = ("auto",)
    # what a run of this task trains on and from when the config names no data or model (`apply_default_data`)
    default_data: ClassVar[str] = "movie-sentences"
    default_model: ClassVar[str] = "minilm-l6"
    # Why `export --format onnx` cannot write this task's runs (None: it can): the graph is one forward pass.
    onnx_refusal: ClassVar[str | None] = None
    # What the task builds on: "encoder" (a head over a bidirectional encoder) or "decoder" (a causal LM and its
    # own LM head); a method that cannot adapt that kind says why (`Method.refuses`).
    model_kind: ClassVar[str] = "encoder"

    def __init__(self) -> None:
        # This run's head settings (`modeling.resolve.set_head`: problem type, output scale and shift, pair
        # separator): found from the data by `prepare`/`build_model`/`after_training`, kept in run.json
        # ("head") and given back by `inference.loading.run_task`, so a loaded run computes what it trained.
        self.head: dict[str, Any] = {}
        self.loss_name = "auto"  # train.loss, once `configure` has seen the run's config

    def configure(self, cfg: Any) -> None:
        """Take the run's config (a RunConfig) before any data is read; a setting the task cannot honour is a
        UserError (default: a bundled dataset must be this task's, train.class_weights needs one label per
        example or a task that weighs its own labels, train.loss must be one of `losses`)."""
        for source in (cfg.data.data, cfg.data.train, cfg.data.validation, cfg.data.test):
            kind = bundled_task(source)
            if kind is not None and kind != self.name:
                raise UserError(f"bundled dataset {source} is {kind} data; train it with --task {kind}")
        if cfg.train.class_weights != "none" and not self.one_label_per_example and not self.weighs_labels:
            raise UserError(f"train.class_weights applies to runs with one label per text, not {self.name} runs")
        loss = cfg.train.loss
        if loss not in self.losses:
            raise UserError(f"train.loss={loss!r}: a {self.name} run trains with "
                            f"{' or '.join(repr(x) for x in self.losses)}")
        self.loss_name = loss

    def check_base(self, resolved: Any) -> None:
        """Refuse a base model this task cannot build on, before any data is read (default: any model will do;
        the head goes over its encoder)."""

    def token_lengths(self, tokenizer: Any, split: Any) -> Any:
        """Untruncated tokens per example of a split, special tokens included ([n] ints; max_length and the
        logged statistics come from them)."""
        from ..data.tokens import token_lengths
        return token_lengths(tokenizer, self.texts(split))

    def training_module(self, model: nn.Module) -> nn.Module:
        """What the training loop calls with each batch (default: the model itself; generation: a wrapper that
        projects only the scored positions onto the vocabulary). It must share the model's parameters."""
        return model

    def adapter_base(self, resolved: Any) -> str | None:
        """The model folder a stock-loadable adapter of this task names as its base (peft's
        `base_model_name_or_path`); None: the run writes a weightless `base/` folder of its own (a classifier's
        config over the encoder's weights)."""
        return None

    def evaluate_test(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                      device: Any) -> tuple[dict[str, float], Any]:
        """(metrics, predictions) of the trained model on the test split (default: `evaluate`; generation also
        generates and scores the outputs, which is too slow for every validation)."""
        return self.evaluate(model, data, batch_size, pad_id, device)

    def after_training(self, model: nn.Module, data: dict[str, Any], pad_id: int, device: Any) -> None:
        """A last step on the trained model before it is scored and saved (multi-label: decision thresholds
        tuned on the validation split); what it finds goes into `self.head` and the model's config."""

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        """Load, validate and split the data named by `data_cfg`; returns the task's splits
        (with `label_names`, `summary`, and `train`/`validation`/`test`). What it found (sources, sizes,
        warnings) it logs."""
        raise NotImplementedError

    def texts(self, split: Any) -> list[str]:
        """The texts of a split (token statistics and max_length are computed on them)."""
        raise NotImplementedError

    def augment(self, splits: Any, steps: list, seed: int, spec: str) -> Any:
        """`splits` with new training rows from the spec's text steps (validation and test untouched);
        the record goes into `splits.summary["augment"]`."""
        raise NotImplementedError

    def class_counts(self, splits: Any) -> list[int] | None:
        """Training examples per label, where one label per example makes the classes' balance meaningful
        (imbalance adapts the defaults: `recipes.adaptive`); None otherwise."""
        return None

    def collapse_warning(self, splits: Any, predictions: Any) -> str | None:
        """A warning when the test predictions are nearly all one class (None: fine, or not meaningful)."""
        return None

    def build_model(self, resolved: Any, label_names: list[str], pooling: str, dropout: float, head_hidden: int,
                    pool_layers: int, random_init: bool = False) -> nn.Module:
        """A fresh model with this task's head over the resolved encoder."""
        raise NotImplementedError

    def encode(self, tokenizer: Any, split: Any, max_length: int) -> Any:
        """A split as batchable data (`lengths()`, `collate(indices, pad_id)`, `__len__`)."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        """(summed loss, scored items, correctly predicted items) of one batch; `class_weights` [classes]
        weight each item's loss by its label (only where `class_counts` is not None)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> tuple[dict[str, float], Any]:
        """(metrics, raw predictions) of `model` on `data`."""
        raise NotImplementedError

    # ---- plan --models: how well a frozen model suits this task, before any fine-tuning ------------------------
    transfer_score_name: ClassVar[str] = "LogME"  # the plan table's column

    def transfer_score(self, model: nn.Module, sample: Any, classes: int, tokenizer: Any, pad_id: int,
                       device: Any) -> float:
        """The frozen `model`'s score on `sample` (encoded training rows; higher transfers better): LogME of the
        pooled sentence vectors against the labels (`modeling.transferability`: why LogME)."""
        features = pooled_features(model, sample, TRANSFER_BATCH, pad_id, device)
        labels = torch.cat([sample.collate(idx, pad_id)["labels"]
                            for idx in batches_of(len(sample), TRANSFER_BATCH)])  # in the sample's row order
        return logme(features.numpy(), targets(labels, classes))

    def load_labelled(self, source: str, label_names: list[str], text_column: str | None,
                      label_column: str | None) -> Any:
        """A labelled file as a split with the run's label indices; an unknown label is a UserError."""
        raise NotImplementedError

    def score(self, model: nn.Module, tokenizer: Any, info: Any, split: Any, out: Path, history: list[dict],
              title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        """(report, paths): `model` scored on `split`, and the report written to `out`."""
        raise NotImplementedError

    # ---- inference: inputs in, output rows out (the one generic Predictor calls these) ----------------
    # transformers' pipeline task names that open runs of this task (`transferkit.pipeline(name, model=run)`);
    # the first is the task's own name in transformers
    pipeline_names: ClassVar[tuple[str, ...]] = ()
    # the keyword options `decode` takes, with their defaults (e.g. ner's aggregation_strategy)
    decode_options: ClassVar[dict[str, Any]] = {}

    def predict_rows(self, predictor: Any, items: list[Any], options: dict[str, Any]) -> list[dict[str, Any]]:
        """Per checked input, its output row, from the run's `Predictor` (default: encode, one forward pass per
        batch of rows, `decode` with `options`; generation generates instead)."""
        encoded, rows = predictor.forward_rows(items)
        return self.decode(rows, encoded, predictor.label_names, **options)

    def cli_inputs(self, texts: Sequence[str]) -> list[Any]:
        """The inputs the command line's positional texts give (one text each; a pair task takes two)."""
        return check_texts(texts)

    def read_inputs(self, path: str, text_column: str | None) -> list[Any]:
        """The inputs of an `--input` file (a text per row, from `text_column` or the one text column)."""
        from ..data.tables import read_texts
        return read_texts(path, text_column)

    def gate_view(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, decisions) of logits [items, outputs] as this task reads them, for the gates that compare two
        models (an ONNX graph against PyTorch): default probabilities and argmax."""
        probs = torch.softmax(logits.float(), -1)
        return probs, probs.argmax(-1)

    def display_text(self, item: Any) -> str:
        """One input as a report shows it."""
        return item

    def input_fields(self, item: Any) -> dict[str, Any]:
        """What a prediction row says of its input (a text: {"text": it})."""
        return {"text": item}

    def is_single(self, inputs: Any) -> bool:
        """True when `inputs` is one input rather than a list of them (`predict("a text")`)."""
        return isinstance(inputs, str)

    def input_problem(self, value: Any, max_chars: int) -> tuple[int, str] | None:
        """Why the server refuses one input, as (HTTP status, reason), or None. A text: not empty, and at most
        `max_chars` characters (a longer one is refused before it is tokenized)."""
        if not isinstance(value, str):
            return 422, f"a {self.name} run reads one text per input, got {type(value).__name__}"
        if is_blank(value):
            return 422, "empty text"
        if len(value) > max_chars:
            return 413, f"{len(value):,} characters, more than {max_chars:,}"
        return None

    def token_counts(self, tokenizer: Any, inputs: list[Any]) -> list[int]:
        """Tokens per input as the model reads it, special tokens included (before any cut to max_length)."""
        return [len(ids) for ids in tokenizer(inputs, add_special_tokens=True)["input_ids"]]

    def check_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        """The inputs as a list of the task's row type; a bad one is a UserError naming its position."""
        return check_texts(inputs)

    def encode_inputs(self, tokenizer: Any, inputs: list[Any], max_length: int) -> EncodedInputs:
        """Checked inputs as model rows (token ids, unpadded) and what `decode` needs."""
        raise NotImplementedError

    def decode(self, outputs: list[torch.Tensor], encoded: EncodedInputs, label_names: list[str],
               **options: Any) -> list[dict[str, Any]]:
        """Per input, its output row (a dict) from the model's outputs for its rows (`outputs[r]` for row r:
        [labels] from a sequence head, [row length, labels] from a per-token head)."""
        raise NotImplementedError

    def serving_results(self, outputs: list[torch.Tensor], encoded: EncodedInputs,
                        label_names: list[str]) -> list[Any]:
        """Per input, what the task's server routes answer from (default: `decode` with its default options)."""
        return self.decode(outputs, encoded, label_names)

    def check_decode_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """`options` with the defaults filled in; an unknown option is a UserError naming the known ones."""
        unknown = sorted(set(options) - set(self.decode_options))
        if unknown:
            known = ", ".join(self.decode_options) or "none"
            raise UserError(f"{self.name} prediction: unknown option {unknown[0]!r} (options: {known})")
        return {**self.decode_options, **options}

    def write_report(self, out: Path, splits: Any, predictions: Any, history: list[dict], title: str,
                     extra: dict[str, Any]) -> dict[str, Path]:
        """The run's report of the test split (JSON, plots, HTML); returns the paths written."""
        raise NotImplementedError

    # ---- the surfaces over inference: pipelines, prediction files, HTTP routes, `augment` files ------
    # the keyword options the task's pipeline takes (`transferkit.pipeline(name, model=run, **options)`)
    pipeline_options: ClassVar[tuple[str, ...]] = ()

    def check_pipeline_options(self, options: dict[str, Any]) -> None:
        """Refuse a bad option value when the pipeline is made rather than at its first call (default: none)."""

    def pipeline_call(self, predictor: Any, texts: list[Any], options: dict[str, Any]) -> list[Any]:
        """Per input, what transformers' pipeline for this task gives; `predictor` is the run's (one-run)
        Predictor, `options` the call's pipeline options (default: the task's output rows)."""
        return predictor.predict(texts, **options)

    def pipeline_single(self, result: Any, options: dict[str, Any]) -> Any:
        """What one input given alone (not in a list) gets, from its result (default: the result itself)."""
        return result

    # The several-runs CSV (`predict` with adapters): its columns after text and adapter are
    # `SHARED_RUNS_CSV_COLUMNS`, then the `runs_csv_columns` of each task with rows in it that the shared
    # ones lack, in the registry's order.
    runs_csv_columns: ClassVar[tuple[str, ...]] = ()

    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        """The columns after "text" of one run's prediction CSV."""
        raise UserError(f"{self.name} predictions have no CSV layout; write .jsonl or .json")

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        """One output row's cells under `csv_header`."""
        raise UserError(f"{self.name} predictions have no CSV layout; write .jsonl or .json")

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        """One output row's cells in the several-runs CSV, by column (`runs_csv_columns`; a column left
        out stays empty)."""
        raise UserError(f"{self.name} predictions have no CSV layout; write .jsonl or .json")

    def add_routes(self, app: Any, answer: Any) -> None:
        """Add the task's routes to the server's FastAPI `app` (default: none). `answer(request, model, inputs,
        refuse_longer=False)` is the server's prediction steps for this task's runs: it finds the run, checks
        the texts, batches them with every other request and returns (served run, tokens per text, per text
        the task's `serving_results`). A task imports its fastapi/pydantic code here, so only a server loads it."""

    # the output suffixes `transferkit augment` writes for this task (none: it cannot augment a file)
    augment_formats: ClassVar[tuple[str, ...]] = ()

    def augment_file(self, data: str, steps: list, seed: int, spec: str, suffix: str, text_column: str | None,
                     label_column: str | None) -> tuple[str, Any]:
        """(the text of an output file ending in `suffix`: every row of `data` with an origin column, then the
        new rows; the `augmentation.apply.AugmentReport`)."""
        raise UserError(f"augment: {self.name} data cannot be augmented into a file")

    # ---- model cards (`reporting.model_card`): what a folder of this task's model does and the code that loads it --
    # the transformers Auto class that loads this task's model folders (and a stock adapter's base)
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"
    # an input the card's code predicts on, as Python source (what this task's pipeline takes)
    card_input: ClassVar[str] = '"A gorgeous, witty, seductive movie."'

    @property
    def pipeline_tag(self) -> str:
        """The Hub's `pipeline_tag` of this task's models: its name among transformers' pipelines."""
        return self.pipeline_names[0]

    def card_summary(self, label_names: Sequence[str]) -> str:
        """What a model of this task does, in a sentence (for a model card)."""
        raise NotImplementedError

    def card_pipeline(self) -> list[str]:
        """Python lines that predict `card_input` with transformers' `pipeline` (imported) on the loaded `model` and
        `tokenizer`, printing the result (default: the task's pipeline with its defaults)."""
        return [f'predict = pipeline("{self.pipeline_tag}", model=model, tokenizer=tokenizer)',
                f"print(predict({self.card_input}))"]

    def card_onnx(self, max_length: int) -> list[str]:
        """Python lines that predict `card_input` with an ONNX export: `session` (an onnxruntime InferenceSession),
        `tokenizer`, `labels` (the manifest's) and numpy as `np` are there; the graph's one output is "logits"."""
        raise NotImplementedError(f"{self.name} runs have no ONNX export")


# Every several-runs CSV has these columns, filled or empty, so the files of any mix of runs line up: a task
# that predicts one label per text fills them, any other leaves them empty and adds columns of its own.
SHARED_RUNS_CSV_COLUMNS = ("label", "confidence", "probs")
