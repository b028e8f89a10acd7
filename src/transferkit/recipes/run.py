"""The skeleton every training run shares (fine-tuning and pretraining): setup -> fit -> save.

    run = FinetuneRun(cfg)          # or PretrainRun(cfg)
    run.setup()                     # every check that bad input can fail, data read; writes nothing
    result = run.run()              # setup (unless done), claim the run directory, fit, save

`Run.run` owns what both kinds of run must do the same way: a new run takes its directory only once
every input passed (`runinfo.new_run`: locked, removed again if a user error comes before the first
checkpoint) and writes config.yaml first; a resumed run (`Run.resumed`) is locked from its first read
of the checkpoint to its last write, may change only `config.RESUME_KEYS`, and records such a change
only after the checks; a Trainer restores the last checkpoint through `restore`, with the same message.
Under several processes (`distributed`) every process runs setup and fit; rank 0 alone claims, locks
and writes the run directory. Subclasses implement `prepare` (what `setup` runs), `fit` and `save`, and may add what a new run
records (`before_new_run`, `start_files`).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..config.base import apply_resume_overrides
from ..config.trackers import parse as parse_trackers
from ..core import fs
from ..core.lock import RunLock
from ..core.runs import new_run, resumable
from ..training import distributed, tracking

logger = logging.getLogger(__name__)


class Run:
    """One training run of `cfg`; `resume` continues the run directory given."""

    command: ClassVar[str] = ""  # the CLI command, recorded in the run directory's lock
    # The compare or tune this run is part of, (its folder, the run's name there), which groups its tracker runs
    # (`training.tracking.place`); None: the run's own (or the group a compare's child is told in its environment).
    tracking_group: tuple[Path, str] | None = None
    accelerator: Any = None  # set by `fit`; its trackers (train.report_to) are ended when the run ends

    def __init__(self, cfg: Any, resume: str | Path | None = None, rewrite_config: bool = False) -> None:
        self.cfg = cfg
        self.resume = Path(resume) if resume is not None else None
        self.rewrite_config = rewrite_config  # a resume that changed the lr records it once checks pass
        self.run_dir: Path | None = None  # chosen by prepare()
        self._set_up = False

    @classmethod
    def resumed(cls, run_dir: str | Path, config_class: Any, overrides: Mapping[str, Any],
                short_keys: Mapping[str, str]) -> Any:
        """Continue the interrupted run in `run_dir` (its own config.yaml, with the resume overrides)."""
        cfg = config_class.from_yaml(resumable(run_dir))
        changed = apply_resume_overrides(cfg, dict(overrides), dict(short_keys))
        # held from the first read of the checkpoint to the last write; by rank 0 alone under several processes
        with RunLock(run_dir, cls.command) if distributed.is_main() else contextlib.nullcontext():
            return cls(cfg, run_dir, rewrite_config=changed).run()

    # ---- the entry point ----------------------------------------------------------------------
    def setup(self) -> None:
        """Every check bad input can fail (config, data, model), and the run directory chosen; nothing written."""
        self.prepare()
        if self.run_dir is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() must choose self.run_dir")
        self._set_up = True

    def run(self) -> Any:
        try:
            return self._run()
        finally:  # a tracker's run ends with the run, finished or not (TensorBoard flushed, MLflow's run closed)
            tracking.end(self.accelerator)

    def _run(self) -> Any:
        distributed.init()
        if not self._set_up:
            self.setup()
        # Under several processes rank 0's choice holds (a new run's default name has the time in it);
        # this also waits until every process has passed its checks, before anything is written.
        self.run_dir = Path(distributed.broadcast(str(self.run_dir)))
        if self.resume is not None:
            if self.rewrite_config and distributed.is_main():
                fs.write_text(self.run_dir / "config.yaml", self.cfg.to_yaml())
            self.fit()
            return self.save()
        if not distributed.is_main():
            distributed.barrier()  # rank 0 claims the directory and writes config.yaml
            self.fit()
            return self.save()
        self.before_new_run()
        with new_run(self.run_dir, self.command):
            fs.write_text(self.run_dir / "config.yaml", self.cfg.to_yaml())
            self.start_files()
            distributed.barrier()
            self.fit()
            return self.save()

    def trackers(self) -> list[Any]:
        """The experiment trackers train.report_to names, for this run's Accelerator (none by default)."""
        return tracking.trackers(parse_trackers(self.cfg.train.report_to),
                                 tracking.place(self.run_dir, self.tracking_group))

    def restore(self, trainer: Any) -> None:
        """Load the last checkpoint into `trainer` when this run resumes, and say where it goes on."""
        if self.resume is None:
            return
        if trainer.load_checkpoint():
            logger.info(f"resuming {self.run_dir} at step {trainer.state.global_step} of {trainer.total_steps}")
        else:
            logger.info(f"no checkpoint in {self.run_dir}: starting from the beginning")

    # ---- what each kind of run fills in ---------------------------------------------------------
    def prepare(self) -> None:
        """The body of `setup`: validate, read the data, resolve the model, set `self.run_dir`."""
        raise NotImplementedError

    def before_new_run(self) -> None:
        """Anything a new run records before it claims its directory."""

    def start_files(self) -> None:
        """Files a new run writes beside config.yaml when it starts."""

    def fit(self) -> Any:
        raise NotImplementedError

    def save(self) -> Any:
        raise NotImplementedError
