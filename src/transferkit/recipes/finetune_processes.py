"""A fine-tuning run in this process or in several (torchrun on this machine): a new run is set up here
first, so bad input is one line before any process starts, and the processes then train exactly the run
directory this check chose; a resumed run is checked the same way before it is handed over."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.finetune import RunConfig
from ..core.runs import resumable
from ..training.launch import launch_command
from .finetune import FinetuneResult, FinetuneRun


def run_finetune(cfg: RunConfig | None, *, resume: str | Path | None, processes: int, overrides: dict[str, Any],
                 short_keys: dict[str, str]) -> FinetuneResult:
    """`cfg` trained (or the run at `resume` continued with `overrides`, given as short or dotted keys) with
    `processes` processes (already checked: `distributed.check_processes`); the run's directory and metrics."""
    if resume is not None:
        if processes == 1:
            return FinetuneRun.resumed(resume, RunConfig, overrides, short_keys)
        resumable(resume)  # a run that cannot resume is one line here, before any process starts
        argv = ["--resume", str(resume), *(f"{short_keys.get(k, k)}={v}" for k, v in overrides.items())]
        return FinetuneResult(Path(resume), launch_command("finetune", argv, None, processes, Path(resume)))
    run = FinetuneRun(cfg)
    if processes == 1:
        return run.run()
    run.setup()  # bad input is one line here, before any process starts
    cfg.output_dir = str(run.run_dir)  # the processes train the run this check chose
    return FinetuneResult(run.run_dir, launch_command("finetune", None, cfg, processes, run.run_dir))
