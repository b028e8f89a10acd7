"""The training loop: accumulation equals the big batch, optimizer groups, early stopping, checkpoints."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from transferkit.config.finetune import TrainConfig
from transferkit.data.batches import TokenData, length_grouped_batches
from transferkit.core.errors import UserError
from transferkit.tasks.classify.task import classification_loss
from transferkit.training.optim import param_groups
from transferkit.training.loop import Trainer, total_steps

from helpers import LABELS, make_sentences, make_tokenizer
from train_helpers import accelerator as _accelerator, feature_trainer as _feature_trainer
from train_helpers import no_dropout_classifier as _no_dropout_classifier


@pytest.fixture(scope="module")
def eight():
    """8 labelled texts of different token lengths."""
    tok = make_tokenizer()
    rows = make_sentences(8, seed=5)
    data = TokenData([tok(t)["input_ids"] for t, _ in rows], [LABELS.index(label) for _, label in rows])
    assert len(set(data.lengths())) > 3  # padding differs between the micro-batches and the full batch
    return data


def _step(model, data, groups, tmp_path, dtype=torch.float32, max_grad_norm=1.0):
    """One Trainer step over `groups`; returns the parameters after it, the gradients it used, its result."""
    model = copy.deepcopy(model).to(dtype)
    cfg = TrainConfig(batch_size=len(groups[0]), grad_accum=len(groups), epochs=1, lr=1e-3, head_lr=1e-3,
                      warmup=0.0, max_grad_norm=max_grad_norm, progress=False)
    trainer = Trainer(model, data, cfg, run_dir=tmp_path, accelerator=_accelerator(), pad_id=0, loss_fn=classification_loss)
    grads: dict[str, torch.Tensor] = {}
    step = trainer.opt.step

    def capture(*args, **kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)
    trainer.opt.step = capture
    result = trainer._step(groups)
    return {n: p.detach().clone() for n, p in model.named_parameters()}, grads, result


FULL = [list(range(8))]
HALVES = [[0, 1, 2, 3], [4, 5, 6, 7]]
UNEVEN = [[0, 1, 2, 3, 4], [5, 6, 7]]


@pytest.mark.parametrize("groups", [HALVES, UNEVEN], ids=["4+4", "5+3"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)], ids=["fp32", "fp64"])
def test_grad_accumulation_equals_one_big_batch(groups, dtype, atol, eight, tmp_path):
    model = _no_dropout_classifier()
    big_params, big_grads, big_res = _step(model, eight, FULL, tmp_path / "a", dtype)
    acc_params, acc_grads, acc_res = _step(model, eight, groups, tmp_path / "b", dtype)
    assert acc_res[1:] == big_res[1:] == (8, big_res[2])
    assert acc_res[0] == pytest.approx(big_res[0], rel=1e-6)
    assert set(acc_grads) == set(big_grads)
    for n in big_grads:
        torch.testing.assert_close(acc_grads[n], big_grads[n], rtol=1e-5 if dtype == torch.float32 else 1e-10,
                                   atol=atol, msg=n)
    for n in big_params:
        torch.testing.assert_close(acc_params[n], big_params[n], rtol=0, atol=atol, msg=n)
    assert any(not torch.equal(big_params[n], p.to(dtype)) for n, p in model.named_parameters())


def test_accumulated_gradient_is_the_mean_loss_gradient(eight, tmp_path):
    """Scale matters too: without clipping the gradient equals that of the mean cross-entropy over all 8."""
    model = _no_dropout_classifier().double()
    _, grads, _ = _step(model, eight, UNEVEN, tmp_path, torch.float64, max_grad_norm=0.0)
    ref = copy.deepcopy(model)
    batch = eight.collate(list(range(8)), 0)
    labels = batch.pop("labels")
    torch.nn.functional.cross_entropy(ref(**batch).logits, labels).backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-9, msg=n)  # the loss is taken in fp32


def test_classification_loss_is_summed():
    class Out:
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    loss, items, correct = classification_loss(Out(), {"labels": labels})
    assert (items, correct) == (3, 2)
    expected = torch.nn.functional.cross_entropy(Out.logits, labels, reduction="sum")
    assert float(loss) == pytest.approx(float(expected))


def test_param_groups_split_head_and_decay():
    model = _no_dropout_classifier()
    groups = param_groups(model, lr=1e-5, head_lr=1e-3, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = []
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            seen.append(n)
            assert g["lr"] == (1e-3 if n.startswith("classifier.") else 1e-5), n
            no_decay = n.endswith(".bias") or "LayerNorm" in n
            assert g["weight_decay"] == (0.0 if no_decay else 0.01), n
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())
    frozen = _no_dropout_classifier()
    for n, p in frozen.named_parameters():
        p.requires_grad_(n.startswith("classifier."))
    assert sum(len(g["params"]) for g in param_groups(frozen, 1e-5, 1e-3, 0.01)) == 2


def test_length_grouped_batches_are_a_seeded_permutation():
    lengths = [(i * 7) % 23 + 1 for i in range(103)]
    a = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, 8, seed=1, epoch=1)
    assert a != length_grouped_batches(lengths, 8, seed=2, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(103))
    assert sorted(len(b) for b in a) == [7] + [8] * 12
    # one mega-batch: each batch is a run of the length-sorted order
    order = [i for b in sorted(a, key=lambda b: -lengths[b[0]]) for i in b]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)


def test_early_stopping_restores_best_weights(tmp_path):
    trainer = _feature_trainer(tmp_path, [0.6, 0.9, 0.8, 0.7, 0.95, 0.99], epochs=6, early_stopping_patience=2)
    assert trainer.steps_per_epoch == 4 and trainer.total_steps == 24
    best_at_step_8 = {}
    orig = trainer._evaluate

    def spy():
        stop = orig()
        if trainer.state.global_step == 8:
            params = trainer.model.named_parameters()
            best_at_step_8.update({n: p.detach().clone() for n, p in params if p.requires_grad})
        return stop
    trainer._evaluate = spy
    state = trainer.fit()
    assert state.stopped_early and state.global_step == 16
    assert (state.best_step, state.best_metric) == (8, 0.9)
    for n, p in trainer.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.detach(), best_at_step_8[n], rtol=0, atol=0)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "eval"] == [4, 8, 12, 16]
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "checkpoints" / "last" / "state.json").read_text())["global_step"] == 16


def test_patience_zero_never_stops_early(tmp_path):
    trainer = _feature_trainer(tmp_path, [0.9, 0.1, 0.1, 0.1, 0.1], epochs=5, early_stopping_patience=0)
    state = trainer.fit()
    assert not state.stopped_early and state.global_step == 20 and state.best_step == 4


def test_grad_accum_steps_per_epoch(tmp_path):
    trainer = _feature_trainer(tmp_path, [0.5] * 10, epochs=2, grad_accum=3)
    # 40 rows / 10 = 4 micro-batches -> ceil(4 / 3) = 2 steps per epoch
    assert (trainer.steps_per_epoch, trainer.total_steps) == (2, 4)
    state = trainer.fit()
    assert state.global_step == 4 and state.samples_seen == 80


def test_max_steps_overrides_epochs(tmp_path):
    trainer = _feature_trainer(tmp_path, [0.5] * 10, epochs=5, max_steps=3)
    assert trainer.total_steps == 3
    assert trainer.fit().global_step == 3


def test_checkpoint_round_trip(tmp_path):
    """load_checkpoint restores weights, optimizer, scheduler and counters, and drops later records."""
    a = _feature_trainer(tmp_path, [0.5, 0.6], epochs=2, max_steps=6)
    assert a.fit().best_step == 6  # so the weights after fit are those of the last checkpoint
    saved = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"type": "train", "step": 99}\n')
    b = _feature_trainer(tmp_path, [0.5] * 10, epochs=2, max_steps=6)
    assert b.load_checkpoint()
    assert b.state.global_step == 6
    for n, p in b.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.detach(), saved[n], rtol=0, atol=0)
    assert b.sched.state_dict()["last_epoch"] == a.sched.state_dict()["last_epoch"] == 6
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    assert not _feature_trainer(tmp_path / "empty", [0.5], epochs=1).load_checkpoint()


def test_max_steps_caps_epochs(tmp_path):
    """Both set: whichever ends first. A max_steps beyond the epochs does not extend training."""
    trainer = _feature_trainer(tmp_path, [0.5] * 10, epochs=1, max_steps=100)
    assert trainer.total_steps == 4
    assert trainer.fit().global_step == 4
    assert total_steps(4, 2.5, None) == 10 and total_steps(4, 2, 5) == 5 and total_steps(4, 0.1, None) == 1


def test_max_steps_without_epochs_cycles_the_data(tmp_path):
    trainer = _feature_trainer(tmp_path / "a", [0.5] * 10, epochs=None, max_steps=10)
    assert trainer.total_steps == 10
    state = trainer.fit()
    assert (state.global_step, state.epoch, state.samples_seen) == (10, 2, 100)
    with pytest.raises(UserError, match="train.epochs or train.max_steps"):
        _feature_trainer(tmp_path / "b", [0.5], epochs=None, max_steps=None)
