"""`transferkit compare` (`transferkit.compare`): every adaptation method on the same data, seed and budget, in one table.

Each method trains as an ordinary run directory `OUT/<method>` through `python -m transferkit
finetune` in a process of its own, so its peak memory is that process's own (torch never hands
memory back, so methods trained one after another in one process would inherit each other's
peak) and one crash leaves the others' rows standing. A finished run is reused and an interrupted
one resumed, so re-running the same command after an interruption continues where it stopped.
Inference speed is measured here, in the parent, with the same `Predictor` settings and texts
for every method. Neither transformers nor peft has a cross-method harness, hence this module.
(Named comparison.py, not compare.py: a submodule `compare` would replace the function
`transferkit.compare` on the package the first time it is imported.)

    OUT/<method>/            a normal finetune run directory
    OUT/logs/<method>.yaml   the config the method ran with; .log its output; .json its attempts
    OUT/compare.{md,csv,png} the table and its plot (written atomically)
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError

Log = Callable[[str], None]
PROGRESS_EVERY_S = 20.0  # how often a child's progress bar (\r updates) is echoed to the log
CSV_FIELDS = ["method", "status", "trainable", "total", "trainable_pct", "peak_rss_mb", "rss_before_train_mb",
              "peak_gpu_mb", "train_seconds", "samples_per_s", "wall_seconds", "inference_per_s", "artifact_mb",
              "weights_mb", "accuracy", "f1_macro", "predictor_accuracy", "steps", "epochs", "lr", "run_dir"]


# ---- process memory (finetune records these in metrics.json) --------------------------------------

def current_rss_mb() -> float | None:
    """Resident memory of this process now, in MB (Linux /proc; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where `resource` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KB on Linux


def memory_report(rss_before_train_mb: float | None) -> dict[str, float | None]:
    """Memory figures for a run's metrics: process peak, RSS before training, GPU peak if any."""
    out: dict[str, float | None] = {"peak_rss_mb": peak_rss_mb(), "rss_before_train_mb": rss_before_train_mb}
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# ---- planning: every check happens before anything runs ------------------------------------------

@dataclass
class Plan:
    method: str
    cfg: Any  # RunConfig
    run_dir: Path
    state: str  # new | resume | finished


@dataclass
class CompareResult:
    output_dir: Path
    rows: list[dict[str, Any]]
    failed: list[str]
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """Method names in the given order, checked against the registry; None means all registered."""
    from . import methods as _  # noqa: F401  (registers methods)
    from .registry import METHODS
    if methods is None:
        return METHODS.names()
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names = list(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    if not names:
        raise UserError(f"no methods to compare; choose from: {', '.join(METHODS.names())}")
    for name in names:
        METHODS.get(name)  # UserError naming the unknown method and the known ones
    return names


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _plan(base: Any, method: str, out: Path) -> Plan:
    from .config import RunConfig, validate
    cfg = RunConfig.from_dict(base.to_dict())
    cfg.method.name, cfg.output_dir = method, str(out / method)
    validate(cfg)
    run_dir = out / method
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return Plan(method, cfg, run_dir, "new")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} exists but is not a transferkit run (no config.yaml); move it away or "
                        f"choose another --output-dir")
    saved, wanted = _flat(RunConfig.from_yaml(run_dir / "config.yaml").to_dict()), _flat(cfg.to_dict())
    diff = [k for k in wanted if k != "output_dir" and saved.get(k) != wanted[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} was run with {k}={saved.get(k)!r}, not {wanted[k]!r}; use another "
                        f"--output-dir or remove that run")
    finished = (run_dir / "metrics.json").is_file() and (run_dir / "run.json").is_file()
    return Plan(method, cfg, run_dir, "finished" if finished else "resume")


# ---- running one method in its own process --------------------------------------------------------

def _child_command(plan: Plan, config_path: Path) -> list[str]:
    if plan.state == "resume":
        return [sys.executable, "-m", "transferkit", "finetune", "--resume", str(plan.run_dir)]
    return [sys.executable, "-m", "transferkit", "finetune", "--config", str(config_path)]


def _stream(proc: subprocess.Popen, prefix: str, log_file: Any, log: Log) -> None:
    """Copy the child's output to its log file and, line by line, to `log` (progress bars throttled)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, last_progress = "", 0.0
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        text = decoder.decode(chunk, final=not chunk)
        log_file.write(text)
        log_file.flush()
        pending += text
        # Split into segments ended by \n (log lines) or \r (progress-bar redraws).
        while True:
            cut = min((i for i in (pending.find("\n"), pending.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            seg, end, pending = pending[:cut], pending[cut], pending[cut + 1:]
            if not seg.strip():
                continue
            if end == "\n":
                log(prefix + seg)
            elif time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                log(prefix + seg.strip())
        if not chunk:
            if pending.strip():
                log(prefix + pending)
            return


def _attempts_path(out: Path, method: str) -> Path:
    return out / "logs" / f"{method}.json"


def _read_attempts(out: Path, method: str) -> list[dict[str, Any]]:
    p = _attempts_path(out, method)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []


def _run_child(plan: Plan, out: Path, log: Log) -> int:
    """Train (or resume) one method in a subprocess; returns its exit code."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config_path = logs / f"{plan.method}.yaml"
    _write_atomic(config_path, plan.cfg.to_yaml().encode())
    cmd = _child_command(plan, config_path)
    log(f"== {plan.method}: {'resuming ' + str(plan.run_dir) if plan.state == 'resume' else 'training'} "
        f"(own process; log {logs / (plan.method + '.log')})")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(logs / f"{plan.method}.log", "a", encoding="utf-8") as log_file:
        log_file.write(f"\n$ {' '.join(cmd)}  # {started}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            _stream(proc, f"[{plan.method}] ", log_file, log)
            rc = proc.wait()
        except KeyboardInterrupt:
            # The child got the same Ctrl-C and writes its checkpoint; give it time, then stop it.
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            _record_attempt(out, plan, cmd, rc, time.perf_counter() - t0, started)
            log(f"interrupted: run the same compare command again to resume {plan.run_dir}")
            raise
    _record_attempt(out, plan, cmd, rc, time.perf_counter() - t0, started)
    return rc


def _record_attempt(out: Path, plan: Plan, cmd: list[str], rc: int, wall: float, started: str) -> None:
    attempts = _read_attempts(out, plan.method)
    attempts.append({"started": started, "mode": plan.state, "exit_code": rc, "wall_seconds": round(wall, 2),
                     "command": cmd})
    _write_atomic(_attempts_path(out, plan.method), json.dumps(attempts, indent=1).encode())


# ---- measuring a finished run ------------------------------------------------------------------------

def _folder_mb(path: Path, suffixes: tuple[str, ...] = ()) -> float:
    files = [p for p in path.rglob("*") if p.is_file() and (not suffixes or p.suffix in suffixes)]
    return round(sum(p.stat().st_size for p in files) / 2**20, 3)


def _inference(run_dir: Path, texts: list[str], labels: list[int], repeats: int) -> tuple[float, float]:
    """Median sentences/s of `Predictor.from_run` over the test texts, and its accuracy on them."""
    import gc

    from .inference import Predictor
    predictor = Predictor.from_run(run_dir)
    predictor.predict_proba(texts[:64])  # warm-up: first-call allocations and lazy initialisation
    speeds, probs = [], None
    for _ in range(max(1, repeats)):
        probs = predictor.predict_proba(texts)  # [n, classes]
        speeds.append(predictor.last_throughput)
    accuracy = float((probs.argmax(-1) == __import__("numpy").asarray(labels)).mean())
    del predictor
    gc.collect()
    return round(statistics.median(speeds), 1), round(accuracy, 4)


def _row(plan: Plan, out: Path, status: str, texts: list[str], labels: list[int], repeats: int,
         log: Log) -> dict[str, Any]:
    from .registry import METHODS
    attempts = _read_attempts(out, plan.method)
    row: dict[str, Any] = {"method": plan.method, "status": status, "run_dir": str(plan.run_dir),
                           "wall_seconds": round(sum(a["wall_seconds"] for a in attempts), 1) if attempts else None}
    metrics_path = plan.run_dir / "metrics.json"
    if status != "ok" or not metrics_path.is_file():
        return row
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    p, t, mem = m["params"], m["train"], m.get("memory", {})
    art = plan.run_dir / METHODS.get(plan.method).artifact
    row.update(trainable=p["trainable"], total=p["total"], trainable_pct=round(100 * p["trainable"] / p["total"], 4),
               peak_rss_mb=mem.get("peak_rss_mb"), rss_before_train_mb=mem.get("rss_before_train_mb"),
               peak_gpu_mb=mem.get("peak_gpu_mb"), train_seconds=t["seconds"], samples_per_s=t["samples_per_s"],
               artifact_mb=_folder_mb(art), weights_mb=_folder_mb(art, (".safetensors", ".bin")),
               accuracy=m["test"]["accuracy"], f1_macro=m["test"]["f1_macro"], steps=t["steps"],
               epochs=t["epochs"], lr=t["lr"])
    try:
        row["inference_per_s"], row["predictor_accuracy"] = _inference(plan.run_dir, texts, labels, repeats)
    except Exception as e:  # one unloadable artefact must not cost the whole table
        row["status"] = f"inference failed: {type(e).__name__}: {e}".splitlines()[0]
        log(f"{plan.method}: {row['status']}")
    if row.get("predictor_accuracy") is not None and abs(row["predictor_accuracy"] - row["accuracy"]) > 0.005:
        log(f"warning: {plan.method}: the saved model scores {row['predictor_accuracy']:.4f} on the test split, "
            f"training reported {row['accuracy']:.4f}")
    return row


# ---- the whole comparison ---------------------------------------------------------------------------

def run_compare(methods: str | Sequence[str] | None, base: Any, output_dir: str | Path | None,
                inference_repeats: int = 3, log: Log = print) -> CompareResult:
    """Train every method in `methods` on `base` (a RunConfig) and write the table; see the module doc."""
    from . import runtime
    from .data.prepare import prepare_splits
    from .models import resolve_model
    runtime.setup()
    names = parse_methods(methods)
    if inference_repeats < 1:
        raise UserError(f"inference repeats must be >= 1, got {inference_repeats}")
    out = Path(output_dir or base.output_dir or "runs/compare")
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory {out} is a file")
    plans = [_plan(base, m, out) for m in names]
    resolve_model(base.model.name)  # an unknown model fails here, not once per method
    splits = prepare_splits(base.data, base.train.seed, log=lambda *_: None)  # bad data fails before any run
    texts, labels = list(splits.test.texts), list(splits.test.labels)
    if not texts:
        raise UserError("the test split is empty; compare scores every method on it")
    if base.train.lr is not None:
        log(f"note: train.lr={base.train.lr:g} applies to every method (leave it unset for each method's default)")
    log(f"compare: {', '.join(names)} -> {out} ("
        + ", ".join(f"{p.method} {p.state}" for p in plans) + ")")

    rows, failed = [], []
    for plan in plans:
        if plan.state == "finished":
            log(f"== {plan.method}: reusing the finished run {plan.run_dir}")
            status = "ok"
        else:
            rc = _run_child(plan, out, log)
            ok = rc == 0 and (plan.run_dir / "metrics.json").is_file()
            status = "ok" if ok else f"failed (exit {rc})"
            if not ok:
                failed.append(plan.method)
                log(f"== {plan.method}: failed with exit code {rc}; see {out / 'logs' / (plan.method + '.log')}")
        rows.append(_row(plan, out, status, texts, labels, inference_repeats, log))

    markdown, paths = write_tables(out, rows, base, splits)
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return CompareResult(out, rows, failed, markdown, paths)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---- the table and its plot ---------------------------------------------------------------------

def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "" if v is None else format(v * scale if scale != 1 else v, spec)


def _added(r: dict[str, Any]) -> float | None:
    """Memory the training itself added: peak minus the resident memory just before it."""
    if r.get("peak_rss_mb") is None or r.get("rss_before_train_mb") is None:
        return None
    return r["peak_rss_mb"] - r["rss_before_train_mb"]


def _less(ratio: float) -> str:
    return f"{100 * (1 - ratio):.0f}% lower" if ratio <= 1 else f"{100 * (ratio - 1):.0f}% higher"


def _mb(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _versus_full(rows: list[dict[str, Any]]) -> list[str]:
    """One line per method against full fine-tuning: the textbook claims, measured."""
    full = next((r for r in rows if r["method"] == "full" and r.get("accuracy") is not None), None)
    if full is None:
        return []
    lines = ["", "Against full fine-tuning (same data, seed and budget):", ""]
    for r in rows:
        if r is full or r.get("accuracy") is None:
            continue
        parts = [f"{r['trainable_pct']:.2f}% of the parameters train",
                 f"accuracy {100 * (r['accuracy'] - full['accuracy']):+.1f} points"]
        if r.get("samples_per_s") and full.get("samples_per_s"):
            parts.append(f"{r['samples_per_s'] / full['samples_per_s']:.2f}x the training samples/s")
        if r.get("peak_rss_mb") and full.get("peak_rss_mb"):
            parts.append("peak memory " + _less(r["peak_rss_mb"] / full["peak_rss_mb"]))
        if _added(r) is not None and _added(full):
            parts.append("memory added by training " + _less(_added(r) / _added(full)))
        if r.get("artifact_mb") and full.get("artifact_mb"):
            parts.append(f"artefact {_mb(r['artifact_mb'])} MB vs {_mb(full['artifact_mb'])} MB")
        lines.append(f"- {r['method']}: " + "; ".join(parts))
    return lines


def render_markdown(rows: list[dict[str, Any]], base: Any, splits: Any) -> str:
    import platform

    import torch
    budget = (f"max {base.train.max_steps} steps" if base.train.max_steps else
              f"{base.train.epochs:g} epoch(s)" if base.train.epochs else "each method's default epochs")
    lr = f"lr {base.train.lr:g} for all" if base.train.lr else "each method at its default learning rate"
    sizes = splits.summary.get("sizes", {})
    head = [f"# transferkit compare: {base.data.data or base.data.train} on {base.model.name}", "",
            f"{sizes.get('train', len(splits.train.texts)):,} training / {sizes.get('test', len(splits.test.texts)):,}"
            f" test texts, seed {base.train.seed}, {budget}, {lr}. "
            f"{os.cpu_count()} CPUs, torch {torch.__version__} ({platform.machine()}), "
            f"{'CUDA' if torch.cuda.is_available() else 'CPU'}; methods ran one after another, each in its own "
            f"process (peak MB: that process's peak resident memory).", ""]
    cols = ["method", "trainable params", "trainable %", "peak MB", "training adds MB", "train s", "samples/s",
            "wall s", "infer sent/s", "artefact MB", "lr", "steps", "test acc %", "macro F1 %"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for r in rows:
        if r["status"] != "ok" and r.get("accuracy") is None:
            lines.append(f"| {r['method']} | {r['status']} |" + " |" * (len(cols) - 2))
            continue
        cells = [r["method"], _fmt(r.get("trainable"), ","), _fmt(r.get("trainable_pct"), ".2f"),
                 _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(_added(r), ".0f"), _fmt(r.get("train_seconds"), ".1f"),
                 _fmt(r.get("samples_per_s"), ".1f"), _fmt(r.get("wall_seconds"), ".0f"),
                 _fmt(r.get("inference_per_s"), ".0f"), ("" if r.get("artifact_mb") is None else _mb(r["artifact_mb"])), _fmt(r.get("lr"), "g"),
                 _fmt(r.get("steps"), "d"), _fmt(r.get("accuracy"), ".1f", 100), _fmt(r.get("f1_macro"), ".1f", 100)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [r for r in rows if r["status"] != "ok"]
    tail = [""] + [f"- {r['method']}: {r['status']}" for r in notes] if notes else []
    return "\n".join(head + lines + _versus_full(rows) + tail) + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS} for r in rows)
    return buf.getvalue()


def render_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Accuracy against trainable parameters, training speed and peak memory, one panel each."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("accuracy") is not None]
    names = [r["method"] for r in ok]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for r in ok:
        ax.scatter(max(r["trainable"], 1), 100 * r["accuracy"], s=40)
        ax.annotate(r["method"], (max(r["trainable"], 1), 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=9)
    ax.set(xscale="log", xlabel="trainable parameters (log)", ylabel="test accuracy (%)", title="accuracy")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    axes[1].barh(names, [r.get("samples_per_s") or 0 for r in ok], color="tab:green")
    axes[1].set(xlabel="training samples/s", title="training speed")
    before = [r.get("rss_before_train_mb") or 0 for r in ok]
    axes[2].barh(names, before, color="tab:gray", label="before training")
    axes[2].barh(names, [max((r.get("peak_rss_mb") or 0) - b, 0) for r, b in zip(ok, before)], left=before,
                 color="tab:red", label="added by training (peak)")
    axes[2].set(xlabel="process memory (MB)", title="peak memory")
    axes[2].legend(fontsize=8, loc="lower right")
    for a in axes[1:]:
        a.invert_yaxis()
        a.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_tables(out: Path, rows: list[dict[str, Any]], base: Any, splits: Any) -> tuple[str, dict[str, Path]]:
    """Write OUT/compare.md, .csv and .png atomically; returns the markdown and the paths."""
    markdown = render_markdown(rows, base, splits)
    paths = {"md": out / "compare.md", "csv": out / "compare.csv", "png": out / "compare.png"}
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths["md"], markdown.encode())
    _write_atomic(paths["csv"], render_csv(rows).encode())
    _write_atomic(paths["png"], render_png(rows, f"transferkit compare: {base.data.data or base.data.train}"))
    return markdown, paths
