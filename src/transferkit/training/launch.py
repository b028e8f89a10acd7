"""Launching a command as several processes on this machine (torchrun, through `distributed.launch`): the
config handed over in a temporary file, the exit code turned into a one-line error, the finished run's metrics
read back. Rank 0 writes; the processes find each other through torchrun's environment."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ..core import logs
from ..core.errors import UserError
from ..core.folders import read_json_object
from . import distributed

logger = logging.getLogger(__name__)


def _cuda() -> bool:
    import torch  # heavy: only when a launch actually happens
    return torch.cuda.is_available()


def launch_command(command: str, argv: list[str] | None, config: Any, processes: int, run_dir: Path) -> dict[str, Any]:
    """`transferkit COMMAND` as `processes` processes, either with `argv` or (when None) with `config`
    (a typed config with `to_yaml`) written to a temporary file; the run's metrics.json once they finish.
    The processes log at this process's level (`logs.child_flags`): a caller that hears no INFO lines
    hears none from them either."""
    with tempfile.TemporaryDirectory(prefix="transferkit-launch-") as tmp:
        if argv is None:
            path = Path(tmp) / "config.yaml"
            path.write_text(config.to_yaml(), encoding="utf-8")
            argv = ["--config", str(path)]
        logger.info(f"training with {processes} processes (torchrun, {'NCCL' if _cuda() else 'gloo'}): {run_dir}")
        code = distributed.launch([command, *argv, *logs.child_flags()], processes)
    if code != 0:
        raise UserError(f"{run_dir}: the {processes} training processes stopped with exit code {code} "
                        f"(their messages are above); a run with a checkpoint resumes with --resume {run_dir}")
    return read_json_object(run_dir / "metrics.json", "run metrics")
