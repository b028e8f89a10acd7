"""Fill-mask and text generation with a pretrained or pretrained-by-transferkit language model.

    MaskFiller.load("runs/mlm").fill(["The capital of France is [MASK]."], top_k=5)
    TextGenerator.load("smollm2-135m").generate("Once upon a time", max_new_tokens=30)

Generation is transformers' `generate()`; fill-mask is one forward pass of an
`AutoModelForMaskedLM`. It is written here rather than taken from transformers' `pipeline`
because the pipeline accepts only the model's own mask spelling, ranks special and
out-of-vocabulary ids (a fresh MLM head puts [PAD]/[UNK] on top), loads "any" head
silently (a BertModel folder gets a random head and returns noise), and scores one
sentence per call where the cloze benchmark needs batches.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..core import runtime
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading
from ..core.runs import RUN_FILE
from ..modeling.lm import model_folder, model_type, tied_parameter_names

MASK_SPELLINGS = ("[MASK]", "<mask>")
DEFAULT_NEW_TOKENS = 50  # `generate`'s budget for a model that is not a fine-tuned generation run (which has its own)


def _device() -> Any:
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(name_or_path: str, kind: str) -> tuple[Any, Any]:
    """(model, tokenizer) with a trained head of `kind` (masked | causal | seq2seq); a missing head is an error."""
    import torch
    from transformers import AutoTokenizer
    from transformers.models.auto import modeling_auto as ma

    runtime.setup()
    folder = model_folder(name_or_path)
    mtype = model_type(folder)
    if kind == "masked":
        if mtype not in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            raise UserError(f"{name_or_path} ({mtype}) has no masked-LM head: fill-mask needs an MLM model "
                            "(e.g. a `transferkit pretrain --objective mlm` run)")
        auto = ma.AutoModelForMaskedLM
    elif kind == "seq2seq":
        if mtype not in ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(f"{name_or_path} ({mtype}) is not an encoder-decoder generator")
        auto = ma.AutoModelForSeq2SeqLM
    else:
        if mtype in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES or mtype not in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(f"{name_or_path} ({mtype}) is not a causal LM: generate needs a decoder such as "
                            "smollm2-135m or a `transferkit pretrain --objective clm` run")
        auto = ma.AutoModelForCausalLM
    check_folder(folder, ("config.json",))
    with loading(folder):
        model, info = auto.from_pretrained(str(folder), output_loading_info=True, dtype=torch.float32,
                                           use_safetensors=True)
    check_finite(model, folder)
    tied = tied_parameter_names(model)
    missing = sorted(k for k in info.get("missing_keys", ()) if k not in tied)
    if missing:
        what = "masked-LM" if kind == "masked" else "language-model"
        raise UserError(f"{name_or_path} has no trained {what} head (missing {', '.join(missing[:3])}"
                        + (", ..." if len(missing) > 3 else "") + "); train one with `transferkit pretrain` first")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - any tokenizer failure has the same fix
        raise UserError(f"could not load the tokenizer in {folder}: {type(e).__name__}: {e}") from None
    return model.to(_device()).eval(), tokenizer


class MaskFiller:
    """Top-k predictions for the single masked position of each text."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        if tokenizer.mask_token is None:
            raise UserError("the tokenizer has no mask token, so it cannot fill masks")
        self.model, self.tokenizer = model, tokenizer
        import torch

        # Never predict special tokens or ids past the tokenizer (embedding tables are often padded).
        vocab = model.get_output_embeddings().weight.shape[0]
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[: min(len(tokenizer), vocab)] = True
        allowed[[i for i in tokenizer.all_special_ids if i < vocab]] = False
        self.allowed = allowed

    @classmethod
    def load(cls, name_or_path: str) -> "MaskFiller":
        return cls(*_load(name_or_path, "masked"))

    def normalise(self, text: str) -> str:
        """`text` with every accepted mask spelling replaced by the model's own mask token."""
        for s in MASK_SPELLINGS:
            if s != self.tokenizer.mask_token:
                text = text.replace(s, self.tokenizer.mask_token)
        return text

    def fill(self, texts: Sequence[str], top_k: int = 5, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """For each text (exactly one mask each): top_k dicts of token, score (probability), sequence."""
        import torch
        if top_k < 1:
            raise UserError(f"top_k must be at least 1, got {top_k}")
        texts = [self.normalise(t) for t in texts]
        for i, t in enumerate(texts):
            n = t.count(self.tokenizer.mask_token)
            if n != 1:
                where = f"text {i + 1}" if len(texts) > 1 else "the text"
                raise UserError(f"{where} has {n} mask tokens; put exactly one {self.tokenizer.mask_token} "
                                f"(or {' / '.join(MASK_SPELLINGS)}) where the word to predict goes")
        k = min(top_k, int(self.allowed.sum()))
        out: list[list[dict[str, Any]]] = []
        dev = next(self.model.parameters()).device
        limit = min(self.tokenizer.model_max_length, 512)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            ids = enc["input_ids"]  # (B, T)
            rows, cols = (ids == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            if len(rows) != len(chunk):
                raise UserError(f"a mask token was cut off by the {limit}-token limit; shorten the text")
            with torch.inference_mode():
                logits = self.model(**{k_: v.to(dev) for k_, v in enc.items()}).logits  # (B, T, V)
            probs = logits[rows.to(dev), cols.to(dev)].float().softmax(-1).cpu()  # (B, V)
            scores, top = probs.masked_fill(~self.allowed, -1.0).topk(k, dim=-1)  # (B, k)
            for b in range(len(chunk)):
                row = []
                for s, tid in zip(scores[b].tolist(), top[b].tolist()):
                    filled = ids[b].clone()
                    filled[cols[b]] = tid
                    row.append({"token": self.tokenizer.convert_ids_to_tokens(tid), "token_id": tid, "score": s,
                                "sequence": self.tokenizer.decode(filled, skip_special_tokens=True)})
                out.append(row)
        return out


class TextGenerator:
    """Prompt continuation (or a chat reply) with transformers' `generate()`."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def load(cls, name_or_path: str) -> "TextGenerator":
        return cls(*_load(name_or_path, "causal"))

    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, num_return_sequences: int = 1, seed: int | None = None,
                 chat: bool = False) -> list[str]:
        """Greedy when temperature is 0, else sampling. Returns prompt + continuation for each sequence
        (with `chat`, the assistant's reply alone)."""
        new = self.generate_ids(prompt, max_new_tokens, temperature, top_k, top_p, num_return_sequences, seed, chat)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts] if chat else [prompt + t for t in texts]

    def generate_ids(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.0,
                     top_k: int | None = None, top_p: float | None = None, num_return_sequences: int = 1,
                     seed: int | None = None, chat: bool = False) -> Any:
        """The new token ids only: (num_return_sequences, <= max_new_tokens)."""
        import torch
        from transformers import set_seed
        _check_options(max_new_tokens, temperature, top_k, top_p, num_return_sequences)
        tok = self.tokenizer
        ids = self.prompt_ids(prompt, chat)  # (1, T)
        if ids.shape[1] == 0:
            raise UserError("the prompt is empty and the tokenizer adds no start token; give a prompt")
        limit = _max_positions(self.model.config)
        if limit and ids.shape[1] + max_new_tokens > limit:
            raise UserError(f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                            f"model's {limit} positions")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        sample = temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_new_tokens,
                                  "num_return_sequences": num_return_sequences, "pad_token_id": pad}
        if sample:
            kwargs.update(temperature=temperature, top_k=top_k if top_k is not None else 0,
                          top_p=top_p if top_p is not None else 1.0)
        else:  # greedy: clear sampling settings a model's generation_config may carry
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if seed is not None:
            set_seed(seed)
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(dev), attention_mask=torch.ones_like(ids).to(dev),
                                      **kwargs)  # (num_return_sequences, T + new)
        return out[:, ids.shape[1]:].cpu()

    def prompt_ids(self, prompt: str, chat: bool = False) -> Any:
        """The prompt as model input ids (1, T): the chat template's user turn, or the plain text."""
        tok = self.tokenizer
        if chat:
            if not getattr(tok, "chat_template", None):
                raise UserError("this model's tokenizer has no chat template; drop --chat")
            return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        eos = self.model.config.eos_token_id
        if ids.shape[1] > 1 and eos is not None and int(ids[0, -1]) == eos:
            ids = ids[:, :-1]  # BERT-style vocabularies end every text with [SEP]: the prompt is not finished
        return ids


def _check_options(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                   num_return_sequences: int) -> None:
    for name, v in (("temperature", temperature), ("top_p", top_p)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise UserError(f"{name} must be a finite number, got {v}")  # NaN passes every comparison below
    for name, v in (("max_new_tokens", max_new_tokens), ("top_k", top_k), ("num_return_sequences", num_return_sequences)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise UserError(f"{name} must be an integer, got {v!r}")
    if temperature > 100:
        raise UserError(f"temperature must be <= 100, got {temperature}")
    if num_return_sequences > 1000:
        raise UserError(f"num_return_sequences must be at most 1000, got {num_return_sequences}")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if num_return_sequences < 1:
        raise UserError(f"num_return_sequences must be at least 1, got {num_return_sequences}")
    if num_return_sequences > 1 and temperature == 0:
        raise UserError("several return sequences need sampling: set temperature > 0 (greedy gives one answer)")


def _max_positions(config: Any) -> int | None:
    """The absolute-position limit (GPT-2, BERT); None for rotary models (Llama), which have no hard cap."""
    if getattr(config, "model_type", "") == "gpt2":
        return getattr(config, "n_positions", None)
    return None


def fill_mask(model: str | Any, text: str, top_k: int = 5, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Top-k fillers for the one mask in `text`: [{token, token_id, score, sequence}], best first.

    `model`: a pretrain run dir, its model/ folder, an HF MLM folder; or a loaded model with `tokenizer`."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise UserError(f"top_k must be an integer in [1, 1000], got {top_k!r}")
    filler = MaskFiller.load(model) if isinstance(model, str) else MaskFiller(model, _need(tokenizer))
    return filler.fill([text], top_k)[0]


def generate(model: str | Any, prompt: str, max_new_tokens: int | None = None, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, num_return_sequences: int = 1,
             seed: int | None = None, chat: bool = False, tokenizer: Any = None) -> list[str]:
    """Generated texts for `prompt` (greedy when temperature is 0).

    `model`: smollm2-135m, a pretrain run dir, an HF causal LM folder; or a loaded model with `tokenizer`."""
    # before minutes of loading
    _check_options(DEFAULT_NEW_TOKENS if max_new_tokens is None else max_new_tokens, temperature, top_k, top_p,
                   num_return_sequences)
    if isinstance(model, str) and (Path(model) / RUN_FILE).is_file():  # None: the run's own budget
        return _tuned(model, prompt, max_new_tokens, temperature, top_k, top_p, num_return_sequences, seed)
    max_new_tokens = DEFAULT_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    gen = TextGenerator.load(model) if isinstance(model, str) else TextGenerator(model, _need(tokenizer))
    return gen.generate(prompt, max_new_tokens, temperature, top_k, top_p, num_return_sequences, seed, chat)


def _tuned(run_dir: str, prompt: str, max_new_tokens: int | None, temperature: float, top_k: int | None,
           top_p: float | None, n: int, seed: int | None) -> list[str]:
    """A fine-tuned generation run's completions of `prompt`, formatted with the run's own template (its task
    decodes; `--chat` is what the template already does)."""
    from .predictor import Predictor
    if top_k is not None:
        raise UserError("top_k: a fine-tuned run samples with temperature and top_p")
    predictor = Predictor.from_run(run_dir)
    options = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0, "seed": seed}
    if temperature > 0:
        options.update(temperature=float(temperature), top_p=float(top_p or 1.0))
    return [row["generated_text"] for row in predictor.predict([prompt] * n, **options)]


def _need(tokenizer: Any) -> Any:
    if tokenizer is None:
        raise UserError("a loaded model needs its tokenizer: pass tokenizer=...")
    return tokenizer
