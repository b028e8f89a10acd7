"""Language models for pretraining: from-scratch configs and existing models with an objective's head.

`build_from_scratch(arch, size, tokenizer, objective)` builds a randomly initialised
transformers model sized by name; `load_for_objective(name_or_path, objective)` loads an
existing model (bundled name, local folder, pretrain run dir) with the head that objective
trains, creating the head where the checkpoint has none.

From-scratch sizes (layers / hidden / heads / feed-forward; 512 positions, weights tied):

| arch  | tiny            | mini             | small             |
|-------|-----------------|------------------|-------------------|
| bert  | 2 / 128 / 2 / 512  | 4 / 256 / 4 / 1024 | 4 / 512 / 8 / 2048 |
| gpt2  | 2 / 128 / 2 / 512  | 4 / 256 / 4 / 1024 | 4 / 512 / 8 / 2048 |
| llama | 2 / 128 / 2 / 352  | 4 / 256 / 4 / 704  | 4 / 512 / 8 / 1408 |

(BERT-tiny/mini/small follow Turc et al. 2019; llama uses SwiGLU, so its feed-forward is about
2.75x hidden, which keeps its parameter count close to the 4x-hidden GELU layers of the others.)

Objectives: `mlm` -> BertForMaskedLM, `mlm+nsp` -> BertForPreTraining, `clm` ->
GPT2LMHeadModel / LlamaForCausalLM. Everything is transformers' own classes and configs; this
module only picks sizes, reads token ids from the tokenizer and validates the combination.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import runtime
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading, read_json_object
from .resolve import MODELS

logger = logging.getLogger(__name__)

ARCHS = ("bert", "gpt2", "llama")
OBJECTIVES = ("mlm", "mlm+nsp", "clm")
MASKED_OBJECTIVES = ("mlm", "mlm+nsp")


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int
    ffn: int  # feed-forward width of the GELU archs (bert, gpt2)
    llama_ffn: int  # SwiGLU width (three matrices instead of two)


SIZES: dict[str, Size] = {
    "tiny": Size(2, 128, 2, 512, 352),
    "mini": Size(4, 256, 4, 1024, 704),
    "small": Size(4, 512, 8, 2048, 1408),
}
MAX_POSITIONS = 512
_OBJECTIVE_ARCHS = {"mlm": ("bert",), "mlm+nsp": ("bert",), "clm": ("gpt2", "llama")}


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    return objective


def size_table() -> list[dict[str, Any]]:
    """One row per (arch, size): the shape a from-scratch model gets, for `transferkit models`."""
    rows = []
    for arch in ARCHS:
        for name, s in SIZES.items():
            rows.append({"arch": arch, "size": name, "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
                         "ffn": s.llama_ffn if arch == "llama" else s.ffn,
                         "objectives": [o for o in OBJECTIVES if arch in _OBJECTIVE_ARCHS[o]]})
    return rows


def _special_ids(tokenizer: Any, objective: str) -> dict[str, int | None]:
    """pad/bos/eos ids from the tokenizer; BERT-style [CLS]/[SEP] stand in for bos/eos."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id
    if objective in MASKED_OBJECTIVES and tokenizer.mask_token_id is None:
        raise UserError(f"objective {objective} needs a tokenizer with a mask token; "
                        f"{type(tokenizer).__name__} has none")
    if objective == "clm" and eos is None:
        raise UserError("objective clm needs a tokenizer with an end-of-sequence (eos or sep) token")
    if pad is None:
        pad = eos  # common for causal LMs: padded positions are masked out of the loss anyway
    return {"pad": pad, "bos": bos, "eos": eos}


def build_from_scratch(arch: str, size: str, tokenizer: Any, objective: str) -> Any:
    """A randomly initialised model of a named size for `objective`, sized to `tokenizer`'s vocabulary.

    arch: bert | gpt2 | llama; size: tiny | mini | small (see the module docstring);
    objective: mlm | mlm+nsp (bert) or clm (gpt2, llama)."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; choose one of: {', '.join(SIZES)}")
    check_objective(objective)
    if arch not in _OBJECTIVE_ARCHS[objective]:
        kind = "an encoder (bidirectional)" if arch == "bert" else "a decoder (left-to-right)"
        raise UserError(f"objective {objective} does not fit {arch}, which is {kind}; "
                        f"{objective} works with: {', '.join(_OBJECTIVE_ARCHS[objective])}")
    s = SIZES[size]
    ids = _special_ids(tokenizer, objective)
    vocab = len(tokenizer)  # includes added tokens, unlike tokenizer.vocab_size
    import transformers as tf
    if arch == "bert":
        cfg = tf.BertConfig(vocab_size=vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                            num_attention_heads=s.heads, intermediate_size=s.ffn,
                            max_position_embeddings=MAX_POSITIONS, type_vocab_size=2, pad_token_id=ids["pad"],
                            tie_word_embeddings=True)
        return tf.BertForPreTraining(cfg) if objective == "mlm+nsp" else tf.BertForMaskedLM(cfg)
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, n_embd=s.hidden, n_layer=s.layers, n_head=s.heads, n_inner=s.ffn,
                            n_positions=MAX_POSITIONS, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                            pad_token_id=ids["pad"], tie_word_embeddings=True)
        return tf.GPT2LMHeadModel(cfg)
    cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, num_key_value_heads=s.heads, intermediate_size=s.llama_ffn,
                         max_position_embeddings=MAX_POSITIONS, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                         pad_token_id=ids["pad"], tie_word_embeddings=True)
    return tf.LlamaForCausalLM(cfg)


def model_folder(name_or_path: str) -> Path:
    """The HF model folder behind a bundled name, a pretrain/fine-tune run dir, its model/ folder or a local folder."""
    if name_or_path in MODELS:
        return Path(MODELS.get(name_or_path).locate())
    p = Path(name_or_path)
    if not p.exists():
        raise UserError(f"model {name_or_path!r} not found: not a bundled name ({', '.join(MODELS.names())}) "
                        "or an existing folder")
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():  # a run directory
        return p / "model"
    raise UserError(f"model folder {p} has no config.json (expected a Hugging Face model folder or a run "
                    "directory with model/)")


def model_type(folder: Path) -> str:
    """The `model_type` in a model folder's config.json."""
    check_folder(folder, ("config.json",))  # every file of the folder, before anything reads it
    mtype = read_json_object(folder / "config.json", "model config").get("model_type")
    if not isinstance(mtype, str) or not mtype:
        raise UserError(f"{folder / 'config.json'} is not a Hugging Face config (no model_type string)")
    return mtype


def _auto_class(folder: Path, objective: str, label: str) -> Any:
    """The AutoModel class for `objective`, after checking the model's kind fits it."""
    from transformers.models.auto import modeling_auto as ma
    mtype = model_type(folder)
    if mtype == "transferkit_classifier":
        raise UserError(f"{label} is a fine-tuned classifier; continue pretraining from its base model instead")
    is_encoder = mtype in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if objective in MASKED_OBJECTIVES:
        table = ma.MODEL_FOR_PRETRAINING_MAPPING_NAMES if objective == "mlm+nsp" else ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES
        if mtype not in table or (objective == "mlm+nsp" and mtype != "bert"):
            raise UserError(f"objective {objective} needs an encoder with a masked-LM head "
                            f"({'BERT' if objective == 'mlm+nsp' else 'BERT, RoBERTa, ...'}); {label} is {mtype}")
        return ma.AutoModelForPreTraining if objective == "mlm+nsp" else ma.AutoModelForMaskedLM
    if is_encoder or mtype not in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(f"objective clm needs a decoder (GPT-2, Llama, ...); {label} is {mtype}"
                        + (", an encoder: use mlm" if is_encoder else ""))
    return ma.AutoModelForCausalLM


def load_for_objective(name_or_path: str, objective: str) -> tuple[Any, Any]:
    """(model, tokenizer) for continued pretraining of an existing model with `objective`.

    A checkpoint without the objective's head (the bundled MiniLM is a plain BertModel) gets a new
    one: the encoder weights load unchanged, the MLM decoder is tied to the word embeddings, and
    the transform layer and output bias start fresh. The names of the newly initialised weights
    are logged and kept in `model.newly_initialized` (empty when the folder had the head)."""
    check_objective(objective)
    runtime.setup()
    folder = model_folder(name_or_path)
    auto = _auto_class(folder, objective, name_or_path)
    import torch
    from transformers import AutoTokenizer
    check_folder(folder, ("config.json",))
    with loading(folder):
        model, info = auto.from_pretrained(str(folder), output_loading_info=True, dtype=torch.float32,
                                           use_safetensors=True)
    check_finite(model, folder)
    model.tie_weights()  # the decoder shares the (loaded) word embeddings when the config ties them
    tied = tied_parameter_names(model)
    new = sorted(k for k in info.get("missing_keys", ()) if k not in tied)
    model.newly_initialized = new
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - any tokenizer failure means the same fix
        raise UserError(f"could not load the tokenizer in {folder}: {type(e).__name__}: {e}") from None
    if objective == "clm" and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need a pad id; padded positions get no loss
    _special_ids(tokenizer, objective)  # mask/eos present?
    if new:
        logger.info(f"{name_or_path}: newly initialised for {objective}: {', '.join(new)}"
                    + (" (MLM decoder tied to the word embeddings)" if _decoder_tied(model) else ""))
    else:
        logger.info(f"{name_or_path}: {objective} head loaded from the checkpoint")
    return model, tokenizer


def tied_parameter_names(model: Any) -> set[str]:
    """Parameter names that share storage with another parameter (tied weights are not 'new')."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        else:
            seen[id(p)] = name
    return tied


def _decoder_tied(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight
