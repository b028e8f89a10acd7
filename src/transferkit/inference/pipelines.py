"""`transferkit.pipeline(task, model=...)`: one call per task, in transformers' pipeline shapes.

    clf = transferkit.pipeline("sentiment-analysis", model="runs/lora")
    clf(["a fine film", "dull"])            # [{"label": "positive", "score": 0.93}, ...]
    ner = transferkit.pipeline("ner", model="runs/ner", aggregation_strategy="simple")
    ner("Steve Jobs founded Apple.")        # [{"entity_group": "PERSON", "score", "word", "start", "end"}, ...]
    transferkit.pipeline("fill-mask", model="runs/mlm")("Paris is the [MASK] of France.", top_k=3)
    transferkit.pipeline("text-generation", model="smollm2-135m")("Once upon a time", max_new_tokens=20)

`model` is a transferkit run directory (fine-tune or pretrain), a bundled model name, or a Hugging
Face model folder (an `export`ed run, or any `AutoModelFor...` folder). A single input gives what
transformers gives for one input, a list gives one result per input, and the keys are transformers'
(`top_k` and `batch_size` for classification, `aggregation_strategy` for NER, `top_k` for
fill-mask, `max_new_tokens` / `do_sample` / `return_full_text` for generation).

Written over transferkit's own predictors rather than wrapping `transformers.pipeline`, so the
same checks hold (safetensors only, a missing head is an error instead of random output), runs are
read through `RunInfo` (adapters merged, windows for long NER texts), fill-mask never ranks special
tokens, and batches are length-sorted. Where values differ from transformers it is on purpose: an
entity's `word` quotes the original text instead of decoding sub-tokens (an uncased model would
lower-case it), and fill-mask skips special and out-of-vocabulary ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..core.errors import UserError

TASK_ALIASES = {"text-classification": "text-classification", "sentiment-analysis": "text-classification",
                "token-classification": "token-classification", "ner": "token-classification",
                "fill-mask": "fill-mask", "text-generation": "text-generation"}


def _run_task(kind: str) -> Any:
    """The registered task whose runs a pipeline kind opens (each task names its pipelines)."""
    from .. import tasks
    for name in tasks.TASKS:
        if kind in tasks.get(name).pipeline_names:
            return tasks.get(name)
    raise UserError(f"no task opens pipeline({kind!r})")


def pipeline(task: str, model: str | Path, *, batch_size: int = 32, device: str | None = None,
             **defaults: Any) -> "Pipeline":
    """A callable for `task` (text-classification / sentiment-analysis, token-classification / ner,
    fill-mask, text-generation) over `model`; keyword `defaults` become the call's defaults
    (e.g. `aggregation_strategy="simple"`, `top_k=2`)."""
    from ..core import runtime
    runtime.setup()
    if task not in TASK_ALIASES:
        raise UserError(f"unknown pipeline task {task!r}; tasks: {', '.join(TASK_ALIASES)}")
    kind = TASK_ALIASES[task]
    if model is None or not str(model).strip():
        raise UserError(f"pipeline({task!r}) needs model=: a run directory, a bundled name or a model folder")
    from . import check_batch_size
    check_batch_size(batch_size)
    cls = {"text-classification": TextClassificationPipeline, "token-classification": TokenClassificationPipeline,
           "fill-mask": FillMaskPipeline, "text-generation": TextGenerationPipeline}[kind]
    unknown = sorted(set(defaults) - set(cls.call_options))
    if unknown:
        raise UserError(f"pipeline({task!r}): unknown option {unknown[0]!r}; options: {', '.join(cls.call_options)}")
    return cls(str(model), batch_size, device, defaults)


class Pipeline:
    """Callable on one text (one result) or a list of texts (one result each)."""

    task = ""
    call_options: tuple[str, ...] = ()

    def __init__(self, model: str, batch_size: int, device: str | None, defaults: dict[str, Any]) -> None:
        self.batch_size, self.defaults = batch_size, dict(defaults)
        self.load(model, device)

    def load(self, model: str, device: str | None) -> None:
        raise NotImplementedError

    def options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(self.call_options) - {"batch_size"})
        if unknown:
            raise UserError(f"{self.task} pipeline: unknown option {unknown[0]!r}; options: "
                            f"{', '.join(self.call_options + ('batch_size',))}")
        return {**self.defaults, **kwargs}

    def _batch_size(self, kwargs: dict[str, Any]) -> int:
        from . import check_batch_size
        b = kwargs.pop("batch_size", self.batch_size)
        check_batch_size(b)
        return b

    def __call__(self, inputs: str | Sequence[str], **kwargs: Any) -> Any:
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts:
            return []
        results = self.run(texts, **kwargs)
        return results[0] if single else results

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        raise NotImplementedError


def _load_head(model: str, kind: str, device: str | None, batch_size: int) -> Any:
    """A Predictor for a run directory, bundled name or HF folder of the task that opens pipeline `kind`."""
    from ..core.runs import RUN_FILE
    p = Path(model)
    if (p / RUN_FILE).is_file():
        from .. import tasks
        from . import Predictor
        from ..core.runs import RunInfo
        info = RunInfo.read(p)
        want = _run_task(kind)
        if info.task != want.name:
            other = tasks.get(info.task).pipeline_names[0]
            raise UserError(f"{model} is a {info.task} run; open it with pipeline({other!r}, model=...)")
        return Predictor.from_run(p, device=device, batch_size=batch_size)
    return _load_hf_head(model, _run_task(kind), device, batch_size)


def _load_hf_head(model: str, task: Any, device: str | None, batch_size: int) -> Any:
    """A classifier folder (transferkit's exported ones or any AutoModelFor...Classification folder)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from ..core.folders import check_finite, check_folder, loading
    from ..modeling.lm import model_folder
    from ..modeling.resolve import load_tokenizer
    from .predictor import Predictor
    head = task.head_kind
    folder = model_folder(model)
    check_folder(folder, ("config.json",))
    auto = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    with loading(folder):
        loaded, info = auto.from_pretrained(str(folder), output_loading_info=True, use_safetensors=True,
                                            dtype=torch.float32)
    missing = [k for k in info.get("missing_keys", ()) if "position_ids" not in k]
    if missing:
        what = "text-classification" if head == "sequence" else "token-classification"
        raise UserError(f"{model} has no trained {what} head (missing {', '.join(sorted(missing)[:3])}); "
                        f"fine-tune it first: transferkit finetune --model {model}"
                        + (" --task ner" if head == "token" else ""))
    check_finite(loaded, folder)
    tokenizer = load_tokenizer(str(folder))
    labels = [loaded.config.id2label[i] for i in range(loaded.config.num_labels)]
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                int(getattr(loaded.config, "max_position_embeddings", 512) or 512))
    return Predictor(loaded, tokenizer, labels, limit, batch_size, device, task)


class TextClassificationPipeline(Pipeline):
    """[{"label", "score"}] per text; with `top_k` (None: all labels) a list of the best per text."""

    task = "text-classification"
    call_options = ("top_k",)

    def load(self, model: str, device: str | None) -> None:
        self.predictor = _load_head(model, "text-classification", device, self.batch_size)

    def __call__(self, inputs: str | Sequence[str], **kwargs: Any) -> Any:
        opts = self.options(kwargs)
        legacy = "top_k" not in opts  # transformers: one dict per text unless top_k is given
        if isinstance(inputs, str):
            out = self.run([inputs], **kwargs)[0]
            return [out] if legacy else out
        return super().__call__(inputs, **kwargs)

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        opts = self.options(kwargs)
        self.predictor.batch_size = self._batch_size(opts)
        legacy = "top_k" not in opts
        top_k = opts.get("top_k", 1)
        names = self.predictor.label_names
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise UserError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        probs = self.predictor.predict_proba(texts)  # [n, labels]
        out = []
        for row in probs:
            order = sorted(range(len(names)), key=lambda k: -float(row[k]))[: top_k or len(names)]
            ranked = [{"label": names[k], "score": float(row[k])} for k in order]
            out.append(ranked[0] if legacy else ranked)
        return out


class TokenClassificationPipeline(Pipeline):
    """Entities per text; `aggregation_strategy` none (default, as transformers) / simple / first / average / max."""

    task = "token-classification"
    call_options = ("aggregation_strategy",)

    def load(self, model: str, device: str | None) -> None:
        self.predictor = _load_head(model, "token-classification", device, self.batch_size)
        from ..tasks.ner.entities import STRATEGIES  # an unknown strategy fails now, not at the first call
        strategy = self.defaults.get("aggregation_strategy", "none")
        if strategy not in STRATEGIES:
            raise UserError(f"aggregation_strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        opts = self.options(kwargs)
        self.predictor.batch_size = self._batch_size(opts)
        rows = self.predictor.predict(texts, aggregation_strategy=opts.get("aggregation_strategy", "none"))
        return [row["entities"] for row in rows]


class FillMaskPipeline(Pipeline):
    """Per text (one mask each): top_k dicts of score, token (id), token_str, sequence."""

    task = "fill-mask"
    call_options = ("top_k",)

    def load(self, model: str, device: str | None) -> None:
        from .generation import MaskFiller
        self.filler = MaskFiller.load(model)

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        opts = self.options(kwargs)
        batch_size = self._batch_size(opts)
        top_k = opts.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise UserError(f"top_k must be an integer in [1, 1000], got {top_k!r}")
        tok = self.filler.tokenizer
        return [[{"score": r["score"], "token": r["token_id"], "token_str": tok.decode([r["token_id"]]),
                  "sequence": r["sequence"]} for r in rows]
                for rows in self.filler.fill(texts, top_k, batch_size)]


class TextGenerationPipeline(Pipeline):
    """Per prompt: [{"generated_text"}] (prompt + continuation, or the continuation alone)."""

    task = "text-generation"
    call_options = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "num_return_sequences",
                    "return_full_text", "seed")

    def load(self, model: str, device: str | None) -> None:
        from .generation import TextGenerator
        self.generator = TextGenerator.load(model)

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        opts = self.options(kwargs)
        self._batch_size(opts)  # checked; prompts are generated one at a time
        sample = bool(opts.get("do_sample", False))
        temperature = opts.get("temperature", 1.0 if sample else 0.0)
        if not sample:
            temperature = 0.0
        elif temperature == 0:
            raise UserError("do_sample=True needs temperature > 0")
        full = opts.get("return_full_text", True)
        tok, out = self.generator.tokenizer, []
        for prompt in texts:
            ids = self.generator.generate_ids(prompt, opts.get("max_new_tokens", 50), temperature, opts.get("top_k"),
                                              opts.get("top_p"), opts.get("num_return_sequences", 1), opts.get("seed"))
            new = tok.batch_decode(ids, skip_special_tokens=True)  # the prompt is kept as given, as transformers does
            out.append([{"generated_text": prompt + t if full else t} for t in new])
        return out
