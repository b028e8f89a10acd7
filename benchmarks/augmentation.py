"""Augmentation throughput: EDA texts/s, and paraphrase texts/s on the bundled SmolLM2, batched
against one text at a time, in the same process on the same texts.

    .venv/bin/python benchmarks/augmentation.py [--texts 64] [--batch 16] [--synonyms wordnet]

EDA makes 4 copies of each of the first 2,000 movie sentences (synonym, insert, swap and delete at
rate 0.1; WordNet unless --synonyms names a table). Paraphrase generates one greedy reply per text for
the first --texts sentences, once in batches of --batch and once with batch 1; the cache is bypassed
(each variant writes to its own temporary cache) so both generate everything. Prints texts/s, the
ratio, and how many outputs the drop rules kept.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--synonyms", default="wordnet")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/augmentation.json"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    from transferkit.augmentation.apply import augment_texts
    from transferkit.augmentation.generative import GenerativeAugmenter
    from transferkit.augmentation.spec import parse_spec
    from transferkit.tasks.classify.read import load_table
    table = load_table("movie-sentences")
    texts, labels = list(table.texts[:2000]), list(table.labels[:2000])
    spec = f"eda:synonym=0.1,insert=0.1,swap=0.1,delete=0.1,copies=4,synonyms={args.synonyms}"
    augment_texts(texts[:10], labels[:10], parse_spec(spec), 0, spec)  # loads WordNet once
    t0 = time.perf_counter()
    _, _, report = augment_texts(texts, labels, parse_spec(spec), 0, spec)
    eda_s = time.perf_counter() - t0
    result = {"eda": {"texts": len(texts), "copies": 4, "added": report.steps["eda"]["added"], "seconds": round(eda_s, 2),
                      "texts_per_s": round(len(texts) / eda_s, 1), "new_rows_per_s": round(report.steps["eda"]["added"] / eda_s, 1)}}
    print(f"EDA: {len(texts)} texts x 4 copies in {eda_s:.2f} s = {len(texts) / eda_s:.0f} texts/s "
          f"({report.steps['eda']['added'] / eda_s:.0f} new rows/s)")
    sample = texts[:args.texts]
    for name, batch in (("batched", args.batch), ("one at a time", 1)):
        with tempfile.TemporaryDirectory() as cache:
            opts = parse_spec(f"paraphrase:batch={batch},temperature=0")[0].options
            aug = GenerativeAugmenter("paraphrase", opts, seed=0)
            aug.cache_path = lambda: Path(cache) / "paraphrase.jsonl"  # a cache of its own: everything generates
            aug.generator.run(sample[:2], 0.0, 0, 8)  # warm-up
            t0 = time.perf_counter()
            kept = aug.generate(sample)
            s = time.perf_counter() - t0
        result[name] = {"texts": len(sample), "batch": batch, "seconds": round(s, 2),
                        "texts_per_s": round(len(sample) / s, 2), "kept": sum(len(k) for k in kept),
                        "dropped": aug.dropped}
        print(f"paraphrase {name} (batch {batch}): {len(sample)} texts in {s:.1f} s = {len(sample) / s:.2f} texts/s, "
              f"kept {sum(len(k) for k in kept)}, dropped {aug.dropped}")
    ratio = result["batched"]["texts_per_s"] / result["one at a time"]["texts_per_s"]
    result["batched_vs_single"] = round(ratio, 2)
    print(f"batched / one at a time: {ratio:.2f}x")
    examples = list(zip(sample[:5], [k[0] if k else None for k in kept[:5]]))
    result["examples"] = examples
    for a, b in examples:
        print(f"  {a[:80]!r}\n   -> {str(b)[:80]!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
