"""`plan`'s advice: the rules of thumb that pick one method from the per-method plans (each stated in
the reasons it gives), and the text table of the plan with the recommendation beneath it."""
from __future__ import annotations

from typing import Any

from ..core.registry import METHODS
from ..training.memory_estimate import MB

from .plan_types import GB, Hardware, MethodPlan, PlanResult

SMALL_DATA = 1_000  # fewer training rows than this: full fine-tuning overfits easily
LARGE_DATA = 20_000  # more than this: full fine-tuning's extra capacity pays off
MANY_TASKS = 3  # this many task models or more: one shared base beats a model copy per task
FEW_SHOT = 16  # this many training examples in the smallest class or fewer: few-shot (setfit's ground)
RANKED = "{name} fits and finishes in time"  # the reason for a pick by `Method.plan_rank` by default


def _rank(name: str) -> float:
    """The method's `plan_rank` (unranked methods last)."""
    rank = METHODS.get(name).plan_rank
    return float("inf") if rank is None else rank


def recommend(plans: list[MethodPlan], data: dict[str, Any], hw: Hardware, tasks: int,
              budget_s: float | None) -> tuple[str | None, list[str]]:
    """The method to use and why, by rules of thumb stated in the reasons."""
    by = {p.method: p for p in plans}
    rows, few = data["train_rows"], data.get("smallest_class_rows")
    fit = [p for p in plans if p.fits]
    if not fit:
        small = min(plans, key=lambda p: p.memory.total)
        return None, [f"nothing fits in {hw.memory_bytes / GB:.1f} GB: the smallest, {small.method} at batch 1, "
                      f"needs {small.memory.total / GB:.1f} GB; use a smaller model, a shorter max_length or a "
                      f"machine with more memory"]
    reasons: list[str] = []
    timed = [p for p in fit if p.total_seconds is not None]
    in_time = [p for p in fit if budget_s is None or p.total_seconds is None or p.total_seconds <= budget_s]
    if budget_s is not None and timed and not [p for p in timed if p.total_seconds <= budget_s]:
        fastest = min(timed, key=lambda p: p.total_seconds)
        return fastest.method, [f"no method finishes within {duration(budget_s)}; {fastest.method} is the "
                                f"fastest ({duration(fastest.total_seconds)}): lower the epochs or use a smaller "
                                f"model to fit the budget"] + _fit_reason(fastest, hw)
    if budget_s is not None:
        late = [p.method for p in timed if p.total_seconds > budget_s]
        if late:
            reasons.append(f"{', '.join(late)} would not finish within {duration(budget_s)}")
    full = next((m for m in by if METHODS.get(m).trains_encoder), None)  # full fine-tuning, the reference
    if full is not None and not [p for p in fit if p.method == full]:
        reasons.append(f"full fine-tuning does not fit in {hw.memory_bytes / GB:.1f} GB "
                       f"(needs {by[full].memory.total / GB:.1f} GB)")
    candidates = {p.method: p for p in in_time}

    def pick(name: str, why: str) -> tuple[str, list[str]]:
        return name, reasons + [why] + _fit_reason(candidates[name], hw)

    def because(name: str, template: str) -> tuple[str, list[str]]:
        p = candidates[name]
        return pick(name, template.format(name=name, rows=rows, few=few, trainable=p.memory.trainable_params,
                                          artefact=_size(p.artefact_bytes)))
    ranked = sorted((m for m in candidates if METHODS.get(m).plan_rank is not None), key=_rank)
    if tasks >= MANY_TASKS:
        shared = [m for m in ranked if METHODS.get(m).shares_base]  # best quality first
        if shared:
            p = candidates[shared[0]]
            full_size = by[full].artefact_bytes if full is not None else p.memory.weights
            return pick(shared[0], f"{tasks} task models: {shared[0]} adapters of {_size(p.artefact_bytes)} each "
                                   f"({_size(p.artefact_bytes * tasks)} for all) on one shared base, against "
                                   f"{_size(full_size * tasks)} for {tasks} fine-tuned copies; `transferkit serve` "
                                   f"runs them all on one encoder")
    # the rules of thumb, in order: the first regime that holds and that some candidate's method claims
    for regime, holds in (("few_shot", few is not None and few <= FEW_SHOT), ("small", rows < SMALL_DATA),
                          ("large", rows >= LARGE_DATA)):
        claimed = sorted((m for m in candidates if regime in METHODS.get(m).plan_picks), key=_rank)
        if holds and claimed:
            return because(claimed[0], METHODS.get(claimed[0]).plan_picks[regime])
    if ranked:
        return because(ranked[0], METHODS.get(ranked[0]).plan_picks.get("ranked", RANKED))
    p = min(fit, key=lambda p: p.memory.total)
    return p.method, reasons + [f"{p.method} is the smallest that fits"]


def _fit_reason(p: MethodPlan, hw: Hardware) -> list[str]:
    at = (f"its own stage's {p.stage['batch_size']} texts a step" if p.stage is not None
          else f"batch {p.batch_size}" + (f" x {p.grad_accum} accumulation" if p.grad_accum > 1 else ""))
    out = [f"{p.method} needs about {p.memory.total / GB:.2f} GB at {at} of {hw.memory_bytes / GB:.1f} GB"]
    if p.total_seconds is not None:
        s = p.stage
        first = (f"{s['steps']} steps on {s['what']} at {s['samples_per_s']:.1f} texts/s, then "
                 if s is not None and s.get("samples_per_s") else "")
        out.append(f"projected training time {duration(p.total_seconds)} ({first}{p.steps} steps, "
                   f"{p.dry_run['samples_per_s']:.1f} samples/s measured)")
    return out


def _size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.1f} MB"


def duration(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def table(result: PlanResult) -> str:
    """The plan as a text table and the recommendation beneath it."""
    head = ["method", "batch", "trainable", "weights MB", "grads MB", "optim MB", "activ MB", "total MB", "fits",
            "samples/s", "peak MB", "projected"]
    rows = []
    for p in result.methods:
        mb = p.memory.mb()
        rows.append([p.method, f"{p.batch_size}" + (f"x{p.grad_accum}" if p.grad_accum > 1 else ""),
                     f"{p.memory.trainable_params:,}", mb["weights"], mb["gradients"], mb["optimizer"],
                     round(mb["activations"] + mb["backward"] + mb["cached_features"], 1), mb["total"],
                     "yes" if p.fits else "no",
                     p.dry_run["samples_per_s"] if p.dry_run else "-",
                     max(p.dry_run["peak_mb"], (p.stage or {}).get("peak_mb", 0)) if p.dry_run else "-",
                     duration(p.total_seconds) if p.total_seconds is not None else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    d = result.data
    lines = [f"data: {d['train_rows']:,} training rows, {d['classes']} classes, {d['token_lengths']['mean']} tokens "
             f"on average -> max_length {d['max_length']}; hardware: {result.hardware.describe()}; "
             f"{result.tasks} task model{'s' if result.tasks > 1 else ''}", "", *lines, ""]
    for p in result.methods:
        if p.stage is not None:
            s = p.stage
            lines.append(f"{p.method} first trains {s['what']} like {s['like']}: {s['steps']} steps of {s['batch_size']} "
                         f"texts, {s['memory_mb']} MB" + (f", {s['samples_per_s']} samples/s measured"
                                                          if s.get("samples_per_s") else "")
                         + " (its row holds the larger stage's memory and both stages' time)")
    lines.append(f"recommended: {result.recommended or 'none'}")
    lines += [f"  - {r}" for r in result.reasons]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
