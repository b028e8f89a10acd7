"""Next-sentence prediction trained jointly with MLM, as in BERT (BertForPreTraining).

Every pair of consecutive sentences of a document is one example: [CLS] A [SEP] B [SEP]. A set
share of them (default 50%, chosen by a seeded permutation so the share is exact) get a B drawn
from a random *other* document instead (NotNext, label 1; IsNext is 0, transformers' convention).
Sentences come from a small regular-expression splitter: it needs no downloaded model (nltk's punkt
cannot be fetched offline) and a sentence boundary that is occasionally wrong only makes a few
IsNext pairs slightly harder. The loss is the mean MLM loss plus the mean NSP loss.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..core.registry import OBJECTIVES
from ..data.corpus import build_cache, split_sentences
from . import LMOutput, batches_of, perplexity
from .clm import lm_loss
from .mlm import MLM, MLMData



def make_pairs(doc_of: np.ndarray, not_next: float, seed: int) -> np.ndarray:
    """[pairs, 3] rows (sentence A, sentence B, label) from sentence->document ids (documents contiguous).

    IsNext: B is the sentence after A in the same document. NotNext: B is a random sentence of another
    document; exactly round(not_next x pairs) pairs are NotNext."""
    doc_of = np.asarray(doc_of)
    a = np.flatnonzero(doc_of[:-1] == doc_of[1:])  # sentences followed by one of the same document
    if len(a) == 0 or len(np.unique(doc_of)) < 2:
        from ..core.errors import UserError
        raise UserError("NSP needs at least two documents and one document with two sentences")
    rng = np.random.default_rng(seed)
    pairs = np.stack([a, a + 1, np.zeros_like(a)], axis=1)
    neg = rng.permutation(len(a))[:int(round(len(a) * not_next))]
    b = rng.integers(0, len(doc_of), size=len(neg))
    clash = doc_of[b] == doc_of[a[neg]]
    while clash.any():  # redraw until every NotNext B comes from another document
        b[clash] = rng.integers(0, len(doc_of), size=int(clash.sum()))
        clash = doc_of[b] == doc_of[a[neg]]
    pairs[neg, 1], pairs[neg, 2] = b, 1
    return pairs


class PairData:
    """Sentence pairs as [CLS] A [SEP] B [SEP] with token types, longest-first truncation to `max_length`."""

    def __init__(self, cache: Any, pairs: np.ndarray, cls_id: int, sep_id: int, max_length: int) -> None:
        self.cache, self.pairs, self.cls, self.sep, self.max_length = cache, pairs, cls_id, sep_id, max_length
        lens = cache.row_lengths()
        self._lengths = np.minimum(lens[pairs[:, 0]] + lens[pairs[:, 1]] + 3, max_length)

    def __len__(self) -> int:
        return len(self.pairs)

    def lengths(self) -> list[int]:
        return self._lengths.tolist()

    def _truncate(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        while len(a) + len(b) + 3 > self.max_length:  # as BERT: cut the longer segment first
            if len(a) >= len(b):
                a = a[:-1]
            else:
                b = b[:-1]
        return a, b

    def collate(self, idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
        rows, types = [], []
        for i in idx:
            sa, sb, _ = self.pairs[i]
            a, b = self._truncate(self.cache.row(int(sa)).tolist(), self.cache.row(int(sb)).tolist())
            rows.append([self.cls, *a, self.sep, *b, self.sep])
            types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, width]
        tt = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (r, t) in enumerate(zip(rows, types)):
            ids[k, :len(r)] = torch.tensor(r)
            tt[k, :len(t)] = torch.tensor(t)
            mask[k, :len(r)] = 1
        labels = torch.as_tensor(self.pairs[list(idx), 2], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "next_sentence_label": labels}


def mlm_nsp_loss(out: LMOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """MLM summed over selected tokens + NSP summed over pairs scaled to the same count: mean + mean."""
    loss, n, correct = lm_loss(out, batch)
    nsp_labels = batch["next_sentence_label"]  # [batch]
    nsp = nn.functional.cross_entropy(out.nsp_logits.float(), nsp_labels, reduction="sum")
    return loss + nsp * (n / max(len(nsp_labels), 1)), n, correct


class MLMNSP(MLM):
    name = "mlm+nsp"

    def prepare(self, train_docs: list[str], held_docs: list[str], tokenizer: Any, vocab_size: int,
                cfg: Any) -> tuple[Any, Any]:
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            from ..core.errors import UserError
            raise UserError("mlm+nsp needs a BERT-style tokenizer with [CLS] and [SEP] tokens")
        masker = self.masker(tokenizer, vocab_size, cfg)
        width = cfg.max_length or self.default_max_length
        out = []
        for docs, fixed in ((train_docs, None), (held_docs, cfg.train.seed)):
            if len(docs) < 2:
                out.append(None)
                continue
            sents, doc_of = [], []
            for d, text in enumerate(docs):
                s = split_sentences(text)
                sents += s
                doc_of += [d] * len(s)
            cache = build_cache(sents, tokenizer, "sentences", None, extra={"doc": doc_of})
            pairs = make_pairs(np.asarray(doc_of), cfg.nsp_not_next, cfg.train.seed)
            out.append(MLMData(PairData(cache, pairs, tokenizer.cls_token_id, tokenizer.sep_token_id, width),
                               masker, fixed))
        return out[0], out[1]

    def loss_fn(self, out: LMOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        return mlm_nsp_loss(out, batch)

    @torch.no_grad()
    def evaluate(self, wrapped: nn.Module, data: Any, batch_size: int, pad_id: int, device: Any) -> dict[str, float]:
        mlm_sum, n, correct, nsp_sum, nsp_ok, pairs = 0.0, 0, 0, 0.0, 0, 0
        for idx in batches_of(len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.collate(idx, pad_id).items()}
            labels = batch.pop("labels")
            out = wrapped(**batch)
            loss, items, ok = lm_loss(out, {"labels": labels})
            y = batch["next_sentence_label"]
            mlm_sum, n, correct = mlm_sum + float(loss), n + items, correct + ok
            nsp_sum += float(nn.functional.cross_entropy(out.nsp_logits.float(), y, reduction="sum"))
            nsp_ok += int((out.nsp_logits.argmax(-1) == y).sum())
            pairs += len(y)
        mlm = mlm_sum / max(n, 1)
        return {"loss": mlm + nsp_sum / max(pairs, 1), "mlm_loss": mlm, "perplexity": perplexity(mlm),
                "accuracy": correct / max(n, 1), "nsp_accuracy": nsp_ok / max(pairs, 1), "tokens": n}


if "mlm+nsp" not in OBJECTIVES:  # a module reload must not register twice
    OBJECTIVES.register("mlm+nsp", MLMNSP())
