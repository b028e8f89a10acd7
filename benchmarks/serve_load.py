"""A load test of `transferkit serve`: 10,000 requests mixed across 8 tasks, 10% of them bad.

Uses the 8 tasks of serve.py (trained there, or here on first use). One server process on
127.0.0.1; 16 requests in flight. Every tenth request is one of the bad kinds the server must
answer with a 4xx (unknown model, empty list, wrong types, a missing or extra field, malformed JSON,
too many texts, a text over the limit without truncate, a load outside the adapter root, a wrong
route for the run); the rest are good requests whose answers are checked against the offline
prediction. Reported: responses by status, 5xx count (must be 0), wrong good answers (must be 0),
and the server's RSS over the first and last thousand requests (must stay within 10%).

Usage:
    python benchmarks/serve_load.py                  # ~4 minutes on 2 cores
    python benchmarks/serve_load.py --requests 1000  # shorter
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, print_table, write_json  # noqa: E402
from many_adapters import make_tasks  # noqa: E402
from serve import free_port, stop, train, wait_healthy  # noqa: E402

BAD = [  # (route, body as raw bytes or JSON, expected status)
    ("/v1/classify", {"model": "no-such-task", "input": "x"}, 404),
    ("/v1/classify", {"model": "task0", "input": []}, 422),
    ("/v1/classify", {"model": "task0", "input": 7}, 422),
    ("/v1/classify", {"model": "task0", "input": ["ok", None]}, 422),
    ("/v1/classify", {"input": "x"}, 422),
    ("/v1/classify", {"model": "task0", "input": "x", "temperature": 1}, 422),
    ("/v1/classify", b'{"model": "task0", "input": ', 422),
    ("/v1/classify", {"model": "task0", "input": ["fine"] * 300}, 413),
    ("/predict", {"inputs": "good " * 400, "model": "task0"}, 413),
    ("/v1/ner", {"model": "task0", "input": "x"}, 422),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/etc"}, 400),
    ("/v1/load_lora_adapter", {"lora_name": "../x", "lora_path": "task0"}, 400),
]


async def run_load(url: str, plan: list[tuple[str, Any, int, Any]], concurrency: int, pid: int) -> dict[str, Any]:
    import httpx
    import psutil
    proc = psutil.Process(pid)
    statuses: Counter = Counter()
    unexpected: Counter = Counter()
    wrong = 0
    rss: list[tuple[int, float]] = []
    next_i = 0
    async with httpx.AsyncClient(timeout=120) as client:
        async def worker() -> None:
            nonlocal next_i, wrong
            while next_i < len(plan):
                i = next_i
                next_i += 1
                route, body, want, check = plan[i]
                if isinstance(body, bytes):
                    r = await client.post(url + route, content=body, headers={"content-type": "application/json"})
                else:
                    r = await client.post(url + route, json=body)
                statuses[r.status_code] += 1
                if r.status_code != want:
                    unexpected[f"{route} {r.status_code} (wanted {want})"] += 1
                elif check is not None and not check(r.json()):
                    wrong += 1
                if i % 100 == 0:
                    rss.append((i, proc.memory_info().rss / 2**20))
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return {"statuses": dict(statuses), "unexpected": dict(unexpected), "wrong": wrong, "rss": rss, "seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "transferkit-serve-bench")
    add_common_args(p, "serve_load")
    args = p.parse_args()
    if args.quick:
        args.requests, args.tasks = 500, 2
    import subprocess

    import pandas as pd

    from transferkit.inference import Predictor
    tasks = make_tasks(args.tasks, args.workdir)
    runs = train(tasks, args.workdir, args.steps)
    names = list(runs)
    texts = [str(t) for t in pd.read_csv(tasks[0][1] / "test.csv")["text"]]
    offline = {n: dict(zip(texts, (r["probs"] for r in Predictor.from_run(runs[n]).predict(texts)))) for n in names}
    rng = random.Random(0)
    plan: list[tuple[str, Any, int, Any]] = []
    for i in range(args.requests):
        if i % 10 == 9:
            route, body, want = BAD[(i // 10) % len(BAD)]
            plan.append((route, body, want, None))
            continue
        name = names[rng.randrange(len(names))]
        batch = rng.sample(texts, rng.randint(1, 4))

        def check(body: dict, name: str = name, batch: list = batch) -> bool:
            return all(abs(g - w) < 1e-4 for d, t in zip(body["data"], batch)
                       for g, w in zip(d["probs"], offline[name][t].values()))
        plan.append(("/v1/classify", {"model": name, "input": batch, "truncate": True}, 200, check))
    port = free_port()
    cmd = [sys.executable, "-m", "transferkit", "serve", "--port", str(port), "--max-queue", "4096",
           "--adapter-root", str(args.workdir / "runs")]
    for n in names:
        cmd += ["--adapter", f"{n}={runs[n]}"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, [server])
        res = asyncio.run(run_load(f"http://127.0.0.1:{port}", plan, args.concurrency, server.pid))
    finally:
        stop([server])
    rss = res["rss"]
    first = [m for i, m in rss if i < 1000] or [rss[0][1]]
    last = [m for i, m in rss if i >= len(plan) - 1000] or [rss[-1][1]]
    five = sum(v for s, v in res["statuses"].items() if s >= 500)
    print_table(["status", "responses"], sorted(res["statuses"].items()))
    print(f"5xx: {five}; unexpected statuses: {res['unexpected'] or 'none'}; wrong good answers: {res['wrong']}")
    growth = max(last) / max(first)
    print(f"server RSS: first 1000 requests max {max(first):.0f} MB, last 1000 max {max(last):.0f} MB "
          f"({100 * (growth - 1):+.1f}%); {len(plan)} requests in {res['seconds']:.0f} s")
    write_json(args.out, {"requests": len(plan), "concurrency": args.concurrency, "tasks": len(names), **res,
                          "five_xx": five, "rss_growth": growth, "environment": environment(args.threads)})


if __name__ == "__main__":
    main()
