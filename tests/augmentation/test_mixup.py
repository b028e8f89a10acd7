"""Mixup inside the training step: alpha 0 is the un-mixed loss; otherwise the loss is the mixed-label one."""
from __future__ import annotations

import torch

from transferkit.augmentation.mixup import Mixup
from transferkit.tasks.classify.task import classification_loss

from train_helpers import no_dropout_classifier


def batch(n=8):
    torch.manual_seed(1)
    return {"pooled": torch.randn(n, 32), "labels": torch.tensor([i % 2 for i in range(n)])}


def test_alpha_zero_gives_the_unmixed_loss():
    model = no_dropout_classifier().train()
    b = batch()
    plain = classification_loss(model(pooled=b["pooled"]), b)[0]
    mix = Mixup(model, 0.0)
    loss_fn = mix.loss(classification_loss)
    torch.manual_seed(5)
    mixed = loss_fn(model(pooled=b["pooled"]), b)[0]
    assert torch.equal(plain, mixed)
    mix.remove()


def test_mixed_inputs_and_labels():
    model = no_dropout_classifier().train()
    b = batch()
    mix = Mixup(model, 0.4)
    loss_fn = mix.loss(classification_loss)
    torch.manual_seed(5)
    out = model(pooled=b["pooled"])
    lam, perm = mix.lam, mix.perm
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(8))
    x = lam * b["pooled"] + (1 - lam) * b["pooled"][perm]
    model.classifier.eval()  # the head alone, unmixed
    head = model.classifier(x)
    model.classifier.train()
    assert torch.allclose(out.logits, head, atol=1e-6)
    expected = (lam * torch.nn.functional.cross_entropy(head, b["labels"], reduction="sum")
                + (1 - lam) * torch.nn.functional.cross_entropy(head, b["labels"][perm], reduction="sum"))
    assert torch.allclose(loss_fn(out, b)[0], expected, atol=1e-5)
    model.eval()  # evaluation never mixes
    assert torch.equal(model(pooled=b["pooled"]).logits, model.classifier(b["pooled"]))
    mix.remove()
    model.train()
    assert torch.equal(model(pooled=b["pooled"]).logits, model.classifier(b["pooled"]))  # removed: no mixing
