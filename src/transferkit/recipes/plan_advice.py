"""`plan`'s advice: the rules of thumb that pick one method from the per-method plans (each stated in
the reasons it gives), and the text table of the plan with the recommendation beneath it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..training.memory_estimate import MB

if TYPE_CHECKING:
    from .plan import Hardware, MethodPlan, PlanResult

GB = 2**30
SMALL_DATA = 1_000  # fewer training rows than this: full fine-tuning overfits easily
LARGE_DATA = 20_000  # more than this: full fine-tuning's extra capacity pays off
MANY_TASKS = 3  # this many task models or more: one shared base beats a model copy per task
FEW_SHOT = 16  # this many training examples in the smallest class or fewer: few-shot (setfit's ground)
SHARE_ORDER = ("lora", "ia3", "bitfit", "head_only")  # methods that share a base, best quality first


def recommend(plans: list[MethodPlan], data: dict[str, Any], hw: Hardware, tasks: int,
              budget_s: float | None) -> tuple[str | None, list[str]]:
    """The method to use and why, by rules of thumb stated in the reasons."""
    by = {p.method: p for p in plans}
    rows = data["train_rows"]
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
        return fastest.method, [f"no method finishes within {_duration(budget_s)}; {fastest.method} is the "
                                f"fastest ({_duration(fastest.total_seconds)}): lower the epochs or use a smaller "
                                f"model to fit the budget"] + _fit_reason(fastest, hw)
    if budget_s is not None:
        late = [p.method for p in timed if p.total_seconds > budget_s]
        if late:
            reasons.append(f"{', '.join(late)} would not finish within {_duration(budget_s)}")
    if not [p for p in fit if p.method == "full"] and "full" in by:
        reasons.append(f"full fine-tuning does not fit in {hw.memory_bytes / GB:.1f} GB "
                       f"(needs {by['full'].memory.total / GB:.1f} GB)")
    candidates = {p.method: p for p in in_time}

    def pick(name: str, why: str) -> tuple[str, list[str]]:
        return name, reasons + [why] + _fit_reason(candidates[name], hw)
    if tasks >= MANY_TASKS:
        shared = [m for m in SHARE_ORDER if m in candidates]
        if shared:
            p = candidates[shared[0]]
            full_size = by["full"].artefact_bytes if "full" in by else p.memory.weights
            return pick(shared[0], f"{tasks} task models: {shared[0]} adapters of {_size(p.artefact_bytes)} each "
                                   f"({_size(p.artefact_bytes * tasks)} for all) on one shared base, against "
                                   f"{_size(full_size * tasks)} for {tasks} fine-tuned copies; `transferkit serve` "
                                   f"runs them all on one encoder")
    few = data.get("smallest_class_rows")
    if few is not None and few <= FEW_SHOT and "setfit" in candidates:
        return pick("setfit", f"{few} training rows in the smallest class: few-shot; setfit tunes the encoder on "
                              f"sentence pairs drawn from them, then the head; at 8 rows per class on two bundled "
                              f"benchmarks it matched or beat LoRA and full fine-tuning and varied far less from "
                              f"seed to seed (README; LoRA with EDA augmentation did as well)")
    if rows < SMALL_DATA and "lora" in candidates:
        return pick("lora", f"{rows} training rows: few enough that full fine-tuning overfits easily; LoRA "
                            f"trains {candidates['lora'].memory.trainable_params:,} parameters and keeps the "
                            f"pretrained weights; augmenting the training data helps most at this size")
    if rows >= LARGE_DATA and "full" in candidates:
        return pick("full", f"{rows:,} training rows: enough data for full fine-tuning's extra capacity to pay "
                            f"off, and it fits")
    for name in ("lora", "full", "ia3", "adapter", "bitfit", "prefix", "head_only"):
        if name in candidates:
            why = (f"{rows:,} training rows: LoRA is within a point of full fine-tuning at this size on the "
                   f"bundled benchmarks, trains faster and saves {_size(candidates[name].artefact_bytes)}"
                   if name == "lora" else f"{name} fits and finishes in time")
            return pick(name, why)
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
        out.append(f"projected training time {_duration(p.total_seconds)} ({first}{p.steps} steps, "
                   f"{p.dry_run['samples_per_s']:.1f} samples/s measured)")
    return out


def _size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.1f} MB"


def _duration(s: float) -> str:
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
                     _duration(p.total_seconds) if p.total_seconds is not None else "-"])
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
