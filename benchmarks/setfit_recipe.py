"""SetFit's published recipe, written out plainly, on the cells of a `compare --train-sizes` grid, beside
the grid's own setfit cells: is the few-shot figure what the method gives on this encoder, or a fault of ours?

    .venv/bin/python benchmarks/setfit_recipe.py --grid runs/sizes-movie [--size 8]

The reference is the recipe of the SetFit paper and the setfit library's defaults, in a loop of its own
with no transferkit training code: for each seed's cell (GRID/data/n{size}-s{seed}/train.csv), pairs of
training texts (20 rounds: each text with one same-label and one other-label partner, transferkit's
`draw_pairs`, which is how setfit samples them), the encoder's mean-pooled vectors, the squared error
of their cosine against 1/0 (CosineSimilarityLoss), AdamW with 10% linear warmup then linear decay,
16 pairs a step, one epoch; then scikit-learn's LogisticRegression (C=1, setfit's default head) on the
L2-normalised vectors of the training texts. Test accuracy on GRID/data/test.csv, next to the grid's
setfit cell for the same seed (GRID/cells.csv). Variants: the encoder as it is (no pair stage), and the
pair stage at lr 2e-5 (the paper's), 5e-5 (transferkit's default), 5e-5 with 60 rounds, and 5e-5 for 3 epochs.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VARIANTS = [{"name": "encoder as it is", "rounds": 0},
            {"name": "pairs, lr 2e-5", "rounds": 20, "lr": 2e-5},
            {"name": "pairs, lr 5e-5", "rounds": 20, "lr": 5e-5},
            {"name": "pairs, lr 5e-5, 60 rounds", "rounds": 60, "lr": 5e-5},
            {"name": "pairs, lr 5e-5, 3 epochs", "rounds": 20, "lr": 5e-5, "epochs": 3}]


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def vectors(model, tok, texts: list[str], batch: int = 64):
    import torch
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out.append(torch.nn.functional.normalize(mean_pool(model, enc), dim=-1))
    return torch.cat(out).numpy()


def mean_pool(model, enc):
    hidden = model(**enc).last_hidden_state  # [batch, seq, hidden]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def pair_stage(model, tok, texts: list[str], labels: list[int], rounds: int, lr: float, epochs: int, seed: int) -> None:
    import torch
    from transferkit.methods.setfit import draw_pairs
    pairs = draw_pairs(labels, rounds, 10**9, seed) * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = -(-len(pairs) // 16)
    warm = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    for s in range(steps):
        chunk = pairs[16 * s:16 * (s + 1)]

        def enc(idx):
            return tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        u = mean_pool(model, enc([p[0] for p in chunk]))
        v = mean_pool(model, enc([p[1] for p in chunk]))
        target = torch.tensor([p[2] for p in chunk])
        loss = ((torch.nn.functional.cosine_similarity(u, v) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True, help="a `compare --train-sizes` output folder")
    ap.add_argument("--size", type=int, default=8, help="examples per class of the cells to take")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/setfit_recipe.json"))
    args = ap.parse_args()
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from transferkit.modeling.resolve import resolve_model
    torch.set_num_threads(args.threads)
    with open(args.grid / "cells.csv", newline="", encoding="utf-8") as f:
        cells = [r for r in csv.DictReader(f)
                 if r["variant"] == "setfit" and int(r["size"]) == args.size and r["status"] == "ok"]
    if not cells:
        sys.exit(f"no setfit cell at {args.size} per class in {args.grid / 'cells.csv'}")
    base = resolve_model("minilm-l6").path
    tok = AutoTokenizer.from_pretrained(base)
    test_x, test_y = read(args.grid / "data" / "test.csv")
    rows = []
    for cell in cells:
        seed = int(cell["seed"])
        train_x, train_y = read(args.grid / "data" / f"n{args.size}-s{seed}" / "train.csv")
        names = sorted(set(train_y))
        for v in VARIANTS:
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = AutoModel.from_pretrained(base)
            if v["rounds"]:
                pair_stage(model, tok, train_x, [names.index(y) for y in train_y], v["rounds"], v["lr"],
                           v.get("epochs", 1), seed)
            head = LogisticRegression(C=1.0, max_iter=2000).fit(vectors(model, tok, train_x), train_y)
            acc = float((head.predict(vectors(model, tok, test_x)) == np.array(test_y)).mean())
            rows.append({"seed": seed, "variant": v["name"], "accuracy": round(100 * acc, 1),
                         "transferkit_setfit": round(100 * float(cell["accuracy"]), 1),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    seeds = " | ".join("seed " + c["seed"] for c in cells)
    print(f"\n| variant | {seeds} | mean |\n|---|" + "---:|" * (len(cells) + 1))
    for v in [{"name": "transferkit setfit (the grid's cell)"}] + VARIANTS:
        accs = ([float(c["accuracy"]) * 100 for c in cells] if v["name"].startswith("transferkit")
                else [r["accuracy"] for r in rows if r["variant"] == v["name"]])
        print(f"| {v['name']} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {sum(accs) / len(accs):.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"grid": str(args.grid), "size": args.size, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
