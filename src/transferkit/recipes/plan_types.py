"""What `plan` computes, as records: the hardware it plans for, one method's plan, and the whole result
(`plan.py` fills them, `plan_advice.py` reads them to pick a method and print the table)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..training.memory_estimate import MemoryEstimate

GB = 2**30


@dataclass
class Hardware:
    device: str  # cpu | cuda
    memory_bytes: int  # what a run may use: free RAM (cpu) or free GPU memory (cuda)
    cores: int
    here: bool  # this machine as it is (dry runs measure it); False when memory/device were given
    name: str = ""

    def describe(self) -> str:
        where = "this machine" if self.here else "the machine described"
        return f"{self.device} ({self.name or where}), {self.memory_bytes / GB:.1f} GB usable, {self.cores} cores"


@dataclass
class MethodPlan:
    method: str
    batch_size: int
    grad_accum: int
    memory: MemoryEstimate
    fits: bool
    shares_base: bool
    epochs: float
    steps: int
    artefact_bytes: int  # one task's saved artefact
    eval_steps: int | None = None  # validation every this many steps (None: after every epoch)
    dry_run: dict[str, Any] | None = None  # samples_per_s, peak_mb, steps, seconds
    train_seconds: float | None = None  # the optimizer steps (what a run's metrics.json calls train seconds)
    eval_seconds: float | None = None  # validation passes (or, caching features, the one encoding pass)
    epoch_seconds: float | None = None
    total_seconds: float | None = None
    # the method's own stage before the main one (setfit's sentence pairs): what, like, batch_size (texts),
    # steps, memory_mb, fits, override (the option that halved its batch, for run.yaml, or None); after a
    # dry run samples_per_s, peak_mb, largest_batch, train_seconds (counted in total_seconds)
    stage: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "memory"}
        out["memory_mb"] = self.memory.mb()
        out["trainable_params"] = self.memory.trainable_params
        out["total_params"] = self.memory.total_params
        return out


@dataclass
class PlanResult:
    data: dict[str, Any]
    hardware: Hardware
    tasks: int
    time_budget_s: float | None
    methods: list[MethodPlan]
    recommended: str | None
    reasons: list[str]
    config: Any  # the RunConfig of the recommendation (None when nothing fits)
    output_dir: Path | None = None
    table: str = ""
    notes: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # `plan --models`: ranked, best first

    def to_json(self) -> dict[str, Any]:
        return {"recommended": self.recommended, "reasons": self.reasons, "data": self.data,
                "hardware": asdict(self.hardware), "tasks": self.tasks, "time_budget_s": self.time_budget_s,
                "methods": [m.row() for m in self.methods], "notes": self.notes, "models": self.models,
                "config": self.config.to_dict() if self.config is not None else None}


# ---- the hardware ----------------------------------------------------------------------------------
