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
fill-mask, `max_new_tokens` / `do_sample` / `return_full_text` for generation). A fine-tuned run's
pipeline belongs to its task: the names that open it, its options and what a call gives are the
task's (`Task.pipeline_names`, `pipeline_options`, `pipeline_call`); fill-mask and text-generation
are language-model pipelines, written here.

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

from .. import tasks
from ..config.finetune import RunConfig
from ..core import runtime
from ..core.errors import UserError
from ..core.folders import check_finite, check_folder, loading
from ..core.runs import RUN_FILE
from ..modeling.lm import model_folder
from ..modeling.resolve import load_tokenizer
from ..tasks.base import Task
from . import check_batch_size
from .generation import MaskFiller, TextGenerator
from .predictor import Predictor


def _kinds() -> dict[str, Any]:
    """Every name `pipeline()` takes -> the task whose runs it opens (each task names its pipelines), or the
    language-model pipeline's class; tasks first, in the registry's order."""
    kinds: dict[str, Any] = {}
    for name in tasks.TASKS:
        task = tasks.get(name)
        for kind in task.pipeline_names:
            kinds.setdefault(kind, task)
    return {**kinds, **LM_PIPELINES}


def pipeline(task: str, model: str | Path, *, batch_size: int = 32, device: str | None = None,
             backend: str = "auto", **defaults: Any) -> "Pipeline":
    """A callable for `task` (text-classification / sentiment-analysis, token-classification / ner,
    fill-mask, text-generation) over `model`; keyword `defaults` become the call's defaults
    (e.g. `aggregation_strategy="simple"`, `top_k=2`). A fine-tuned run predicts on its fastest gated backend
    (`backend` as `Predictor.from_run` takes it: "auto", "torch" or "onnxruntime")."""
    runtime.setup()
    kinds = _kinds()
    if task not in kinds:
        raise UserError(f"unknown pipeline task {task!r}; tasks: {', '.join(kinds)}")
    if model is None or not str(model).strip():
        raise UserError(f"pipeline({task!r}) needs model=: a run directory, a bundled name or a model folder")
    check_batch_size(batch_size)
    found = _run_kind(str(model), task) or kinds[task]
    call_options = found.pipeline_options if isinstance(found, Task) else found.call_options
    unknown = sorted(set(defaults) - set(call_options))
    if unknown:
        raise UserError(f"pipeline({task!r}): unknown option {unknown[0]!r}; options: {', '.join(call_options)}")
    if isinstance(found, Task):
        return TaskPipeline(found, str(model), batch_size, device, defaults, backend)
    if backend not in ("auto", "torch"):
        raise UserError(f"pipeline({task!r}) on {model}: backend {backend!r} is for fine-tuned runs; "
                        f"language models run on PyTorch")
    return found(str(model), batch_size, device, defaults)


def _run_kind(model: str, name: str) -> Task | None:
    """The task of the fine-tuning run directory `model` when pipeline `name` opens its runs (a tuned causal LM
    opens as text-generation through its task, with its template); None otherwise."""
    if not (Path(model) / RUN_FILE).is_file():
        return None
    from ..core.runs import RunInfo
    task = tasks.get(RunInfo.read(model).task)
    return task if name in task.pipeline_names else None


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


class TaskPipeline(Pipeline):
    """A fine-tuned run's pipeline: what a call gives is its task's (`Task.pipeline_call`), e.g. labels with
    scores per text, or entities per text."""

    def __init__(self, task: Task, model: str, batch_size: int, device: str | None,
                 defaults: dict[str, Any], backend: str = "auto") -> None:
        self.task_obj, self.backend = task, backend
        self.task, self.call_options = task.pipeline_names[0], task.pipeline_options  # as messages name it
        super().__init__(model, batch_size, device, defaults)

    def load(self, model: str, device: str | None) -> None:
        self.predictor = _load_head(model, self.task_obj, device, self.batch_size, self.backend)
        self.task_obj = self.predictor.task  # the run's own task (a pair run opens as text-classification)
        self.task_obj.check_pipeline_options(self.defaults)  # a bad default fails now, not at the first call

    def __call__(self, inputs: str | Sequence[str], **kwargs: Any) -> Any:
        opts = self.options(kwargs)
        if self.task_obj.is_single(inputs):
            return self.task_obj.pipeline_single(self.run([inputs], **kwargs)[0], opts)
        return super().__call__(inputs, **kwargs)

    def run(self, texts: list[str], **kwargs: Any) -> list[Any]:
        opts = self.options(kwargs)
        self.predictor.batch_size = self._batch_size(opts)
        return self.task_obj.pipeline_call(self.predictor, texts, opts)


def _load_head(model: str, task: Task, device: str | None, batch_size: int, backend: str = "auto") -> Any:
    """A Predictor for a run directory, bundled name or HF folder of `task`."""
    p = Path(model)
    if (p / RUN_FILE).is_file():
        from .. import tasks
        from ..core.runs import RunInfo
        from . import Predictor
        info = RunInfo.read(p)
        if info.task != task.name and task.pipeline_names[0] not in tasks.get(info.task).pipeline_names:
            other = tasks.get(info.task).pipeline_names[0]
            raise UserError(f"{model} is a {info.task} run; open it with pipeline({other!r}, model=...)")
        return Predictor.from_run(p, device=device, batch_size=batch_size, backend=backend)
    if backend not in ("auto", "torch"):
        raise UserError(f"{model}: backend {backend!r} is for fine-tuned runs and ONNX exports; a model folder "
                        f"runs on PyTorch")
    return _load_hf_head(model, task, device, batch_size)


def _load_hf_head(model: str, task: Task, device: str | None, batch_size: int) -> Any:
    """A classifier folder (transferkit's exported ones or any AutoModelFor...Classification folder)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    head = task.head_kind
    folder = model_folder(model)
    check_folder(folder, ("config.json",))
    auto = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    with loading(folder):
        loaded, info = auto.from_pretrained(str(folder), output_loading_info=True, use_safetensors=True,
                                            dtype=torch.float32)
    missing = [k for k in info.get("missing_keys", ()) if "position_ids" not in k]
    if missing:
        default_task = RunConfig.__dataclass_fields__["task"].default  # finetune needs --task for any other
        raise UserError(f"{model} has no trained {task.pipeline_names[0]} head (missing "
                        f"{', '.join(sorted(missing)[:3])}); fine-tune it first: transferkit finetune --model {model}"
                        + ("" if task.name == default_task else f" --task {task.name}"))
    check_finite(loaded, folder)
    tokenizer = load_tokenizer(str(folder))
    labels = [loaded.config.id2label[i] for i in range(loaded.config.num_labels)]
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512,
                int(getattr(loaded.config, "max_position_embeddings", 512) or 512))
    return Predictor(loaded, tokenizer, labels, limit, batch_size, device, task)


class FillMaskPipeline(Pipeline):
    """Per text (one mask each): top_k dicts of score, token (id), token_str, sequence."""

    task = "fill-mask"
    call_options = ("top_k",)

    def load(self, model: str, device: str | None) -> None:
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


# The language-model pipelines: no fine-tuning task behind them (a pretrained or pretrain run's model).
LM_PIPELINES: dict[str, type[Pipeline]] = {"fill-mask": FillMaskPipeline, "text-generation": TextGenerationPipeline}
