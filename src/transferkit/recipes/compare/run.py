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
    OUT/compare.{md,csv,png} the table and its plot (comparison_report.py; written atomically)

With `models` (`--models minilm-l6,mpnet-base,PATH`) every method runs on every model, one run directory
each, `OUT/<model>/<method>` (a folder's name stands for a path), and the table gets a model column: the first
decision of transfer learning, which pretrained model to start from, measured on the user's data.
"""
from __future__ import annotations

import codecs
import gc
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ... import tasks
from ...config.checks import validate
from ...config.finetune import RunConfig
from ...core import fs, logs, runtime
from ...core.errors import UserError
from ...core.folders import read_json, read_json_object
from ...core.lock import RunLock
from ...core.registry import METHODS
from ...inference import Predictor
from ...modeling.resolve import parse_models, resolve_model
from ...reporting.comparison import flat_config, write_tables
from ...training import tracking

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 20.0  # how often a child's progress bar (\r updates) is echoed to the log


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
    key: str = ""  # names its logs (OUT/logs/<key>.log): the method, or e.g. "lora+eda/n8-s42" in a grid
    model: str = ""  # the model as `--models` named it ("": the base config's only model)

    def __post_init__(self) -> None:
        self.key = self.key or self.method


@dataclass
class CompareResult:
    output_dir: Path
    rows: list[dict[str, Any]]
    failed: list[str]
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def parse_methods(methods: str | Sequence[str] | None, task: Any = None) -> list[str]:
    """Method names in the given order, checked against the registry; None means all registered (that
    `task` can train: setfit needs one pooled vector per example)."""
    if methods is None:
        return [m for m in METHODS.names()
                if task is None or METHODS.get(m).suits(task)]
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    names = list(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    if not names:
        raise UserError(f"no methods to compare; choose from: {', '.join(METHODS.names())}")
    for name in names:
        METHODS.get(name)  # UserError naming the unknown method and the known ones
    return names


def model_folders(names: list[str]) -> dict[str, str]:
    """name -> the folder name of its runs under OUT: a bundled name as is, a path by its last part, numbered
    where two would collide."""
    out: dict[str, str] = {}
    for name in names:
        stem = Path(name.rstrip("/\\")).name or "model"
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).lstrip(".") or "model"
        folder, n = slug, 2
        while folder in out.values() or folder == "logs":
            folder, n = f"{slug}-{n}", n + 1
        out[name] = folder
    return out


def _plan(base: Any, method: str, out: Path, model: str = "", folder: str = "") -> Plan:
    cfg = RunConfig.from_dict(base.to_dict())
    run_dir = out / folder / method if model else out / method
    cfg.method.name, cfg.output_dir = method, str(run_dir)
    if model:
        cfg.model.name = model
    plan = _plan_config(cfg, run_dir, method, f"{folder}/{method}" if model else "")
    plan.model = model
    return plan


# Where a run writes and reports its records, and whether it draws a progress bar, do not change the run.
UNCHANGING = ("output_dir", "train.report_to", "train.progress")


def _plan_config(cfg: Any, run_dir: Path, method: str, key: str = "") -> Plan:
    """Whether the run of `cfg` in `run_dir` is new, to resume, or finished (a different config there is refused)."""
    validate(cfg)
    if not run_dir.exists() or (run_dir.is_dir() and all(c.name == ".lock" for c in run_dir.iterdir())):
        return Plan(method, cfg, run_dir, "new", key)  # a lock alone: a child killed before it wrote anything
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} exists but is not a transferkit run (no config.yaml); move it away or "
                        f"choose another --output-dir")
    saved, wanted = flat_config(RunConfig.from_yaml(run_dir / "config.yaml").to_dict()), flat_config(cfg.to_dict())
    diff = [k for k in wanted if k not in UNCHANGING and saved.get(k) != wanted[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} was run with {k}={saved.get(k)!r}, not {wanted[k]!r}; use another "
                        f"--output-dir or remove that run")
    finished = (run_dir / "metrics.json").is_file() and (run_dir / "run.json").is_file()
    if finished:
        _warn_if_defaults_moved(method, cfg, run_dir)
    return Plan(method, cfg, run_dir, "finished" if finished else "resume", key)


def _warn_if_defaults_moved(method: str, cfg: Any, run_dir: Path) -> None:
    """A reused run keeps the per-method defaults of its day; say so when they have changed since."""
    now = METHODS.get(method)(cfg.method).train_config(cfg.train, tasks.get(cfg.task))
    then = read_json_object(run_dir / "metrics.json", "run metrics").get("train") or {}
    moved = [f"{k} {then.get(k)} -> {getattr(now, k)}" for k in ("lr", "head_lr", "batch_size")
             if then.get(k) is not None and then.get(k) != getattr(now, k)]
    if moved:
        logger.info(f"note: {run_dir} is reused, but {method}'s defaults changed since it ran ({', '.join(moved)}); "
                    f"remove it to train with today's")


# ---- running one method in its own process --------------------------------------------------------

def _child_command(plan: Plan, config_path: Path) -> list[str]:
    if plan.state == "resume":
        return [sys.executable, "-m", "transferkit", "finetune", "--resume", str(plan.run_dir), *_child_flags()]
    return [sys.executable, "-m", "transferkit", "finetune", "--config", str(config_path), *_child_flags()]


def _child_flags() -> list[str]:
    """The child logs at this process's level, but never below INFO: its log file keeps every line, and what
    this process shows of them its own level decides (`_stream`)."""
    return logs.child_flags(quiet_ok=False)


def _stream(proc: subprocess.Popen, prefix: str, log_file: Any) -> None:
    """Copy the child's output to its log file and, line by line, to this module's logger (progress bars
    throttled; the child's warning and error lines as warnings, so `--quiet` still shows them)."""
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
                logger.log(_level(seg), prefix + seg)
            elif time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                logger.info(prefix + seg.strip())
        if not chunk:
            if pending.strip():
                logger.log(_level(pending), prefix + pending)
            return


def _level(line: str) -> int:
    """A child's line again at its own level, as far as its text tells: its warnings, and its error lines
    (which it printed, not logged), stay visible under `--quiet`."""
    return logging.WARNING if line.startswith(("warning:", "transferkit: error:", "transferkit: internal error:")) \
        else logging.INFO


def _attempts_path(out: Path, key: str) -> Path:
    return out / "logs" / f"{key}.json"


def _read_attempts(out: Path, key: str) -> list[dict[str, Any]]:
    p = _attempts_path(out, key)
    return read_json(p, "attempt record") if p.is_file() else []


def _run_child(plan: Plan, out: Path) -> int:
    """Train (or resume) one method in a subprocess; returns its exit code."""
    logs_dir = out / "logs"
    config_path = logs_dir / f"{plan.key}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    fs.write_text(config_path, plan.cfg.to_yaml())
    cmd = _child_command(plan, config_path)
    logger.info(f"== {plan.key}: {'resuming ' + str(plan.run_dir) if plan.state == 'resume' else 'training'} "
                f"(own process; log {logs_dir / (plan.key + '.log')})")
    # its tracker run (train.report_to) is one of this compare's, named after the cell (`training.tracking.place`)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", tracking.GROUP_ENV: str(out.resolve()), tracking.RUN_ENV: plan.key}
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(logs_dir / f"{plan.key}.log", "a", encoding="utf-8") as log_file:
        log_file.write(f"\n$ {' '.join(cmd)}  # {started}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            _stream(proc, f"[{plan.key}] ", log_file)
            rc = proc.wait()
        except KeyboardInterrupt:
            # The child got the same Ctrl-C and writes its checkpoint; give it time, then stop it.
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            _record_attempt(out, plan, cmd, rc, time.perf_counter() - t0, started)
            logger.info(f"interrupted: run the same compare command again to resume {plan.run_dir}")
            raise
    _record_attempt(out, plan, cmd, rc, time.perf_counter() - t0, started)
    return rc


def _record_attempt(out: Path, plan: Plan, cmd: list[str], rc: int, wall: float, started: str) -> None:
    attempts = _read_attempts(out, plan.key)
    attempts.append({"started": started, "mode": plan.state, "exit_code": rc, "wall_seconds": round(wall, 2),
                     "command": cmd})
    fs.write_json(_attempts_path(out, plan.key), attempts)


# ---- measuring a finished run ------------------------------------------------------------------------

def _folder_mb(path: Path, suffixes: tuple[str, ...] = ()) -> float:
    files = [p for p in path.rglob("*") if p.is_file() and (not suffixes or p.suffix in suffixes)]
    return round(sum(p.stat().st_size for p in files) / 2**20, 3)


def _inference(run_dir: Path, task: Any, split: Any, repeats: int) -> tuple[float, float]:
    """Median sentences/s of `Predictor.from_run` over the test texts, and the task's first compare metric
    of the saved (merged) model on the test split."""

    predictor = Predictor.from_run(run_dir)
    texts = task.texts(split)
    predictor.predict(texts[:64])  # warm-up: first-call allocations and lazy initialisation
    speeds = []
    for _ in range(max(1, repeats)):
        predictor.predict(texts)
        speeds.append(predictor.last_throughput)
    data = task.encode(predictor.tokenizer, split, predictor.max_length)
    metrics, _ = task.evaluate_test(predictor.model, data, predictor.batch_size, predictor.pad_id, predictor.device)
    del predictor
    gc.collect()
    return round(statistics.median(speeds), 1), round(float(metrics[task.compare_metrics[0][0]]), 4)


def _row(plan: Plan, out: Path, status: str, task: Any, split: Any, repeats: int) -> dict[str, Any]:
    attempts = _read_attempts(out, plan.key)
    row: dict[str, Any] = {**({"model": plan.model} if plan.model else {}), "method": plan.method, "status": status,
                           "run_dir": str(plan.run_dir),
                           "wall_seconds": round(sum(a["wall_seconds"] for a in attempts), 1) if attempts else None}
    metrics_path = plan.run_dir / "metrics.json"
    if status != "ok" or not metrics_path.is_file():
        return row
    m = read_json_object(metrics_path, "run metrics")
    p, t, mem = m["params"], m["train"], m.get("memory", {})
    art = plan.run_dir / METHODS.get(plan.method).artifact
    stage = t.get("contrastive") or {}  # a method's own first stage (setfit): its parameters and time count too
    trainable = max(p["trainable"], stage.get("trainable", 0) + p.get("head", 0))
    row.update(trainable=trainable, total=p["total"], trainable_pct=round(100 * trainable / p["total"], 4),
               peak_rss_mb=mem.get("peak_rss_mb"), rss_before_train_mb=mem.get("rss_before_train_mb"),
               peak_gpu_mb=mem.get("peak_gpu_mb"), train_seconds=round(t["seconds"] + stage.get("seconds", 0.0), 2),
               samples_per_s=t["samples_per_s"],
               artifact_mb=_folder_mb(art), weights_mb=_folder_mb(art, (".safetensors", ".bin")),
               steps=t["steps"], epochs=t["epochs"], lr=t["lr"])
    row.update({key: m["test"][key] for key, *_ in task.compare_metrics})
    primary = task.compare_metrics[0][0]
    try:
        row["inference_per_s"], row[f"predictor_{primary}"] = _inference(plan.run_dir, task, split, repeats)
        logger.info(f"{plan.key}: {row['inference_per_s']:.0f} sentences/s")
    except Exception as e:  # one unloadable artefact must not cost the whole table
        row["status"] = f"inference failed: {type(e).__name__}: {e}".splitlines()[0]
        logger.info(f"{plan.key}: {row['status']}")
    again = row.get(f"predictor_{primary}")
    if again is not None and abs(again - row[primary]) > 0.005:
        logger.warning(f"warning: {plan.key}: the saved model scores {primary}={again:.4f} on the test split, "
                       f"training reported {row[primary]:.4f}")
    return row


# ---- the whole comparison ---------------------------------------------------------------------------

def run_compare(methods: str | Sequence[str] | None, base: Any, output_dir: str | Path | None,
                inference_repeats: int = 3, models: str | Sequence[str] | None = None) -> CompareResult:
    """Train every method in `methods` (on every model of `models`) on `base` (a RunConfig) and write the table;
    see the module doc."""
    runtime.setup()
    task = tasks.get(base.task)
    names = parse_methods(methods, task)
    if inference_repeats < 1:
        raise UserError(f"inference repeats must be >= 1, got {inference_repeats}")
    out = Path(output_dir or base.output_dir or "runs/compare")
    fs.check_writable_dir(out)
    chosen = parse_models(models)
    for model in chosen or [base.model.name]:
        resolve_model(model)  # an unknown model fails here, not once per method (a bundled one is fetched now)
    folders = model_folders(chosen)
    plans = [_plan(base, m, out, model, folders[model]) for model in chosen for m in names] if chosen else \
        [_plan(base, m, out) for m in names]
    with logs.quiet():  # bad data fails before any run; each run's own process summarises the data
        splits = task.prepare(base.data, base.train.seed)
    if not task.texts(splits.test):
        raise UserError("the test split is empty; compare scores every method on it")
    if base.train.lr is not None:
        logger.info(f"note: train.lr={base.train.lr:g} applies to every method "
                    "(leave it unset for each method's default)")
    logger.info(f"compare: {', '.join(names)}{' on ' + ', '.join(chosen) if chosen else ''} -> {out} ("
                + ", ".join(f"{p.key} {p.state}" for p in plans) + ")")
    with RunLock(out, "compare", resume_hint="run the same transferkit compare command again"):
        return _run_plans(plans, base, out, task, splits, inference_repeats)


def _run_plans(plans: list[Plan], base: Any, out: Path, task: Any, splits: Any,
               inference_repeats: int) -> CompareResult:
    """Train what is not finished, time inference of every method, write the tables (the folder is locked)."""
    statuses: dict[str, str] = {}
    for plan in plans:
        if plan.state == "finished":
            logger.info(f"== {plan.key}: reusing the finished run {plan.run_dir}")
            statuses[plan.key] = "ok"
            continue
        rc = _run_child(plan, out)
        ok = rc == 0 and (plan.run_dir / "metrics.json").is_file()
        statuses[plan.key] = "ok" if ok else f"failed (exit {rc})"
        if not ok:
            logger.info(f"== {plan.key}: failed with exit code {rc}; see {out / 'logs' / (plan.key + '.log')}")
    # Inference is timed only now, every method back to back, so all meet the same machine load.
    logger.info(f"timing inference on the {len(task.texts(splits.test))} test texts "
                f"({inference_repeats} passes each, median)")
    rows = [_row(p, out, statuses[p.key], task, splits.test, inference_repeats) for p in plans]
    failed = [m for m, st in statuses.items() if st != "ok"]

    markdown, paths = write_tables(out, rows, base, splits, inference_repeats, task.compare_metrics,
                                   len(task.texts(splits.train)), len(task.texts(splits.test)))
    logger.info("wrote " + ", ".join(str(p) for p in paths.values()))
    return CompareResult(out, rows, failed, markdown, paths)


