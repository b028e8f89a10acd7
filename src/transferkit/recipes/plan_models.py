"""`plan --models`: candidate encoders ranked on the user's own data in minutes, before any fine-tuning.

Each model reads the training split as a run would (its own tokenizer and max_length, `FinetuneRun.setup`), and
a seeded sample of its rows is scored with the frozen model by the task's own estimate (`Task.transfer_score`):
LogME (`modeling.transferability`: why that estimate) of the pooled sentence vectors against the labels for the
sentence tasks, of each word's vector against its tag for the tagger, and the untuned likelihood of the
completions, per byte, for generation. The best-ranked model is then planned as `plan` plans one model (every
method, the recommendation); every other model gets the recommended method's memory and, after a short dry run,
its projected time, so the table puts quality, time and memory side by side. The sample is the same rows for
every model (the split is seeded), so the scores compare.
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config.finetune import RunConfig
from ..core import logs
from ..core.errors import UserError
from ..data.batches import Rows
from .finetune import FinetuneRun
from .plan_advice import duration

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 1000  # rows whose vectors are scored: LogME's ranking settles well below this


@dataclass
class ModelScore:
    name: str  # as the user named it
    path: str
    params: int
    score: float  # the task's estimate (LogME: mean log evidence per example); higher transfers better
    rows: int  # rows scored
    seconds: float  # encoding and scoring
    measure: str = "LogME"  # which estimate `score` is
    rank: int = 0
    method: str | None = None  # the recommended method, projected for this model
    memory_mb: float | None = None
    fits: bool | None = None
    projected_seconds: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def score_model(cfg: Any, name: str, sample_rows: int = SAMPLE_ROWS) -> ModelScore:
    """`name`'s score on a seeded sample of `cfg`'s training split (the task's `transfer_score`)."""
    import torch
    t0 = time.perf_counter()
    mcfg = RunConfig.from_dict(cfg.to_dict())
    mcfg.model.name = name
    setup = FinetuneRun(mcfg)
    with logs.quiet():  # the data summary was shown once, for the plan itself
        setup.setup()
    task = setup.task
    data = task.encode(setup.tokenizer, setup.splits.train, setup.max_length)
    rng = np.random.default_rng(cfg.train.seed)
    sample = Rows(data, sorted(rng.choice(len(data), size=min(sample_rows, len(data)), replace=False).tolist()))
    model = task.build_model(setup.resolved, setup.splits.label_names, setup.pooling, 0.0, 0, 1,
                             random_init=mcfg.model.init == "random")
    params = sum(p.numel() for p in getattr(model, "encoder", model).parameters())  # heads differ by task
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        score = task.transfer_score(model.to(device), sample, len(setup.splits.label_names), setup.tokenizer,
                                    setup.tokenizer.pad_token_id or 0, device)
    except ValueError:
        raise UserError(f"plan --models: the {len(sample)} sampled training rows all have the same label, so no "
                        "model can be told apart from another on them") from None
    del model
    gc.collect()
    seconds = time.perf_counter() - t0
    logger.info(f"{name}: {task.transfer_score_name} {score:.4f} on {len(sample)} training rows ({seconds:.0f} s)")
    return ModelScore(name, str(setup.resolved.path), params, round(score, 5), len(sample), round(seconds, 1),
                      measure=task.transfer_score_name)


def rank_models(cfg: Any, names: list[str], sample_rows: int = SAMPLE_ROWS) -> list[ModelScore]:
    """Every model scored, best first, ranks 1..n."""
    scores = [score_model(cfg, n, sample_rows) for n in names]
    scores.sort(key=lambda s: -s.score)
    for i, s in enumerate(scores, 1):
        s.rank = i
    return scores


def table(scores: list[ModelScore]) -> str:
    measure = scores[0].measure if scores else "LogME"
    head = ["rank", "model", "params", measure, "scored in", "method", "memory MB", "fits", "projected"]
    rows = [[s.rank, s.name, f"{s.params / 1e6:.1f}M", f"{s.score:.4f}", f"{s.seconds:.0f} s", s.method or "-",
             "-" if s.memory_mb is None else f"{s.memory_mb:.0f}", "-" if s.fits is None else "yes" if s.fits else "no",
             "-" if s.projected_seconds is None else duration(s.projected_seconds)] for s in scores]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    what = "LogME on frozen features of" if measure.startswith("LogME") else f"{measure} of the untuned model on"
    return "\n".join([f"models, ranked by {what} the training data (higher transfers better):", "", *lines])
