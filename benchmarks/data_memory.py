"""Memory against data size: peak RSS of a fine-tuning run on synthetic files of 10k, 100k and 1M rows.

Each size is a CSV written by this script (two bundled movie sentences joined per row, so every row is
distinct; the first sentence's label), and one `transferkit.finetune` call in a fresh child process:
LoRA, 5 optimizer steps, batch 16, a 99.8/0.1/0.1 split (so scoring stays small and the training split
grows with the file). Reported: the child's peak RSS, its RSS before the run, the time to the end of
training, and the growth over the smallest file. The issue's target: a 1,000,000-row file within
500 MB of a 10,000-row one. `--storage` is passed as data.storage (default auto: files over 64 MB, here
the 1M-row one, go through the memory-mapped cache); each size starts with an empty cache, so parsing and
tokenization are inside the measured run.

`--task ner` does the same for token classification: a CoNLL file of tagged sentences (two bundled
wiki-ner-silver sentences joined per row, their tags kept), results in data_memory_ner.json.

    python benchmarks/data_memory.py                  # 10k, 100k, 1M rows (~8 minutes on 2 cores)
    python benchmarks/data_memory.py --storage memory # everything in Python lists, as before the mapped path
    python benchmarks/data_memory.py --sizes 10000,100000
    python benchmarks/data_memory.py --task ner        # tagged sentences (~? minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, in_child, peak_rss_mb, print_table, write_json  # noqa: E402

TARGET_MB = 500.0


def write_rows(path: Path, n: int) -> None:
    """`n` distinct rows: sentence a + sentence b of the bundled movie sentences, a's label."""
    import transferkit.data.bundled  # noqa: F401
    from transferkit.core.registry import DATASETS
    df = DATASETS.get("movie-sentences").load()
    texts, labels = [str(t) for t in df["text"]], [str(x) for x in df["label"]]
    m = len(texts)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            a, b = i % m, (i // m * 7919 + i * 31 + 1) % m
            w.writerow([f"{texts[a]} {texts[b]}", labels[a]])


def write_sentences(path: Path, n: int) -> None:
    """`n` distinct tagged sentences in CoNLL form: bundled sentence a then sentence b, with their tags."""
    import transferkit.data.bundled  # noqa: F401
    from transferkit.tasks.ner.read import load_tagged
    table = load_tagged("wiki-ner-silver")
    sents = [list(zip(toks, tags)) for toks, tags in zip(table.tokens, table.tags)]
    m = len(sents)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            a, b = i % m, (i // m * 7919 + i * 31 + 1) % m
            f.write("".join(f"{w} {t}\n" for w, t in sents[a] + sents[b]) + "\n")


def rss_parts() -> dict[str, float]:
    """Resident memory now, by kind (Linux): anonymous (the heap) and file-backed (mapped files, libraries)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[f"end_{key[3:].lower()}_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: one short run on the file; its RSS before and at peak."""
    from transferkit import api
    before = peak_rss_mb()
    t0 = time.perf_counter()
    os.environ["TRANSFERKIT_CACHE"] = spec["cache"]  # empty: the run parses and tokenizes
    result = api.finetune(data=spec["data"], task=spec["task"], method="lora", max_steps=5, batch_size=16,
                          output_dir=spec["out"], **{"train.progress": False, "data.split": [0.998, 0.001, 0.001],
                                                     "train.min_steps": 0, "data.storage": spec["storage"]})
    return {"rss_before_mb": round(before, 1), "peak_rss_mb": round(peak_rss_mb(), 1), **rss_parts(),
            "seconds": round(time.perf_counter() - t0, 1), "split_sizes": result.metrics["data"].get("sizes")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "data_memory")
    p.add_argument("--sizes", default="10000,100000,1000000", help="rows per file, comma-separated")
    p.add_argument("--storage", default="auto", choices=("auto", "memory", "mapped"), help="data.storage of the runs")
    p.add_argument("--task", default="classify", choices=("classify", "ner"), help="sentence rows or tagged sentences")
    args = p.parse_args(argv)
    if args.task == "ner" and args.out == p.get_default("out"):
        args.out = args.out.with_name("data_memory_ner.json")
    sizes = [int(x) for x in args.sizes.split(",")] if not args.quick else [2000, 20000]
    env = environment(args.threads)
    results: dict[str, dict[str, Any]] = {}
    from transferkit.data.bundled import cache_dir
    bundled_cache = cache_dir()
    with tempfile.TemporaryDirectory(prefix="data-memory-") as tmp:
        for n in sizes:
            path = Path(tmp) / (f"rows-{n}.csv" if args.task == "classify" else f"sentences-{n}.conll")
            (write_rows if args.task == "classify" else write_sentences)(path, n)
            print(f"{n:,} rows ({path.stat().st_size / 2**20:.0f} MB) ...", file=sys.stderr, flush=True)
            cache = Path(tmp) / f"cache-{n}"
            if bundled_cache.is_dir():  # the model and bundled data, not the data caches under test
                for sub in bundled_cache.iterdir():
                    if sub.name not in ("tables", "tagged", "tokenized"):
                        cache.mkdir(exist_ok=True)
                        (cache / sub.name).symlink_to(sub)
            r = in_child(train, {"data": str(path), "out": str(Path(tmp) / f"run-{n}"), "cache": str(cache),
                                 "storage": args.storage, "task": args.task})
            r["file_mb"] = round(path.stat().st_size / 2**20, 1)
            results[str(n)] = r
            path.unlink()
    base = results[str(sizes[0])]["peak_rss_mb"]
    for r in results.values():
        r["growth_mb"] = round(r["peak_rss_mb"] - base, 1)
    print_table(["rows", "file MB", "peak RSS MB", "growth over smallest MB", "at the end: anon / file MB", "seconds"],
                [[f"{int(n):,}", r["file_mb"], r["peak_rss_mb"], r["growth_mb"],
                  f"{r.get('end_anon_mb', '?')} / {r.get('end_file_mb', '?')}", r["seconds"]] for n, r in results.items()])
    largest = results[str(sizes[-1])]["growth_mb"]
    print(f"\ntarget: {sizes[-1]:,} rows within {TARGET_MB:g} MB of {sizes[0]:,} -> {largest:g} MB "
          f"({'met' if largest <= TARGET_MB else 'NOT met'})")
    write_json(args.out, {"benchmark": "data_memory", "quick": args.quick, "environment": env,
                          "settings": {"task": args.task, "method": "lora", "max_steps": 5, "batch_size": 16,
                                       "storage": args.storage,
                                       "split": [0.998, 0.001, 0.001]},
                          "results": results, "target_mb": TARGET_MB, "growth_mb": largest})
    return 0


if __name__ == "__main__":
    sys.exit(main())
