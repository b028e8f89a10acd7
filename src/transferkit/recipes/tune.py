"""`transferkit tune`: hyperparameters and the method's own options searched together with optuna.

    TuneRun(cfg, output_dir="runs/tune", n_trials=30).run() -> TuneResult

Every trial is a fine-tuning run in this process (`FinetuneRun`, the one `finetune` runs) in
OUT/trials/trial-NNN, with its validation metric reported to optuna after every evaluation, so
optuna's median pruner stops a trial that is worse than the others were at the same point (its
folder is removed; the study keeps its record). Trials never score the test split: when the study
ends, the best trial alone is scored on it once (`recipes.evaluate`), and only the best `keep` trial
folders are kept.

The space (`default_space`): learning rate, head learning rate, batch size, warmup, weight decay,
epochs (and layer-wise lr decay for full fine-tuning) around the method's defaults, plus every
option the method marks with `search` metadata in its Options (LoRA rank/alpha/dropout/targets,
adapter reduction, prefix length); `method=auto` searches the method too. A YAML space file
replaces or fixes entries (`train.lr: {low: 1e-5, high: 1e-3, log: true}`, `method.lora_r: {choices:
[4, 8]}`, `train.batch_size: 16`); unknown keys and impossible ranges are refused before anything runs.

The study lives in OUT/study.db (SQLite): `resume` continues it after an interruption (an
interrupted trial is marked failed by optuna's heartbeat and its configuration tried again), and
`workers=N` starts N-1 more processes on the same study (`transferkit tune --resume OUT --worker`),
each taking trials until the study has `n_trials`. Written here because `Trainer.hyperparameter_search`
cannot search peft's options (transformers #29391) and needs a model_init workaround for peft (#914).

    OUT/tune.json     the settings (what --resume reads) and, at the end, the summary
    OUT/study.db      the optuna study
    OUT/trials/       one run directory per kept trial
    OUT/trials.csv    every trial: number, state, value, parameters, seconds
    OUT/best.yaml     the best trial's config: `transferkit finetune --config OUT/best.yaml` repeats it
    OUT/report.html   the trials table, optimisation history and parameter importances
"""
from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import html
import io
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tasks
from ..config.checks import validate
from ..config.finetune import RunConfig
from ..core import fs, logs
from ..core.errors import TrainingDiverged, UserError
from ..core.folders import read_json_object
from ..core.registry import METHODS
from ..core.runtime import usable_cores
from ..core.units import parse_duration
from ..reporting.model_card import refresh_run_card
from ..training.loop import LOWER_IS_BETTER
from .evaluate import run_evaluation
from .finetune import FinetuneRun
from .tune_space import Param, default_space, read_space, takes

logger = logging.getLogger(__name__)

SETTINGS = "tune.json"
STUDY = "study.db"
STUDY_NAME = "transferkit"


# ---- the study -----------------------------------------------------------------------------------------

@dataclass
class TuneResult:
    output_dir: Path
    best_value: float | None
    best_params: dict[str, Any]
    best_run: Path | None
    test_metrics: dict[str, Any] | None
    trials: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


class TuneRun:
    """An optuna study over fine-tuning runs of `cfg` (its data, task, model; see the module doc)."""

    def __init__(self, cfg: Any = None, *, output_dir: str | Path | None = None, method: str = "lora",
                 n_trials: int = 30, timeout: str | float | None = None, metric: str | None = None,
                 space: str | Path | None = None, workers: int = 1, keep: int = 3, seed: int | None = None,
                 resume: str | Path | None = None, worker: bool = False) -> None:
        self.worker = worker
        if resume is not None:
            self.out = Path(resume)
            settings = self._read_settings()
            cfg = RunConfig.from_dict(settings["config"])
            method, n_trials, metric = settings["method"], settings["n_trials"], settings["metric"]
            keep, seed = settings["keep"], settings["seed"]
            space_entries = settings["space"]
            if timeout is None:
                timeout = settings.get("timeout")
        else:
            if output_dir is None:
                raise UserError("tune needs --output-dir (where the study, trials and best.yaml go)")
            self.out = Path(output_dir)
            fs.check_writable_dir(self.out)
            if (self.out / SETTINGS).exists():
                raise UserError(f"{self.out} already holds a study; continue it with --resume {self.out}, "
                                f"or choose another --output-dir")
            space_entries = None
        self.checked_trials(n_trials)
        for name, v, lo, hi in (("--workers", workers, 1, 64), ("--keep", keep, 1, 100_000)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UserError(f"{name} {v!r}: must be an integer in [{lo}, {hi}]")
        task = tasks.get(cfg.task)
        self.methods = ([m for m in METHODS.names() if METHODS.get(m).suits(task)]
                        if method == "auto" else [METHODS.get(method).name])
        self.method, self.n_trials, self.workers, self.keep = method, n_trials, workers, keep
        self.timeout = parse_duration(timeout, "--timeout") if timeout is not None else None
        self.cfg = cfg
        self.metric = metric or task.default_metric
        self.direction = "minimize" if self.metric in LOWER_IS_BETTER else "maximize"
        self.seed = cfg.train.seed if seed is None else seed
        if space_entries is not None:
            self.space_overrides = {k: Param(**v) for k, v in space_entries.items()}
        else:
            self.space_overrides = read_space(space, self.methods) if space is not None else {}
        self.cfg.train.metric = self.metric  # early stopping and best weights follow the searched metric

    @staticmethod
    def checked_trials(n: Any) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
            raise UserError(f"--n-trials {n!r}: must be an integer in [1, 100000]")
        return n

    # ---- settings ---------------------------------------------------------------------------------------
    def _read_settings(self) -> dict[str, Any]:
        path = self.out / SETTINGS
        if not path.is_file():
            raise UserError(f"{self.out}: no {SETTINGS}: not a tune output folder")
        settings = read_json_object(path, "tune settings")
        for key in ("config", "method", "n_trials", "metric", "keep", "seed", "space"):
            if key not in settings:
                raise UserError(f"{path}: no {key!r} (damaged?)")
        return settings

    def _write_settings(self, summary: dict[str, Any] | None = None) -> None:
        settings = {"config": self.cfg.to_dict(), "method": self.method, "n_trials": self.n_trials,
                    "metric": self.metric, "direction": self.direction, "keep": self.keep, "seed": self.seed,
                    "timeout": self.timeout,
                    "space": {k: dataclasses.asdict(v) for k, v in self.space_overrides.items()}}
        if summary is not None:
            settings["summary"] = summary
        fs.write_json(self.out / SETTINGS, settings)

    def space(self, method_name: str) -> dict[str, Param]:
        space = default_space(method_name)
        for key, p in self.space_overrides.items():
            if key.startswith("method.") and not takes(method_name, key):
                continue
            space[key] = p
        return space

    # ---- running ----------------------------------------------------------------------------------------
    def study(self) -> Any:

        import optuna
        from optuna import storages
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        # heartbeats: a trial whose process died (Ctrl-C, a kill) is marked failed when the next trial
        # starts, and its configuration is tried once more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna calls heartbeats experimental
            if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
                retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
            else:
                retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
            storage = storages.RDBStorage(f"sqlite:///{(self.out / STUDY).resolve()}", heartbeat_interval=10,
                                          grace_period=30, engine_kwargs={"connect_args": {"timeout": 60}}, **retry)
        worker_index = int(os.environ.get("TRANSFERKIT_TUNE_WORKER", "0"))
        sampler = optuna.samplers.TPESampler(seed=self.seed + worker_index, n_startup_trials=min(10, self.n_trials))
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        return optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                                   direction=self.direction, load_if_exists=True)

    def run(self) -> TuneResult | None:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState
        validate(self.cfg)
        if not self.worker:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_settings()  # what workers and a later --resume read (a resume may raise n_trials)
            from .finetune import FinetuneRun
            with logs.quiet():  # bad data fails now, once; each trial's own lines would bury the search's
                FinetuneRun(copy.deepcopy(self.cfg)).setup()
        study = self.study()
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        procs = []
        import torch
        threads_before = torch.get_num_threads()
        if not self.worker and self.workers > 1:
            procs = self._start_workers()
        try:
            if len(study.get_trials(deepcopy=False, states=done)) < self.n_trials:
                study.optimize(self._objective, timeout=self.timeout, catch=(UserError, TrainingDiverged),
                               callbacks=[MaxTrialsCallback(self.n_trials, states=done)], gc_after_trial=True)
        finally:
            for p in procs:
                p.wait()
            torch.set_num_threads(threads_before)  # the cores were shared among the workers only for the study
        if self.worker:
            return None
        failed = [p for p in procs if p.returncode not in (0, None)]
        if failed:
            logger.info(f"{len(failed)} worker(s) exited with an error; their trials are in the study")
        return self._finish(study)

    def _start_workers(self) -> list[subprocess.Popen]:
        threads = str(max(1, usable_cores() // self.workers))
        import torch
        torch.set_num_threads(int(threads))
        procs = []
        for i in range(1, self.workers):
            env = {**os.environ, "TRANSFERKIT_TUNE_WORKER": str(i), "OMP_NUM_THREADS": threads}
            procs.append(subprocess.Popen([sys.executable, "-m", "transferkit", "tune", "--resume", str(self.out),
                                           "--worker", *logs.child_flags()], env=env, stdout=subprocess.DEVNULL))
        logger.info(f"started {len(procs)} more worker process(es) on {self.out / STUDY}, {threads} thread(s) each")
        return procs

    def _objective(self, trial: Any) -> float:
        import optuna
        method = trial.suggest_categorical("method", self.methods) if len(self.methods) > 1 else self.methods[0]
        prefix = f"{method}:" if len(self.methods) > 1 else ""
        cfg = RunConfig.from_dict(self.cfg.to_dict())
        if cfg.method.name != method:
            cfg.override("method.name", method)
        chosen = {}
        for key, p in self.space(method).items():
            value = p.suggest(trial, prefix + key)
            chosen[key] = value
            if value is not None or not key.startswith("method."):
                cfg.override(key, value)
        trial.set_user_attr("method", method)
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("config", chosen)
        run_dir = self.out / "trials" / f"trial-{trial.number:03d}"
        if run_dir.exists():  # a trial number is never reused; a leftover is from a crash before the record
            shutil.rmtree(run_dir)
        cfg.output_dir = str(run_dir)
        cfg.train.progress = False
        trial.set_user_attr("run_dir", str(run_dir))

        def report(index: int, metrics: dict[str, Any]) -> None:
            value = metrics.get(self.metric)
            if value is None:
                raise UserError(f"metric {self.metric!r} is not one the task reports ({', '.join(sorted(metrics))})")
            trial.report(float(value), index)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric}={value:.4f} at evaluation {index}")
        run = FinetuneRun(cfg)
        run.score_test, run.on_eval = False, report
        run.tracking_group = (self.out, run_dir.name)  # one tracker run per trial, grouped under the study's folder
        t0 = time.perf_counter()
        try:
            with logs.quiet():  # a trial says one line, below, not a whole run's
                result = run.run()
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # a pruned or failed trial leaves only its record
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        value = float(result.metrics["validation"][self.metric])
        logger.info(f"trial {trial.number}: {method} {self.metric}={value:.4f} "
                    + " ".join(f"{k.split('.', 1)[1]}={_fmt(v)}" for k, v in chosen.items()))
        self._prune_folders(trial.study, also=(trial.number, value))
        return value

    def _prune_folders(self, study: Any, also: tuple[int, float] | None = None) -> None:
        """Keep the folders of the best `keep` finished trials; remove the rest."""
        from optuna.trial import TrialState
        scored = [(t.number, t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if also is not None and also[0] not in {n for n, _ in scored}:
            scored.append(also)
        scored.sort(key=lambda nv: nv[1], reverse=self.direction == "maximize")
        keep = {n for n, _ in scored[:self.keep]}
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for folder in (self.out / "trials").glob("trial-*"):
            try:
                number = int(folder.name.split("-", 1)[1])
            except ValueError:
                continue
            if number not in keep and number not in running:
                shutil.rmtree(folder, ignore_errors=True)

    # ---- the end ----------------------------------------------------------------------------------------
    def _finish(self, study: Any) -> TuneResult:
        from optuna.trial import TrialState
        trials = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._prune_folders(study)
        _write_trials(self.out / "trials.csv", trials)
        pruned = [t for t in trials if t["state"] == "PRUNED"]
        summary: dict[str, Any] = {"trials": len(trials), "complete": len(complete), "pruned": len(pruned),
                                   "failed": sum(t["state"] == "FAIL" for t in trials), "metric": self.metric,
                                   "trial_seconds": round(sum(t["seconds"] or 0 for t in trials), 1),
                                   "pruned_seconds": round(sum(t["seconds"] or 0 for t in pruned), 1)}
        best_run = test = None
        best_value, best_params = None, {}
        if complete:
            best = study.best_trial
            best_value, best_params = best.value, dict(best.user_attrs.get("config", {}))
            best_params["method"] = best.user_attrs.get("method")
            best_run = Path(best.user_attrs["run_dir"])
            shutil.copyfile(best_run / "config.yaml", self.out / "best.yaml")
            logger.info(f"best: trial {best.number}, validation {self.metric}={best.value:.4f}; scoring it on the "
                        f"test split (the only trial that sees it)")
            with logs.quiet():  # the report says the scores
                scores = run_evaluation(best_run)
            test = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
            refresh_run_card(best_run, test)  # the best trial's model card, with the test scores it now has
            summary.update({"best_trial": best.number, "best_validation": best.value, "best_params": best_params,
                            "best_run": str(best_run), "test": test})
        self._write_settings(summary)
        _write_report(self.out, study, trials, summary)
        return TuneResult(self.out, best_value, best_params, best_run, test, trials, summary)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trial_row(t: Any) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "value": t.value, "method": t.user_attrs.get("method"),
            "worker": t.user_attrs.get("worker"),
            "seconds": t.user_attrs.get("seconds"), "pruned_at": (max(t.intermediate_values) if
                                                                 t.state.name == "PRUNED" and t.intermediate_values else None),
            **{k: v for k, v in (t.user_attrs.get("config") or {}).items()}}


def _write_trials(path: Path, trials: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for t in trials for k in t))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for t in trials:
        w.writerow(t)
    fs.write_text(path, buf.getvalue())


def _write_report(out: Path, study: Any, trials: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One self-contained HTML page: the summary, optuna's plots (matplotlib, as PNG) and the trials."""

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm
    images = []
    plots = [("optimisation history", ovm.plot_optimization_history)]
    if summary.get("complete", 0) >= 2:
        plots.append(("parameter importances", ovm.plot_param_importances))
    for title, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            images.append((title, base64.b64encode(buf.getvalue()).decode()))
        except (ValueError, RuntimeError) as e:  # e.g. importances need parameters that varied
            images.append((f"{title}: not drawn ({e})", None))
    keys = list(dict.fromkeys(k for t in trials for k in t))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(t.get(k)) if t.get(k) is not None else '')}</td>"
                                    for k in keys) + "</tr>" for t in trials)
    parts = [f"<h1>transferkit tune: {html.escape(str(out))}</h1>",
             "<pre>" + html.escape(fs.dumps(summary, indent=1)) + "</pre>"]
    for title, img in images:
        parts.append(f"<h2>{html.escape(title)}</h2>" + (f'<img src="data:image/png;base64,{img}">' if img else ""))
    parts.append("<h2>trials</h2><table border=1 cellspacing=0 cellpadding=3><tr>"
                 + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>" + rows + "</table>")
    fs.write_text(out / "report.html", "<!doctype html><meta charset=utf-8><title>transferkit tune</title>"
                  + "".join(parts))
