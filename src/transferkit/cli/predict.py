"""`predict`, `evaluate` and `export`: using a finished run, over `api.predict` / `evaluate` / `export`."""
from __future__ import annotations

import argparse
from typing import Any

from .. import api
from ..core.errors import UserError
from ..core.fs import dumps
from .common import BASE_MODEL_HELP

PREDICT_HELP = """Label texts with a finished run:
  transferkit predict RUN_DIR "text" ... | --input FILE [--output preds.jsonl|.csv]

Several lora/ia3/bitfit/head_only runs of one base model load on one encoder with --adapter NAME=RUN_DIR
(repeat); each text names its adapter as a NAME:text tag, or --use NAME covers untagged texts, or
an --input file names it in --adapter-column. One call serves them all as mixed batches:
  transferkit predict --adapter sentiment=runs/sent --adapter topic=runs/topic \\
      "sentiment:a gorgeous film" "topic:shares fell 3% after the results"
  transferkit predict --adapter sentiment=runs/sent --adapter topic=runs/topic \\
      --input mixed.csv --adapter-column task --output preds.jsonl
Each output row carries its adapter and that adapter's own labels and probabilities."""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="metrics, plots and an HTML report for a finished run")
    p.add_argument("run_dir")
    p.add_argument("--data", help="labelled file to score (default: the run's own test split)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--output-dir", help="where to write the report (default RUN_DIR/report)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of linear layers (CPU)")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="label texts with a finished run (or several runs on one base model)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=PREDICT_HELP)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run (omit when --adapter is given)")
    p.add_argument("texts", nargs="*", help="texts to label (with --adapter: NAME:text)")
    p.add_argument("--adapter", action="append", metavar="NAME=RUN_DIR",
                   help="load this lora/ia3/bitfit/head_only run as adapter NAME on a shared base (repeat for more)")
    p.add_argument("--use", metavar="NAME", help="with --adapter: the adapter for texts without a NAME: tag")
    p.add_argument("--adapter-column", help="with --adapter and --input: column naming each row's adapter")
    p.add_argument("--input", help="file of texts (txt: one per line; csv/tsv/jsonl/parquet: --text-column)")
    p.add_argument("--output", help="write predictions to .jsonl or .csv")
    p.add_argument("--text-column")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of linear layers (CPU)")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto (default): an ONNX export on onnxruntime; a run on its fastest backend checked against "
                   "PyTorch on its test split (an onnxruntime graph built on first use and cached in RUN_DIR/backend; "
                   "PyTorch where no graph passes or can be built). torch: PyTorch always. onnxruntime: an export, "
                   "or the run's cached graph (an error if it has none)")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="write a run as one model folder (adapters merged) or an ONNX graph",
                       description="Write RUN_DIR with its adapter merged into the weights. --format hf (default): "
                       "its classifier and tokenizer, which AutoModelForSequenceClassification.from_pretrained(OUT_DIR, "
                       "trust_remote_code=True) loads with the run's logits. --format onnx: model.onnx, the tokenizer and "
                       "manifest.json for onnxruntime (transferkit predict OUT_DIR runs it), checked against the PyTorch "
                       "model on the run's test split; --int8 quantises it and keeps it only if it passes the accuracy "
                       "gate. Nothing is written unless the check passes.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) folder")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf", help="hf: a model folder (default); onnx: an ONNX graph")
    p.add_argument("--int8", action="store_true", help="with --format onnx: int8 weights (onnxruntime dynamic "
                   "quantisation), refused below 99.5%% argmax agreement or 0.5 points of the metric lost")
    p.add_argument("--data", help="with --format onnx: labelled file to check on (default: the run's test split)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--plain", action="store_true",
                   help="a stock BertForSequenceClassification needing no custom code; only for runs whose head "
                   "reads [CLS] linearly (model.pooling=cls model.head=linear) on a BERT-layout encoder")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("serve", help="serve runs over HTTP: many task models on one base, batched across requests")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN_DIR", help="a run to serve as NAME (repeat)")
    p.add_argument("--adapter-root", help="folder whose runs POST /v1/load_lora_adapter may load while serving")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require Authorization: Bearer KEY on every route but /health and the docs "
                   "(or set TRANSFERKIT_API_KEY, which keeps the key out of the process list)")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="tokens one model batch may hold")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the first request waits for company")
    p.add_argument("--max-queue", type=int, default=512, help="waiting requests before new ones get 429")
    p.add_argument("--max-inputs", type=int, default=256, help="texts one request may hold")
    p.add_argument("--default-model", help="the run /predict uses without a model field (default: the first)")
    p.add_argument("--backend", choices=["auto", "torch"], default="auto",
                   help="auto (default): each run on its fastest backend checked against PyTorch (a run with a "
                   "cached onnxruntime graph answers alone on it); torch: PyTorch, runs of one base sharing it")
    p.set_defaults(func=cmd_serve)


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = api.evaluate(args.run_dir, args.data, text_column=args.text_column, label_column=args.label_column,
                          output_dir=args.output_dir, quantize=args.int8, base_model=args.base_model)
    # the task's scalar metrics (accuracy ... f1_weighted for classify; entity precision/recall/f1, token accuracy for ner)
    shown = ("accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted", "token_accuracy")
    print(dumps({k: report[k] for k in shown if k in report}, indent=1))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.adapter:  # several runs on one base: the first positional is a text, not a run
        if args.backend == "onnxruntime":
            raise UserError("--backend onnxruntime runs one ONNX export; --adapter runs share a PyTorch base")
        texts = ([args.run_dir] if args.run_dir else []) + list(args.texts)
        rows = api.predict(_adapter_runs(args.adapter), texts or None, input=args.input, output=args.output,
                           text_column=args.text_column, batch_size=args.batch_size, quantize=args.int8,
                           adapter=args.use, adapter_column=args.adapter_column, base_model=args.base_model)
    else:
        if not args.run_dir:
            raise UserError("give a RUN_DIR (or several runs with --adapter NAME=RUN_DIR)")
        if args.use or args.adapter_column:
            raise UserError("--use and --adapter-column need runs given with --adapter NAME=RUN_DIR")
        rows = api.predict(args.run_dir, args.texts or None, input=args.input, output=args.output,
                           text_column=args.text_column, batch_size=args.batch_size, quantize=args.int8,
                           base_model=args.base_model, backend=args.backend)
    if args.output is None:
        from ..core.fs import dumps
        for r in rows:
            print(dumps(r, ensure_ascii=False))
    return 0


def _adapter_runs(items: list[str]) -> dict[str, str]:
    runs: dict[str, str] = {}
    for item in items:
        name, sep, run = item.partition("=")
        if not sep or not name.strip() or not run.strip():
            raise UserError(f"--adapter {item!r}: expected NAME=RUN_DIR")
        if name.strip() in runs:
            raise UserError(f"--adapter: name {name.strip()!r} given twice")
        runs[name.strip()] = run.strip()
    return runs


def cmd_export(args: argparse.Namespace) -> int:
    api.export(args.run_dir, args.out_dir, format=args.format, int8=args.int8, plain=args.plain, data=args.data,
               text_column=args.text_column, label_column=args.label_column, base_model=args.base_model)
    return 0




def cmd_serve(args: argparse.Namespace) -> int:
    api.serve(_adapter_runs(args.adapter), adapter_root=args.adapter_root, host=args.host, port=args.port,
              api_key=args.api_key, max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
              max_queue=args.max_queue, max_inputs=args.max_inputs, default_model=args.default_model,
              backend=args.backend)
    return 0
