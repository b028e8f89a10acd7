"""`pretrain`, `fill-mask` and `generate`: language models, over `api.pretrain` / `fill_mask` / `generate`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import api
from ..core.errors import UserError
from ..core.fs import dumps
from ..recipes.pretrain import PRETRAIN_KEYS
from .common import overrides


def add_parsers(sub: Any) -> None:
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
    p.add_argument("model", help="smollm2-135m, a pretrain or fine-tuned generation run dir, or a local HF causal-LM "
                   "folder (a fine-tuned run formats the prompt with its own template)")
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, help="new tokens (default 50; a fine-tuned generation run: its own "
                   "budget, the longest training completion)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    p.add_argument("--num-return-sequences", type=int, default=1)
    p.add_argument("--seed", type=int, help="random seed for sampling")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.set_defaults(func=cmd_generate)


def cmd_fill_mask(args: argparse.Namespace) -> int:
    rows = api.fill_mask(args.model, args.text, top_k=args.top_k)
    for r in rows:
        print(dumps(r, ensure_ascii=False) if args.json else f"{r['score']:.4f}  {r['token']:<15} {r['sequence']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
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
    extra = list(args.overrides)
    if args.corpus:  # --corpus takes several values, so trailing key=value overrides land there
        extra += [c for c in args.corpus if "=" in c and not Path(c).exists()]
        args.corpus = [c for c in args.corpus if c not in extra]
    out = overrides(args, PRETRAIN_KEYS, extra)
    if args.resume:
        if args.config:
            raise UserError("--config and --resume: a resumed run keeps its own config.yaml")
        api.pretrain(resume=args.resume, **out)
    else:
        api.pretrain(args.config, **out)
    return 0
