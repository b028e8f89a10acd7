"""`plan --models`: candidate encoders ranked by LogME on the user's data, the best planned, the rest projected."""
from __future__ import annotations

import json

import pytest
import torch

from transferkit import api, cli
from transferkit.core.errors import UserError
from transferkit.modeling.classifier import TransferkitForTokenClassification
from transferkit.recipes import plan_models
from transferkit.tasks import base as task_base
from transferkit.tasks.ner.spans import EncodedWindows

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
            labels = torch.cat([data.collate([i], 0)["labels"] for i in range(len(data))])
            labels = torch.nn.functional.one_hot(labels, 2).float()
            return signal * labels @ directions + torch.randn(len(data), 32, generator=g)
        monkeypatch.setattr(task_base, "pooled_features", vectors)
        scores.append(plan_models.score_model(cfg, str(tiny_model_dir)).score)
    assert scores[0] < scores[1] < scores[2]


def test_a_tagger_is_scored_per_word_where_the_vectors_know_each_words_tag(tiny_model_dir, tmp_path, monkeypatch):
    """The tagger's estimate reads each word's first sub-token: vectors that carry the tag of the word at that
    position (more of it each time) score higher each time, so vectors and tags stay aligned token by token."""
    write_conll(tmp_path / "t.conll", 60)
    cfg = api.make_config(None, {"task": "ner", "data.data": str(tmp_path / "t.conll"),
                                 "model.name": str(tiny_model_dir)})
    scores, collate = [], EncodedWindows.collate
    for signal in (0.0, 0.5, 2.0):
        seen = {}

        def vectors(self, input_ids, attention_mask=None, *args, signal=signal, **kwargs):
            # the sample's tags, read back by position: what a perfect encoder would know of each word
            tags = seen["batch"]["labels"].clamp(min=0)  # [batch, seq]
            g = torch.Generator().manual_seed(int(input_ids.sum()))
            directions = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))  # one per tag id
            return signal * directions[tags] + torch.randn(*input_ids.shape, 24, generator=g)

        def remembered(self, idx, pad_id):
            seen["batch"] = collate(self, idx, pad_id)
            return {k: v.clone() for k, v in seen["batch"].items()}
        monkeypatch.setattr(EncodedWindows, "collate", remembered)
        monkeypatch.setattr(TransferkitForTokenClassification, "token_vectors", vectors)
        score = plan_models.score_model(cfg, str(tiny_model_dir))
        assert score.measure == "LogME/word"
        scores.append(score.score)
    assert scores[0] < scores[1] < scores[2]


def test_taggers_are_ranked_from_the_cli(tiny_model_dir, second_model, tmp_path, capsys):
    write_conll(tmp_path / "t.conll", 60)
    out = tmp_path / "plan"
    assert cli.main(["plan", "--task", "ner", "--data", str(tmp_path / "t.conll"), "--models",
                     f"{tiny_model_dir},{second_model}", "--methods", "lora", "--no-dry-run",
                     "--output-dir", str(out)]) == 0
    assert "models, ranked by LogME on frozen features of the training data" in capsys.readouterr().out
    models = json.loads((out / "plan.json").read_text())["models"]
    assert [m["rank"] for m in models] == [1, 2] and models[0]["score"] >= models[1]["score"]
    assert {m["measure"] for m in models} == {"LogME/word"} and all(m["memory_mb"] > 0 for m in models)


def test_unknown_models_are_one_line(tiny_model_dir, sentiment_csv):
    with pytest.raises(UserError, match="no-such-model"):
        api.plan(data=str(sentiment_csv), models=f"{tiny_model_dir},no-such-model", dry_run_steps=0)
