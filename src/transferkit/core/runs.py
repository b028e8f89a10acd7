"""The run directory as a record: choosing and claiming a new one, checking one can resume, its metric
history, and `run.json` (`RunInfo`).

`run.json` records the method, the encoder it started from, the label names and the token
limit: enough to rebuild the model from the saved artefact (a full model folder or an adapter;
`inference.loading` does that). It is read strictly (types checked, a damaged file is a one-line error
naming it). The list of local base folders this machine fine-tuned from lives here too, as loading
trusts only those (or one the user names).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..data.bundled import cache_dir
from ..training import distributed
from . import fs
from .errors import TrainingDiverged, UserError
from .folders import read_json, read_json_object
from .lock import LOCK_FILE, RunLock, in_use, live_owner
from .registry import METHODS

RUN_FILE = "run.json"
TRUSTED_BASES_FILE = "trusted-bases.json"
_TRUSTED_MAX = 500


def new_run_dir(output_dir: str | None, label: str) -> Path:
    """The run directory to create: `output_dir` if new or empty, else runs/<time>-<label>[-N].

    Checked now, before any work: it must be (or become) a writable folder, and not hold another run."""
    if output_dir:
        p = Path(output_dir)
        fs.check_writable_dir(p)
        owner = live_owner(p) if p.is_dir() else None
        if owner is not None:
            raise in_use(p, owner)
        if p.is_dir() and any(c.name != LOCK_FILE for c in p.iterdir()):
            raise UserError(f"output directory {p} exists and is not empty; choose another or remove it")
        return p
    base = Path("runs") / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{label}"
    p, i = base, 1
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    fs.check_writable_dir(p)
    return p


@contextlib.contextmanager
def new_run(run_dir: Path, command: str) -> Iterator[None]:
    """Lock and claim a new run's folder for the body. A UserError before the run's first checkpoint
    (a bad option found while building the model, say) removes what the run wrote, so bad input
    leaves no run directory; after a checkpoint (a diverged loss) the folder stays, resumable."""
    existed = run_dir.is_dir()
    discard = False
    try:
        with RunLock(run_dir, command):
            claim_new_run_dir(run_dir)
            try:
                yield
            except TrainingDiverged:
                raise
            except UserError:
                # a method's own stage keeps its checkpoints in a subfolder (setfit: contrastive/checkpoints)
                discard = not any(run_dir.glob("checkpoints")) and not any(run_dir.glob("*/checkpoints"))
                if discard:
                    for child in run_dir.iterdir():
                        if child.name != LOCK_FILE:
                            shutil.rmtree(child) if child.is_dir() else child.unlink()
                raise
    finally:
        if discard and not existed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def claim_new_run_dir(run_dir: Path) -> None:
    """After taking the lock: a new run's folder must still hold nothing but the lock (a second
    process that passed `new_run_dir` at the same moment stops here)."""
    others = [c.name for c in Path(run_dir).iterdir() if c.name != LOCK_FILE]
    if others:
        raise UserError(f"output directory {run_dir} is no longer empty (another process wrote {others[0]}); "
                        f"choose another")


def resumable(run_dir: str | Path) -> Path:
    """The config.yaml of an unfinished run directory; a UserError when there is nothing to resume."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"cannot resume {run_dir}: no config.yaml there (not a transferkit run directory)")
    if (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir} already finished; nothing to resume")
    fs.check_writable_dir(run_dir, "run directory")
    owner = live_owner(run_dir) if distributed.is_main() else None  # other ranks: rank 0 holds the lock
    if owner is not None:  # before reading a checkpoint its owner may be writing
        raise in_use(run_dir, owner)
    from ..training.checkpoint import find
    find(run_dir / "checkpoints")  # an old-format or damaged checkpoint is refused before any work
    return run_dir / "config.yaml"


def read_history(run_dir: str | Path) -> list[dict]:
    """The run's metric records (metrics.jsonl); a damaged line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# ---- bases this machine trained from ---------------------------------------------------------

def _trusted_path() -> Path:
    return cache_dir() / TRUSTED_BASES_FILE


def _trusted() -> list[str]:
    try:
        data = read_json(_trusted_path())
    except UserError:
        return []
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


def is_trusted_base(path: Path) -> bool:
    """True when this machine fine-tuned from the local folder `path`."""
    return str(Path(path).resolve()) in _trusted()


def trust_base(path: str) -> None:
    """Remember a local base folder that the user fine-tuned from on this machine."""
    p = Path(path)
    if not p.is_dir():
        return  # bundled or hub names resolve without this list
    resolved = str(p.resolve())
    known = [x for x in _trusted() if x != resolved] + [resolved]
    try:
        _trusted_path().parent.mkdir(parents=True, exist_ok=True)
        fs.write_json(_trusted_path(), known[-_TRUSTED_MAX:])
    except (OSError, UserError):
        pass  # a read-only cache only means the user names the base when loading elsewhere


@dataclass
class RunInfo:
    run_dir: str
    method: str
    model_name: str
    model_path: str
    label_names: list[str]
    max_length: int
    pooling: str
    classifier_dropout: float
    head_hidden: int = 0
    pool_layers: int = 1
    method_options: dict[str, Any] = field(default_factory=dict)
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    task: str = "classify"
    head: dict[str, Any] = field(default_factory=dict)  # the task's head settings (`modeling.resolve.set_head`)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.run_dir) / self.method_class().artifact

    def method_class(self) -> Any:
        """The registered class of the run's method; an unknown name is a one-line error naming run.json."""
        try:
            return METHODS.get(self.method)
        except UserError as e:
            raise UserError(f"{Path(self.run_dir) / RUN_FILE}: {e}") from None

    def write(self) -> None:
        d = asdict(self)
        d.pop("run_dir")
        fs.write_json(Path(self.run_dir) / RUN_FILE, d)

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunInfo":
        path = Path(run_dir) / RUN_FILE
        if not Path(run_dir).is_dir():
            raise UserError(f"run directory not found: {run_dir}")
        if not path.is_file():
            owner = live_owner(run_dir)
            if owner is not None:  # still training in another process: say so, not "interrupted"
                raise UserError(f"{run_dir} is not finished: it is being trained by process {owner.get('pid', '?')}"
                                f"{' (' + owner['command'] + ')' if owner.get('command') else ''}; use it once that "
                                "process ends")
            raise UserError(f"{run_dir} is not a finished transferkit run (no {RUN_FILE}); "
                            f"an interrupted run continues with: transferkit finetune --resume {run_dir}")
        d = read_json_object(path, "run record", strict=True)
        return cls(run_dir=str(run_dir), **_checked_fields(d, path))


_FIELD_TYPES = {"method": str, "model_name": str, "model_path": str, "label_names": list, "max_length": int,
                "pooling": str, "classifier_dropout": (int, float), "head_hidden": int, "pool_layers": int,
                "method_options": dict, "data_fingerprints": dict, "task": str, "head": dict}


def _checked_fields(d: dict[str, Any], path: Path) -> dict[str, Any]:
    """run.json's fields with their types checked; unknown or missing keys name the file."""
    names = {f.name for f in dataclasses.fields(RunInfo)} - {"run_dir"}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (written by another program, or damaged?)")
    required = [f.name for f in dataclasses.fields(RunInfo)
                if f.name != "run_dir" and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in d]
    if missing:
        raise UserError(f"{path}: missing key {missing[0]!r} (damaged or half-written?)")
    for k, v in d.items():
        t = _FIELD_TYPES[k]
        if isinstance(v, bool) or not isinstance(v, t):
            raise UserError(f"{path}: key {k!r} holds {v!r}, expected {getattr(t, '__name__', 'a number')}")
    if not d["label_names"] or not all(isinstance(x, str) for x in d["label_names"]):
        raise UserError(f"{path}: label_names must be a non-empty list of strings")
    if not 1 <= d["max_length"] <= 1_000_000:
        raise UserError(f"{path}: max_length {d['max_length']} is out of range")
    if not 0 <= d["classifier_dropout"] < 1:
        raise UserError(f"{path}: classifier_dropout {d['classifier_dropout']} is out of range [0, 1)")
    if d["pooling"] not in ("mean", "cls"):
        raise UserError(f"{path}: pooling {d['pooling']!r} is not mean or cls")
    return d
