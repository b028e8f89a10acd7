"""`plan --models`: candidate encoders ranked by LogME on the user's data, the best planned, the rest projected."""
from __future__ import annotations

import json

import pytest
import torch

from transferkit import api, cli
from transferkit.core.errors import UserError
from transferkit.recipes import plan_models

from helpers import save_tiny_bert, write_conll


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """Another tiny BERT (hidden 48, other weights)."""
    return save_tiny_bert(tmp_path_factory.mktemp("second") / "bert-48", hidden=48, seed=3)


def test_models_are_ranked_the_best_planned_and_the_others_projected(tiny_model_dir, second_model, sentiment_csv,
                                                                      tmp_path, capsys):
    out = tmp_path / "plan"
    assert cli.main(["plan", "--data", str(sentiment_csv), "--models", f"{tiny_model_dir},{second_model}",
                     "--methods", "lora,head_only", "--dry-run-steps", "2", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "models, ranked by LogME" in printed
    plan = json.loads((out / "plan.json").read_text())
    models = plan["models"]
    assert sorted(m["name"] for m in models) == sorted([str(tiny_model_dir), str(second_model)])
    assert [m["rank"] for m in models] == [1, 2] and models[0]["score"] >= models[1]["score"]
    assert all(m["method"] == plan["recommended"] and m["memory_mb"] > 0 and m["projected_seconds"] > 0
               and m["rows"] == 160 for m in models)
    assert plan["config"]["model"]["name"] == models[0]["name"]  # run.yaml trains the best-ranked model
    assert api.make_config(str(out / "run.yaml"), {}).model.name == models[0]["name"]


def test_the_score_follows_what_the_vectors_know_of_each_rows_label(tiny_model_dir, sentiment_csv, monkeypatch):
    """Pooled vectors that carry each sampled row's own label (more of it each time) score higher each time:
    the sample's vectors and labels stay row-aligned through the scoring."""
    cfg = api.make_config(None, {"data.data": str(sentiment_csv), "model.name": str(tiny_model_dir)})
    scores = []
    for signal in (0.0, 0.5, 2.0):
        def vectors(model, data, *args, signal=signal):
            g = torch.Generator().manual_seed(0)
            directions = torch.randn(2, 32, generator=g)  # one per label
            labels = torch.nn.functional.one_hot(torch.tensor(data.labels), 2).float()
            return signal * labels @ directions + torch.randn(len(data), 32, generator=g)
        monkeypatch.setattr(plan_models, "pooled_features", vectors)
        scores.append(plan_models.score_model(cfg, str(tiny_model_dir)).score)
    assert scores[0] < scores[1] < scores[2]


def test_unknown_models_and_per_token_tasks_are_one_line(tiny_model_dir, sentiment_csv, tmp_path):
    with pytest.raises(UserError, match="no-such-model"):
        api.plan(data=str(sentiment_csv), models=f"{tiny_model_dir},no-such-model", dry_run_steps=0)
    write_conll(tmp_path / "t.conll", 40)
    with pytest.raises(UserError, match="a ner run predicts per token"):
        api.plan(task="ner", data=str(tmp_path / "t.conll"), models=str(tiny_model_dir), dry_run_steps=0)
    with pytest.raises(UserError, match="names no model"):
        api.plan(data=str(sentiment_csv), models=" , ", dry_run_steps=0)
