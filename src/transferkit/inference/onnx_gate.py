"""The checks an ONNX export must pass before its folder appears.

fp32: the graph, run by onnxruntime on held-out texts, must give the PyTorch model's scores (largest
difference at most FP32_MAX_PROB_DIFF) and decisions (agreement at least FP32_MIN_AGREEMENT), both read the
way the run's task reads them (`Task.gate_view`: probabilities and argmax for one label per text, each
label's probability and decision for several, the values themselves for regression).
int8: the quantised graph must keep argmax agreement with the fp32 graph at INT8_MIN_AGREEMENT or more
and lose at most INT8_MAX_METRIC_DROP of the task's headline metric (accuracy for labels, entity F1
for tags) on the same held-out split. Items are texts for a sentence classifier and real
(unpadded) tokens for a tagger.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from ..data.batches import batch_tokens, sorted_batches
from ..core.errors import UserError

FP32_MIN_AGREEMENT = 0.995  # argmax agreement with the PyTorch model
INT8_MIN_AGREEMENT = 0.995  # argmax agreement with the fp32 graph
FP32_MAX_PROB_DIFF = 1e-3  # float rounding differs between kernels; a wrong graph differs by far more
INT8_MAX_METRIC_DROP = 0.005  # half a point of accuracy (or entity F1)


def agreement(reference: nn.Module, candidate: nn.Module, data: Any, view: Any, batch_size: int = 64,
              pad_id: int = 0) -> dict[str, Any]:
    """Decision agreement and the largest score difference of two models over `data`'s batches; `view`
    reads logits [items, outputs] as (scores, decisions) the way the run's task does (`Task.gate_view`:
    probabilities and argmax for one label, per-label probabilities and >= 0.5 for several, values for
    regression)."""
    found = agreements(reference, {"candidate": candidate}, data, view, batch_size, pad_id)["candidate"]
    return {k: found[k] for k in ("items", "argmax_agreement", "max_prob_diff")}


@torch.inference_mode()
def agreements(reference: nn.Module, candidates: dict[str, nn.Module], data: Any, view: Any, batch_size: int = 64,
               pad_id: int = 0) -> dict[str, dict[str, Any]]:
    """`agreement` of each candidate with one pass of the reference, plus each model's rows per second over
    that pass (after one untimed call on the first batch), under "rows_per_s" (the reference's under
    the key "reference")."""
    names = list(candidates)
    items = 0
    agree = dict.fromkeys(names, 0)
    max_diff = dict.fromkeys(names, 0.0)
    seconds = dict.fromkeys(["reference", *names], 0.0)
    timed_rows = 0
    for n, idx in enumerate(sorted_batches(data.lengths(), batch_size, batch_tokens("cpu"))):
        batch = {k: v for k, v in data.collate(idx, pad_id).items() if k != "labels"}
        outs = {}
        for name, model in [("reference", reference), *candidates.items()]:
            if n == 0:
                model(**batch)  # untimed: the first call pays for lazy set-up
            t0 = time.perf_counter()
            outs[name] = model(**batch).logits.float()  # [batch, labels] / [batch, seq, tags]
            seconds[name] += time.perf_counter() - t0
        timed_rows += len(idx)
        keep = batch["attention_mask"].bool()
        a, da = _read(outs["reference"], keep, view)
        for name in names:
            b, db = _read(outs[name], keep, view)
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            same = (da == db).reshape(len(da), -1).all(-1) if da.numel() else da.new_zeros(0, dtype=torch.bool)
            agree[name] += int(same.sum())
            if math.isnan(diff) or math.isnan(max_diff[name]):  # non-finite outputs fail every check below
                max_diff[name] = math.nan
            else:
                max_diff[name] = max(max_diff[name], diff)
        items += a.shape[0]
    rate = {k: round(timed_rows / v, 1) if v > 0 else None for k, v in seconds.items()}
    return {name: {"items": items, "argmax_agreement": agree[name] / max(items, 1), "max_prob_diff": max_diff[name],
                   "rows_per_s": {"reference": rate["reference"], "candidate": rate[name]}} for name in names}


def _read(logits: torch.Tensor, keep: torch.Tensor, view: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, decisions) of a batch's logits as the task reads them; per token only the real tokens count."""
    if logits.dim() == 3:
        logits = logits[keep]  # [tokens, tags]
    return view(logits)


def check_fp32(found: dict[str, Any], where: str) -> None:
    """Refuse an fp32 graph that does not reproduce the PyTorch model (numbers in the message)."""
    if not (found["max_prob_diff"] <= FP32_MAX_PROB_DIFF and found["argmax_agreement"] >= FP32_MIN_AGREEMENT):
        raise UserError(f"the ONNX graph disagrees with the PyTorch model on {where}: max |prob diff| "
                        f"{found['max_prob_diff']:.2e} (limit {FP32_MAX_PROB_DIFF:g}), argmax agreement "
                        f"{found['argmax_agreement']:.2%} (need {FP32_MIN_AGREEMENT:.1%}); nothing was written")


def check_int8(found: dict[str, Any], metric: str, fp32: float, int8: float, where: str) -> None:
    """Refuse an int8 graph that changes too many predictions or loses too much of the metric."""
    drop = fp32 - int8
    if not (found["argmax_agreement"] >= INT8_MIN_AGREEMENT and drop <= INT8_MAX_METRIC_DROP):
        change = f"{abs(drop) * 100:.2f} points {'lower' if drop > 0 else 'higher'}" if drop else "the same"
        raise UserError(f"int8 quantisation refused on {where}: argmax agreement with fp32 "
                        f"{found['argmax_agreement']:.2%} (need {INT8_MIN_AGREEMENT:.1%}), {metric} {int8:.2%} vs fp32 "
                        f"{fp32:.2%} ({change}; a drop of at most {INT8_MAX_METRIC_DROP * 100:g} points is "
                        f"allowed); export without --int8 for the fp32 graph; nothing was written")


def limits() -> dict[str, float]:
    """The thresholds, for the manifest."""
    return {"fp32_min_argmax_agreement": FP32_MIN_AGREEMENT, "fp32_max_prob_diff": FP32_MAX_PROB_DIFF,
            "int8_min_argmax_agreement": INT8_MIN_AGREEMENT, "int8_max_metric_drop": INT8_MAX_METRIC_DROP}
