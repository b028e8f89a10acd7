"""Encoded generation rows as the training loop's data: padded batches of rows, or rows packed into blocks.

Both give the loop `lengths()`, `collate(indices, pad_id)` and `__len__`; a batch holds `input_ids`,
`attention_mask` (1 on real tokens), `lm_positions` (the flattened positions that predict a scored token) and
`labels` (those tokens), so only scored positions are projected onto the vocabulary (`CausalLM`), which on a
small decoder is a large share of the work.

Packing (`data.packing=true`) puts several rows into one block of at most max_length tokens (best fit,
longest rows first, so blocks come out nearly full) and gives each row position ids that start at 0 again.
The block has no attention mask of its own: transformers then reads the restarting position ids as sequence
boundaries and builds a block-diagonal causal mask, so no token attends to another row's tokens (the packing
test compares each row's loss packed and alone). Without packing, the loop's length-grouped batches keep
padding small.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .format import IGNORE


class GenData:
    """One row per item: padded on the right, the loss on the labelled tokens. A split's data also keeps what its
    scoring by generation needs: the rows themselves (`examples`, with their references), each prompt as the
    model reads it (`prompt_ids`) and the tokenizer."""

    def __init__(self, ids: list[list[int]], labels: list[list[int]], examples: Any = None,
                 prompt_ids: list[list[int]] | None = None, tokenizer: Any = None) -> None:
        self.ids, self.labels = ids, labels
        self.examples, self.prompt_ids, self.tokenizer = examples, prompt_ids, tokenizer

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, width]
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for k, i in enumerate(idx):
            n = len(self.ids[i])
            ids[k, :n] = torch.tensor(self.ids[i])
            mask[k, :n] = 1
            labels[k, :n] = torch.tensor(self.labels[i])
        return targets({"input_ids": ids, "attention_mask": mask}, labels)


def targets(batch: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """`batch` with next-token targets: position t predicts labels[t+1] where that is scored."""
    nxt = torch.full_like(labels, IGNORE)  # [batch, width]
    nxt[:, :-1] = labels[:, 1:]
    scored = nxt != IGNORE
    batch["lm_positions"] = scored.view(-1).nonzero().squeeze(1)  # [n_targets]
    batch["labels"] = nxt[scored]  # [n_targets], the same row-major order
    return batch


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Row indices grouped into blocks of at most `capacity` tokens: best fit, longest first (deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    blocks: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        fits = [b for b, r in enumerate(room) if r >= n]
        if fits:
            b = min(fits, key=lambda b: (room[b], b))  # the fullest block it fits in
            blocks[b].append(i)
            room[b] -= n
        else:
            blocks.append([i])
            room.append(capacity - n)
    return blocks


class PackedGenData:
    """Blocks of whole rows (see the module docstring): one block per item."""

    def __init__(self, rows: GenData, capacity: int) -> None:
        self.rows = rows
        self.blocks = pack(rows.lengths(), capacity)
        self.examples, self.prompt_ids, self.tokenizer = rows.examples, rows.prompt_ids, rows.tokenizer

    def __len__(self) -> int:
        return len(self.blocks)

    def lengths(self) -> list[int]:
        n = self.rows.lengths()
        return [sum(n[i] for i in b) for b in self.blocks]

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        blocks = [self.blocks[i] for i in idx]
        width = max(sum(len(self.rows.ids[i]) for i in b) for b in blocks)
        ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)  # [blocks, width]
        mask = torch.zeros((len(blocks), width), dtype=torch.long)
        labels = torch.full((len(blocks), width), IGNORE, dtype=torch.long)
        pos = torch.zeros((len(blocks), width), dtype=torch.long)
        for k, b in enumerate(blocks):
            at = 0
            for i in b:
                n = len(self.rows.ids[i])
                ids[k, at:at + n] = torch.tensor(self.rows.ids[i])
                labels[k, at:at + n] = torch.tensor(self.rows.labels[i])
                labels[k, at] = IGNORE  # the first token of a row is never a target of the row before it
                pos[k, at:at + n] = torch.arange(n)
                mask[k, at:at + n] = 1
                at += n
            pos[k, at:] = torch.arange(width - at)  # the padding is a sequence of its own
        return targets({"input_ids": ids, "attention_mask": mask, "position_ids": pos}, labels)
