"""Ten task models on one base: LoRA adapters on a shared encoder vs ten full fine-tuned models.

Ten tasks are cut from the bundled movie sentences, with 2 to 5 labels (2: sentiment; 3-5:
sentence-length buckets) and 160 training rows each; every task is trained twice on MiniLM-L6,
with LoRA and with full fine-tuning, for only `--steps` optimizer steps. Accuracy is not the
point here (these runs are barely trained); the models have the real sizes and shapes.

Measured:
  disk     bytes of the saved artefacts (adapter/ folders + the base once, vs ten model/ folders)
  memory   resident memory added by loading and a first prediction per task, each in a fresh
           child process (RSS after - before):
           Predictor.from_runs(10 LoRA runs) vs ten Predictor.from_run(full run)
  speed    in this one process, on the same texts, each text assigned one of the ten tasks at random:
             mixed     AdapterPredictor, strategy="mixed": one encoder pass per batch for all tasks
             grouped   AdapterPredictor, strategy="grouped": texts grouped by task, adapter switched per group
             separate  ten separate Predictors (each LoRA merged into its own copy of the base)
           as one large call, and as a stream of small mixed requests (a server's view)
  check    largest probability difference between `mixed` and the separate merged models

Usage:
    python benchmarks/many_adapters.py            # trains the 20 runs once into --workdir, then measures
    python benchmarks/many_adapters.py --quick    # 4 tasks, fewer texts: a smoke run, not a measurement
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, quiet_libraries, ratio, set_threads, write_json  # noqa: E402

TRAIN, EVAL = 160, 32  # rows per task


def make_tasks(n_tasks: int, workdir: Path) -> list[tuple[str, Path, int]]:
    """(name, folder with train/validation/test CSVs, number of labels) per task."""
    import pandas as pd

    import transferkit.data.bundled  # noqa: F401  (registers the bundled datasets)
    from transferkit.core.registry import DATASETS
    df = DATASETS.get("movie-sentences").load()
    texts, labels = [str(t) for t in df["text"]], [str(x) for x in df["label"]]
    tasks = []
    for k in range(n_tasks):
        n_labels = 2 + k % 4
        lo = k * (TRAIN + 2 * EVAL)
        rows = list(range(lo, lo + TRAIN + 2 * EVAL))
        if n_labels == 2:
            y = [labels[i] for i in rows]
        else:  # length buckets: cut points at the quantiles of this task's rows
            lens = sorted(len(texts[i]) for i in rows)
            cuts = [lens[len(lens) * j // n_labels] for j in range(1, n_labels)]
            y = [f"len{sum(len(texts[i]) >= c for c in cuts)}" for i in rows]
        folder = workdir / "data" / f"task{k}"
        folder.mkdir(parents=True, exist_ok=True)
        parts = {"train": (0, TRAIN), "validation": (TRAIN, TRAIN + EVAL), "test": (TRAIN + EVAL, TRAIN + 2 * EVAL)}
        for part, (a, b) in parts.items():
            pd.DataFrame({"text": [texts[i] for i in rows[a:b]], "label": y[a:b]}).to_csv(folder / f"{part}.csv",
                                                                                         index=False)
        tasks.append((f"task{k}", folder, n_labels))
    return tasks


def train_runs(tasks: list[tuple[str, Path, int]], workdir: Path, steps: int) -> dict[str, dict[str, Path]]:
    """method -> task -> run directory; finished runs in `workdir` are reused."""
    from transferkit import api
    from transferkit.config.finetune import RunConfig
    runs: dict[str, dict[str, Path]] = {"lora": {}, "full": {}}
    for method in runs:
        for name, folder, _ in tasks:
            out = workdir / "runs" / method / name
            if not (out / "run.json").is_file():
                import shutil
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                cfg = RunConfig()
                cfg.data.data = None
                cfg.data.train, cfg.data.validation, cfg.data.test = (str(folder / f"{p}.csv")
                                                                       for p in ("train", "validation", "test"))
                cfg.method.name, cfg.output_dir = method, str(out)
                cfg.train.max_steps, cfg.train.epochs, cfg.train.progress = steps, 1, False
                api.finetune(cfg)
                print(f"trained {method} {name} in {time.perf_counter() - t0:.1f} s", flush=True)
            runs[method][name] = out
    return runs


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_memory(kind: str, runs: dict[str, str]) -> dict[str, float]:
    """Run in a fresh process: RSS before and after loading `runs` the `kind` way."""
    import gc

    import torch

    import transferkit  # noqa: F401
    from transferkit.inference import Predictor
    quiet_libraries()
    torch.set_num_threads(1)
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    if kind == "shared":
        shared = Predictor.from_runs(runs, device="cpu")
        predict = {n: (lambda tx, n=n: shared.predict(tx, adapter=n)) for n in runs}
    else:
        separate = {n: Predictor.from_run(r, device="cpu", backend="torch") for n, r in runs.items()}
        predict = {n: separate[n].predict for n in runs}
    seconds = time.perf_counter() - t0
    gc.collect()
    loaded = rss_mb()
    for fn in predict.values():  # weights are memory-mapped: serving touches every page
        fn(["a first sentence to label", "and a second, somewhat longer one"])
    gc.collect()
    return {"rss_before_mb": round(before, 1), "load_seconds": round(seconds, 2),
            "rss_delta_loaded_mb": round(loaded - before, 1), "rss_delta_mb": round(rss_mb() - before, 1)}


def measure_memory(kind: str, runs: dict[str, Path]) -> dict[str, float]:
    arg = json.dumps({k: str(v) for k, v in runs.items()})
    proc = subprocess.run([sys.executable, __file__, "--child-memory", kind, arg], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory child ({kind}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds over `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "many_adapters")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per training run")
    p.add_argument("--n", type=int, default=500, help="texts per throughput measurement")
    p.add_argument("--request-size", type=int, default=16, help="texts per request in the stream scenario")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/transferkit-bench-many-adapters"))
    p.add_argument("--child-memory", nargs=2, metavar=("KIND", "RUNS_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory[0], json.loads(args.child_memory[1]))))
        return
    if args.quick:
        args.tasks, args.n, args.repeats = 4, 200, 1
    set_threads(args.threads)
    quiet_libraries()
    t_start = time.perf_counter()
    tasks = make_tasks(args.tasks, args.workdir)
    runs = train_runs(tasks, args.workdir, args.steps)
    lora, full = runs["lora"], runs["full"]

    # disk
    from transferkit.modeling.resolve import resolve_model
    base_bytes = folder_bytes(Path(resolve_model("minilm-l6").path))
    adapter_bytes = sum(folder_bytes(r / "adapter") for r in lora.values())
    adapter_weight_bytes = sum((r / "adapter" / "adapter_model.safetensors").stat().st_size for r in lora.values())
    full_bytes = sum(folder_bytes(r / "model") for r in full.values())
    disk = {"base_model_bytes": base_bytes, "lora_adapters_bytes": adapter_bytes,
            "lora_total_bytes": base_bytes + adapter_bytes, "full_models_bytes": full_bytes,
            "full_vs_lora_total": ratio(full_bytes, base_bytes + adapter_bytes),
            "lora_adapter_weights_bytes": adapter_weight_bytes, "mean_adapter_bytes": adapter_bytes // len(lora), "mean_full_model_bytes": full_bytes // len(full)}

    # memory, each in a fresh process
    memory = {"shared_lora": measure_memory("shared", lora), "separate_full": measure_memory("separate", full)}
    memory["separate_vs_shared_rss"] = ratio(memory["separate_full"]["rss_delta_mb"], memory["shared_lora"]["rss_delta_mb"])

    # speed, all variants in this process on the same texts
    from transferkit.inference import Predictor
    from transferkit.inference import AdapterPredictor
    mixed = AdapterPredictor.from_runs(lora, device="cpu", strategy="mixed")
    grouped = AdapterPredictor(mixed.model, mixed.tokenizer, device="cpu", strategy="grouped")  # same weights
    separate = {n: Predictor.from_run(r, device="cpu", backend="torch") for n, r in lora.items()}
    import transferkit.data.bundled  # noqa: F401
    from transferkit.core.registry import DATASETS
    pool = [str(t) for t in DATASETS.get("movie-sentences").load()["text"]]
    texts = pool[-args.n:]  # rows no task trained on
    rng = random.Random(0)
    names = [rng.choice(list(lora)) for _ in texts]

    def run_separate(tx: list[str], nm: list[str]) -> list[dict]:
        out: list[Any] = [None] * len(tx)
        for name in dict.fromkeys(nm):
            idx = [i for i, x in enumerate(nm) if x == name]
            for i, r in zip(idx, separate[name].predict([tx[i] for i in idx])):
                out[i] = r
        return out

    def stream(fn: Callable[[list[str], list[str]], Any]) -> Callable[[], list]:
        k = args.request_size
        return lambda: [r for a in range(0, len(texts), k) for r in fn(texts[a:a + k], names[a:a + k])]

    variants = {
        "mixed": lambda tx, nm: mixed.predict(tx, adapters=nm),
        "grouped": lambda tx, nm: grouped.predict(tx, adapters=nm),
        "separate": run_separate,
    }
    speed: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for fn in variants.values():  # one warm-up pass each
        fn(texts[:64], names[:64])
    for scenario in ("one_call", "stream"):
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):  # variants interleaved, so a change in machine load hits all of them
            for v, fn in variants.items():
                call = (lambda f=fn: f(texts, names)) if scenario == "one_call" else stream(fn)
                sec, results[(scenario, v)] = timed(call, 1)
                times[v].append(sec)
        for v in variants:
            speed[f"{scenario}/{v}"] = round(len(texts) / statistics.median(times[v]), 1)
    diff = max(abs(a["probs"][k] - b["probs"][k]) for a, b in zip(results[("one_call", "mixed")],
                                                                  results[("one_call", "separate")]) for k in a["probs"])
    agree = sum(a["label"] == b["label"] for a, b in zip(results[("one_call", "mixed")], results[("stream", "separate")]))

    print(f"\n{len(lora)} tasks ({', '.join(str(t[2]) for t in tasks)} labels), MiniLM-L6, {args.steps} steps each "
          f"(barely trained: accuracy is not the point)")
    print_table(["artefacts on disk", "MB", "vs LoRA"], [
        ["base + LoRA adapters", round((base_bytes + adapter_bytes) / 1e6, 1), 1.0],
        ["  of which adapter folders", round(adapter_bytes / 1e6, 2), None],
        ["  of which adapter weights", round(adapter_weight_bytes / 1e6, 2), None],
        ["full fine-tuned models", round(full_bytes / 1e6, 1), disk["full_vs_lora_total"]]])
    print()
    print_table(["loaded (fresh process)", "RSS added MB", "(just loaded)", "load s", "vs shared"], [
        ["one base + LoRA adapters", memory["shared_lora"]["rss_delta_mb"], memory["shared_lora"]["rss_delta_loaded_mb"],
         memory["shared_lora"]["load_seconds"], 1.0],
        ["separate full models", memory["separate_full"]["rss_delta_mb"], memory["separate_full"]["rss_delta_loaded_mb"],
         memory["separate_full"]["load_seconds"], memory["separate_vs_shared_rss"]]])
    print("(RSS added once every model has labelled two sentences: safetensors weights are memory-mapped, so\n"
          " pages count only once touched; 'just loaded' is before any prediction)")
    print()
    rows = []
    for scenario, label in (("one_call", f"one call of {len(texts)} mixed texts"),
                            ("stream", f"requests of {args.request_size} mixed texts")):
        for v in variants:
            rows.append([label if v == "mixed" else "", v, speed[f"{scenario}/{v}"],
                         ratio(speed[f"{scenario}/mixed"], speed[f"{scenario}/{v}"])])
    print_table(["workload", "variant", "texts/s", "mixed vs this"], rows)
    print(f"\nmixed vs separate merged models: max |prob diff| {diff:.2e}, labels agree on {agree}/{len(texts)}")
    print(f"(shared machine: load average {os.getloadavg()[0]:.2f} at the end; medians of {args.repeats} passes)")
    write_json(args.out, {
        "benchmark": "many_adapters", "env": environment(args.threads), "quick": args.quick,
        "tasks": [{"name": n, "labels": k} for n, _, k in tasks], "steps_per_run": args.steps,
        "texts": len(texts), "request_size": args.request_size, "repeats": args.repeats,
        "disk": disk, "memory": memory, "texts_per_s": speed,
        "mixed_speedup": {sc: {v: ratio(speed[f"{sc}/mixed"], speed[f"{sc}/{v}"]) for v in variants if v != "mixed"}
                          for sc in ("one_call", "stream")},
        "check": {"max_prob_diff_mixed_vs_separate": diff, "label_agreement": agree},
        "seconds_total": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    main()
