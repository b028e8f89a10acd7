"""Typed run configuration: dataclasses with defaults and help, YAML in and out, dotted overrides.

A run's resolved config is written to `RUN_DIR/config.yaml`; `--config` reads it back, so
any run can be repeated. Unknown keys and wrong types are errors that name the key.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


@dataclass
class DataConfig:
    data: str | None = field(default=None, metadata={"help": "file, HF dataset folder or bundled dataset name (default movie-sentences when no train file is given)"})
    train: str | None = field(default=None, metadata={"help": "explicit training file (then validation/test are files too)"})
    validation: str | None = field(default=None, metadata={"help": "explicit validation file"})
    test: str | None = field(default=None, metadata={"help": "explicit test file"})
    text_column: str | None = field(default=None, metadata={"help": "column holding the text (auto-detected if unset)"})
    label_column: str | None = field(default=None, metadata={"help": "column holding the label (auto-detected if unset)"})
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/validation/test fractions for a seeded stratified split"})
    dedupe: bool = field(default=True, metadata={"help": "drop repeated texts before splitting (majority label wins)"})
    max_length: int | None = field(default=None, metadata={"help": "token limit; default: from the training split's length statistics"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N training rows (after splitting)"})
    storage: str = field(default="auto", metadata={"help": "auto|memory|mapped: where loaded rows and token ids live; mapped streams CSV/TSV/JSONL/Parquet (and tagged CoNLL) into a memory-mapped Arrow cache (auto: mapped for files over 64 MB, tagged files over 16 MB)"})
    augment: str | None = field(default=None, metadata={"help": "augment the training split: eda:synonym=0.1,copies=4 | paraphrase:model=M | backtranslate:via=French | mixup:alpha=0.4, joined by + (see transferkit augment --help)"})


@dataclass
class ModelConfig:
    name: str = field(default="minilm-l6", metadata={"help": "bundled name, local HF folder or hub name"})
    pooling: str = field(default="auto", metadata={"help": "auto|mean|cls: how the head reads the encoder (auto: what the model was trained with)"})
    classifier_dropout: float = field(default=0.1, metadata={"help": "dropout before the classification layer"})
    pool_layers: int | None = field(default=None, metadata={"help": "pool each of the last k encoder layers and concatenate (default per method)"})
    head: str = field(default="auto", metadata={"help": "auto|linear|mlp: the task head (auto: per method; mlp has one hidden layer of the encoder's width)"})
    init: str = field(default="pretrained", metadata={"help": "pretrained|random: start from the pretrained weights, or the same architecture randomly initialised (method full only; shows what pretraining is worth)"})


class MethodConfig:
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
    from .registry import METHODS
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
    from .registry import METHODS
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
    metric: str | None = field(default=None, metadata={"help": "validation metric for early stopping and best weights (default per task: accuracy for classify, f1 for ner; f1_macro when the training classes are imbalanced)"})
    min_steps: int | None = field(default=None, metadata={"help": "when epochs are left to the method: train at least this many optimizer steps (more epochs for a small set; default 300, 0 off)"})
    class_weights: str = field(default="none", metadata={"help": "none|balanced: weight each class's loss by n / (classes * count) (classify)"})
    checkpoint_steps: int = field(default=200, metadata={"help": "save a resumable checkpoint every N optimizer steps"})
    seed: int = field(default=42, metadata={"help": "random seed for split, init, order and dropout"})
    group_by_length: bool = field(default=True, metadata={"help": "length-grouped batches with dynamic padding"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    precision: str = field(default="auto", metadata={"help": "auto|fp32|bf16: bf16 autocast on a CUDA GPU that has it (auto); fp32 on a CPU, where bf16 matmuls are slower"})
    parallel: str = field(default="ddp", metadata={"help": "ddp|fsdp, with several processes: ddp keeps a whole model in each; fsdp shards parameters, gradients and optimizer state between them (for models too big for one device)"})


class ConfigFile:
    """YAML in and out, dict in and out and dotted overrides, shared by the run configs below."""

    @classmethod
    def make(cls, config: Any = None, overrides: dict[str, Any] | None = None,
             short_keys: dict[str, str] | None = None) -> Any:
        """An instance from a YAML path, a dict or an instance (copied), then `overrides` applied
        (dotted keys, or short names that `short_keys` maps to dotted keys)."""
        if isinstance(config, cls):
            cfg = cls.from_dict(config.to_dict())
        elif isinstance(config, dict):
            cfg = cls.from_dict(config)
        elif config is not None:
            cfg = cls.from_yaml(config)
        else:
            cfg = cls()
        dotted = {(short_keys or {}).get(k, k): v for k, v in (overrides or {}).items()}
        # the method first: its options are only known once it is chosen (`--method lora method.lora_r=4`)
        for k in sorted(dotted, key=lambda k: k != "method.name"):
            cfg.override(k, dotted[k])
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, MethodConfig) else (
                dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return _build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Any:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise UserError(f"{p}: expected a mapping at the top level")
        return cls.from_dict(d)

    def override(self, dotted: str, value: Any) -> None:
        """Set `section.key` (e.g. `train.lr`) from a value or its string form."""
        parts = dotted.split(".")
        obj: Any = self
        for p in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
                raise UserError(f"unknown config key {dotted!r}")
            obj = getattr(obj, p)
        key = parts[-1]
        if isinstance(obj, MethodConfig):
            obj.set(key, value, dotted)
            return
        fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if key not in fields or dataclasses.is_dataclass(getattr(obj, key)):
            raise UserError(f"unknown config key {dotted!r}")
        hint = typing.get_type_hints(type(obj))[key]
        setattr(obj, key, _coerce(value, hint, dotted))


@dataclass
class RunConfig(ConfigFile):
    task: str = field(default="classify", metadata={"help": "what is predicted: classify (one label per text) or ner (one tag per word)"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "the method and its own options"})
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = field(default=None, metadata={"help": "run directory (default runs/<time>-<method>)"})


def _parse_scalar(s: str) -> Any:
    for conv in (int, float):  # YAML 1.1 reads "3e-4" as a string
        try:
            return conv(s)
        except ValueError:
            pass
    try:
        return yaml.safe_load(s)
    except yaml.YAMLError:
        return s


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; ints widen to floats, strings parse; else a UserError.

    A string meets a `str` hint verbatim ("007" stays "007"); for other hints it is parsed, so
    `train.lr=1e-4` from the command line and `lr: 1e-4` in YAML (a string to YAML 1.1) both work.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("null", "none", "~") and type(None) in args:
            return None
        if isinstance(value, str) and str in args:
            return value
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if isinstance(value, str):
            parsed = _parse_scalar(value) if value.strip().startswith("[") else None
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(_parse_scalar(v) if isinstance(v, str) and args and args[0] is not str else v, args[0], key) for v in value]
    if isinstance(value, str) and hint is not str:
        value = _parse_scalar(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {key!r}: expected a number, got {value!r}")
        try:
            finite = math.isfinite(value)  # NaN passes every `x <= 0` check below, so refuse it here
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise UserError(f"config key {key!r}: expected a finite number, got {str(value)[:30]}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def section_from_dict(cls: type, d: Any, where: str) -> Any:
    """A config section (e.g. MethodConfig) from a mapping read off disk; bad keys or types name `where`."""
    try:
        return MethodConfig.from_dict(d, "") if cls is MethodConfig else _build(cls, d, "")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise UserError(f"config key {prefix.rstrip('.') or '<top>'!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            raise UserError(f"unknown config key {prefix + k!r}")
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        hint = hints[k]
        if hint is MethodConfig:
            kwargs[k] = MethodConfig.from_dict({} if v is None else v, prefix + k + ".")
        elif dataclasses.is_dataclass(hint):
            # Keys left out keep the parent's own default section (e.g. pretraining's train.metric
            # "loss"), not the section class's defaults.
            if not isinstance(v or {}, dict):
                raise UserError(f"config key {prefix + k!r}: expected a mapping")
            f = fields[k]
            base = f.default_factory() if f.default_factory is not dataclasses.MISSING else hint()
            kwargs[k] = _build(hint, {**dataclasses.asdict(base), **(v or {})}, prefix + k + ".")
        else:
            kwargs[k] = _coerce(v, hint, prefix + k)
    return cls(**kwargs)


# What a resumed run may change: the rates (a diverged run continues with a lower lr), clipping and the
# progress bar. Anything else would make the rest of the run a different run from its first part.
RESUME_KEYS = ("train.lr", "train.head_lr", "train.max_grad_norm", "train.progress")


def apply_resume_overrides(cfg: ConfigFile, overrides: dict[str, Any], short_keys: dict[str, str]) -> bool:
    """Apply `overrides` (dotted or short keys) to a resumed run's config; True if anything changed."""
    before = cfg.to_dict()
    for k, v in overrides.items():
        key = short_keys.get(k, k)
        if key not in RESUME_KEYS:
            raise UserError(f"{key} cannot change when a run resumes (only {', '.join(RESUME_KEYS)} can); "
                            f"start a new run for that")
        cfg.override(key, v)
    return cfg.to_dict() != before


def describe_duration(t: TrainConfig) -> str:
    """How long a resolved run trains, for its first log line."""
    if t.epochs is None:
        return f"max_steps {t.max_steps}"
    return f"{t.epochs:g} epochs" + (f" (or max_steps {t.max_steps} if sooner)" if t.max_steps else "")


DEFAULT_DATA = "movie-sentences"


def apply_default_data(cfg: RunConfig) -> RunConfig:
    """The bundled dataset when the config names no data at all (neither data.data nor data.train)."""
    d = cfg.data
    if d.data is None and d.train is None and d.validation is None and d.test is None:
        d.data = DEFAULT_DATA
    return cfg


# ---- pretraining ---------------------------------------------------------------------------

@dataclass
class PretrainConfig(ConfigFile):
    """One pretraining run: objective, corpus, model (existing or from scratch), tokenizer, training."""

    objective: str = field(default="mlm", metadata={"help": "mlm | clm | mlm+nsp"})
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"], metadata={"help": "text/JSONL files or folders, or a bundled corpus name"})
    text_column: str | None = field(default=None, metadata={"help": "JSONL/CSV field holding the text (auto-detected if unset)"})
    model: str | None = field(default=None, metadata={"help": "existing model to continue pretraining (bundled name or HF folder)"})
    from_scratch: bool = field(default=False, metadata={"help": "build a randomly initialised model of --arch/--size"})
    arch: str = field(default="bert", metadata={"help": "from-scratch architecture: bert | gpt2 | llama"})
    size: str = field(default="mini", metadata={"help": "from-scratch size: tiny | mini | small"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder (default: the model's, or a trained one)"})
    train_tokenizer: bool = field(default=False, metadata={"help": "train a tokenizer on the corpus (WordPiece for bert, byte-level BPE otherwise)"})
    vocab_size: int = field(default=16000, metadata={"help": "vocabulary size of a trained tokenizer"})
    max_length: int | None = field(default=None, metadata={"help": "tokens per training sequence (default per objective)"})
    heldout: float = field(default=0.05, metadata={"help": "share of documents held out for evaluation (seeded)"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N documents of the corpus"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of non-special tokens selected for MLM"})
    mask_replace: float = field(default=0.8, metadata={"help": "share of selected tokens replaced by [MASK]"})
    random_replace: float = field(default=0.1, metadata={"help": "share of selected tokens replaced by a random token (the rest stay)"})
    whole_word_mask: bool = field(default=False, metadata={"help": "select whole words (WordPiece '##' continuations go with their word)"})
    nsp_not_next: float = field(default=0.5, metadata={"help": "share of NSP pairs whose second sentence comes from another document"})
    # Pretraining tracks the held-out loss and never stops early by default.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(metric="loss", early_stopping_patience=0))
    output_dir: str | None = field(default=None, metadata={"help": "run directory (default runs/<time>-pretrain-<objective>)"})
