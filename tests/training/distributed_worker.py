"""Run under torchrun by test_distributed.py: evaluation rows split between the processes and
gathered back, and one global batch split for a training step. Rank 0 writes what it saw as JSON."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import torch
from torch import nn

from transferkit.training import distributed
from transferkit.data.batches import TokenData
from transferkit.inference import predict_logits
from transferkit.tasks.ner.task import window_probs


class RowIdentity(nn.Module):
    """Logits that name their row: [sum of its ids, its length]; per token: [id, position]."""

    def __init__(self, per_token: bool = False) -> None:
        super().__init__()
        self.per_token = per_token

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        ids = (input_ids * attention_mask).float()
        if self.per_token:
            pos = torch.arange(ids.shape[1]).expand_as(ids).float()
            return SimpleNamespace(logits=torch.stack([ids, pos], dim=-1))  # [batch, seq, 2]
        return SimpleNamespace(logits=torch.stack([ids.sum(-1), attention_mask.sum(-1).float()], dim=-1))


def main(out: str, rows: int) -> None:
    distributed.init()
    data = TokenData([[i + 1] * (1 + (i * 7) % 5) for i in range(rows)], [0] * rows)  # uneven lengths
    data.input_ids = data.ids  # window_probs reads windows as input_ids
    alone = predict_logits(RowIdentity(), data, batch_size=2)
    with distributed.sharded():
        mine = distributed.my_rows(rows)
        together = predict_logits(RowIdentity(), data, batch_size=2)
        tags = window_probs(RowIdentity(per_token=True), data, 2, 0, "cpu")
    tags_alone = window_probs(RowIdentity(per_token=True), data, 2, 0, "cpu")
    shares = distributed.reduce_sum([len(mine)], "cpu")
    split = distributed.split_batch([5])  # one row, two processes: rank 1 stands in with weight 0
    every_split = [None] * distributed.world_size()
    torch.distributed.all_gather_object(every_split, split)
    if distributed.is_main():
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"world": distributed.world_size(), "rows_computed": shares[0],
                       "logits_equal": bool(torch.equal(alone, together)), "shape": list(together.shape),
                       "tags_equal": all(a.shape == b.shape and (a == b).all() for a, b in zip(tags, tags_alone))
                       and len(tags) == rows, "splits": every_split}, f)
    torch.distributed.barrier()  # rank 1 leaves after rank 0 wrote, then both close the group
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
