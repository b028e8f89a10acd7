"""Generative fine-tuning: TRL's `SFTTrainer` against `transferkit finetune --task generate`, and the untuned
model, in one invocation.

All three use the bundled SmolLM2-135M-Instruct on bbc-headlines (article opening -> headline; transferkit's
seeded split by article), each in its own spawned child:

    untuned   the base model, its chat template, the prompt "Write a short news headline for this article:
              <opening>", greedy
    trl       SFTTrainer on conversational prompt-completion rows (the chat template; completion-only loss and
              packing on, TRL's defaults otherwise: bfd packing, padding-free), LoRA through peft (same r, alpha,
              dropout, targets as ours), the same steps, batch of packed blocks, lr, warmup, weight decay; two
              of TRL's defaults are turned off because they would lose on a CPU for reasons that are not TRL's
              loop: bf16 (5x slower matmuls on this CPU) and gradient checkpointing (recomputes every forward)
    ours      transferkit.api.finetune(task="generate", method="lora", data.packing=true) on the same rows and
              settings

The two tuned models are scored the same way: greedy generation from every test prompt with the same template
and token budget (transferkit's `generate_ids`), ROUGE-1/2/L with rouge-score. Throughput is training tokens
(non-padding tokens of the packed blocks trained on) per second of training, as each trainer counts its own
(TRL's `num_tokens`, transferkit's metrics.jsonl `tokens`).

trl is not a transferkit dependency: `pip install trl==1.16.0` first.

    python benchmarks/generate.py                      # 400 training rows, 1 epoch, 100 test prompts
    python benchmarks/generate.py --seeds 3 --test 207 --variants trl,ours   # the numbers in docs/results.md
    python benchmarks/generate.py --quick
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, environment, in_child, peak_rss_mb, print_table, quiet_libraries,  # noqa: E402
                     ratio, set_threads, write_json)

TARGET = 1.3  # ours / TRL training tokens per second
INSTRUCTION = "Write a short news headline for this article:\n\n"
LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "targets": ["q_proj", "v_proj"]}


def write_rows(spec: dict[str, Any]) -> dict[str, str]:
    """The seeded bbc-headlines split as JSONL files: the first `limit` training rows, a small validation file
    (ours needs one), `test` test rows."""
    from transferkit import tasks
    from transferkit.config.finetune import DataConfig
    splits = tasks.get("generate").prepare(DataConfig(data="bbc-headlines"), spec["seed"])
    work = Path(spec["work"])
    paths = {}
    for name, part, n in (("train", splits.train, spec["limit"]), ("validation", splits.validation, 16),
                          ("test", splits.test, spec["test"])):
        path = work / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for turns, completion in list(zip(part.prompts, part.completions))[:n]:
                f.write(json.dumps({"prompt": turns[0][1], "completion": completion}) + "\n")
        paths[name] = str(path)
    return paths


def _read(path: str) -> list[dict[str, str]]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def _score(model: Any, tok: Any, rows: list[dict[str, str]], prefix: str, max_length: int,
           max_new_tokens: int) -> dict[str, float]:
    """Greedy completions of every row's prompt (the chat template, `prefix` before the prompt), scored."""
    from transferkit.tasks.generate.format import end_token, prompt_ids
    from transferkit.tasks.generate.metrics import generation_metrics
    from transferkit.tasks.generate.model import generate_ids
    ids = [p[:max_length] for p in prompt_ids(tok, [(("user", prefix + r["prompt"]),) for r in rows], "chat")]
    t0 = time.perf_counter()
    new = generate_ids(model, ids, tok.pad_token_id, end_token(tok), "cpu", 16, max_new_tokens)
    seconds = time.perf_counter() - t0
    outputs = [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    metrics, _ = generation_metrics([r["completion"] for r in rows], outputs)
    return {**{k: round(v, 4) for k, v in metrics.items()}, "generate_seconds": round(seconds, 1),
            "example": {"prompt": rows[0]["prompt"], "reference": rows[0]["completion"], "output": outputs[0]}}


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    set_threads(spec["threads"])
    quiet_libraries()
    t0 = time.perf_counter()
    out = {"untuned": run_untuned, "trl": run_trl, "ours": run_ours}[spec["variant"]](spec)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def _base() -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transferkit.modeling.resolve import resolve_model
    path = resolve_model("smollm2-135m").path
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def run_untuned(spec: dict[str, Any]) -> dict[str, Any]:
    model, tok = _base()
    return _score(model.eval(), tok, _read(spec["paths"]["test"]), INSTRUCTION, spec["max_length"],
                  spec["max_new_tokens"])


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer
    datasets.disable_progress_bars()
    set_seed(spec["seed"])
    model, tok = _base()
    rows = _read(spec["paths"]["train"])
    train = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])
    with tempfile.TemporaryDirectory(prefix="tkbench-trl-") as tmp:
        args = SFTConfig(output_dir=tmp, max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
                         learning_rate=spec["lr"], warmup_steps=spec["warmup_steps"], weight_decay=0.01,
                         lr_scheduler_type="linear", max_grad_norm=1.0, packing=True, completion_only_loss=True,
                         max_length=spec["max_length"], eval_strategy="no", save_strategy="no", logging_steps=1,
                         report_to="none", disable_tqdm=True, use_cpu=True, seed=spec["seed"],
                         dataloader_num_workers=0, gradient_checkpointing=False, bf16=False)
        peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["targets"], task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok, peft_config=peft)
        trainer.remove_callback(PrinterCallback)
        out = trainer.train()
        tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
    seconds = out.metrics["train_runtime"]
    scores = _score(trainer.model.eval(), tok, _read(spec["paths"]["test"]), "", spec["max_length"],
                    spec["max_new_tokens"])
    return {"train_seconds": round(seconds, 2), "train_tokens": int(tokens),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), **scores}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from transferkit import api
    from transferkit.inference import Predictor
    p = spec["paths"]
    result = api.finetune(task="generate", method="lora", train=p["train"], validation=p["validation"], test=p["test"],
                          max_steps=spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"],
                          output_dir=spec["run_dir"], max_length=spec["max_length"],
                          **{"data.packing": True, "method.lora_r": LORA["r"], "method.lora_alpha": LORA["alpha"],
                             "method.lora_dropout": LORA["dropout"], "method.target_modules": LORA["targets"],
                             "train.warmup": spec["warmup_steps"] / spec["steps"], "train.progress": False,
                             "train.early_stopping_patience": 0, "train.checkpoint_steps": 10**9})
    records = [json.loads(x) for x in (Path(spec["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    tokens = max((r.get("tokens", 0) for r in records if r.get("type") == "train"), default=0)
    seconds = result.metrics["train"]["seconds"]
    predictor = Predictor.from_run(spec["run_dir"])  # scored as TRL's model is, on the same prompts
    scores = _score(predictor.model, predictor.tokenizer, _read(p["test"]), "", spec["max_length"],
                    spec["max_new_tokens"])
    return {"train_seconds": round(seconds, 2), "train_tokens": int(tokens),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), **scores}


def _mean_sd(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean ROUGE-L and training tokens/s over seeds, with ROUGE-L's sd (0 for one seed)."""
    import statistics
    if not rows:
        return {}
    scores = [r["rougeL"] for r in rows]
    return {"rougeL": statistics.mean(scores), "rougeL_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "generate")
    p.add_argument("--limit", type=int, default=400, help="training rows")
    p.add_argument("--test", type=int, default=100, help="test prompts scored")
    p.add_argument("--steps", type=int, default=28, help="optimizer steps (28 is about one epoch of 400 rows packed)")
    p.add_argument("--batch-size", type=int, default=4, help="packed blocks per step")
    p.add_argument("--max-length", type=int, default=256, help="tokens per packed block")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", default="untuned,trl,ours")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per tuned variant (seed, seed+1, ...; the "
                   "split stays the same): ROUGE-L and tokens/s are reported as mean and sd over them")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.test, args.steps = 64, 16, 4
    set_threads(args.threads)
    quiet_libraries()
    env = environment(args.threads)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tkbench-generate-") as work:
        spec = {"work": work, "limit": args.limit, "test": args.test, "seed": args.seed}
        paths = in_child(write_rows, spec)
        for k in range(args.seeds):
            for v in args.variants.split(","):
                if v == "untuned" and k:  # greedy and untrained: the same every seed
                    continue
                key = v if args.seeds == 1 or v == "untuned" else f"{v}/seed{args.seed + k}"
                print(f"running {key} in a child process ...", file=sys.stderr, flush=True)
                spec = {"variant": v, "paths": paths, "steps": args.steps, "batch_size": args.batch_size,
                        "max_length": args.max_length, "lr": args.lr, "warmup_steps": max(1, round(0.1 * args.steps)),
                        "max_new_tokens": args.max_new_tokens, "seed": args.seed + k, "threads": args.threads,
                        "run_dir": str(Path(work) / f"ours-{k}")}
                results[key] = r = in_child(run_variant, spec)
                print(f"  ROUGE-L {r['rougeL']:.4f}" + (f", {r['tokens_per_s']:.1f} training tokens/s"
                                                         if "tokens_per_s" in r else ""), file=sys.stderr, flush=True)
    rows = [[v, r.get("tokens_per_s", "-"), r.get("train_tokens", "-"), r.get("train_seconds", "-"), r["rouge1"],
             r["rouge2"], r["rougeL"], r["peak_rss_mb"], r["wall_seconds"]] for v, r in results.items()]
    print_table(["variant", "train tok/s", "train tokens", "train s", "ROUGE-1", "ROUGE-2", "ROUGE-L", "peak RSS MB",
                 "child wall s"], rows)
    ratios: dict[str, Any] = {}
    summary = {v: _mean_sd([r for key, r in results.items() if key.split("/")[0] == v]) for v in ("trl", "ours")}
    if summary["trl"] and summary["ours"]:
        ours, trl = summary["ours"], summary["trl"]
        ratios = {"tokens_per_s": ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
                  "rougeL_points": round(100 * (ours["rougeL"] - trl["rougeL"]), 2), "seeds": args.seeds,
                  "rougeL_sd_points": {v: round(100 * summary[v]["rougeL_sd"], 2) for v in ("trl", "ours")}}
        met = ratios["tokens_per_s"] is not None and ratios["tokens_per_s"] >= TARGET and ratios["rougeL_points"] >= 0
        spread = (f" (sd over {args.seeds} seeds: TRL {ratios['rougeL_sd_points']['trl']:.2f}, ours "
                  f"{ratios['rougeL_sd_points']['ours']:.2f})" if args.seeds > 1 else "")
        print(f"ours / TRL: {ratios['tokens_per_s']:.2f}x training tokens/s, ROUGE-L {ratios['rougeL_points']:+.2f} "
              f"points{spread} (target >= {TARGET:g}x and level or better: {'met' if met else 'NOT met'})")
    write_json(args.out, {"benchmark": "generate", "quick": args.quick, "environment": env,
                          "settings": vars(args) | {"out": str(args.out)}, "results": results, "summary": summary,
                          "ratios": ratios, "target": TARGET})
    return 0


if __name__ == "__main__":
    sys.exit(main())
