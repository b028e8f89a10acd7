"""The CUDA path, run: train and predict on a GPU (bf16 autocast, fused AdamW) and check it against
a CPU run of the same seed.

Two `transferkit finetune` runs of the same config (LoRA on the first --limit training sentences of
the bundled movie sentences, one epoch, seed 42), each in its own process: one with the GPU hidden
(CUDA_VISIBLE_DEVICES="", fp32 on the CPU), one on the GPU (train.precision=auto: bf16 autocast where
the GPU has it). Then both runs predict the test split on the GPU and on the CPU.

Checks (exit 1 when one fails):
- the GPU run really ran on CUDA, under bf16 autocast, with the fused AdamW kernel;
- both runs took the same number of optimizer steps;
- test accuracy of the GPU run within --tolerance points of the CPU run's (bf16 and another kernel
  order change the trajectory a little, not the result);
- the GPU run's predictions on CUDA and on the CPU agree on >= 99% of test texts (same weights).
It prints samples/s of both runs and sentences/s of prediction on each device.

On a machine without CUDA it says so and exits 0 (`--cpu-pair` runs the same pipeline with both runs
on the CPU, to check the script itself).

    python benchmarks/gpu_check.py               # on a GPU machine
    python benchmarks/gpu_check.py --limit 500   # quicker
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, movie_splits, print_table, write_json  # noqa: E402


def finetune(out: Path, limit: int, device: str, epochs: float) -> dict[str, Any]:
    """One `transferkit finetune` child on `device` (cpu: the GPU hidden); its metrics and log."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "transferkit", "finetune", "--data", "movie-sentences", "--method", "lora",
           "--epochs", str(epochs), "--seed", "42", "--output-dir", str(out), f"data.limit={limit}",
           "train.progress=false", "train.precision=auto"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"finetune on {device} failed (exit {done.returncode})")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"metrics": metrics, "log": done.stderr, "wall_s": round(wall, 1)}


def predict_rate(run: Path, texts: list[str], device: str) -> tuple[float, Any]:
    """Sentences/s of `Predictor` on `device` over `texts` (after a warm-up pass), and its probabilities."""
    from transferkit.inference import Predictor
    p = Predictor.from_run(run, device=device)
    p.predict_proba(texts[:64])
    if device == "cuda":
        import torch
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    probs = p.predict_proba(texts)
    if device == "cuda":
        import torch
        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - t0), probs


def fused_adamw_on(device: str) -> bool:
    """Whether the fused AdamW kernel (what optim.make_optimizer asks for) takes a step on `device`."""
    import torch

    from transferkit.training.optim import make_optimizer
    w = torch.nn.Parameter(torch.ones(4, device=device))
    opt = make_optimizer([{"params": [w], "lr": 1e-3}])
    w.grad = torch.ones_like(w)
    opt.step()
    return bool(opt.defaults.get("fused"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=2000, help="training sentences (default 2000)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--tolerance", type=float, default=3.0, help="test accuracy points GPU may differ from CPU")
    ap.add_argument("--cpu-pair", action="store_true", help="no GPU: run both on the CPU (checks this script)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_check.json")
    args = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available() and not args.cpu_pair:
        print("gpu_check: no CUDA device here; skipped (this is expected on CPU-only machines)")
        return 0
    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(torch.get_num_threads())
    env["gpu"] = torch.cuda.get_device_name(0) if gpu == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cpu_run = finetune(Path(tmp) / "cpu", args.limit, "cpu", args.epochs)
        gpu_run = finetune(Path(tmp) / "gpu", args.limit, gpu, args.epochs)
        texts = list(movie_splits(42).test.texts)
        rate_gpu, probs_gpu = predict_rate(Path(tmp) / "gpu", texts, gpu)
        rate_cpu, probs_cpu = predict_rate(Path(tmp) / "gpu", texts, "cpu")
    a, b = cpu_run["metrics"], gpu_run["metrics"]
    acc_cpu, acc_gpu = 100 * a["test"]["accuracy"], 100 * b["test"]["accuracy"]
    n_test = len(texts)
    stderr_pts = 100 * math.sqrt(max(acc_cpu / 100 * (1 - acc_cpu / 100), 1e-12) / n_test)
    agreement = float((probs_gpu.argmax(-1) == probs_cpu.argmax(-1)).mean())
    log = gpu_run["log"]
    checks = {
        "gpu run on cuda": gpu == "cpu" or ", cuda" in log,
        "bf16 autocast": gpu == "cpu" or "bf16 autocast" in log,
        "fused AdamW": fused_adamw_on(gpu),
        "same optimizer steps": a["train"]["steps"] == b["train"]["steps"],
        f"test accuracy within {args.tolerance:g} points": abs(acc_gpu - acc_cpu) <= args.tolerance,
        "predictions on GPU and CPU agree >= 99%": agreement >= 0.99,
    }
    print_table(["run", "device", "steps", "samples/s", "test acc %", "wall s"],
                [["cpu (fp32)", "cpu", a["train"]["steps"], a["train"]["samples_per_s"], f"{acc_cpu:.2f}",
                  cpu_run["wall_s"]],
                 [f"{gpu} (train.precision=auto)", gpu, b["train"]["steps"], b["train"]["samples_per_s"],
                  f"{acc_gpu:.2f}", gpu_run["wall_s"]]])
    print(f"\npredict {n_test} test sentences: {rate_gpu:.0f}/s on {gpu}, {rate_cpu:.0f}/s on cpu; "
          f"argmax agreement {agreement:.2%}")
    print(f"accuracy difference {acc_gpu - acc_cpu:+.2f} points (one standard error {stderr_pts:.2f})")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    write_json(args.out, {"benchmark": "gpu_check", "environment": env, "cpu_pair": args.cpu_pair,
                          "settings": {"limit": args.limit, "epochs": args.epochs, "method": "lora", "seed": 42},
                          "cpu": {"train": a["train"], "test": a["test"]}, "gpu": {"train": b["train"], "test": b["test"]},
                          "predict_per_s": {gpu: round(rate_gpu, 1), "cpu": round(rate_cpu, 1)},
                          "agreement": agreement, "accuracy_standard_error_points": stderr_pts, "checks": checks})
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
