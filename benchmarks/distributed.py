"""One process against two: the same run (data, seed, global batch) trained by 1 process with 2 threads
and by 2 gloo processes with 1 thread each, and a 2-process run killed mid-way and resumed.

    one        transferkit finetune ... (OMP_NUM_THREADS=2)
    two        transferkit finetune ... --processes 2 (OMP_NUM_THREADS=1 per process)
    resumed    `two`, killed once its checkpoint passes --kill-at steps, then --resume'd with 2 processes

Every run: LoRA on the first --limit training sentences of the bundled movie sentences, seed 42,
one epoch, batch 16, checkpoints every 20 steps. Prints steps, test accuracy (with one standard error)
and samples/s; `two` and `resumed` should match `one` within a standard error and take the same steps.

    python benchmarks/distributed.py               # ~6 minutes on 2 cores
    python benchmarks/distributed.py --quick       # 400 sentences
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, write_json  # noqa: E402


TEST_ROWS = 1057  # the movie sentences' test split (seed 42; data.limit cuts the training split only)


def command(out: Path, limit: int, processes: int) -> list[str]:
    return [sys.executable, "-m", "transferkit", "finetune", "--data", "movie-sentences", "--method", "lora",
            "--epochs", "1", "--batch-size", "16", "--seed", "42", "--output-dir", str(out),
            "--processes", str(processes), f"data.limit={limit}", "train.progress=false",
            "train.checkpoint_steps=20", "train.early_stopping_patience=0"]


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd[1:])} failed with exit code {done.returncode}")
    return time.perf_counter() - t0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def killed_at(cmd: list[str], threads: int, state: Path, step: int) -> int:
    """Start `cmd` in its own process group and kill the group once the checkpoint reaches `step`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, )
    try:
        while proc.poll() is None:
            if state.is_file():
                try:
                    at = json.loads(state.read_text())["global_step"]
                except (ValueError, KeyError):
                    at = 0
                if at >= step:  # a crash of every process at once (torchrun's workers have sessions of their own)
                    for pid in [*descendants(proc.pid), proc.pid]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    proc.wait()
                    return at
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    raise SystemExit(f"the run finished before its checkpoint reached step {step}; lower --kill-at")


def summary(run_dir: Path, wall: float) -> dict[str, Any]:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"steps": m["train"]["steps"], "samples": m["train"]["samples"], "samples_per_s": m["train"]["samples_per_s"],
            "test_accuracy": m["test"]["accuracy"], "test_f1_macro": m["test"]["f1_macro"], "validation_accuracy": m["validation"]["accuracy"],
            "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "distributed")
    p.add_argument("--limit", type=int, default=2000, help="training sentences (default 2000)")
    p.add_argument("--kill-at", type=int, default=60, help="kill the resumed variant once its checkpoint reaches this step")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.kill_at = 400, 20
    env = environment(args.threads)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="distributed-bench-") as tmp:
        base = Path(tmp)
        print("one process, 2 threads ...", file=sys.stderr, flush=True)
        results["one (1 process x 2 threads)"] = summary(base / "one", run(command(base / "one", args.limit, 1), 2))
        print("two processes, 1 thread each ...", file=sys.stderr, flush=True)
        results["two (2 processes x 1 thread)"] = summary(base / "two", run(command(base / "two", args.limit, 2), 1))
        print(f"two processes, killed at step {args.kill_at}, resumed ...", file=sys.stderr, flush=True)
        cmd = command(base / "resumed", args.limit, 2)
        t0 = time.perf_counter()
        at = killed_at(cmd, 1, base / "resumed" / "checkpoints" / "last" / "state.json", args.kill_at)
        first = time.perf_counter() - t0
        resume = [*cmd[:cmd.index("--data")], "--resume", str(base / "resumed"), "--processes", "2"]
        results[f"two, killed at step {at}, resumed"] = summary(base / "resumed", first + run(resume, 1))
    one = results["one (1 process x 2 threads)"]
    n_test = TEST_ROWS
    se = math.sqrt(one["test_accuracy"] * (1 - one["test_accuracy"]) / n_test)
    print_table(["variant", "steps", "samples/s", "test acc %", "val acc %", "wall s"],
                [[k, r["steps"], r["samples_per_s"], f"{100 * r['test_accuracy']:.2f}",
                  f"{100 * r['validation_accuracy']:.2f}", r["wall_s"]] for k, r in results.items()])
    print(f"\none standard error of the test accuracy: {100 * se:.2f} points")
    checks = {k: {"same_steps": r["steps"] == one["steps"],
                  "within_one_se": abs(r["test_accuracy"] - one["test_accuracy"]) <= se}
              for k, r in results.items() if r is not one}
    for k, c in checks.items():
        print(f"{k}: same steps {c['same_steps']}, test accuracy within one standard error {c['within_one_se']}")
    write_json(args.out, {"benchmark": "distributed", "quick": args.quick, "environment": env,
                          "settings": {"limit": args.limit, "method": "lora", "batch_size": 16, "epochs": 1,
                                       "seed": 42, "checkpoint_steps": 20, "kill_at": args.kill_at},
                          "results": results, "test_accuracy_standard_error": se, "checks": checks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
