"""Length-grouped batches and dynamic padding.

Written here rather than taken from transformers' `LengthGroupedSampler` because the loop needs
a sampler that is a pure function of (seed, epoch): a resumed run re-creates the epoch's batch
order exactly and skips the batches already done, with no DataLoader drawing from the global RNG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           group_by_length: bool = True, mega: int = 50) -> list[list[int]]:
    """Shuffled batches of indices; with grouping, each batch holds texts of similar length.

    Shuffle, cut into mega-batches of `mega * batch_size`, sort each by length, cut into batches,
    then shuffle the batch order: batches stay random while padding waste stays small.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        size = mega * batch_size
        chunks = [sorted(order[i:i + size], key=lambda j: -lengths[j]) for i in range(0, len(order), size)]
        order = [j for c in chunks for j in c]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    return batches


# Padded tokens per inference forward on a CPU. Larger forwards run at a lower rate there (their
# activations leave the cache): MiniLM-L6 on 512 movie sentences (27 tokens on average), 2 threads,
# gave 78 texts/s in batches of 64, 77 at 2,048 padded tokens, 111 at 1,024, 116 at 512, 119 at 256
# and 95 at 128 (benchmarks/inference.py --batch-tokens shows it on your machine). A GPU takes the
# whole batch: there a bigger forward is only faster.
CPU_BATCH_TOKENS = 512


def batch_tokens(device: Any) -> int | None:
    """The padded-token bound for inference batches on `device` (None: rows alone bound a batch)."""
    return CPU_BATCH_TOKENS if torch.device(device).type == "cpu" else None


def sorted_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Inference batches: longest first so padding is minimal; callers restore input order. Each holds
    at most `batch_size` rows and, with `max_tokens`, at most that many padded tokens (rows x its
    longest; a longer row goes alone)."""
    order = sorted(range(len(lengths)), key=lambda j: -lengths[j])
    batches: list[list[int]] = []
    for j in order:
        cur = batches[-1] if batches else None
        if (cur is None or len(cur) >= batch_size
                or (max_tokens is not None and (len(cur) + 1) * max(lengths[cur[0]], 1) > max_tokens)):
            batches.append([j])
        else:
            cur.append(j)
    return batches


@dataclass
class TokenData:
    """Tokenized texts with integer labels (labels may be None for unlabelled data); a row of ids is
    any int sequence (`tokens.tokenize` gives int32 arrays, to keep large training sets small)."""

    ids: Sequence[Sequence[int]]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        row_lengths = getattr(self.ids, "row_lengths", None)  # mapped ids know theirs without reading rows
        return row_lengths().tolist() if row_lengths is not None else [len(x) for x in self.ids]

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Pad the chosen rows to the longest among them: input_ids, attention_mask [, labels]."""
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, width]
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            input_ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[k, :len(r)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if self.labels is not None:
            batch["labels"] = label_tensor([self.labels[i] for i in idx])
        return batch


def label_tensor(values: list) -> torch.Tensor:
    """A batch's labels: class ids (int64 [batch]), target numbers (float32 [batch, targets]) or label
    vectors, as the task gave them."""
    t = torch.tensor(values)
    return t.float() if t.is_floating_point() else t.long()


@dataclass
class FeatureData:
    """Pooled encoder vectors [n, hidden] standing in for token ids when the encoder is frozen."""

    features: torch.Tensor
    labels: list[int] | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def lengths(self) -> list[int]:
        return [1] * len(self)

    def collate(self, idx: Sequence[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
        batch = {"pooled": self.features[list(idx)]}
        if self.labels is not None:
            batch["labels"] = label_tensor([self.labels[i] for i in idx])
        return batch


class Rows:
    """Some rows of encoded data, by index, seen through what batching reads of it (lengths and collate): a check,
    a sample or a benchmark that needs only part of a split, whatever the task's encoded data is."""

    def __init__(self, data: Any, idx: Sequence[int]) -> None:
        self.data, self.idx = data, list(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def lengths(self) -> list[int]:
        every = self.data.lengths()
        return [every[i] for i in self.idx]

    def collate(self, idx: Sequence[int], pad_id: int) -> Any:
        return self.data.collate([self.idx[i] for i in idx], pad_id)


class FirstRows(Rows):
    """The first `n` rows of encoded data."""

    def __init__(self, data: Any, n: int) -> None:
        super().__init__(data, range(min(n, len(data.lengths()))))
