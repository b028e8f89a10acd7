"""`augment`: write a file's rows with their augmented copies (no training), over `api.augment`."""
from __future__ import annotations

import argparse
from typing import Any

from .. import api

SPEC_HELP = ("augmentations joined by '+': eda:synonym=R,insert=R,swap=R,delete=R,copies=N[,synonyms=FILE] | "
             "paraphrase:model=M,copies=N,temperature=T | backtranslate:model=M,via=LANGUAGE[,back_model=M2] "
             "(rates in [0, 1]; mixup:alpha=A works in finetune only)")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("augment", help="write a data file's rows plus augmented copies (EDA, paraphrase, "
                                       "back-translation) to inspect before training on them")
    p.add_argument("--data", required=True, help="data file (csv/tsv/jsonl/parquet, CoNLL for ner) or bundled name")
    p.add_argument("--augment", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--output", required=True, help="file to write (.csv/.tsv/.jsonl; .jsonl for ner)")
    p.add_argument("--task", default="classify", help="classify (default) or ner")
    p.add_argument("--text-column", help="column with the text (tokens for ner; default: auto-detect)")
    p.add_argument("--label-column", help="column with the label (tags for ner; default: auto-detect)")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_augment)


def cmd_augment(args: argparse.Namespace) -> int:
    api.augment(args.data, args.augment, args.output, task=args.task, text_column=args.text_column,
                label_column=args.label_column, seed=args.seed)
    return 0
