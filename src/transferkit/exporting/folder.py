"""Export a run as one self-contained model folder, adapters merged into the weights.

`export(run_dir, out_dir)` writes the run's classifier with any LoRA update merged into the encoder
(peft's `merge_and_unload`), its tokenizer and its label names: a Hugging Face folder that
`AutoModelForSequenceClassification.from_pretrained(out_dir, trust_remote_code=True)` loads (the
classifier's code travels with it as `modeling_transferkit.py`), giving the run's logits.

`plain=True` writes a stock `BertForSequenceClassification` folder that needs no custom code. That
class always reads [CLS] through BERT's pooler, tanh(W h + b), before its classifier, so only a run
that reads [CLS] with a linear head (model.pooling=cls, model.head=linear, one layer) can be written
that way, and only for BERT-layout encoders. The pooler is set to W = eps * I, b = 0 and the
classifier weights to W_c / eps: tanh(eps * h) / eps = h * (1 - (eps * h)^2 / 3 + ...), so with
eps = 1e-4 the logits match to ~1e-7 relative for |h| < 30. Mean-pooled runs (the default) have no
such stock equivalent and get a clear error. Both kinds are checked on probe inputs after writing.
Written here because neither transformers nor peft converts a custom head into a stock one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import runtime
from ..core.errors import UserError
from ..core.fs import check_writable_dir, write_folder
from ..core.runs import RunInfo
from ..inference.loading import merged_model
from ..modeling.classifier import TransferkitForSequenceClassification as Classifier
from ..modeling.resolve import load_tokenizer
from ..reporting.model_card import write_export_card

logger = logging.getLogger(__name__)

PLAIN_EPS = 1e-4  # pooler slope: small enough that tanh is linear to float32 precision
TOLERANCE = 1e-4  # largest logit difference accepted between the run and the written folder


def export(run_dir: str | Path, out_dir: str | Path, plain: bool = False, base_model: str | None = None) -> Path:
    """Write the run's merged model (and tokenizer) to `out_dir`; returns it. Nothing is left on failure."""
    runtime.setup()
    info = RunInfo.read(run_dir)
    out = check_new_output(out_dir)
    model = merged_model(info, base_model)
    reference = model
    if plain and getattr(model.config, "head_kind", "sequence") == "token":
        raise UserError("--plain writes a BertForSequenceClassification; export a token-classification run "
                        "without it (it loads with AutoModelForTokenClassification, trust_remote_code=True)")
    if plain:
        model = to_plain_bert(model, info)
    tokenizer = load_tokenizer(str(info.artifact_dir))

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _check_folder(reference, tmp, tokenizer, plain)
        write_export_card(tmp, run_dir, plain=plain)
    write_folder(out, write)
    kind = ("plain BertForSequenceClassification" if plain else type(model).__name__
            if not isinstance(model, Classifier) else "transferkit classifier (trust_remote_code=True)")
    logger.info(f"exported {run_dir} ({info.method}, merged) to {out} as a {kind}")
    return out


def check_new_output(out_dir: str | Path) -> Path:
    """The export's folder: writable, and new or empty (an export never overwrites another)."""
    out = Path(out_dir)
    check_writable_dir(out, "output folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"output folder {out} exists and is not empty; choose another or remove it")
    return out


def to_plain_bert(model: nn.Module, info: Any) -> nn.Module:
    """An equivalent stock BertForSequenceClassification (see the module docstring), or a UserError."""
    from transformers import BertConfig, BertForSequenceClassification
    cfg = model.config
    why = []
    if cfg.encoder.get("model_type") != "bert":
        why.append(f"the encoder is {cfg.encoder.get('model_type')!r}, not BERT layout")
    if cfg.pooling != "cls":
        why.append(f"the head reads {cfg.pooling}-pooled tokens, not [CLS] (train with model.pooling=cls)")
    if cfg.head_hidden:
        why.append("the head has a hidden layer (train with model.head=linear)")
    if cfg.pool_layers != 1:
        why.append(f"the head reads {cfg.pool_layers} layers (train with model.pool_layers=1)")
    if why:
        raise UserError(f"{info.run_dir}: --plain needs a [CLS]-reading linear head on a BERT encoder, but "
                        + "; ".join(why) + "; export without --plain (loads with trust_remote_code=True)")
    enc = {k: v for k, v in cfg.encoder.items() if k != "model_type"}
    bert_cfg = BertConfig(**{**enc, "num_labels": cfg.num_labels, "id2label": dict(cfg.id2label),
                             "label2id": dict(cfg.label2id), "classifier_dropout": cfg.classifier_dropout,
                             "problem_type": getattr(cfg, "problem_type", None)})
    plain = BertForSequenceClassification(bert_cfg).eval()
    missing, unexpected = plain.bert.load_state_dict(model.encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise UserError(f"{info.run_dir}: encoder weights do not fit BertModel "
                        f"({len(missing)} missing, {len(unexpected)} unexpected)")
    h = bert_cfg.hidden_size
    with torch.no_grad():
        plain.bert.pooler.dense.weight.copy_(torch.eye(h) * PLAIN_EPS)  # [hidden, hidden]
        plain.bert.pooler.dense.bias.zero_()
        # the head's output scale and shift (a regressor's units, multi-label thresholds) folded into the layer
        n = cfg.num_labels
        scale = torch.tensor(getattr(cfg, "output_scale", None) or [1.0] * n)  # [labels]
        shift = torch.tensor(getattr(cfg, "output_shift", None) or [0.0] * n)
        plain.classifier.weight.copy_(model.classifier.weight * scale[:, None] / PLAIN_EPS)  # [labels, hidden]
        plain.classifier.bias.copy_(model.classifier.bias * scale + shift)
    return plain


def _probe_batch(vocab_size: int, special: list[int], n: int = 4, length: int = 16) -> dict[str, torch.Tensor]:
    """Random token ids with ragged padding: exercises masking as real batches do."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(max(special, default=0) + 1, vocab_size, (n, length), generator=g)  # [n, length]
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        mask[i, length - 3 * i:] = 0
        ids[i, length - 3 * i:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _check_folder(reference: nn.Module, folder: Path, tokenizer: Any, plain: bool) -> None:
    """Reload the written folder the way a user would and compare its logits with the run's model."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification
    causal = not isinstance(reference, Classifier)  # a generation run's causal LM
    auto = (AutoModelForCausalLM if causal else AutoModelForTokenClassification
            if getattr(reference.config, "head_kind", "sequence") == "token"
            else AutoModelForSequenceClassification)  # the Auto class a user of this head would call
    loaded = auto.from_pretrained(folder, trust_remote_code=not plain and not causal).eval()
    if plain and type(loaded).__name__ != "BertForSequenceClassification":
        raise RuntimeError(f"plain export reloaded as {type(loaded).__name__}")
    vocab = reference.config.vocab_size if causal else reference.config.encoder["vocab_size"]
    batch = _probe_batch(vocab, list(tokenizer.all_special_ids))
    if causal:
        batch.pop("token_type_ids", None)
    want = reference(**batch).logits  # [n, labels] or [n, length, tags]
    got = loaded(**batch).logits
    diff = float((want - got).abs().max())
    if not diff <= TOLERANCE * max(1.0, float(want.abs().max())):
        raise UserError(f"exported model differs from the run by {diff:.2e} in the logits; nothing was written")
