"""Batched forward passes of a model over token data: length-sorted batches padded per batch, run under
`torch.inference_mode` in eval mode, rows returned in input order. Evaluation (every task), feature caching
(head-only training) and prediction all go through `batched`, so they share one batching rule."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..core.errors import UserError
from ..data.batches import FeatureData, TokenData, batch_tokens, sorted_batches
from ..training import distributed


@torch.inference_mode()
def batched(module: nn.Module, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], data: TokenData | FeatureData,
            batch_size: int, pad_id: int, device: torch.device | str) -> torch.Tensor:
    """`fn(batch) -> [batch, k]` over length-sorted batches in eval mode; rows back in input order.

    Inside `distributed.sharded()` each process computes its share of the rows and gets all of them back."""
    was_training = module.training
    module.eval()
    mine = distributed.my_rows(len(data))
    lengths = data.lengths()
    parts: list[tuple[list[int], torch.Tensor]] = []
    for local in sorted_batches([lengths[i] for i in mine], batch_size, batch_tokens(device)):
        idx = [mine[j] for j in local]
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items() if k != "labels"}
        parts.append((idx, fn(batch).float().cpu()))  # [batch, k]
    module.train(was_training)
    if len(mine) < len(data):  # this process's share: every process's rows, gathered
        rows = distributed.gather_rows(len(data), [i for idx, _ in parts for i in idx],
                                       [r for _, rows in parts for r in rows])
        return torch.stack(rows) if rows else torch.empty(0, 0)
    out = torch.empty(len(data), parts[0][1].shape[-1]) if parts else torch.empty(0, 0)
    for idx, rows in parts:
        out[idx] = rows
    return out


def predict_logits(model: nn.Module, data: TokenData | FeatureData, batch_size: int = 64, pad_id: int = 0,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [n, classes] in the input order, computed in length-sorted batches."""
    return batched(model, lambda b: model(**b).logits, data, batch_size, pad_id, device)


def pooled_features(model: nn.Module, data: TokenData, batch_size: int = 64, pad_id: int = 0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Pooled encoder vectors [n, hidden] of a (frozen) classifier, in input order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return batched(base, lambda b: base.pool(**b), data, batch_size, pad_id, device)


@torch.inference_mode()
def row_outputs(model: nn.Module, rows: list[Any], batch_size: int, pad_id: int,
                device: torch.device | str) -> list[torch.Tensor]:
    """Per row of token ids, the model's logits: [labels] from a sequence head, [row length, labels] from a
    per-token head (padding dropped), as CPU float tensors in row order."""
    was_training = model.training
    model.eval()
    data = TokenData(rows)
    out: list[Any] = [None] * len(rows)
    for idx in sorted_batches([len(r) for r in rows], batch_size, batch_tokens(device)):
        batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items()}
        logits = model(**batch).logits.float().cpu()  # [batch, labels] or [batch, seq, labels]
        for r, i in enumerate(idx):
            out[i] = logits[r, :len(rows[i])] if logits.dim() == 3 else logits[r]
    model.train(was_training)
    return out


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of Linear layers (CPU inference only)."""
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(model.cpu(), {nn.Linear}, dtype=torch.qint8)


def check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1_000_000:
        raise UserError(f"batch size must be an integer in [1, 1000000], got {batch_size!r}")
