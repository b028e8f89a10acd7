"""Does `plan --models` rank encoders as fine-tuning does? LogME on frozen features against real fine-tuning.

For each bundled classification dataset and each candidate encoder, in one invocation:

    logme      `recipes.plan_models.score_model`: LogME on the pooled vectors of 1,000 training rows (what
               `plan --models` computes), with its cost in seconds
    finetuned  `transferkit.finetune --method full` on the first `--limit` training rows, `--epochs` epochs, each
               model at the method's defaults; test accuracy on the dataset's whole test split

Candidates: the two bundled encoders (minilm-l6, mpnet-base) and two low anchors: MiniLM-L6's architecture with
random weights (`model.init=random`) and a small BERT pretrained here from scratch for `--pretrain-steps` MLM steps
on the bundled Wikipedia summaries (MiniLM's tokenizer). The agreement is Kendall's tau between the LogME order and
the fine-tuned order, per dataset, and whether both put the same model first.

    python benchmarks/transferability.py                 # movie sentences and tweets, ~30 min on 2 cores
    python benchmarks/transferability.py --quick         # smoke run: 200 rows, no mpnet
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, quiet_libraries, set_threads, write_json  # noqa: E402

DATASETS = ("movie-sentences", "tweets-3class")


def scratch_bert(folder: Path, steps: int) -> str:
    """A 4-layer BERT pretrained from scratch for `steps` MLM steps on wiki-summaries, with MiniLM's tokenizer."""
    from transferkit import api
    from transferkit.modeling.resolve import resolve_model
    result = api.pretrain(objective="mlm", corpus=["wiki-summaries"], from_scratch=True, arch="bert", size="mini",
                          tokenizer=resolve_model("minilm-l6").path, max_steps=steps, batch_size=32, max_length=64,
                          output_dir=str(folder / "scratch-bert"), **{"train.progress": False})
    return str(Path(result.run_dir) / "model")


def candidates(args: argparse.Namespace, folder: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, model name, extra config) per candidate encoder."""
    out = [("minilm-l6", "minilm-l6", {}), ("minilm-l6 random init", "minilm-l6", {"model.init": "random"})]
    if not args.quick:
        out.insert(1, ("mpnet-base", "mpnet-base", {}))
    out.append(("bert-mini from scratch", scratch_bert(folder, 20 if args.quick else args.pretrain_steps), {}))
    return out


def measure(dataset: str, label: str, model: str, extra: dict[str, Any], args: argparse.Namespace,
            folder: Path) -> dict[str, Any]:
    from transferkit import api
    from transferkit.recipes.plan_models import score_model
    options = {"data": dataset, "limit": args.limit, "epochs": args.epochs, **extra}
    cfg = api.make_config(None, {api.SHORT_KEYS.get(k, k): v for k, v in {**options, "model": model}.items()})
    scored = score_model(cfg, model, sample_rows=args.rows)
    t0 = time.perf_counter()
    run = api.finetune(method="full", model=model, output_dir=str(folder / f"{dataset}-{label.replace(' ', '-')}"),
                       **{api.SHORT_KEYS.get(k, k): v for k, v in options.items()}, **{"train.progress": False})
    accuracy = run.metrics["test"]["accuracy"]
    row = {"dataset": dataset, "model": label, "logme": scored.score, "logme_seconds": scored.seconds,
           "rows_scored": scored.rows, "accuracy": round(accuracy, 4), "finetune_seconds": round(time.perf_counter() - t0)}
    print(f"{dataset} / {label}: LogME {scored.score:.4f} ({scored.seconds:.0f} s), full fine-tuning "
          f"{100 * accuracy:.1f}% ({row['finetune_seconds']} s)", flush=True)
    return row


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from scipy.stats import kendalltau
    tau = kendalltau([r["logme"] for r in rows], [r["accuracy"] for r in rows]).statistic
    first = max(rows, key=lambda r: r["logme"])["model"] == max(rows, key=lambda r: r["accuracy"])["model"]
    return {"kendall_tau": round(float(tau), 3), "same_best": first,
            "logme_order": [r["model"] for r in sorted(rows, key=lambda r: -r["logme"])],
            "finetuned_order": [r["model"] for r in sorted(rows, key=lambda r: -r["accuracy"])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "transferability")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--limit", type=int, default=2000, help="training rows fine-tuned on (default 2000)")
    p.add_argument("--rows", type=int, default=1000, help="training rows LogME scores (default 1000, as plan)")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--pretrain-steps", type=int, default=300)
    args = p.parse_args()
    if args.quick:
        args.limit, args.rows, args.epochs = 200, 200, 1
    set_threads(args.threads)
    quiet_libraries()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="transferability-") as tmp:
        folder = Path(tmp)
        models = candidates(args, folder)
        for dataset in args.datasets.split(","):
            rows += [measure(dataset, label, model, extra, args, folder) for label, model, extra in models]
    by_dataset = {d: agreement([r for r in rows if r["dataset"] == d]) for d in args.datasets.split(",")}
    print_table(["dataset", "model", "LogME", "LogME s", "full fine-tuning acc", "fine-tuning s"],
                [[r["dataset"], r["model"], f"{r['logme']:.4f}", r["logme_seconds"], f"{100 * r['accuracy']:.1f}%",
                  r["finetune_seconds"]] for r in rows])
    for d, a in by_dataset.items():
        print(f"{d}: Kendall tau {a['kendall_tau']}, same best model: {a['same_best']}")
    write_json(args.out, {"environment": environment(args.threads), "settings": vars(args) | {"out": str(args.out)},
                          "rows": rows, "agreement": by_dataset})


if __name__ == "__main__":
    main()
