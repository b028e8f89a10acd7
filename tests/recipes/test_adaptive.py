"""Defaults that respond to the data: more epochs for small sets, macro-F1 for imbalanced ones,
balanced class weights, and the warning for a model that predicts one class."""
from __future__ import annotations

import logging
import pytest
import torch

from transferkit import api
from transferkit.config.finetune import RunConfig, TrainConfig
from transferkit.reporting.metrics import collapse_warning
from transferkit.recipes.adaptive import adapt, class_weights, steps_per_epoch

from helpers import make_sentences, tiny_config, write_csv


def resolved(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 1e-3, "head_lr": 1e-3, **kw})


def test_small_sets_train_at_least_min_steps(caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    t = adapt(resolved(), TrainConfig(), 480, [240, 240], ["a", "b"], "accuracy")
    assert steps_per_epoch(480, 16, 1) == 30 and t.epochs == 10 and t.eval_steps is None and t.metric == "accuracy"
    assert "10 epochs instead of 3" in caplog.messages[0] and "at least 300 optimizer steps" in caplog.messages[0]
    tiny = adapt(resolved(), TrainConfig(), 40, [20, 20], ["a", "b"], "accuracy")  # 3 steps per epoch
    assert tiny.epochs == 100 and tiny.eval_steps == 20  # about 15 validations, not 100
    big = adapt(resolved(), TrainConfig(), 5000, [2500, 2500], ["a", "b"], "accuracy")
    assert big.epochs == 3  # 939 steps already
    for user in (TrainConfig(epochs=3), TrainConfig(max_steps=50), TrainConfig(min_steps=0)):
        assert adapt(resolved(), user, 480, [240, 240], ["a", "b"], "accuracy").epochs == 3
    assert adapt(resolved(), TrainConfig(min_steps=600), 480, [240, 240], ["a", "b"], "accuracy").epochs == 20
    accumulated = adapt(resolved(grad_accum=2), TrainConfig(), 480, [240, 240], ["a", "b"], "accuracy")
    assert accumulated.epochs == 20  # 15 optimizer steps per epoch


def test_imbalanced_classes_stop_on_macro_f1(caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    t = adapt(resolved(), TrainConfig(), 5000, [3250, 1250, 500], ["neg", "neu", "pos"], "accuracy")
    assert t.metric == "f1_macro" and "largest neg 65%" in caplog.messages[0] and "smallest pos 10%" in caplog.messages[0]
    assert adapt(resolved(), TrainConfig(), 5000, [2600, 2400], ["a", "b"], "accuracy").metric == "accuracy"
    chosen = adapt(resolved(metric="loss"), TrainConfig(metric="loss"), 5000, [4000, 1000], ["a", "b"], "accuracy")
    assert chosen.metric == "loss"  # the user's choice stands
    assert adapt(resolved(), TrainConfig(), 5000, None, ["O"], "f1").metric == "f1"  # ner: no class counts


def test_balanced_class_weights_and_collapse_warning():
    assert class_weights([60, 30, 10]) == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    assert class_weights([5, 0]) == [0.5, 0.0]
    warn = collapse_warning([0] * 95 + [1] * 5, [0] * 50 + [1] * 50, ["neg", "pos"], "test")
    assert warn.startswith("warning: the model predicts neg for 95% of the test texts (true share 50%)")
    assert collapse_warning([0] * 95 + [1] * 5, [0] * 90 + [1] * 10, ["neg", "pos"], "test") is None  # it is 90% neg
    assert collapse_warning([0, 1] * 50, [0] * 50 + [1] * 50, ["neg", "pos"], "test") is None


def test_a_run_records_what_it_adapted(tiny_model_dir, tmp_path, caplog):
    rows = [r for r in make_sentences(200) if r[1] == "negative"] + \
           [r for r in make_sentences(200, seed=1) if r[1] == "positive"][:25]
    data = write_csv(tmp_path / "imbalanced.csv", rows)
    cfg = tiny_config(data, tiny_model_dir, tmp_path / "run", "head_only", lr=1e-2, head_lr=1e-2)
    cfg.train.epochs = None  # the method's 20 epochs of a few steps -> raised to 300 steps
    cfg.train.class_weights = "balanced"
    caplog.set_level(logging.INFO, logger="transferkit")
    result = api.finetune(cfg)
    t = result.metrics["train"]
    n_train = result.metrics["data"]["sizes"]["train"]
    assert t["metric"] == "f1_macro" and t["class_weights"] == "balanced"
    assert t["max_epochs"] == -(-300 // steps_per_epoch(n_train, 16, 1))
    assert any(line.startswith("class weights (balanced): negative 0.") for line in caplog.messages)
    saved = RunConfig.from_yaml(result.run_dir / "config.yaml").train
    assert saved.metric is None and saved.epochs is None  # config.yaml keeps what the user left unset


def test_class_weights_change_the_loss():
    from transferkit.tasks.classify.task import classification_loss

    class Out:
        logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    batch = {"labels": torch.tensor([0, 1, 1])}
    plain = classification_loss(Out, batch)[0]
    weighted = classification_loss(Out, batch, torch.tensor([1.0, 3.0]))[0]
    ce = torch.nn.functional.cross_entropy(Out.logits, batch["labels"], reduction="none")
    assert torch.allclose(plain, ce.sum()) and torch.allclose(weighted, ce[0] + 3 * ce[1] + 3 * ce[2])


def test_class_weights_are_refused_for_ner(tiny_model_dir, tmp_path):
    from transferkit.core.errors import UserError
    cfg = tiny_config(tmp_path / "x.conll", tiny_model_dir, tmp_path / "run")
    cfg.task, cfg.train.class_weights = "ner", "balanced"
    with pytest.raises(UserError, match="class_weights applies to runs with one label per text"):
        api.finetune(cfg)
