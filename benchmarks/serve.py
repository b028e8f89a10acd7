"""HTTP serving on loopback: `transferkit serve` against the server a user would otherwise write.

Eight tasks (cut from the bundled movie sentences as in many_adapters.py: 2 to 5 labels, LoRA on
MiniLM-L6 for a few steps; speed does not depend on how well they are trained). Three servers,
each a separate process on 127.0.0.1, measured in one invocation on the same texts:

    (a) one    `transferkit serve` with one task, every request to it
    (b) eight  `transferkit serve` with the eight tasks, requests spread uniformly: by default each run on
               its gated onnxruntime graph (inference/run_backend.py), alone, where that is its fastest
               backend; `eight-torch` is the same with `--backend torch` (all eight on one shared base in
               mixed batches: the server before the run backends)
    (c) naive  eight FastAPI processes, one per task, each running `transformers.pipeline` on its
               own merged model (`transferkit export`), one request at a time

Each request carries one text. A client in this process keeps C requests in flight (C = 1, 16, 64)
for a bounded number of requests and seconds, and reports requests/s, texts/s and p50/p99 latency;
after the runs, the resident memory of each server's processes. Every answer is checked against
the offline prediction of the same run (`Predictor.from_run`, probabilities to 1e-4).

Targets (issue 10): (b) keeps >= 70% of (a)'s texts/s; (b) at C=16 is >= 4x (c)'s texts/s; RSS of
(b) <= 1.3x (a) and <= 0.25x (c)'s eight processes together. Before the servers start, the same texts
run in this process without HTTP (`bound`): one text per forward on a merged model, as (c) works,
against 16 mixed-task texts per forward on the shared encoder, as (b) works at C=16. Their ratio is
the most batching can buy on this machine, so it bounds (b)/(c) for any server here.

Usage:
    python benchmarks/serve.py                 # ~10 minutes on 2 cores
    python benchmarks/serve.py --quick         # 2 tasks, few requests: a smoke run, not a measurement
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, ratio, write_json  # noqa: E402
from many_adapters import make_tasks  # noqa: E402

NAIVE_APP = """
import sys, threading
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline
clf = pipeline("text-classification", model=sys.argv[1], trust_remote_code=True, top_k=None)
lock = threading.Lock()
app = FastAPI()
class Req(BaseModel):
    inputs: str
@app.post("/predict")
def predict(req: Req):
    with lock:  # one request at a time, as a pipeline per process serves
        return clf(req.inputs)
@app.get("/health")
def health():
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(tasks: list[tuple[str, Path, int]], workdir: Path, steps: int) -> dict[str, Path]:
    from transferkit import api
    from transferkit.config.finetune import RunConfig
    runs = {}
    for name, folder, _ in tasks:
        out = workdir / "runs" / name
        if not (out / "run.json").is_file():
            cfg = RunConfig()
            cfg.data.data = None
            cfg.data.train, cfg.data.validation, cfg.data.test = (str(folder / f"{p}.csv")
                                                                   for p in ("train", "validation", "test"))
            cfg.method.name, cfg.output_dir = "lora", str(out)
            cfg.train.max_steps, cfg.train.epochs, cfg.train.progress = steps, 1, False
            api.finetune(cfg)
        runs[name] = out
    return runs


def wait_healthy(port: int, procs: list[subprocess.Popen], timeout: float = 600) -> None:
    import httpx
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a server exited while starting:\n" + "\n".join(
                (p.stderr.read() or "")[-2000:] for p in procs if p.poll() is not None))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on port {port} did not start in {timeout} s")


def rss_mb(procs: list[subprocess.Popen]) -> float:
    import psutil
    total = 0
    for p in procs:
        try:
            total += psutil.Process(p.pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def load(targets: list[tuple[str, dict]], concurrency: int, n_requests: int, max_seconds: float,
               check: Any) -> dict[str, float]:
    """Send `targets[i % len]` (url, json) with `concurrency` in flight; latency per request."""
    import httpx
    latencies: list[float] = []
    bad = 0
    next_i = 0
    t_start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency + 8)) as client:
        async def worker() -> None:
            nonlocal next_i, bad
            while next_i < n_requests and time.perf_counter() - t_start < max_seconds:
                i = next_i
                next_i += 1
                url, body = targets[i % len(targets)]
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or not check(i % len(targets), r.json()):
                    bad += 1
        await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t_start
    lat = sorted(latencies)
    return {"requests": len(lat), "requests_per_s": len(lat) / wall, "texts_per_s": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "wrong_or_failed": bad}


def bound(runs: dict[str, Path], names: list[str], texts: list[str], threads: int) -> dict[str, float]:
    """What batching can buy on this machine, without HTTP: texts/s of (c)'s work (one text per forward
    on a merged model) and of (b)'s (16 texts of mixed tasks per forward on the shared encoder). Their
    ratio bounds (b)/(c) at concurrency 16 for any server here: HTTP only adds cost to both."""
    import torch

    from transferkit.inference import Predictor
    torch.set_num_threads(threads)
    merged, shared = Predictor.from_run(runs[names[0]], backend="torch"), Predictor.from_runs(runs)
    sample = texts[:128]
    rng = random.Random(1)
    tags = [names[rng.randrange(len(names))] for _ in sample]

    def rate(fn: Any) -> float:
        fn(sample[:16], tags[:16])  # warm-up
        t0 = time.perf_counter()
        fn(sample, tags)
        return len(sample) / (time.perf_counter() - t0)
    one = rate(lambda xs, _: [merged.predict_proba([x]) for x in xs])
    mixed = rate(lambda xs, ts: [shared.predict(xs[i:i + 16], adapters=ts[i:i + 16]) for i in range(0, len(xs), 16)])
    return {"merged_one_at_a_time": one, "shared_mixed_16": mixed, "ratio": mixed / one}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="LoRA training steps per task")
    p.add_argument("--requests", type=int, default=600, help="requests per server and concurrency")
    p.add_argument("--seconds", type=float, default=60, help="time bound per server and concurrency")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "transferkit-serve-bench")
    add_common_args(p, "serve")
    args = p.parse_args()
    if args.quick:
        args.tasks, args.requests, args.seconds = 2, 60, 20
    levels = (1, 16, 64)
    tasks = make_tasks(args.tasks, args.workdir)
    runs = train(tasks, args.workdir, args.steps)
    names = list(runs)
    import pandas as pd

    from transferkit import api
    from transferkit.inference import Predictor
    texts = [str(t) for t in pd.read_csv(tasks[0][1] / "test.csv")["text"]]
    texts = (texts * (1 + 400 // len(texts)))[:400]
    rng = random.Random(0)
    plan = [(names[rng.randrange(len(names))], texts[i]) for i in range(len(texts))]  # (b)'s mixed traffic
    offline = {n: {} for n in names}
    for n in names:
        pred = Predictor.from_run(runs[n])
        want = sorted({t for m, t in plan if m == n} | set(texts))
        for t, row in zip(want, pred.predict(want)):
            offline[n][t] = row["probs"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, Any] = {"bound": bound(runs, names, texts, args.threads)}
    print(f"in-process bound: one text at a time on one merged run {results['bound']['merged_one_at_a_time']:.1f} "
          f"texts/s, 16 texts of {len(names)} tasks per pass on the shared encoder "
          f"{results['bound']['shared_mixed_16']:.1f} texts/s ({results['bound']['ratio']:.2f}x)", flush=True)

    def serve(models: list[str], extra: list[str]) -> tuple[int, list[subprocess.Popen]]:
        port = free_port()
        cmd = [sys.executable, "-m", "transferkit", "serve", "--port", str(port), "--max-queue", "4096", *extra]
        for m in models:
            cmd += ["--adapter", f"{m}={runs[m]}"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_healthy(port, [proc])
        return port, [proc]

    def ours_check(targets: list[tuple[str, dict]]) -> Any:
        def check(i: int, body: dict) -> bool:
            name, text = targets[i][1]["model"], targets[i][1]["input"]
            got = body["data"][0]["probs"]
            want = offline[name][text]
            return all(abs(g - want[lab]) < 1e-4 for g, lab in zip(got, want))
        return check

    for variant, models, extra in (("one", names[:1], []), ("eight-torch", names, ["--backend", "torch"]),
                                   ("eight", names, [])):
        port, procs = serve(models, extra)
        url = f"http://127.0.0.1:{port}/v1/classify"
        traffic = [(names[0], t) for t in texts] if variant == "one" else plan
        targets = [(url, {"model": m, "input": t, "truncate": True}) for m, t in traffic]  # cut as offline
        for c in levels:
            r = asyncio.run(load(targets, c, args.requests, args.seconds, ours_check(targets)))
            results[f"{variant}@{c}"] = r
            print(f"{variant} C={c}: {r['texts_per_s']:.1f} texts/s, p50 {r['p50_ms']:.0f} ms", flush=True)
        results[f"{variant}_rss_mb"] = rss_mb(procs)
        stop(procs)

    exported = {}
    for n in names:
        out = args.workdir / "exported" / n
        if not (out / "config.json").is_file():
            import shutil
            shutil.rmtree(out, ignore_errors=True)
            api.export(runs[n], out)
        exported[n] = out
    ports, procs = {}, []
    for n in names:
        ports[n] = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", NAIVE_APP, str(exported[n]), str(ports[n])], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        for n in names:
            wait_healthy(ports[n], procs)
        targets = [(f"http://127.0.0.1:{ports[m]}/predict", {"inputs": t}) for m, t in plan]

        def naive_check(i: int, body: Any) -> bool:
            name, text = plan[i]
            want = offline[name][text]
            rows = body[0] if body and isinstance(body[0], list) else body  # pipeline versions differ in nesting
            return all(abs(r["score"] - want[r["label"]]) < 1e-4 for r in rows)
        for c in levels:
            r = asyncio.run(load(targets, c, args.requests, args.seconds, naive_check))
            results[f"naive@{c}"] = r
            print(f"naive C={c}: {r['texts_per_s']:.1f} texts/s, p50 {r['p50_ms']:.0f} ms", flush=True)
        results["naive_rss_mb"] = rss_mb(procs)
    finally:
        stop(procs)

    rows = [[f"{v} ({len(names) if v != 'one' else 1} task{'s' if v != 'one' else ''})", c,
             f"{results[f'{v}@{c}']['requests_per_s']:.1f}", f"{results[f'{v}@{c}']['p50_ms']:.0f}",
             f"{results[f'{v}@{c}']['p99_ms']:.0f}", results[f"{v}@{c}"]["wrong_or_failed"],
             f"{results[f'{v}_rss_mb']:.0f}"] for v in ("one", "eight-torch", "eight", "naive") for c in levels]
    print_table(["server", "concurrency", "texts/s", "p50 ms", "p99 ms", "wrong/failed", "RSS MB"], rows)
    summary = {
        "eight_vs_one_texts_per_s@16": ratio(results["eight@16"]["texts_per_s"], results["one@16"]["texts_per_s"]),
        "eight_vs_naive_texts_per_s@16": ratio(results["eight@16"]["texts_per_s"], results["naive@16"]["texts_per_s"]),
        "eight_vs_eight_torch_texts_per_s@16": ratio(results["eight@16"]["texts_per_s"],
                                                     results["eight-torch@16"]["texts_per_s"]),
        "eight_vs_one_rss": ratio(results["eight_rss_mb"], results["one_rss_mb"]),
        "eight_vs_naive_rss": ratio(results["eight_rss_mb"], results["naive_rss_mb"]),
        "in_process_bound_eight_vs_naive": results["bound"]["ratio"],
    }
    for k, v in summary.items():
        print(f"{k}: {v:.2f}")
    write_json(args.out, {"tasks": len(names), "levels": levels, "results": results, "summary": summary,
                          "quick": args.quick, "environment": environment(args.threads)})


if __name__ == "__main__":
    main()
