"""The fine-tuning run as an object: its steps run in-process, bad input fails in setup(), before any folder."""
from __future__ import annotations

import json

import pytest

from transferkit.api import make_config
from transferkit.core.errors import UserError
from transferkit.recipes.finetune import FinetuneRun

from helpers import tiny_config


def test_steps_in_process(tiny_model_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", "lora", max_steps=3)
    run = FinetuneRun(cfg)
    run.setup()
    assert not (tmp_path / "run").exists()  # setup writes nothing
    assert run.task.name == "classify" and run.splits.label_names == ["negative", "positive"]
    result = run.run()  # the same object runs to the end
    assert result.metrics["train"]["steps"] == 3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == result.metrics["test"]


def test_unknown_task_fails_before_anything(tiny_model_dir, sentiment_csv, tmp_path):
    base = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run")
    with pytest.raises(UserError, match="unknown task 'translate'; choose one of: classify, generate, multilabel, ner, "
                                        "pair, regression"):
        make_config(base, {"task": "translate"})
    base.task = "translate"
    with pytest.raises(UserError, match="unknown task 'translate'"):
        FinetuneRun(base).setup()
    assert not (tmp_path / "run").exists()


def test_a_metric_the_task_does_not_report_is_one_line(tiny_model_dir, sentiment_csv, tmp_path):
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", "lora", max_steps=2, metric="pearson")
    with pytest.raises(UserError, match=r"train.metric='pearson' is not a validation metric of this run \(.*accuracy"):
        FinetuneRun(cfg).run()
