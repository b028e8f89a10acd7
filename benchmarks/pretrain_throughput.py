"""Pretraining throughput (tokens/s): transformers.Trainer + DataCollatorForLanguageModeling vs transferkit.

Everything runs in one process, on the same from-scratch model (identical initial weights), the
same wiki-summaries documents, tokenizer, batch size, learning rate and number of steps:

    trainer-docs     Trainer, one example per document (truncated to --max-length), the collator
                     pads each batch to its longest row (the plain DataCollatorForLanguageModeling recipe)
    trainer-grouped  Trainer on run_mlm.py / run_clm.py-style grouped texts: documents concatenated
                     and cut into --max-length blocks (no padding)
    ours             transferkit's pretraining data and loss (packed blocks; MLM scores only the
                     selected positions, so the vocabulary projection runs on ~15% of the tokens)
                     in transferkit's Trainer

tokens/s counts real (non-padding) input tokens per second of optimizer steps, after --warmup steps.
MLM uses bert-mini with the bundled MiniLM's uncased 30,522-token WordPiece vocabulary; CLM uses
gpt2-mini with a 16,000-token byte-level BPE trained on the documents. Variants alternate
(A B C A B C ...) --repeats times and the medians are compared, because the machine is shared.

    python benchmarks/pretrain_throughput.py                 # MLM and CLM, 20 timed steps each
    python benchmarks/pretrain_throughput.py --quick         # smoke run
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, quiet_libraries, ratio, set_threads, write_json  # noqa: E402

VARIANTS = ("trainer-docs", "trainer-grouped", "ours")


def _tokenizer(objective: str, docs: list[str]) -> Any:
    if objective == "mlm":
        from transferkit.modeling.lm import model_folder
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(model_folder("minilm-l6")))
    from transferkit.modeling.tokenizers import train_tokenizer
    return train_tokenizer(docs, "bpe", 16000)


class _CountingCollator:
    """Wraps a collator and records the real tokens of every batch it builds."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.tokens = inner, []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


def run_trainer(model: Any, tok: Any, examples: list[list[int]], objective: str, a: argparse.Namespace) -> dict:
    import datasets
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
    ds = datasets.Dataset.from_dict({"input_ids": examples})
    collator = _CountingCollator(DataCollatorForLanguageModeling(tok, mlm=objective == "mlm", mlm_probability=0.15))
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, max_steps=a.warmup + a.steps,
                                 learning_rate=a.lr, warmup_steps=0, logging_steps=10_000, save_strategy="no",
                                 report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
                                 seed=a.seed, weight_decay=0.01)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                callbacks=[Clock()]).train()
    # the dataloader may build one batch ahead: step k used batch k
    tokens = sum(collator.tokens[a.warmup:a.warmup + a.steps])
    return {"tokens_per_s": tokens / (times[-1] - times[a.warmup - 1]), "tokens": tokens}


def run_ours(model: Any, tok: Any, data: Any, objective: str, a: argparse.Namespace) -> dict:
    from accelerate import Accelerator

    from transferkit.training import loop as train
    from transferkit.config.finetune import TrainConfig
    from transferkit.core.registry import OBJECTIVES
    obj = OBJECTIVES.get(objective)
    stamps: list[tuple[float, int]] = []

    class Clocked(train.Trainer):
        def _step(self, group):  # noqa: ANN001
            out = super()._step(group)
            stamps.append((time.perf_counter(), self._step_tokens))
            return out

    cfg = TrainConfig(max_steps=a.warmup + a.steps, batch_size=a.batch_size, lr=a.lr, head_lr=a.lr, epochs=1,
                      early_stopping_patience=0, metric="loss", progress=False, seed=a.seed, checkpoint_steps=10**9)
    with tempfile.TemporaryDirectory() as out:
        t = Clocked(obj.wrap(model, []), data, cfg, Path(out), Accelerator(cpu=True), tok.pad_token_id or 0,
                    loss_fn=obj.loss_fn)
        t.save_checkpoint = lambda: None  # not part of the measurement
        t.fit()
    timed = stamps[a.warmup:]
    tokens = sum(n for _, n in timed)
    return {"tokens_per_s": tokens / (timed[-1][0] - stamps[a.warmup - 1][0]), "tokens": tokens}


def bench(objective: str, docs: list[str], a: argparse.Namespace) -> dict:
    import torch

    from transferkit.data.corpus import build_cache
    from transferkit.modeling.lm import build_from_scratch
    from transferkit.objectives.clm import separator_id
    from transferkit.core.registry import OBJECTIVES
    tok = _tokenizer(objective, docs)
    arch = "bert" if objective == "mlm" else "gpt2"
    torch.manual_seed(a.seed)
    init = build_from_scratch(arch, a.size, tok, objective)
    sep = separator_id(tok)
    # baselines: per-document examples with the model's special tokens, and run_mlm/run_clm-style groups
    special = objective == "mlm"
    per_doc = tok(docs, truncation=True, max_length=a.max_length, add_special_tokens=special)["input_ids"]
    cache = build_cache(docs, tok, "docs", sep)
    flat = cache.span(0, cache.num_tokens).tolist()
    grouped = [flat[i:i + a.max_length] for i in range(0, len(flat) - a.max_length + 1, a.max_length)]

    class Cfg:  # the PretrainConfig fields the objective reads
        max_length, mlm_probability, mask_replace, random_replace, whole_word_mask = a.max_length, 0.15, 0.8, 0.1, False

        class train:
            seed = a.seed
    ours_data, _ = OBJECTIVES.get(objective).prepare(docs, [], tok, len(tok), Cfg)
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(a.repeats):
        for v in VARIANTS:
            model = copy.deepcopy(init)
            if v == "ours":
                res = run_ours(model, tok, ours_data, objective, a)
            else:
                res = run_trainer(model, tok, per_doc if v == "trainer-docs" else grouped, objective, a)
            runs[v].append(res["tokens_per_s"])
            print(f"  {objective} {v} (repeat {r + 1}): {res['tokens_per_s']:,.0f} tokens/s", flush=True)
    med = {v: statistics.median(x) for v, x in runs.items()}
    return {"model": f"{arch}-{a.size}", "vocab": len(tok), "params": sum(p.numel() for p in init.parameters()),
            "runs_tokens_per_s": runs, "median_tokens_per_s": med,
            "ratio_vs_trainer_docs": ratio(med["ours"], med["trainer-docs"]),
            "ratio_vs_trainer_grouped": ratio(med["ours"], med["trainer-grouped"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "pretrain_throughput")
    p.add_argument("--objectives", default="mlm,clm")
    p.add_argument("--size", default="mini", help="from-scratch size (tiny|mini|small)")
    p.add_argument("--docs", type=int, default=2000, help="first N wiki-summaries documents")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.quick:
        a.docs, a.steps, a.warmup, a.repeats, a.size = 300, 3, 1, 1, "tiny"
    set_threads(a.threads)
    quiet_libraries()
    from transferkit.data.corpus import load_documents
    docs = load_documents("wiki-summaries", limit=a.docs)
    env = environment(a.threads)
    results = {}
    for objective in a.objectives.split(","):
        print(f"{objective}: {a.size}, batch {a.batch_size} x {a.max_length} tokens, {a.steps} timed steps", flush=True)
        results[objective] = bench(objective, docs, a)
    rows = [[o, r["model"], *(round(r["median_tokens_per_s"][v]) for v in VARIANTS),
             r["ratio_vs_trainer_docs"], r["ratio_vs_trainer_grouped"]] for o, r in results.items()]
    print()
    print_table(["objective", "model", *[f"{v} tok/s" for v in VARIANTS], "ours/docs", "ours/grouped"], rows)
    write_json(a.out, {"environment": env, "settings": vars(a) | {"out": str(a.out)}, "results": results,
                       "note": "shared 2-core machine: medians of alternating runs in one process"})


if __name__ == "__main__":
    main()
