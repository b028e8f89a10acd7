"""Does `torch.compile` speed up a training step on this CPU? Eager against compiled, the same steps.

At 110M parameters (`--model mpnet-base`) a training step is the encoder's Linear layers; the question is
whether fusing everything around them (layer norms, GELU, softmax, dropout, the adapters' extra ops) buys
anything worth the compile. Each variant runs in its own spawned child: the encoder with mean pooling and a
linear head (LoRA r=8 on the default targets for --method lora, fused AdamW for full), batches of 16 real
training sentences grouped by length as transferkit groups them, `--steps` timed steps after three warm-up
steps (the compiled variant's warm-up is its compile, reported apart). `torch.compile(dynamic=True)`, so the
varying batch widths do not each recompile. Prints samples/s, the ratio, and the useful GFLOP/s against
`--peak` (fp32 matmul peak of this machine, PERFORMANCE.md: ~240 on 2 threads).

    python benchmarks/training_compile.py --model mpnet-base --method lora
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_common_args, environment, in_child, movie_splits, print_table, quiet_libraries,  # noqa: E402
                     ratio, set_threads, write_json)

BATCH = 16


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from transferkit.data.batches import sorted_batches
    from transferkit.methods.lora import default_targets
    from transferkit.modeling.resolve import resolve_model
    set_threads(spec["threads"])
    quiet_libraries()
    torch.manual_seed(0)
    path = resolve_model(spec["model"]).path
    tok = AutoTokenizer.from_pretrained(path)
    texts = list(movie_splits(42).train.texts[:BATCH * (spec["steps"] + 3)])
    ids = tok(texts, truncation=True, max_length=64)["input_ids"]
    batches = sorted_batches([len(r) for r in ids], BATCH, None)
    encoder = AutoModel.from_pretrained(path)
    if spec["method"] == "lora":
        from peft import LoraConfig, get_peft_model
        encoder = get_peft_model(encoder, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                     target_modules=default_targets(encoder)))

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, torch.nn.Linear(encoder.config.hidden_size, 2)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).float()
            return self.head((hidden * mask).sum(1) / mask.sum(1))

    model = Classifier().train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    step_fn = torch.compile(model, dynamic=True) if spec["variant"] == "compiled" else model
    pad = tok.pad_token_id or 0

    def step(idx: list[int]) -> int:
        width = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for k, i in enumerate(idx):
            x[k, :len(ids[i])], mask[k, :len(ids[i])] = torch.tensor(ids[i]), 1
        loss = torch.nn.functional.cross_entropy(step_fn(x, mask), torch.randint(0, 2, (len(idx),)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(mask.sum())

    t0 = time.perf_counter()
    for idx in batches[:3]:
        step(idx)
    warmup = time.perf_counter() - t0
    t0, tokens, samples = time.perf_counter(), 0, 0
    for idx in batches[3:]:
        tokens, samples = tokens + step(idx), samples + len(idx)
    seconds = time.perf_counter() - t0
    cfg = encoder.config
    linear = cfg.num_hidden_layers * (4 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.intermediate_size)
    passes = 3 if spec["method"] == "full" else 2  # forward + input gradients (+ weight gradients when trained)
    return {"samples_per_s": round(samples / seconds, 2), "warmup_seconds": round(warmup, 1),
            "tokens_per_sample": round(tokens / samples, 1), "useful_gflops": round(passes * 2 * linear * tokens
                                                                                    / seconds / 1e9, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "training_compile")
    p.add_argument("--model", default="mpnet-base")
    p.add_argument("--method", choices=("full", "lora"), default="lora")
    p.add_argument("--steps", type=int, default=20, help="timed steps of 16 sentences")
    p.add_argument("--peak", type=float, default=240.0, help="fp32 GFLOP/s peak of this machine")
    args = p.parse_args()
    spec = {"threads": args.threads, "model": args.model, "method": args.method,
            "steps": 3 if args.quick else args.steps}
    results = {}
    for variant in ("eager", "compiled"):
        print(f"running {variant} ({args.method}, {args.model}) in a child process ...", flush=True)
        results[variant] = in_child(run_variant, {**spec, "variant": variant})
        results[variant]["peak_share"] = round(results[variant]["useful_gflops"] / args.peak, 3)
    print_table(["variant", "samples/s", "warm-up s", "tokens/sample", "useful GFLOP/s", "share of peak"],
                [[v, r["samples_per_s"], r["warmup_seconds"], r["tokens_per_sample"], r["useful_gflops"],
                  r["peak_share"]] for v, r in results.items()])
    speedup = ratio(results["compiled"]["samples_per_s"], results["eager"]["samples_per_s"])
    print(f"\ncompiled / eager: {speedup}x samples/s, after {results['compiled']['warmup_seconds']} s of warm-up")
    write_json(Path(args.out), {"benchmark": "training_compile", "environment": environment(args.threads),
                                "settings": {**spec, "batch_size": BATCH, "peak": args.peak}, "results": results,
                                "ratios": {"compiled_vs_eager": speedup}})


if __name__ == "__main__":
    main()
