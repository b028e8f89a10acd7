"""A fine-tuning run's typed configuration: the data, model, method and training sections with defaults
and help. A run's resolved config is written to `RUN_DIR/config.yaml`; `--config` reads it back, so any
run can be repeated (the YAML machinery is `config.base`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserError
from ..core.registry import METHODS, TASKS
from .base import ConfigFile, DynamicSection, _build, _coerce


@dataclass
class DataConfig:
    data: str | None = field(default=None, metadata={"help": "file, HF dataset folder or bundled dataset name (default movie-sentences when no train file is given)"})
    train: str | None = field(default=None, metadata={"help": "explicit training file (then validation/test are files too)"})
    validation: str | None = field(default=None, metadata={"help": "explicit validation file"})
    test: str | None = field(default=None, metadata={"help": "explicit test file"})
    text_column: str | None = field(default=None, metadata={"help": "column holding the text (auto-detected if unset; a pair task: A,B)"})
    label_column: str | None = field(default=None, metadata={"help": "column holding the label (auto-detected if unset; regression: a or a,b)"})
    label_separator: str = field(default=",", metadata={"help": "multilabel: what separates the labels in a CSV/TSV cell (JSONL and Parquet hold lists)"})
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/validation/test fractions for a seeded stratified split"})
    dedupe: bool = field(default=True, metadata={"help": "drop repeated texts before splitting (majority label wins)"})
    max_length: int | None = field(default=None, metadata={"help": "token limit; default: from the training split's length statistics"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N training rows (after splitting)"})
    storage: str = field(default="auto", metadata={"help": "auto|memory|mapped: where loaded rows and token ids live; mapped streams CSV/TSV/JSONL/Parquet (and tagged CoNLL) into a memory-mapped Arrow cache (auto: mapped for files over 64 MB, tagged files over 16 MB)"})
    template: str = field(default="auto", metadata={"help": "generate: auto|chat|plain: how a prompt is formatted (auto: the tokenizer's chat template when it has one)"})
    packing: bool = field(default=False, metadata={"help": "generate: pack short rows into blocks of max_length tokens (position ids restart per row, no attention across rows)"})
    augment: str | None = field(default=None, metadata={"help": "augment the training split: eda:synonym=0.1,copies=4 | paraphrase:model=M | backtranslate:via=French | mixup:alpha=0.4, joined by + (see transferkit augment --help)"})


@dataclass
class ModelConfig:
    name: str | None = field(default=None, metadata={"help": "bundled name, local HF folder or hub name (default per task: minilm-l6; generate: smollm2-135m)"})
    pooling: str = field(default="auto", metadata={"help": "auto|mean|cls: how the head reads the encoder (auto: what the model was trained with)"})
    classifier_dropout: float = field(default=0.1, metadata={"help": "dropout before the classification layer"})
    pool_layers: int | None = field(default=None, metadata={"help": "pool each of the last k encoder layers and concatenate (default per method)"})
    head: str = field(default="auto", metadata={"help": "auto|linear|mlp: the task head (auto: per method; mlp has one hidden layer of the encoder's width)"})
    init: str = field(default="pretrained", metadata={"help": "pretrained|random: start from the pretrained weights, or the same architecture randomly initialised (method full only; shows what pretraining is worth)"})


class MethodConfig(DynamicSection):
    """The `method` section: the method's `name` and that method's own options.

    Each method defines its options as a dataclass (`Method.Options`, with defaults, help and
    `checks()`); this section holds one instance of it, so a LoRA run's config lists LoRA's options
    and nothing else. In YAML and dotted keys the options sit beside the name (`method.lora_r=4`).
    """

    def __init__(self, name: str = "full", **options: Any) -> None:
        self.name = name
        self.options = _method_options(name, options, "method.")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "method.") -> "MethodConfig":
        if not isinstance(d, dict):
            raise UserError(f"config key {prefix.rstrip('.')!r}: expected a mapping")
        name = _coerce(d.get("name", "full"), str, prefix + "name")
        cfg = cls.__new__(cls)
        object.__setattr__(cfg, "name", name)
        cfg.options = _method_options(name, {k: v for k, v in d.items() if k != "name"}, prefix)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options_dict()}

    def options_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options)

    def set(self, key: str, value: Any, dotted: str) -> None:
        """One dotted override: a new `name` keeps the options the new method shares with the old."""
        if key == "name":
            self.name = _coerce(value, str, dotted)
            return
        fields = {f.name for f in dataclasses.fields(self.options)}
        if key not in fields:
            raise UserError(_not_an_option(self.name, key, dotted))
        setattr(self.options, key, _coerce(value, typing.get_type_hints(type(self.options))[key], dotted))

    def checks(self) -> list[tuple[bool, str, str, Any]]:
        return [(bad, "method." + key, what, value) for bad, key, what, value in self.options.checks()]

    def __setattr__(self, key: str, value: Any) -> None:
        """`cfg.method.name = "lora"` switches the options (keeping shared ones); `cfg.method.lora_r = 4`
        sets an option of the current method (and only one it has)."""
        if key == "options" or "options" not in self.__dict__:
            object.__setattr__(self, key, value)
        elif key == "name":
            own = _option_class(value)
            kept = {k: v for k, v in self.options_dict().items() if k in {f.name for f in dataclasses.fields(own)}}
            object.__setattr__(self, "name", value)
            object.__setattr__(self, "options", own(**kept))
        elif key in {f.name for f in dataclasses.fields(self.options)}:
            setattr(self.options, key, value)
        else:
            raise AttributeError(_not_an_option(self.name, key, "method." + key))

    def __getattr__(self, key: str) -> Any:  # cfg.method.lora_r reads the option
        options = self.__dict__.get("options")
        if options is None or key.startswith("__") or not hasattr(options, key):
            raise AttributeError(f"method {self.__dict__.get('name')!r} has no option {key!r}")
        return getattr(options, key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"MethodConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def _option_class(name: str) -> type:
    return METHODS.get(name).Options


def _not_an_option(name: str, key: str, dotted: str) -> str:
    own = [f.name for f in dataclasses.fields(_option_class(name))]
    return (f"unknown config key {dotted!r}: not an option of method {name!r} "
            f"({'its options: ' + ', '.join(own) if own else 'it has no options'})")


def _method_options(name: str, given: dict[str, Any], prefix: str) -> Any:
    """`name`'s Options from a mapping. A key that is another method's option holding that method's
    default is dropped: config.yaml and run.json files written before methods owned their options
    listed every method's options in one flat section."""
    own = _option_class(name)
    names = {f.name for f in dataclasses.fields(own)}
    mine = {k: v for k, v in given.items() if k in names}
    for k, v in given.items():
        if k not in names and not _an_old_default(k, v):
            raise UserError(_not_an_option(name, k, prefix + k))
    return _build(own, mine, prefix)


def _an_old_default(key: str, value: Any) -> bool:
    for other in METHODS.names():
        for f in dataclasses.fields(METHODS.get(other).Options):
            if f.name == key:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                return value == default
    return False


@dataclass
class TrainConfig:
    epochs: float | None = field(default=None, metadata={"help": "passes over the training split (default per method)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps, or at the end of `epochs` if that comes first (epochs unset: exactly this many steps)"})
    batch_size: int | None = field(default=None, metadata={"help": "examples per micro-batch, all processes together (default per method); a step sees batch_size * grad_accum"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (default per method)"})
    head_lr: float | None = field(default=None, metadata={"help": "learning rate of the head (default: per method)"})
    layer_lr_decay: float | None = field(default=None, metadata={"help": "layer-wise lr decay: encoder layer at depth d below the top trains at lr * decay^d (None or 1: off)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorm)"})
    warmup: float = field(default=0.1, metadata={"help": "warmup fraction of the optimizer steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 disables)"})
    eval_steps: int | None = field(default=None, metadata={"help": "evaluate every N steps (default: every epoch)"})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "evaluations without improvement before stopping (default per method; 0 never stops early)"})
    metric: str | None = field(default=None, metadata={"help": "validation metric for early stopping and best weights (default per task: accuracy for classify and pair, pearson for regression, f1_micro for multilabel, f1 for ner; f1_macro when the training classes are imbalanced)"})
    min_steps: int | None = field(default=None, metadata={"help": "when epochs are left to the method: train at least this many optimizer steps (more epochs for a small set; default 300, 0 off)"})
    loss: str = field(default="auto", metadata={"help": "auto|mse|huber|completion|all: the training loss where a task offers a choice (regression: mse or huber on standardised targets; generate: completion tokens only, or all tokens; auto: the task's own)"})
    class_weights: str = field(default="none", metadata={"help": "none|balanced: weight each class's loss by n / (classes * count) (classify, pair); multilabel: each label's positives by its negatives / positives"})
    checkpoint_steps: int = field(default=200, metadata={"help": "save a resumable checkpoint every N optimizer steps"})
    seed: int = field(default=42, metadata={"help": "random seed for split, init, order and dropout"})
    group_by_length: bool = field(default=True, metadata={"help": "length-grouped batches with dynamic padding"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    precision: str = field(default="auto", metadata={"help": "auto|fp32|bf16: bf16 autocast on a CUDA GPU that has it (auto); fp32 on a CPU, where bf16 matmuls are slower"})
    parallel: str = field(default="ddp", metadata={"help": "ddp|fsdp, with several processes: ddp keeps a whole model in each; fsdp shards parameters, gradients and optimizer state between them (for models too big for one device)"})
    report_to: str = field(default="none", metadata={"help": "none|tensorboard|mlflow|wandb, several joined by commas: send the training and validation records and the test metrics to these trackers (TensorBoard under RUN_DIR/tracking; MLflow in sqlite:///<folder of the run>/mlflow.db unless MLFLOW_TRACKING_URI is set); needs pip install 'transferkit[tracking]'"})


@dataclass
class RunConfig(ConfigFile):
    task: str = field(default="classify", metadata={"help": "what is predicted: classify (one label per text), pair (one label per pair of texts), regression (numbers per text), multilabel (any number of labels per text), ner (one tag per word) or generate (a completion per prompt, from a causal LM)"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "the method and its own options"})
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = field(default=None, metadata={"help": "run directory (default runs/<time>-<method>)"})




def describe_duration(t: TrainConfig) -> str:
    """How long a resolved run trains, for its first log line."""
    if t.epochs is None:
        return f"max_steps {t.max_steps}"
    return f"{t.epochs:g} epochs" + (f" (or max_steps {t.max_steps} if sooner)" if t.max_steps else "")


def apply_default_data(cfg: RunConfig) -> RunConfig:
    """The task's bundled dataset when the config names no data at all (neither data.data nor data.train), and
    its default model when the config names none (`Task.default_data`, `Task.default_model`)."""
    task = TASKS.get(cfg.task)
    d = cfg.data
    if d.data is None and d.train is None and d.validation is None and d.test is None:
        d.data = task.default_data
    if cfg.model.name is None:
        cfg.model.name = task.default_model
    return cfg
