"""Shared helpers for the benchmark scripts: threads, environment record, tables and JSON output."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def in_child(fn: Any, spec: dict[str, Any]) -> Any:
    """`fn(spec)` in a fresh spawned interpreter (fork would inherit this process's memory), so each
    variant's peak RSS is its own."""
    import multiprocessing as mp
    pool = mp.get_context("spawn").Pool(1)
    try:
        return pool.apply(fn, (spec,))
    finally:
        pool.close()  # close+join rather than terminate: a clean exit leaves no semaphores behind
        pool.join()


def add_common_args(p: argparse.ArgumentParser, name: str) -> None:
    """--threads, --quick and --out, the flags every script shares."""
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="where to write the JSON results")


def set_threads(n: int) -> None:
    """Pin torch's thread pools so every variant runs with the same parallelism.

    transferkit is imported first: it sets its OMP_WAIT_POLICY default (unless the caller set one)
    before torch starts OpenMP, so baseline and transferkit run under the same policy, the one a
    transferkit user gets. Spawned children inherit it through the environment.
    """
    import transferkit  # noqa: F401
    import torch
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # only settable before any parallel work; harmless if too late
    except RuntimeError:
        pass


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def environment(threads: int) -> dict[str, Any]:
    """What a reader needs to judge the numbers: versions, cores, load and threading settings."""
    import torch
    import transformers
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": threads, "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        # A busy core makes spinning OpenMP threads much slower; record the policy in effect.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import peft
        env["peft"] = peft.__version__
    except ImportError:
        pass
    return env


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write results atomically so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"\nresults written to {path}")


def data_config(limit: int | None, eval_limit: int | None, seed: int, workdir: Path) -> Any:
    """The DataConfig both sides train from: transferkit's seeded 80/10/10 split of movie-sentences.

    `limit` keeps the first N training rows (as `data.limit` does). With `eval_limit`, the first M
    validation and test rows of that same split are written to Parquet files and used as explicit
    splits, so quick runs do not spend minutes evaluating 1,057-row splits.
    """
    from transferkit.config.finetune import DataConfig
    if eval_limit is None:
        return DataConfig(limit=limit)
    import pandas as pd

    splits = movie_splits(seed)
    paths = {}
    for name, n in (("train", limit), ("validation", eval_limit), ("test", eval_limit)):
        part = splits[name]
        k = len(part) if n is None else min(n, len(part))
        paths[name] = str(Path(workdir) / f"{name}.parquet")
        pd.DataFrame({"text": part.texts[:k], "label": [splits.label_names[i] for i in part.labels[:k]]}
                     ).to_parquet(paths[name], index=False)
    return DataConfig(data=None, train=paths["train"], validation=paths["validation"], test=paths["test"])


def quiet_libraries() -> None:
    """Silence progress bars and library chatter so the tables stay readable."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transferkit.core import runtime
    runtime.setup()


def movie_splits(seed: int = 42) -> Any:
    """The bundled movie sentences split as `transferkit finetune` splits them (80/10/10, `seed`)."""
    from transferkit.config.finetune import DataConfig
    from transferkit.tasks.classify.splits import prepare_splits
    return prepare_splits(DataConfig(data="movie-sentences"), seed)
