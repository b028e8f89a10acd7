"""What every task's inference shares: inputs checked before any work (a bad one names its position),
inputs encoded as model rows (`EncodedInputs`), and probabilities that must be finite before they are
written anywhere."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core.errors import UserError
from ..data.tables import is_blank


@dataclass
class EncodedInputs:
    """Inputs as model rows: token ids per row, the input each row belongs to (a long text can be several
    windows), and whatever the task's `decode` needs to turn the rows' outputs back into output rows."""

    rows: list[Any]  # token ids per model row (int sequences), unpadded
    owner: list[int]  # per row, the index of the input it belongs to
    n_inputs: int
    state: Any = None
    # per input, its position in the caller's list (for messages), when that is not 0, 1, 2, ...
    positions: list[int] | None = None


def check_texts(texts: Sequence[str]) -> list[str]:
    """Texts as a list; a non-string or an empty text (training refuses those too) names its position."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text {i + 1} is not a string: {t!r}")
        if is_blank(t):  # whitespace, controls and zero-width characters alike: nothing to read
            raise UserError(f"text {i + 1} is empty: there is nothing to classify")
    return texts


def finite_probs(probs: torch.Tensor, first: int = 0, positions: list[int] | None = None) -> np.ndarray:
    """Probabilities [n, k] as numpy (rows are texts `first`, `first + 1`, ..., or at `positions`); NaN scores
    (from a model whose weights passed loading but overflow on this input) are an error, never output."""
    if not bool(torch.isfinite(probs).all()):
        row = int((~torch.isfinite(probs)).any(-1).nonzero()[0, 0])
        bad = (positions[row] if positions is not None else first + row) + 1
        raise UserError(f"the model produced non-finite scores for text {bad} (its weights overflow on this "
                        f"input); no predictions were written")
    return probs.numpy()
