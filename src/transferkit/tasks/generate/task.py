"""Generation: a causal LM tuned on prompt -> completion rows, scored by held-out loss and, on the test split,
by ROUGE and exact match of what it generates.

The model is the base's own `AutoModelForCausalLM`; nothing is added to it. Training scores the completion
tokens only (`train.loss=all` scores every token), on padded length-grouped batches or packed blocks
(`data.packing`). The template the run trained with and its decoding settings (greedy, at most
`max_new_tokens`: by default the longest training completion's tokens, capped at 256) are the run's head
settings, so `predict`, `evaluate`, the pipeline and the server format prompts and decode as training did.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...core.errors import UserError
from ...data.tables import is_blank
from ...objectives import batches_of
from ..base import TRANSFER_BATCH, Task
from ..rows import EncodedInputs
from .batches import GenData, PackedGenData
from .format import choose_template, encode_rows, end_token, prompt_ids
from .model import CausalLM, causal_config, generate_ids, held_out_loss, lm_loss, load_causal_lm
from .read import GenRows, ROLES, load_rows, prepare_splits, prompt_text

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 256  # the default decoding budget's cap
GENERATE_BATCH = 16  # prompts per generate() call


def check_prompt(item: Any, where: str) -> tuple[tuple[str, str], ...]:
    """One prompt as chat turns: a non-empty string (one user turn), or a list of {"role", "content"} turns."""
    if isinstance(item, str):
        if is_blank(item):
            raise UserError(f"{where} is empty: there is nothing to complete")
        return (("user", item),)
    if isinstance(item, tuple) and item and all(isinstance(t, tuple) and len(t) == 2 for t in item):
        return item  # already checked
    if isinstance(item, (list, tuple)) and item and all(isinstance(t, dict) for t in item):
        turns = []
        for k, t in enumerate(item):
            role, content = t.get("role"), t.get("content")
            if role not in ROLES or not isinstance(content, str) or is_blank(content):
                raise UserError(f"{where}: turn {k + 1} needs a role ({', '.join(ROLES)}) and non-empty content")
            turns.append((role, content))
        return tuple(turns)
    raise UserError(f"{where} is not a prompt (a string, or a list of {{\"role\", \"content\"}} turns)")


class Generation(Task):
    name = "generate"
    default_metric = "loss"
    pooled_features = False
    shares_base = False  # no shared encoder pass (the server's shared encoders are classifier/tagger encoders)
    switches_adapters = True  # a server puts the LoRA/IA3 runs of one base on one copy of it (inference/switched.py)
    head_kind = "causal"
    onnx_refusal = ("a generation run decodes token by token with a key-value cache, which the one-pass ONNX graph "
                    "of this export does not hold; export a merged folder instead (transferkit export RUN OUT), which "
                    "loads with AutoModelForCausalLM")
    model_kind = "decoder"
    default_data = "bbc-headlines"
    default_model = "smollm2-135m"
    losses = ("auto", "completion", "all")
    headline_metrics = ("rouge1", "rouge2", "rougeL", "exact_match", "loss", "perplexity")
    compare_metrics = (("rougeL", "test ROUGE-L x100", "ROUGE-L"), ("rouge1", "ROUGE-1 x100", "ROUGE-1"))
    sample_columns = ("prompt", "completion")
    # lora's and full's: one run each on bbc-headlines with SmolLM2-135M (docs/tasks.md, "Generation"), not a sweep; ia3's
    # and bitfit's are those methods' usual scale (not measured on generation)
    train_defaults = {"lora": {"lr": 1e-3, "epochs": 1}, "full": {"lr": 5e-5, "epochs": 1},
                      "ia3": {"lr": 5e-3, "epochs": 1}, "bitfit": {"lr": 1e-3, "epochs": 1}}
    min_steps = 0  # an epoch of bbc-headlines is ~100 steps of seconds each on a CPU: the epochs decide
    pipeline_names = ("text-generation",)
    pipeline_options = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "return_full_text")
    decode_options = {"max_new_tokens": None, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": None}
    runs_csv_columns = ("generated_text",)
    generate_batch = GENERATE_BATCH  # prompts per generate() call, read by the server too (generate/complete.py)

    def __init__(self) -> None:
        super().__init__()
        self.wanted_template, self.packing = "auto", False

    # ---- training ----------------------------------------------------------------------------------
    def configure(self, cfg: Any) -> None:
        super().configure(cfg)
        if cfg.data.augment:
            raise UserError("data.augment: generation rows cannot be augmented (the steps rewrite texts with labels)")
        self.wanted_template, self.packing = cfg.data.template, bool(cfg.data.packing)

    def prepare(self, data_cfg: Any, seed: int) -> Any:
        return prepare_splits(data_cfg, seed)

    def texts(self, split: GenRows) -> list[str]:
        return split.texts

    @property
    def template(self) -> str:
        return self.head.get("generation", {}).get("template", "plain")

    @property
    def max_new_tokens(self) -> int:
        return int(self.head.get("generation", {}).get("max_new_tokens", 64))

    def token_lengths(self, tokenizer: Any, split: GenRows) -> Any:
        """Tokens per formatted row (prompt, completion and its closing token); chooses the run's template and its
        decoding budget from the training rows."""
        template = choose_template(tokenizer, self.wanted_template)
        ids, labels = encode_rows(tokenizer, split.prompts, split.completions, template, 10**9, True)
        longest = max((sum(x != -100 for x in row) for row in labels), default=1)
        self.head["generation"] = {"template": template, "max_new_tokens": int(min(MAX_NEW_TOKENS, longest + 4))}
        logger.info(f"template: {template}; completions up to {longest} tokens (generation stops at eos or "
                    f"{self.max_new_tokens} new tokens)")
        return np.array([len(x) for x in ids], dtype=np.int64)

    def check_base(self, resolved: Any) -> None:
        causal_config(resolved.path, getattr(resolved, "local_only", False))

    def build_model(self, resolved: Any, label_names: list[str], pooling: str, dropout: float, head_hidden: int,
                    pool_layers: int, random_init: bool = False) -> nn.Module:
        return load_causal_lm(resolved.path, random_init, local_only=getattr(resolved, "local_only", False))

    def adapter_base(self, resolved: Any) -> str | None:
        """The base causal LM folder itself: stock `AutoModelForCausalLM` loads it as it is."""
        path = Path(resolved.path)
        return str(path.resolve()) if path.is_dir() else resolved.path

    def training_module(self, model: nn.Module) -> nn.Module:
        return CausalLM(model)

    def encode(self, tokenizer: Any, split: GenRows, max_length: int) -> Any:
        ids, labels = encode_rows(tokenizer, split.prompts, split.completions, self.template, max_length,
                                  self.loss_name != "all")
        # with what the test split's generation needs: each prompt as the model reads it, room left for the answer
        data = GenData(ids, labels, split, self.prompt_token_ids(tokenizer, split.prompts, max_length), tokenizer)
        return PackedGenData(data, max_length) if self.packing else data

    # A decoder has no label to fit a probe to; how likely it already finds the completions is the estimate. Per
    # byte of completion text (not per token), so models with different tokenizers compare; negated bits, so that
    # higher transfers better, as with LogME.
    transfer_score_name = "-bits/byte"

    @torch.inference_mode()
    def transfer_score(self, model: nn.Module, sample: Any, classes: int, tokenizer: Any, pad_id: int,
                       device: Any) -> float:
        """Minus the untuned model's cross-entropy on the sample's completion tokens, in bits per UTF-8 byte of
        those tokens' text."""
        wrapped = CausalLM(model).eval()
        nats, size = 0.0, 0
        for idx in batches_of(len(sample), TRANSFER_BATCH // 4):  # a decoder row is longer than a sentence
            batch = {k: v.to(device) for k, v in sample.collate(idx, pad_id).items()}
            loss, _, _ = lm_loss(wrapped(**batch), batch)
            nats += float(loss)
            size += len(tokenizer.decode(batch["labels"].tolist()).encode("utf-8"))
        if size == 0:
            raise UserError("plan --models: the sampled training rows have no completion text to score")
        return -nats / math.log(2) / size

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        return lm_loss(outputs, batch)

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                 device: Any) -> tuple[dict[str, float], Any]:
        return held_out_loss(model, data, batch_size, pad_id, device), None

    def evaluate_test(self, model: nn.Module, data: Any, batch_size: int, pad_id: int,
                      device: Any) -> tuple[dict[str, float], Any]:
        """Held-out loss, then generation from every test prompt scored against its reference."""
        from .metrics import generation_metrics
        metrics = held_out_loss(model, data, batch_size, pad_id, device)
        outputs = self.generate_texts(model, data.tokenizer, data.prompt_ids, pad_id, device)
        scores, _ = generation_metrics(data.examples.completions, outputs)
        return {**scores, **metrics}, outputs

    def generate_texts(self, model: nn.Module, tokenizer: Any, prompts: Sequence[list[int]], pad_id: int,
                       device: Any, **options: Any) -> list[str]:
        """The decoded completion of each prompt (token ids), with the run's decoding settings unless `options`
        change them."""
        opts = {**self.decode_options, **{k: v for k, v in options.items() if v is not None}}
        new = generate_ids(model, prompts, pad_id, end_token(tokenizer), device, GENERATE_BATCH,
                           int(opts["max_new_tokens"] or self.max_new_tokens), bool(opts["do_sample"]),
                           float(opts["temperature"]), float(opts["top_p"]), opts["seed"])
        return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def write_report(self, out: Path, splits: Any, predictions: Any, history: list[dict], title: str,
                     extra: dict[str, Any]) -> dict[str, Path]:
        from .metrics import generation_metrics
        from .report import write_generation_report
        metrics, scores = generation_metrics(splits.test.completions, predictions)
        return write_generation_report(out, splits.test.texts, splits.test.completions, predictions, metrics, scores,
                                       history, title, extra)

    def load_labelled(self, source: str, label_names: list[str], text_column: str | None,
                      label_column: str | None) -> GenRows:
        return load_rows(source, text_column, label_column)

    def score(self, model: nn.Module, tokenizer: Any, info: Any, split: GenRows, out: Path, history: list[dict],
              title: str, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        from .metrics import generation_metrics
        from .report import write_generation_report
        device = next(model.parameters()).device
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token(tokenizer)
        data = self.encode(tokenizer, split, info.max_length)
        report, outputs = self.evaluate_test(model, data, 32, pad_id, device)
        _, scores = generation_metrics(split.completions, outputs)
        paths = write_generation_report(out, split.texts, split.completions, outputs, report, scores, history, title,
                                        extra)
        return report, paths

    def augment(self, splits: Any, steps: list, seed: int, spec: str) -> Any:
        raise UserError("data.augment: generation rows cannot be augmented")

    # ---- inference ---------------------------------------------------------------------------------
    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and bool(inputs)
                                           and isinstance(inputs[0], dict))

    def check_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        return [check_prompt(x, f"prompt {i + 1}") for i, x in enumerate(inputs)]

    def cli_inputs(self, texts: Sequence[str]) -> list[Any]:
        return list(texts)

    def read_inputs(self, path: str, text_column: str | None) -> list[Any]:
        """The prompts of an `--input` file: a text column (`prompt` first), or messages lists."""
        from ...data.tables import open_table, pick_column, read_texts
        table, _ = open_table(path, "input")
        if text_column is None and "messages" in table.columns:
            return [json.loads(m) if isinstance(m, str) else list(m) for m in table.values("messages")]
        if text_column is None:
            text_column, _ = pick_column(table, None, ("prompt", "instruction", "input", "text"), "text", path)
        return read_texts(path, text_column)

    def input_fields(self, item: Any) -> dict[str, Any]:
        return {"prompt": prompt_text(item) if not isinstance(item, str) else item}

    def display_text(self, item: Any) -> str:
        return prompt_text(item) if not isinstance(item, str) else item

    def input_problem(self, value: Any, max_chars: int) -> tuple[int, str] | None:
        try:
            turns = check_prompt(value, "prompt")
        except UserError as e:
            return 422, str(e)
        if sum(len(c) for _, c in turns) > max_chars:
            return 413, f"more than {max_chars:,} characters"
        return None

    def predict_rows(self, predictor: Any, items: list[Any], options: dict[str, Any]) -> list[dict[str, Any]]:
        """Per prompt {"prompt", "generated_text"}: the prompt formatted with the run's template, then generated."""
        ids = self.prompt_token_ids(predictor.tokenizer, items, predictor.max_length)
        outputs = self.generate_texts(predictor.model, predictor.tokenizer, ids, predictor.pad_id, predictor.device,
                                      **options)
        return [{**self.input_fields(x), "generated_text": o} for x, o in zip(items, outputs)]

    def prompt_token_ids(self, tokenizer: Any, items: list[Any], max_length: int) -> list[list[int]]:
        """Checked prompts as the model reads them (the run's template; the start kept when too long)."""
        room = max(8, max_length - self.max_new_tokens)
        return [p[:room] for p in prompt_ids(tokenizer, [check_prompt(x, "prompt") for x in items], self.template)]

    def check_decode_options(self, options: dict[str, Any]) -> dict[str, Any]:
        opts = super().check_decode_options(options)
        n = opts["max_new_tokens"]
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096):
            raise UserError(f"max_new_tokens must be an integer in [1, 4096], got {n!r}")
        for key, low, high in (("temperature", 0.0, 100.0), ("top_p", 0.0, 1.0)):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low < v <= high:
                raise UserError(f"{key} must be a number in ({low:g}, {high:g}], got {v!r}")
        if opts["seed"] is not None and (isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int)):
            raise UserError(f"seed must be an integer, got {opts['seed']!r}")
        return opts

    def check_pipeline_options(self, options: dict[str, Any]) -> None:
        self.check_decode_options({k: v for k, v in options.items() if k != "return_full_text"})

    def pipeline_call(self, predictor: Any, texts: list[Any], options: dict[str, Any]) -> list[Any]:
        """Per prompt, transformers' text-generation shape: [{"generated_text"}]; the completion alone unless
        return_full_text=True (then the prompt as given, a newline, and the completion)."""
        full = bool(options.get("return_full_text", False))
        rows = predictor.predict(texts, **{k: v for k, v in options.items() if k != "return_full_text"})
        return [[{"generated_text": (r["prompt"] + "\n" + r["generated_text"]) if full else r["generated_text"]}]
                for r in rows]

    def csv_header(self, label_names: Sequence[str]) -> list[str]:
        return ["generated_text"]

    def csv_cells(self, row: dict[str, Any], label_names: Sequence[str]) -> list[str]:
        return [row["generated_text"]]

    def runs_csv_cells(self, row: dict[str, Any]) -> dict[str, str]:
        return {"generated_text": row["generated_text"]}

    def encode_inputs(self, tokenizer: Any, inputs: list[Any], max_length: int) -> EncodedInputs:
        ids = self.prompt_token_ids(tokenizer, inputs, max_length)
        return EncodedInputs(ids, list(range(len(inputs))), len(inputs))

    def add_routes(self, app: Any, answer: Any) -> None:
        from .serving import add_routes  # fastapi and pydantic: imported only when a server starts
        add_routes(app, answer)

    # ---- model cards: a causal LM; prompts formatted with the run's template ----------------------------------
    auto_class = "AutoModelForCausalLM"
    card_input = '"Shares in Marks & Spencer fell 5% after the retailer reported weaker sales."'

    def card_summary(self, label_names: Sequence[str]) -> str:
        how = ("the tokenizer's chat template (a user turn; the completion is the assistant's reply)"
               if self.template == "chat" else 'the plain template (the prompt, then a new line: "{prompt}\\n")')
        return (f"writes a completion for a prompt: a causal LM tuned on prompt -> completion rows, with prompts "
                f"formatted by {how}; it stops at the end-of-sequence token or {self.max_new_tokens} new tokens")

    def card_pipeline(self) -> list[str]:
        """Greedy decoding, on the prompt as the run formatted it in training."""
        budget = f"max_new_tokens={self.max_new_tokens}, do_sample=False"
        if self.template == "chat":
            return ['generator = pipeline("text-generation", model=model, tokenizer=tokenizer)',
                    f'messages = [{{"role": "user", "content": {self.card_input}}}]',
                    f'print(generator(messages, {budget})[0]["generated_text"][-1]["content"])']
        return ['generator = pipeline("text-generation", model=model, tokenizer=tokenizer)',
                f'print(generator({self.card_input} + "\\n", {budget}, return_full_text=False)[0]["generated_text"])']
