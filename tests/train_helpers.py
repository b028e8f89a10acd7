"""Fast Trainer builders shared by test_train.py and test_checkpoint.py."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from transferkit.config.finetune import TrainConfig
from transferkit.data.batches import FeatureData
from transferkit.modeling.classifier import TransferkitClassifierConfig, TransferkitForSequenceClassification
from transferkit.tasks.classify.task import classification_loss
from transferkit.training.loop import Trainer

from helpers import tiny_bert_config


def accelerator() -> Any:
    from accelerate import Accelerator
    return Accelerator(cpu=True)


def no_dropout_classifier(seed: int = 0) -> TransferkitForSequenceClassification:
    torch.manual_seed(seed)
    config = TransferkitClassifierConfig(encoder=tiny_bert_config(dropout=0.0).to_dict(), num_labels=2,
                                         classifier_dropout=0.0)
    return TransferkitForSequenceClassification(config)


def feature_trainer(tmp_path: Path, eval_values: Iterable[float], loss_fn: Callable = classification_loss,
                    **cfg_kw: Any) -> Trainer:
    """A trainer over cached features (fast) whose validation scores come from `eval_values`.

    40 rows in batches of 10: 4 optimizer steps per epoch. Only the head trains.
    """
    torch.manual_seed(0)
    model = no_dropout_classifier()
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("classifier."))
    data = FeatureData(torch.randn(40, 32), [i % 2 for i in range(40)])
    values = iter(eval_values)
    cfg = TrainConfig(**{"batch_size": 10, "lr": 1e-2, "head_lr": 1e-2, "warmup": 0.0, "progress": False,
                         "metric": "accuracy",
                         "early_stopping_patience": 0, **cfg_kw})
    return Trainer(model, data, cfg, run_dir=tmp_path, accelerator=accelerator(), pad_id=0,
                   eval_fn=lambda m: {"accuracy": next(values), "loss": 0.5}, loss_fn=loss_fn)
