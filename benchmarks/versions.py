"""The same fine-tuning run on two versions of transferkit: training samples/s and test metrics.

A restructure must not cost speed or move results. This runs the embedded default (`transferkit demo`:
LoRA on MiniLM-L6 and movie-sentences, one epoch, seed 42) from this checkout and from an older commit
(its `src/` exported with `git archive` into a temporary folder), alternating the two and repeating,
each run in its own interpreter with PYTHONPATH pointing at that version's source. Reported per
version: the median training samples/s (metrics.json train.samples_per_s: optimizer steps only), the
test accuracy and macro F1 (identical across repeats when the version is deterministic), and the ratio.

Usage:
    python benchmarks/versions.py --baseline 25dc84b            # the commit before the run object and tasks
    python benchmarks/versions.py --baseline 25dc84b --repeats 3 --method full
    python benchmarks/versions.py --baseline 25dc84b --quick    # 300 training steps cut to 30: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, ratio, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, torch
torch.set_num_threads({threads})
import transferkit
from transferkit.recipes.demo import demo_config
cfg = demo_config({out!r})
cfg.method.name = {method!r}
cfg.train.progress = False
if {max_steps!r}:
    cfg.train.max_steps = {max_steps!r}
result = transferkit.finetune(cfg)
m = result.metrics
print("RESULT " + json.dumps({{"file": transferkit.__file__, "samples_per_s": m["train"]["samples_per_s"],
      "accuracy": m["test"]["accuracy"], "f1_macro": m["test"]["f1_macro"], "steps": m["train"]["steps"]}}))
"""


def export_source(ref: str, dest: Path) -> Path:
    """`ref`'s src/ folder, unpacked under `dest`; returns the folder to put on PYTHONPATH."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_once(src: Path, method: str, threads: int, max_steps: int | None, workdir: Path) -> dict:
    out = tempfile.mkdtemp(dir=workdir, prefix="run-")
    os.rmdir(out)  # finetune wants a new or empty output folder
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = CHILD.format(threads=threads, out=out, method=method, max_steps=max_steps)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=workdir)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"run from {src} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    if not res["file"].startswith(str(src)):
        raise SystemExit(f"the child imported {res['file']}, not the version under {src}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="git commit (or tag) of the older version")
    p.add_argument("--method", default="lora", help="fine-tuning method (default: lora, as the demo)")
    p.add_argument("--repeats", type=int, default=2, help="runs per version, alternating (default 2)")
    add_common_args(p, "versions")
    args = p.parse_args()
    max_steps = 30 if args.quick else None
    with tempfile.TemporaryDirectory(prefix="transferkit-versions-") as tmp:
        tmp_path = Path(tmp)
        versions = {f"baseline {args.baseline}": export_source(args.baseline, tmp_path / "baseline"),
                    "this checkout": ROOT / "src"}
        results: dict[str, list[dict]] = {name: [] for name in versions}
        for i in range(args.repeats):
            order = list(versions) if i % 2 == 0 else list(versions)[::-1]  # alternate who meets the warmer machine
            for name in order:
                res = run_once(versions[name], args.method, args.threads, max_steps, tmp_path)
                print(f"{name}: {res['samples_per_s']:.1f} samples/s, accuracy {res['accuracy']:.4f}", flush=True)
                results[name].append(res)
    summary = {name: {"samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                      "accuracy": sorted({r["accuracy"] for r in runs}),
                      "f1_macro": sorted({r["f1_macro"] for r in runs}), "steps": runs[0]["steps"]}
               for name, runs in results.items()}
    base, ours = (summary[n] for n in versions)
    rows = [[n, s["steps"], s["samples_per_s"], ", ".join(f"{a:.4f}" for a in s["accuracy"]),
             ", ".join(f"{a:.4f}" for a in s["f1_macro"])] for n, s in summary.items()]
    print_table(["version", "steps", "samples/s (median)", "test accuracy", "macro F1"], rows)
    print(f"samples/s ratio (this checkout / baseline): {ratio(ours['samples_per_s'], base['samples_per_s']):.3f}")
    write_json(args.out, {"method": args.method, "baseline": args.baseline, "repeats": args.repeats,
                          "quick": args.quick, "summary": summary, "runs": results,
                          "environment": environment(args.threads)})


if __name__ == "__main__":
    main()
