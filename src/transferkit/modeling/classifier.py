"""A sequence classifier that reads any Hugging Face encoder the way it was trained to be read.

transformers' `BertForSequenceClassification` always classifies from the BERT pooler (a dense+tanh
layer over the [CLS] vector). Sentence encoders such as all-MiniLM-L6-v2 were trained with *mean
pooling* and ship an untrained pooler, so reading them through that pooler loses accuracy: on frozen
MiniLM features a linear head reached 77.5% on the bundled movie sentences with mean pooling
against 74% on [CLS]. This class puts a configurable pooling (mean or cls) and a linear head over
`AutoModel`, so it works for any encoder architecture.

The file depends only on torch and transformers: `save_pretrained` copies it into the model folder
as `modeling_transferkit.py` and records it in `auto_map`, so
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` loads a saved
model without transferkit installed; with transferkit imported the class is registered and no
flag is needed.

What the head gives is set in its config, so every way of loading and running a saved model (this class,
a PEFT adapter on a base folder, an ONNX graph traced from it) computes the same thing:
  - `problem_type` (transformers' own): the loss `forward` computes from `labels` (cross-entropy,
    mean squared error for "regression", sigmoid cross-entropy for "multi_label_classification"), and the
    function transformers' text-classification pipeline applies by default;
  - `output_scale` / `output_shift`: per output, logits = head(x) * scale + shift: a regressor trained on
    standardised targets answers in the targets' own units, and a multi-label head's tuned decision
    thresholds sit at probability 0.5;
  - `pair_sep_id`: a sentence-pair model gives the second text token type 1 itself (from the separator
    token) when the caller passes no token types, as the tokenizer would for `text, text_pair`.

A *base folder* (`write_base`) is such a folder without weights: config.json names where the
pretrained encoder is (`encoder_source`), and `from_pretrained` builds the classifier over it with
a fresh head. A PEFT adapter's `base_model_name_or_path` points at one, so the stock sequence
`PeftConfig.from_pretrained(adapter)` -> `AutoModelFor...Classification.from_pretrained(
config.base_model_name_or_path)` -> `PeftModel.from_pretrained(base, adapter)` rebuilds a run
(peft then loads the adapter and the trained head) without copying the encoder's weights per run.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

MODEL_TYPE = "transferkit_classifier"
# transformers' problem types (config.problem_type) that change the loss
REGRESSION, MULTI_LABEL = "regression", "multi_label_classification"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def pair_token_types(input_ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """Token types of `[CLS] A [SEP] B [SEP]` rows: 0 up to and including the first separator, 1 after it
    (what a BERT tokenizer gives for a text pair; padding, masked anyway, gets 1)."""
    seps = (input_ids == sep_id).long()
    return (seps.cumsum(-1) - seps).clamp(max=1)


def reads_token_types(encoder: nn.Module) -> bool:
    """Whether the encoder reads token types: its forward takes them and its config has more than one.
    DistilBERT, MPNet and ModernBERT take none (their forward would pass them on unread, or fail); RoBERTa,
    XLM-R and DeBERTa-v3 checkpoints have one type or none, so any type but 0 would index past the table."""
    types = getattr(encoder.config, "type_vocab_size", None)
    return "token_type_ids" in inspect.signature(encoder.forward).parameters and (types is None or types > 1)


def encoder_inputs(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                   token_type_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> dict[str, Any]:
    """The encoder's keyword arguments: ids or embeddings, and token types only when given."""
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    if inputs_embeds is not None:
        kwargs["inputs_embeds"] = inputs_embeds
    else:
        kwargs["input_ids"] = input_ids
    return kwargs


class TransferkitClassifierConfig(PretrainedConfig):
    """Config of the encoder (as a dict) plus pooling and head settings."""

    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, pooling: str = "mean",
                 classifier_dropout: float = 0.1, head_hidden: int = 0, pool_layers: int = 1,
                 head_kind: str = "sequence", output_scale: list[float] | None = None,
                 output_shift: list[float] | None = None, pair_sep_id: int | None = None, **kwargs: Any) -> None:
        self.encoder = dict(encoder or {})
        self.output_scale, self.output_shift = output_scale, output_shift  # see the module docstring
        self.pair_sep_id = pair_sep_id
        self.head_kind = head_kind  # sequence (one label per text) | token (one label per token)
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.head_hidden = head_hidden  # 0: linear head; >0: one GELU hidden layer of this width
        self.pool_layers = pool_layers  # pool each of the last k layers and concatenate
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        enc = dict(self.encoder)
        return AutoConfig.for_model(enc.pop("model_type"), **enc)

    @property
    def hidden_size(self) -> int:  # peft and the head read this
        enc = self.encoder
        return int(enc.get("hidden_size") or enc.get("dim") or enc.get("n_embd") or enc["d_model"])


class TransferkitForSequenceClassification(PreTrainedModel):
    """Encoder -> pooling (mean over real tokens, or the first token) -> dropout -> linear (or small MLP)."""

    config_class = TransferkitClassifierConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True

    def __init__(self, config: TransferkitClassifierConfig, encoder: nn.Module | None = None) -> None:
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config())
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # never read: the head pools itself
        self.dropout = nn.Dropout(config.classifier_dropout)
        h, n = config.hidden_size * config.pool_layers, config.num_labels
        if config.head_hidden:
            self.classifier = nn.Sequential(nn.Linear(h, config.head_hidden), nn.GELU(),
                                            nn.Dropout(config.classifier_dropout), nn.Linear(config.head_hidden, n))
        else:
            self.classifier = nn.Linear(h, n)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours; encoder weights come from the checkpoint or the encoder's own init.
        head = getattr(self, "classifier", None)
        if head is not None and isinstance(module, nn.Linear) and any(module is m for m in head.modules()):
            std = float(self.config.encoder.get("initializer_range", 0.02))
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)

    def pool(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
             token_type_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled sentence vectors [batch, hidden * pool_layers] (last layer first)."""
        kwargs = encoder_inputs(input_ids, attention_mask, self.token_types(input_ids, token_type_ids), inputs_embeds)
        k = self.config.pool_layers
        out = self.encoder(**kwargs, output_hidden_states=k > 1)
        layers = [out.last_hidden_state] if k == 1 else list(out.hidden_states[-k:])[::-1]  # each [batch, seq, hidden]
        return torch.cat([self._pool_one(h, attention_mask) for h in layers], dim=-1)

    def token_types(self, input_ids: torch.Tensor | None, given: torch.Tensor | None) -> torch.Tensor | None:
        """The token types the encoder reads: those given, else a pair model's own (`pair_sep_id`); none for an
        encoder that reads no token types (`reads_token_types`), whatever a tokenizer gave."""
        if not reads_token_types(self.encoder):
            return None
        sep = getattr(self.config, "pair_sep_id", None)
        if given is not None or sep is None or input_ids is None:
            return given
        return pair_token_types(input_ids, sep)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_labels] from pooled vectors, in the units the config's output scale and shift give."""
        logits = self.classifier(self.dropout(pooled))
        scale, shift = getattr(self.config, "output_scale", None), getattr(self.config, "output_shift", None)
        if scale is not None or shift is not None:
            logits = logits.float()  # a shift of 1e3 in bf16 would round to steps of 8
        if scale is not None:
            logits = logits * torch.tensor(scale, dtype=logits.dtype, device=logits.device)
        if shift is not None:
            logits = logits + torch.tensor(shift, dtype=logits.dtype, device=logits.device)
        return logits

    def _pool_one(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        """`pooled` skips the encoder: a frozen encoder's pooled vectors can be cached and fed back."""
        if pooled is None:
            pooled = self.pool(input_ids, attention_mask, token_type_ids, inputs_embeds)
        logits = self.head(pooled)  # [batch, num_labels]
        return SequenceClassifierOutput(loss=sequence_loss(logits, labels, self.config), logits=logits)

    @classmethod
    def from_encoder(cls, path: str, num_labels: int, pooling: str = "mean", classifier_dropout: float = 0.1,
                     id2label: dict[int, str] | None = None, head_hidden: int = 0, pool_layers: int = 1,
                     **load_kwargs: Any) -> "TransferkitForSequenceClassification":
        """A new classifier over the pretrained encoder at `path` (a HF folder or hub name)."""
        return cls.with_encoder(AutoModel.from_pretrained(path, **load_kwargs), num_labels, pooling,
                                classifier_dropout, id2label, head_hidden, pool_layers)

    @classmethod
    def with_encoder(cls, encoder: nn.Module, num_labels: int, pooling: str = "mean", classifier_dropout: float = 0.1,
                     id2label: dict[int, str] | None = None, head_hidden: int = 0,
                     pool_layers: int = 1) -> "TransferkitForSequenceClassification":
        """A new head over an encoder module that is already loaded."""
        enc_cfg = encoder.config.to_dict()
        for k in ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype"):
            enc_cfg.pop(k, None)
        id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
        config = TransferkitClassifierConfig(
            encoder=enc_cfg, pooling=pooling, classifier_dropout=classifier_dropout, head_hidden=head_hidden,
            pool_layers=pool_layers, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()})
        return cls(config, encoder=encoder)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        self.config.auto_map = auto_map(self.config)
        super().save_pretrained(save_directory, *args, **kwargs)
        shutil.copyfile(__file__, Path(save_directory) / "modeling_transferkit.py")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """transformers' loader; a base folder (config.json + `encoder_source`, no weights) gets the
        pretrained encoder it names and a fresh head (see the module docstring)."""
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir() and not any((folder / f).exists() for f in WEIGHT_FILES):
            config = kwargs.get("config")
            if not isinstance(config, TransferkitClassifierConfig):
                config = TransferkitClassifierConfig.from_pretrained(folder)
            source = getattr(config, "encoder_source", None)
            if isinstance(source, dict):
                encoder = AutoModel.from_pretrained(_encoder_path(source), use_safetensors=True,
                                                    dtype=kwargs.get("dtype") or torch.float32)
                model = cls(config, encoder=encoder).eval()
                if kwargs.get("output_loading_info"):  # the head is new: say so, as transformers would
                    head = [f"classifier.{k}" for k in model.classifier.state_dict()]
                    return model, {"missing_keys": head, "unexpected_keys": [], "mismatched_keys": [],
                                   "error_msgs": []}
                return model
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor | None, config: PretrainedConfig) -> torch.Tensor | None:
    """transformers' loss for the config's `problem_type`: cross-entropy over class ids, mean squared error
    over targets, or sigmoid cross-entropy over 0/1 label vectors."""
    if labels is None:
        return None
    kind = getattr(config, "problem_type", None)
    if kind == REGRESSION:
        return nn.functional.mse_loss(logits.float(), labels.float().view_as(logits))
    if kind == MULTI_LABEL:
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits, labels)


class TransferkitForTokenClassification(TransferkitForSequenceClassification):
    """Encoder -> dropout -> linear (or small MLP) on every token: one label per token.

    The same config class as the sequence classifier (`head_kind="token"`), the same `encoder` and
    `classifier` names, so every method that adapts the encoder or trains the head works unchanged."""

    def pool(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError("a token classifier has no pooled sentence vector")

    def token_vectors(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None,
                      inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's last layer [batch, seq, hidden]: what the head reads at every token."""
        kwargs = encoder_inputs(input_ids, attention_mask, self.token_types(input_ids, token_type_ids), inputs_embeds)
        return self.encoder(**kwargs).last_hidden_state

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **_: Any) -> TokenClassifierOutput:
        hidden = self.token_vectors(input_ids, attention_mask, token_type_ids, inputs_embeds)  # [batch, seq, hidden]
        logits = self.classifier(self.dropout(hidden))  # [batch, seq, num_labels]
        loss = None
        if labels is not None:  # -100: special tokens, later sub-tokens, padding
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)

    @classmethod
    def with_encoder(cls, encoder: nn.Module, num_labels: int, pooling: str = "mean", classifier_dropout: float = 0.1,
                     id2label: dict[int, str] | None = None, head_hidden: int = 0,
                     pool_layers: int = 1) -> "TransferkitForTokenClassification":
        model = super().with_encoder(encoder, num_labels, pooling, classifier_dropout, id2label, head_hidden, 1)
        model.config.head_kind = "token"
        return model

def auto_map(config: TransferkitClassifierConfig) -> dict[str, str]:
    """config.json's `auto_map`: the config class and the one head class the folder holds."""
    if getattr(config, "head_kind", "sequence") == "token":
        return {"AutoConfig": "modeling_transferkit.TransferkitClassifierConfig",
                "AutoModelForTokenClassification": "modeling_transferkit.TransferkitForTokenClassification"}
    return {"AutoConfig": "modeling_transferkit.TransferkitClassifierConfig",
            "AutoModelForSequenceClassification": "modeling_transferkit.TransferkitForSequenceClassification"}


def _encoder_path(source: dict) -> str:
    """Where the encoder named by a base folder is. A bundled encoder is recorded by name and by how to find it
    without a path (`bundled`: the package that carries it, or its folder in transferkit's cache), so a copied run
    resolves on another machine, through transferkit when it is installed, else through this file alone; any
    other encoder by its recorded path or hub name."""
    name, path = source.get("name"), source.get("path")
    try:
        from transferkit.core.registry import MODELS  # absent when this file runs as remote code alone
        if name in MODELS:
            return str(MODELS.get(name).locate())
    except ImportError:
        pass
    where = source.get("bundled") if isinstance(source.get("bundled"), dict) else {}
    if isinstance(where.get("module"), str):
        spec = importlib.util.find_spec(where["module"])
        if spec is not None and spec.submodule_search_locations:
            return str(Path(list(spec.submodule_search_locations)[0]) / str(where.get("subdir", "")))
    if isinstance(where.get("cache"), str):
        cache = os.environ.get("TRANSFERKIT_CACHE") or str(Path.home() / ".cache" / "transferkit")
        return str(Path(cache).expanduser() / where["cache"])
    return str(path or name)


def write_base(model_config: TransferkitClassifierConfig, folder: str | Path, encoder_name: str,
               encoder_path: str | None, bundled: dict | None = None) -> None:
    """A base folder: the classifier's config (labels, head, encoder config) with `encoder_source`,
    and this file for `trust_remote_code` loading; no weights (the module docstring says why).
    A bundled encoder is recorded without a path (`bundled` says how to find it; see `_encoder_path`)."""
    config = copy.deepcopy(model_config)
    config.encoder_source = {"name": encoder_name, **({"path": encoder_path} if encoder_path else {}),
                             **({"bundled": bundled} if bundled else {})}
    config.auto_map = auto_map(config)
    config.architectures = [HEAD_CLASSES[getattr(config, "head_kind", "sequence")].__name__]
    config.save_pretrained(folder)
    shutil.copyfile(__file__, Path(folder) / "modeling_transferkit.py")


HEAD_CLASSES = {"sequence": TransferkitForSequenceClassification, "token": TransferkitForTokenClassification}


def load_saved(folder: str | Path, **kwargs: Any) -> TransferkitForSequenceClassification:
    """A saved transferkit model folder with the head class its config names (sequence or token)."""
    config = TransferkitClassifierConfig.from_pretrained(folder)
    return HEAD_CLASSES[getattr(config, "head_kind", "sequence")].from_pretrained(folder, config=config, **kwargs)


def register() -> None:
    """Make AutoConfig / AutoModelFor{Sequence,Token}Classification know the transferkit classifiers."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    try:
        AutoConfig.register(MODEL_TYPE, TransferkitClassifierConfig)
    except ValueError:
        pass  # already registered
    for auto, cls in ((AutoModelForSequenceClassification, TransferkitForSequenceClassification),
                      (AutoModelForTokenClassification, TransferkitForTokenClassification)):
        try:
            auto.register(TransferkitClassifierConfig, cls)
        except ValueError:
            pass  # already registered
