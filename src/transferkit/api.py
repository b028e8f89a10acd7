"""The Python API; the CLI maps 1:1 onto these functions.

    finetune(cfg)            train a classifier or (task="ner") a tagger, write a run directory, return its metrics
    evaluate(run_dir, ...)   metrics, plots and an HTML report for a finished run
    predict(run_dir, texts)  labels with confidence (entities with offsets for NER runs), in input order
    compare(methods, ...)    every method on the same data and budget, one table
    plan(data=..., ...)      which method fits this data, hardware and number of tasks; plan.json + run.yaml
    tune(data=..., ...)      hyperparameters and method options searched with optuna; best.yaml + report
    augment(data, spec, out) a file's rows plus augmented copies (EDA, paraphrase, back-translation), no training

Progress lines go through `logging` (the `transferkit` logger), which shows nothing until the application
says where they go: `transferkit.log_to_stderr()` prints them as the CLI does, `logging.basicConfig(level=
logging.INFO)` through the application's own handlers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config.finetune import RunConfig, apply_default_data
from .core import runtime
from .core.errors import UserError
from .data.bundled import list_datasets as _ld
from .inference import predict_run
from .modeling.resolve import list_models as _lm
from .recipes.evaluate import run_evaluation
from .recipes.finetune import FinetuneResult
from .recipes.finetune_processes import run_finetune
from .training import distributed

logger = logging.getLogger(__name__)


def make_config(config: str | Path | RunConfig | dict | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig from a YAML path, a dict or a RunConfig, with dotted-key overrides applied
    (and the bundled dataset when it names no data at all)."""
    # train.metric, epochs and the like stay unset here: the run resolves them from the method and the
    # data (recipes.adaptive), and config.yaml keeps them unset so a resumed run decides the same way
    cfg = apply_default_data(RunConfig.make(config, overrides))
    from . import tasks
    tasks.get(cfg.task)  # an unknown task fails here, naming the known ones
    return cfg


def finetune(config: str | Path | RunConfig | dict | None = None, *, resume: str | Path | None = None,
             processes: int = 1, **overrides: Any) -> FinetuneResult:
    """Fine-tune a classifier (or a tagger: task="ner"); returns the run directory and its metrics.

    Overrides are dotted config keys (`**{"train.warmup": 0.06}`) or the short names in
    `SHORT_KEYS` (data, model, method, epochs, batch_size, lr, max_steps, seed, output_dir, ...).
    `resume=RUN_DIR` continues an interrupted run from its last checkpoint (overrides: only the
    learning rates, clipping and progress, `config.RESUME_KEYS`). `processes=N` trains with N
    data-parallel processes on this machine (torchrun; `train.batch_size` stays the global batch,
    see `distributed`); under a launcher the processes are the launcher's."""
    runtime.setup()
    processes = distributed.check_processes(processes)
    cfg = None if resume is not None else make_config(config, {SHORT_KEYS.get(k, k): v for k, v in overrides.items()})
    return run_finetune(cfg, resume=resume, processes=processes, overrides=overrides, short_keys=SHORT_KEYS)


def plan(config: str | Path | RunConfig | dict | None = None, *, memory: str | int | None = None,
         device: str | None = None, time_budget: str | float | None = None, tasks: int = 1,
         dry_run_steps: int = 5, methods: Sequence[str] | str | None = None,
         models: Sequence[str] | str | None = None, output_dir: str | Path | None = None, **overrides: Any) -> Any:
    """Which method to train on this data and hardware (and for `tasks` task models), with its settings.

    Reads the data and model as `finetune` would, estimates every method's memory by part, runs a few
    real training steps of each on a sample (`dry_run_steps`, 0 for none) and projects the time;
    `memory="16GB"`/`device="cuda"` plan for another machine, `time_budget="3h"` bounds the time.
    Returns a `recipes.plan.PlanResult` (`.recommended`, `.reasons`, `.config`, `.table`); with
    `output_dir`, writes plan.json and run.yaml (a config `finetune --config` runs as is).

    `models` (e.g. "minilm-l6,mpnet-base,PATH"): the candidates are ranked by a transferability score on a
    sample of the training data, each model frozen (LogME of sentence or word vectors; for generation the untuned
    likelihood of the completions per byte): `.models`, best first, and plan.json's "models". The best is planned
    as above and every other one gets the recommended method's memory and projected time."""
    from .recipes.plan import PlanRun
    runtime.setup()
    cfg = make_config(config, {SHORT_KEYS.get(k, k): v for k, v in overrides.items()})
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    return PlanRun(cfg, memory=memory, device=device, time_budget=time_budget, tasks=tasks,
                   dry_run_steps=dry_run_steps, methods=list(methods) if methods else None,
                   models=models, output_dir=output_dir).run()


def tune(config: str | Path | RunConfig | dict | None = None, *, method: str = "lora", n_trials: int | None = 30,
         timeout: str | float | None = None, metric: str | None = None, space: str | Path | None = None,
         workers: int = 1, keep: int = 3, output_dir: str | Path | None = None, resume: str | Path | None = None,
         worker: bool = False, **overrides: Any) -> Any:
    """Search hyperparameters and the method's own options with optuna (`method="auto"`: the method too).

    Every trial is a fine-tuning run in `output_dir/trials/`; hopeless trials are pruned on the
    validation metric; the best is scored on the test split once and written as `best.yaml`.
    `resume=DIR` continues an interrupted study (with more `n_trials` if given); `workers=N` runs N
    processes on it. Returns a `recipes.tune.TuneResult` (None in a worker process)."""
    from .recipes.tune import TuneRun
    runtime.setup()
    if resume is not None:
        run = TuneRun(resume=resume, timeout=timeout, workers=workers, worker=worker)
        if n_trials is not None and not worker:  # a new total for the study
            run.n_trials = TuneRun.checked_trials(n_trials)
        return run.run()
    cfg = make_config(config, {SHORT_KEYS.get(k, k): v for k, v in overrides.items()})
    return TuneRun(cfg, output_dir=output_dir, method=method, n_trials=30 if n_trials is None else n_trials,
                   timeout=timeout, metric=metric, space=space, workers=workers, keep=keep).run()


# Short names for the most used config keys (Python keyword arguments and CLI flags).
SHORT_KEYS = {"data": "data.data", "train": "data.train", "validation": "data.validation", "test": "data.test",
              "text_column": "data.text_column", "label_column": "data.label_column",
              "model": "model.name", "method": "method.name", "epochs": "train.epochs",
              "batch_size": "train.batch_size", "lr": "train.lr", "max_steps": "train.max_steps",
              "seed": "train.seed", "max_length": "data.max_length", "limit": "data.limit",
              "output_dir": "output_dir", "task": "task", "augment": "data.augment",
              "label_separator": "data.label_separator"}


def augment(data: str, spec: str, output: str | Path, *, task: str = "classify", text_column: str | None = None,
            label_column: str | None = None, seed: int = 42) -> dict[str, Any]:
    """Write `data`'s rows plus their augmented copies (`spec`, as `finetune(augment=...)` takes it) to
    `output` without training; returns what was added and dropped."""
    from .augmentation.write import write_augmented
    runtime.setup()
    return write_augmented(data, spec, output, task=task, text_column=text_column, label_column=label_column,
                           seed=seed)


def evaluate(run_dir: str | Path, data: str | None = None, *, text_column: str | None = None,
             label_column: str | None = None, output_dir: str | Path | None = None, quantize: bool = False,
             base_model: str | None = None) -> dict[str, Any]:
    """Score a finished run on its own test split (default) or on a labelled file; write the report.

    Without `data` the test split is rebuilt from the files the run was trained on, after checking
    their content hashes: a file that changed since would silently score other (maybe training) rows.
    What is scored and reported is the run's task's (labels per text, entities per sentence)."""
    return run_evaluation(run_dir, data, text_column=text_column, label_column=label_column, output_dir=output_dir,
                          quantize=quantize, base_model=base_model)


def predict(run_dir: str | Path | Mapping[str, str | Path], texts: Sequence[str] | None = None, *,
            input: str | None = None, output: str | None = None, text_column: str | None = None,
            batch_size: int = 64, quantize: bool = False, adapter: str | None = None,
            adapters: Sequence[str] | None = None, adapter_column: str | None = None,
            base_model: str | None = None, backend: str = "auto") -> list[dict[str, Any]]:
    """Label texts (given directly or read from `input`); write JSONL or CSV to `output` if given.

    `run_dir` may be an ONNX export folder (`export(..., format="onnx")`), run through onnxruntime.
    `backend` "auto" (the default): an export on onnxruntime, a run on its fastest backend checked against
    PyTorch (an onnxruntime graph cached in RUN/backend, `inference.run_backend`); "torch": PyTorch;
    "onnxruntime": an export or the run's cached graph, an error where there is none.

    `run_dir` may be `{name: run_dir, ...}` (lora/ia3/bitfit/head_only runs of one base model): the base loads
    once and each text uses the adapter named by `adapters` (one per text), the input file's
    `adapter_column`, a `NAME:text` tag, or else `adapter`."""
    runtime.setup()
    if isinstance(run_dir, Mapping):
        if backend not in ("auto", "torch"):
            raise UserError(f"backend {backend!r}: several runs on one base run on PyTorch only")
        if quantize:
            raise UserError("--int8 is not available with several adapters (serve a single run to quantize it)")
        from .inference import predict_runs
        return predict_runs(run_dir, texts, adapter=adapter, adapters=adapters, input=input, text_column=text_column,
                            adapter_column=adapter_column, output=output, batch_size=batch_size,
                            base_model=base_model)
    if adapter is not None or adapters is not None or adapter_column is not None:
        raise UserError("adapter names need several runs: give them as {name: run_dir} (CLI: --adapter NAME=RUN_DIR)")
    return predict_run(run_dir, texts, input=input, output=output, text_column=text_column, batch_size=batch_size,
                       quantize=quantize, base_model=base_model, backend=backend)


def compare(methods: str | Sequence[str] | None = None, *, config: str | Path | RunConfig | dict | None = None,
            output_dir: str | Path | None = None, inference_repeats: int = 3,
            train_sizes: str | Sequence[int] | None = None, seeds: int = 1,
            augment: str | Sequence[str] | None = None, augment_methods: str | Sequence[str] | None = None,
            test_rows: int | None = None, seed_offset: int = 0, models: str | Sequence[str] | None = None,
            **overrides: Any) -> Any:
    """Train every method (default: all registered) on the same data, seed and budget; write one table.

    With `models` (bundled names or model folders, e.g. "minilm-l6,mpnet-base"), every method runs on every
    model, each run in `output_dir/<model>/<method>`, and the table compares the models too.

    Each method is a run directory `output_dir/<method>` trained in its own process; finished runs
    are reused and interrupted ones resumed. Overrides as in `finetune` (short names or dotted
    keys). Returns a `CompareResult` (rows, failed methods, markdown, paths of compare.md/csv/png).

    With `train_sizes` (examples per class, e.g. "8,32,128"), `seeds` > 1, `augment` (one spec or a
    list: each method also runs with each) or `test_rows`, every (method [+ augmentation], size, seed)
    is a run of its own and the table gives mean and spread over seeds per size
    (`comparison_grid.GridResult`; OUT/sizes.md, sizes.csv, sizes.png, cells.csv). `seed_offset` k
    trains only the seeds from `seed+k` on, with the split and test sample of `seed` (a grid in parts)."""
    from .recipes.compare.run import run_compare
    if "method" in overrides or "method.name" in overrides:
        raise UserError("compare runs every method in `methods`; do not set method")
    base = make_config(config, {SHORT_KEYS.get(k, k): v for k, v in overrides.items()})
    if train_sizes is not None or seeds != 1 or augment or test_rows is not None or seed_offset != 0:
        if models is not None:
            raise UserError("compare --models runs one table of methods x models; it does not combine with "
                            "--train-sizes, --seeds, --augment, --test-rows or --seed-offset")
        from .recipes.compare.grid import run_grid
        return run_grid(methods, base, output_dir, train_sizes=train_sizes, seeds=seeds, augment=augment,
                        augment_methods=augment_methods, test_rows=test_rows, seed_offset=seed_offset)
    return run_compare(methods, base, output_dir, inference_repeats=inference_repeats, models=models)


def export(run_dir: str | Path, out_dir: str | Path, *, format: str = "hf", int8: bool = False, plain: bool = False,
           data: str | None = None, text_column: str | None = None, label_column: str | None = None,
           base_model: str | None = None) -> Path:
    """Write the run for use elsewhere, adapters merged into the weights; nothing appears unless it checks out.

    format="hf": one Hugging Face model folder (see `exporting/folder.py`); `plain=True`: a stock
    BertForSequenceClassification (needs a [CLS]-reading linear head).
    format="onnx": model.onnx + tokenizer + manifest.json, checked with onnxruntime against the
    PyTorch model on the run's test split (or the labelled file `data`); `int8=True` quantises it and
    keeps it only if argmax agreement stays >= 99.5% and the metric within 0.5 points (see
    `exporting/onnx_export.py`). `Predictor.from_run(out_dir)` and `predict` run the result."""
    if format not in ("hf", "onnx"):
        raise UserError(f"export format {format!r}: use 'hf' (a model folder) or 'onnx'")
    if format == "hf":
        if int8 or data or text_column or label_column:
            raise UserError("--int8 and --data belong to --format onnx (a model folder keeps the run's fp32 weights)")
        from .exporting.folder import export as _export
        return _export(run_dir, out_dir, plain=plain, base_model=base_model)
    if plain:
        raise UserError("--plain writes a stock BERT model folder; it does not apply to --format onnx")
    from .exporting.onnx_export import export_onnx
    return export_onnx(run_dir, out_dir, int8=int8, data=data, text_column=text_column, label_column=label_column,
                       base_model=base_model)


def serve(adapters: Mapping[str, str | Path] | None = None, *, adapter_root: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_batch_tokens: int = 16384,
          max_wait_ms: float = 5.0, max_queue: int = 512, max_inputs: int = 256,
          default_model: str | None = None, backend: str = "auto") -> None:
    """Serve `{name: run_dir}` over HTTP (see `serving/app.py` for the routes) until stopped; runs under
    `adapter_root` can also be loaded and unloaded while it runs. Binds to 127.0.0.1 unless told otherwise.
    `backend` "auto": each run on its fastest gated backend (`inference.run_backend`; a run with an onnxruntime
    graph answers alone on it); "torch": PyTorch, runs of one base sharing it in mixed batches."""
    from .serving.run import run_server  # FastAPI and the server stack: only when serving
    run_server(adapters, adapter_root=adapter_root, host=host, port=port, api_key=api_key,
               max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms, max_queue=max_queue, max_inputs=max_inputs,
               default_model=default_model, backend=backend)


def params(model: str = "minilm-l6", method: str = "full", **options: Any) -> dict[str, Any]:
    """Exact parameter counts of `model` adapted by `method`, computed without loading weights."""
    from .modeling.params import parameter_report
    runtime.setup()
    return parameter_report(model, method, **options)


def list_datasets() -> list[dict[str, Any]]:
    return _ld()


def list_corpora() -> list[dict[str, Any]]:
    """Bundled raw-text corpora for `pretrain` (name, documents, words, source, cached)."""
    from .data.corpus import list_corpora as _lc
    return _lc()


def list_models() -> list[dict[str, Any]]:
    return _lm()


def fill_mask(model: Any, text: str, top_k: int = 5, **kwargs: Any) -> list[dict[str, Any]]:
    """Top-k fillers (token, score, sequence) for the one [MASK] / <mask> in `text`; see generation.py."""
    from .inference.generation import fill_mask as _fm
    return _fm(model, text, top_k, **kwargs)


def generate(model: Any, prompt: str, max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
    """Texts generated from `prompt` by a causal LM (greedy when temperature is 0); see generation.py."""
    from .inference.generation import generate as _gen
    return _gen(model, prompt, max_new_tokens, **kwargs)


def lm_sizes() -> list[dict[str, Any]]:
    """The from-scratch architectures and sizes `pretrain` can build (layers, hidden, heads, ffn)."""
    from .modeling.lm import size_table
    return size_table()


def pretrain(config: Any = None, *, resume: str | Path | None = None, **overrides: Any) -> Any:
    """Pretrain with MLM, CLM or MLM+NSP on a corpus; returns a PretrainResult (run_dir, metrics).

    Overrides are config keys or short names: objective, corpus, model, from_scratch, arch, size,
    tokenizer, train_tokenizer, vocab_size, max_length, epochs, max_steps, batch_size, lr, seed, output_dir."""
    from .recipes.pretrain import pretrain as _pt
    return _pt(config, resume=resume, **overrides)
