"""Cloze accuracy of masked language models on held-out Wikipedia summaries.

Each item is one sentence from a document the pretraining did not train on, with one content
word masked: a whole word that is alphabetic, at least 4 letters, not an English stopword
(scikit-learn's list) and a single token in every compared model's tokenizer (so models with
different vocabularies are scored on the same items). A model scores a hit when the masked
word's token is its top-1 / among its top-5 predictions (special tokens never count as
predictions; see transferkit.inference.generation.MaskFiller).

Held-out documents: when a pretrain run directory is given, its own config.yaml decides the
corpus, document limit, held-out share and seed, and the documents are re-derived with the same
seeded `heldout_split` the run used. Otherwise the defaults of `transferkit pretrain` apply
(wiki-summaries, 5% of documents, seed 42), i.e. the held-out split of a default run.
Sentences are taken round-robin over held-out documents (one per document before a second).

Usage:
    python benchmarks/cloze.py --model runs/pretrain-mlm                # a pretrain run (its model/)
    python benchmarks/cloze.py --model minilm-l6 --model runs/mlm-12min  # same items for both models
    python benchmarks/cloze.py --model runs/pretrain-mlm --quick         # 50 items, a smoke run
A bundled encoder without an MLM head (minilm-l6) gets a new, untrained head: the 'before' row.
"""
from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, quiet_libraries, set_threads, write_json  # noqa: E402

WORD = re.compile(r"(?<![\w'’-])[A-Za-z]{4,}(?![\w'’-])")  # whole alphabetic words of 4+ letters
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
MIN_WORDS, MAX_WORDS = 8, 50


def heldout_documents(models: list[str], corpus: list[str] | None, heldout: float | None, seed: int | None,
                      limit: int | None) -> tuple[list[str], dict[str, Any]]:
    """Held-out documents of the first pretrain run among `models` (or of a default run)."""
    from transferkit.config.pretrain import PretrainConfig
    from transferkit.data.corpus import heldout_split, load_documents
    cfg = PretrainConfig()
    for m in models:
        p = Path(m) / "config.yaml"
        if p.is_file():
            try:
                cfg = PretrainConfig.from_yaml(p)
                source = str(p)
                break
            except Exception:  # a fine-tuning run's config: not a pretrain run  # noqa: BLE001
                continue
    else:
        source = "transferkit pretrain defaults"
    corpus = corpus or cfg.corpus
    heldout = cfg.heldout if heldout is None else heldout
    seed = cfg.train.seed if seed is None else seed
    limit = cfg.limit if limit is None else limit
    docs = load_documents(corpus, cfg.text_column, limit)
    _, held = heldout_split(len(docs), heldout, seed)
    info = {"corpus": corpus, "documents": len(docs), "heldout_share": heldout, "heldout_documents": len(held),
            "split_seed": seed, "limit": limit, "split_from": source}
    return [docs[i] for i in held], info


def load_filler(name: str) -> tuple[Any, str]:
    """A MaskFiller for a run/folder with an MLM head; a bundled encoder gets a new (untrained) head."""
    from transferkit.inference.generation import MaskFiller
    from transferkit.modeling.lm import load_for_objective
    from transferkit.modeling.resolve import MODELS
    if name in MODELS:
        import torch
        torch.manual_seed(0)  # the new head's random init: the same 'before' row on every run
        model, tok = load_for_objective(name, "mlm")
        return MaskFiller(model.eval(), tok), f"{name} (new MLM head, untrained)" if model.newly_initialized else name
    return MaskFiller.load(name), name


def single_token(tokenizer: Any, sentence: str, start: int, end: int) -> int | None:
    """The id of the one token that is exactly sentence[start:end], or None."""
    enc = tokenizer(sentence, return_offsets_mapping=True, add_special_tokens=False)
    hits = [(tid, s, e) for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if s < end and e > start]
    if len(hits) != 1:
        return None
    tid, s, e = hits[0]
    if tid in tokenizer.all_special_ids:  # an out-of-vocabulary word is one [UNK]: not a word the model can name
        return None
    s += len(sentence[s:e]) - len(sentence[s:e].lstrip())  # byte-level BPE offsets may include the space
    return tid if (s, e) == (start, end) else None


def build_items(docs: list[str], tokenizers: list[Any], n: int, seed: int) -> list[dict[str, Any]]:
    """Up to `n` items: {sentence, start, end, word, target ids (one per tokenizer)}."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    per_doc = []
    for d in order:
        sents = [s.strip() for s in SENTENCE_END.split(docs[d].replace("\n", " "))]
        sents = [s for s in sents if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
        rng.shuffle(sents)
        per_doc.append(sents)
    items: list[dict[str, Any]] = []
    for rnd in range(max((len(s) for s in per_doc), default=0)):
        for sents in per_doc:
            if rnd >= len(sents) or len(items) >= n:
                continue
            sent = sents[rnd]
            words = [m for m in WORD.finditer(sent) if m.group().lower() not in ENGLISH_STOP_WORDS]
            rng.shuffle(words)
            for m in words:
                ids = [single_token(t, sent, m.start(), m.end()) for t in tokenizers]
                if all(i is not None for i in ids):
                    items.append({"sentence": sent, "start": m.start(), "end": m.end(), "word": m.group(),
                                  "targets": ids})
                    break
        if len(items) >= n:
            break
    return items


def score(filler: Any, items: list[dict[str, Any]], which: int, batch_size: int) -> dict[str, Any]:
    texts = [it["sentence"][:it["start"]] + "[MASK]" + it["sentence"][it["end"]:] for it in items]
    t0 = time.perf_counter()
    preds = filler.fill(texts, top_k=5, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    top1 = sum(p[0]["token_id"] == it["targets"][which] for p, it in zip(preds, items))
    top5 = sum(it["targets"][which] in [r["token_id"] for r in p] for p, it in zip(preds, items))
    n = len(items)
    se = lambda k: math.sqrt(max(k / n * (1 - k / n), 1e-12) / n)  # noqa: E731  binomial standard error
    return {"items": n, "top1": top1 / n, "top5": top5 / n, "top1_se": se(top1), "top5_se": se(top5),
            "seconds": round(seconds, 2), "examples": [
                {"text": t, "answer": it["word"], "top5": [r["token"] for r in p]}
                for t, it, p in list(zip(texts, items, preds))[:5]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="pretrain run dir, MLM folder or bundled name; repeat to compare on the same items")
    p.add_argument("--n", type=int, default=300, help="cloze items (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking sentences and masked words")
    p.add_argument("--corpus", action="append", help="override the corpus (default: the run's, else wiki-summaries)")
    p.add_argument("--heldout", type=float, help="override the held-out share (default: the run's, else 0.05)")
    p.add_argument("--split-seed", type=int, help="override the held-out split seed (default: the run's, else 42)")
    p.add_argument("--limit", type=int, help="override the corpus document limit (default: the run's)")
    p.add_argument("--batch-size", type=int, default=32)
    add_common_args(p, "cloze")
    args = p.parse_args()
    set_threads(args.threads)
    quiet_libraries()
    n = 50 if args.quick else args.n
    docs, split = heldout_documents(args.model, args.corpus, args.heldout, args.split_seed, args.limit)
    fillers = [load_filler(m) for m in args.model]
    items = build_items(docs, [f.tokenizer for f, _ in fillers], n, args.seed)
    if len(items) < n:
        print(f"note: only {len(items)} items from {len(docs)} held-out documents (asked for {n})", file=sys.stderr)
    results = []
    for i, (filler, label) in enumerate(fillers):
        r = score(filler, items, i, args.batch_size)
        results.append({"model": label, **r})
    print(f"{len(items)} cloze items from {split['heldout_documents']} held-out documents of {split['corpus']} "
          f"(split: {split['split_from']}); top-k among non-special tokens; +- is one standard error\n")
    print_table(["model", "items", "top-1", "top-5", "seconds"],
                [[r["model"], r["items"], f"{100 * r['top1']:.1f}% +- {100 * r['top1_se']:.1f}",
                  f"{100 * r['top5']:.1f}% +- {100 * r['top5_se']:.1f}", r["seconds"]] for r in results])
    for r in results:
        print(f"\n{r['model']}:")
        for ex in r["examples"][:3]:
            at = ex["text"].index("[MASK]")
            print(f"  ...{ex['text'][max(0, at - 60):at + 30]}...\n    answer {ex['answer']!r}, top-5 {ex['top5']}")
    write_json(args.out, {"split": split, "n_requested": n, "seed": args.seed, "results": results,
                          "quick": args.quick, "environment": environment(args.threads)})


if __name__ == "__main__":
    main()
