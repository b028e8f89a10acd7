"""Model cards: the README.md in every model folder transferkit writes, in the Hugging Face format.

A transformers user finds a card in every folder `Trainer` or peft saves; transferkit writes one into a run's model or
adapter folder (`write_run_card`, when the run saves), a merged export (`write_export_card`) and an ONNX export
(`write_onnx_card`), and `tune` rewrites its best trial's card once that trial is scored on the test split. The YAML
header is huggingface_hub's own `ModelCardData` with `EvalResult`s (`base_model`, `library_name`, `pipeline_tag`,
`tags`, `datasets`, `metrics`, `model-index`), so `huggingface_hub.ModelCard.load` and the Hub read it; the prose says
what the model does, the stock calls that load the folder (the lines a test runs), the training set-up, the test
metrics and the label names.

A card says only what the folder's own records say: run.json, config.yaml and metrics.json of the run, and an ONNX
export's manifest (its precision is the manifest's, so a refused int8 export, which writes nothing, is never
described as int8). Bundled datasets are named, with their description (a silver dataset says it is silver); a file of
the user's is named by its file name alone, so a card holds no path of the machine beyond the folder it describes.
"""
from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config.finetune import RunConfig
from ..core import fs
from ..core.folders import read_json_object
from ..core.registry import DATASETS, METHODS, MODELS
from ..core.runs import RunInfo
from ..inference.loading import run_task  # the run's task with its head settings
from ..modeling.classifier import MODEL_TYPE

CARD_FILE = "README.md"
TAG = "transferkit"


# ---- the folders that get a card ---------------------------------------------------------------------------------

def write_run_card(folder: Path, run_dir: Path, info: RunInfo, task: Any, cfg: RunConfig,
                   metrics: dict[str, Any]) -> None:
    """Write the card of a run's model or adapter folder (`folder`, already written) from the run's own records."""
    library = METHODS.get(info.method).folder_library
    fs.write_text(folder / CARD_FILE, card_text(info, task, cfg, metrics, folder, library, run_dir))


def refresh_run_card(run_dir: str | Path, test: dict[str, Any]) -> None:
    """Rewrite a finished run's card with test scores it got after training (`tune` scores its best trial once)."""
    info = RunInfo.read(run_dir)
    scores = {k: v for k, v in test.items() if isinstance(v, float)}  # the metrics, not counts such as num_examples
    metrics = {**read_json_object(Path(run_dir) / "metrics.json", "run metrics"), "test": scores}
    write_run_card(info.artifact_dir, Path(run_dir), info, run_task(info), RunConfig.from_yaml(Path(run_dir) /
                                                                                              "config.yaml"), metrics)


def write_export_card(folder: Path, run_dir: str | Path, plain: bool = False) -> None:
    """Write the card of a merged export folder (being written at `folder`) of the run in `run_dir`."""
    info, task, cfg, metrics = _run_records(run_dir)
    how = ("a stock BertForSequenceClassification (no custom code), equivalent to the run's classifier"
           if plain else "the run's model with its method folded into the weights (one self-contained folder)")
    note = (f"This folder is a merged export of the run `{Path(run_dir).name}`: {how}. Its logits matched the run's to "
            "1e-4 on probe inputs when it was written; the test results below are the run's.")
    fs.write_text(folder / CARD_FILE, card_text(info, task, cfg, metrics, _final(folder), "transformers", run_dir,
                                                export_note=note))


def write_onnx_card(folder: Path, run_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Write the card of an ONNX export folder (being written at `folder`), as its `manifest` says."""
    info, task, cfg, metrics = _run_records(run_dir)
    check = manifest.get("check") or {}
    precision = manifest.get("precision", "fp32")
    if precision == "int8":
        q = manifest.get("int8") or {}
        what = (f"int8: {q.get('quantization', 'dynamic quantisation')}; on {check.get('texts', '?')} held-out texts "
                f"its {q.get('metric')} was {_pct(q.get('int8'))} against {_pct(q.get('fp32'))} for the fp32 graph")
    else:
        what = "fp32 weights"
    note = (f"This folder is an ONNX export of the run `{Path(run_dir).name}` for onnxruntime (opset "
            f"{manifest.get('opset')}, {what}; manifest.json has the details). Before it was written the fp32 graph "
            f"agreed with the PyTorch model on {_pct(check.get('argmax_agreement'))} of the predictions for "
            f"{check.get('texts', '?')} held-out texts of {check.get('data', 'the test split')}. The test results "
            "below are the run's, measured in PyTorch.")
    fs.write_text(folder / CARD_FILE, card_text(info, task, cfg, metrics, _final(folder), "onnxruntime", run_dir,
                                                export_note=note, manifest=manifest))


def _run_records(run_dir: str | Path) -> tuple[RunInfo, Any, RunConfig, dict[str, Any]]:
    info = RunInfo.read(run_dir)
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = read_json_object(metrics_path, "run metrics") if metrics_path.is_file() else {}
    return info, run_task(info), RunConfig.from_yaml(Path(run_dir) / "config.yaml"), metrics


def _final(tmp: Path) -> Path:
    """The folder's final name: an export writes into NAME.tmp beside it (`core.fs.write_folder`)."""
    return tmp.with_name(tmp.name[:-len(".tmp")]) if tmp.name.endswith(".tmp") else tmp


# ---- the card ------------------------------------------------------------------------------------------------------

def card_text(info: RunInfo, task: Any, cfg: RunConfig, metrics: dict[str, Any], folder: Path, library: str,
              run_dir: str | Path, export_note: str = "", manifest: dict[str, Any] | None = None) -> str:
    """The whole README.md: the YAML header, then the prose."""
    from huggingface_hub import ModelCard, ModelCardData  # heavy: only when a card is written
    test = _numbers(metrics.get("test"))
    name = Path(folder).name if export_note else Path(run_dir).name
    datasets = _bundled(cfg)
    data = ModelCardData(
        base_model=_base_model(info.model_name), library_name=library, pipeline_tag=task.pipeline_tag,
        tags=[TAG, info.method, task.name, *(["silver-labels"] if any(_silver(d) for d in datasets) else []),
              *(["onnx"] if manifest else [])],
        datasets=datasets or None, metrics=[k for k in task.headline_metrics if k in test] or None,
        model_name=name, eval_results=_eval_results(task, cfg, test) or None)
    body = "\n\n".join(part for part in (
        f"# {name}",
        _what(info, task, cfg, export_note),
        "## How to load it\n\n" + _loading(info, task, folder, library, run_dir, manifest),
        "## Training\n\n" + _training(info, cfg, metrics),
        "## Test results\n\n" + _results(test, metrics),
        "## Labels\n\n" + _labels(info, task),
        "## Framework versions\n\n" + _versions(library),
    ) if part)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n"))


def _what(info: RunInfo, task: Any, cfg: RunConfig, export_note: str) -> str:
    text = (f"This model {task.card_summary(info.label_names)}. It is {_base_model(info.model_name)} fine-tuned with "
            f"transferkit's `{info.method}` method on {_data_in_words(cfg)}.")
    return text + ("\n\n" + export_note if export_note else "")


def _loading(info: RunInfo, task: Any, folder: Path, library: str, run_dir: str | Path,
             manifest: dict[str, Any] | None) -> str:
    """The stock calls that load this folder and predict, and a line on what they need."""
    path = json.dumps(str(folder))
    auto = task.auto_class
    if library == "onnxruntime":
        lines = ["import numpy as np", "import onnxruntime as ort", "from transformers import AutoTokenizer", "",
                 f"folder = {path}", "tokenizer = AutoTokenizer.from_pretrained(folder)",
                 f'session = ort.InferenceSession(f"{{folder}}/{(manifest or {}).get("model_file", "model.onnx")}")',
                 f"labels = {json.dumps(list((manifest or {}).get('labels', info.label_names)))}",
                 *task.card_onnx(info.max_length)]
        note = "onnxruntime, numpy and a tokenizer are all it needs: no torch."
    elif library == "peft":
        base = _adapter_base(folder)
        remote = ", trust_remote_code=True" if _remote_code(base) else ""
        lines = ["from peft import PeftConfig, PeftModel", f"from transformers import {auto}, AutoTokenizer, pipeline",
                 "", f"folder = {path}", "config = PeftConfig.from_pretrained(folder)",
                 f"base = {auto}.from_pretrained(config.base_model_name_or_path{remote})",
                 "model = PeftModel.from_pretrained(base, folder).merge_and_unload()  # the adapter folded in",
                 "tokenizer = AutoTokenizer.from_pretrained(folder)", *task.card_pipeline()]
        note = (f"The adapter names its base by the absolute path it had when it was trained "
                f"(`base_model_name_or_path`); after moving the run, pass the moved base folder instead."
                + (" The base's classifier code travels with it as `modeling_transferkit.py`, hence "
                   "`trust_remote_code=True` (or `import transferkit` first)." if remote else ""))
    elif library == "transformers":
        remote = ", trust_remote_code=True" if _remote_code(folder) else ""
        lines = [f"from transformers import {auto}, AutoTokenizer, pipeline", "", f"folder = {path}",
                 f"model = {auto}.from_pretrained(folder{remote})",
                 f"tokenizer = AutoTokenizer.from_pretrained(folder{remote})", *task.card_pipeline()]
        note = ("The classifier's code travels with the folder as `modeling_transferkit.py`, hence "
                "`trust_remote_code=True` (or `import transferkit` first, which registers the class)."
                if remote else "A stock transformers class: no custom code.")
    else:  # a format of transferkit's own
        lines = ["import transferkit", "", f"run = {json.dumps(str(run_dir))}  # the run directory of this folder",
                 f'predict = transferkit.pipeline("{task.pipeline_tag}", model=run)', f"print(predict({task.card_input}))"]
        note = (f"This folder holds transferkit's own format for the `{info.method}` method (its trained tensors and "
                "the options that rebuild them), which stock transformers and peft calls do not load; transferkit "
                "loads it as above, or `transferkit predict`, `serve` and `export` (where the method folds into the "
                "weights) take the run directory.")
    return "```python\n" + "\n".join(lines) + "\n```\n\n" + note


def _training(info: RunInfo, cfg: RunConfig, metrics: dict[str, Any]) -> str:
    train, data = metrics.get("train") or {}, metrics.get("data") or {}
    sizes = data.get("sizes") or {k: data[k] for k in ("train", "validation", "test") if isinstance(data.get(k), int)}
    options = ", ".join(f"{k}={v}" for k, v in info.method_options.items()) or "none"
    rows = [("method", f"{info.method} (options: {options})"),
            ("base model", _base_model(info.model_name)),
            ("data", _data_in_words(cfg))]
    if sizes:
        rows.append(("examples", ", ".join(f"{k} {v:,}" for k, v in sizes.items() if isinstance(v, int))))
    if train:
        epochs = f"{train.get('epochs')} ({train.get('steps')} optimizer steps"
        epochs += f"; at most {train['max_epochs']:g} epoch(s)" if isinstance(train.get("max_epochs"), (int, float)) else ""
        epochs += ", stopped early" if train.get("stopped_early") else ""
        rows += [("epochs", epochs + ")"),
                 ("learning rate", f"{train.get('lr'):g} (head {train.get('head_lr'):g}); AdamW, linear warmup "
                                   f"({cfg.train.warmup:g} of the steps) and decay"
                  if isinstance(train.get("lr"), (int, float)) and isinstance(train.get("head_lr"), (int, float))
                  else str(train.get("lr"))),
                 ("batch size", f"{train.get('batch_size')} x {cfg.train.grad_accum} accumulated"
                  if cfg.train.grad_accum > 1 else str(train.get("batch_size"))),
                 ("best weights", f"step {train.get('best_step')}, by validation {train.get('metric')}")]
    rows.append(("max length", f"{info.max_length} tokens"))
    if train:
        rows.append(("training time", f"{train.get('seconds')} s ({train.get('samples_per_s')} samples/s)"))
        if train.get("hardware"):
            rows.append(("hardware", str(train["hardware"])))
    rows.append(("seed", str(cfg.train.seed)))
    return _table(("setting", "value"), rows)


def _results(test: dict[str, float], metrics: dict[str, Any]) -> str:
    if not test:
        return ("Not scored on the test split: this run is a search trial, which sees validation data only "
                "(`transferkit evaluate RUN_DIR` scores it).")
    text = "On the held-out test split:\n\n" + _table(("metric", "value"), [(k, f"{v:.4f}") for k, v in test.items()])
    valid = _numbers(metrics.get("validation"))
    if valid:
        text += ("\n\nOn the validation split (the best weights): "
                 + ", ".join(f"{k} {v:.4f}" for k, v in valid.items()) + ".")
    return text + "".join(f"\n\n> {w}" for w in metrics.get("warnings") or [])


def _labels(info: RunInfo, task: Any) -> str:
    if task.model_kind == "decoder":  # a causal LM's one "label" is the completion it writes
        return "None: the model writes text (the completion)."
    names = [str(n) for n in info.label_names]
    return f"{len(names)}: " + ", ".join(f"`{n}`" for n in names)


def _versions(library: str) -> str:
    names = ["transferkit", "transformers", "torch"] + {"peft": ["peft"], "onnxruntime": ["onnxruntime"]}.get(
        library, [])
    return "\n".join(f"- {n} {_version(n)}" for n in names)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


# ---- the YAML header's parts -----------------------------------------------------------------------------------------

def _numbers(d: Any) -> dict[str, float]:
    """The finite numbers of a metrics record (lists and tables, such as per-label scores, left out)."""
    if not isinstance(d, dict):
        return {}
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _eval_results(task: Any, cfg: RunConfig, test: dict[str, float]) -> list[Any]:
    from huggingface_hub import EvalResult
    bundled = _bundled(cfg)
    kind = bundled[0] if bundled else _file_name(cfg.data.test or cfg.data.data or cfg.data.train or "data")
    name = kind + (" (silver labels)" if bundled and _silver(kind) else "") + " test split"
    return [EvalResult(task_type=task.pipeline_tag, dataset_type=kind, dataset_name=name, dataset_split="test",
                       metric_type=k, metric_value=v) for k, v in test.items()]


def _base_model(name: str) -> str:
    """The base model as the Hub knows it: a bundled model's Hub repository, a Hub name as given, a local folder by
    its name."""
    if name in MODELS:
        return MODELS.get(name).hub_id or name
    return _file_name(name) if Path(name).expanduser().exists() else name


def _bundled(cfg: RunConfig) -> list[str]:
    """The bundled datasets the run's data came from (a file of the user's is not one)."""
    d = cfg.data
    out = []
    for source in (d.data, d.train, d.validation, d.test):
        if source and source in DATASETS and not Path(source).exists() and source not in out:
            out.append(source)
    return out


def _silver(name: str) -> bool:
    """Whether a bundled dataset's labels come from a model rather than people (its own description says so)."""
    ds = DATASETS.get(name)
    return "silver" in f"{getattr(ds, 'description', '')} {getattr(ds, 'source', '')}".lower()


def _data_in_words(cfg: RunConfig) -> str:
    d = cfg.data
    parts = []
    for role, source in (("", d.data), ("train: ", d.train), ("validation: ", d.validation), ("test: ", d.test)):
        if not source:
            continue
        if source in _bundled(cfg):
            ds = DATASETS.get(source)
            silver = " (silver labels: made by a model, not by people)" if _silver(source) else ""
            parts.append(f"{role}the bundled dataset `{source}`{silver}: {getattr(ds, 'description', '')}")
        else:
            parts.append(f"{role}the file `{_file_name(source)}`")
    how = f" (split {'/'.join(f'{x:g}' for x in d.split)} by seed {cfg.train.seed})" if d.data else ""
    return "; ".join(parts) + how if parts else "its data"


def _file_name(path: str) -> str:
    return Path(str(path).rstrip("/\\")).name or str(path)


def _adapter_base(folder: Path) -> Path | None:
    config = Path(folder) / "adapter_config.json"
    base = read_json_object(config, "adapter config").get("base_model_name_or_path") if config.is_file() else None
    return Path(base) if isinstance(base, str) and base else None


def _remote_code(folder: Path | None) -> bool:
    """Whether a model folder's config names transferkit's classifier (whose code the folder carries)."""
    config = Path(folder) / "config.json" if folder is not None else None
    return bool(config and config.is_file() and read_json_object(config, "model config").get("model_type") == MODEL_TYPE)


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "?"


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    out = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    out += [f"| {a} | {str(b).replace('|', '/')} |" for a, b in rows]
    return "\n".join(out)
