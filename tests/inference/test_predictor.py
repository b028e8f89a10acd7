"""Prediction: dynamic padding and length sorting never change a result, and order is kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.data.batches import TokenData
from transferkit.core.errors import UserError
from transferkit.inference import Predictor, pooled_features, predict_logits

LONG = " ".join(["the film was really quite good and the acting was great"] * 12)  # truncated at max_length
TEXTS = ["good", "awful boring plot with dull acting and a weak script", "the movie", LONG, "superb film",
         "bad", "this film was really quite terrible and the ending was poor", "fine"]


@pytest.fixture(scope="module", params=["full", "lora"])
def predictor(request, finished_run):
    return Predictor.from_run(finished_run(request.param), batch_size=3)


def test_batch_equals_one_by_one(predictor):
    together = predictor.predict_proba(TEXTS)
    alone = np.concatenate([predictor.predict_proba([t]) for t in TEXTS])
    assert together.shape == (len(TEXTS), 2)
    assert np.abs(together - alone).max() < 1e-5
    assert np.allclose(together.sum(axis=1), 1.0, atol=1e-6)
    # the texts do not all get the same probabilities, so a reordering would show
    assert np.abs(together[:, 1] - together[0, 1]).max() > 1e-4


def test_order_is_kept(predictor):
    probs = predictor.predict_proba(TEXTS)
    rev = predictor.predict_proba(TEXTS[::-1])
    assert np.abs(rev[::-1] - probs).max() < 1e-5
    perm = [3, 0, 7, 1, 6, 2, 5, 4]
    assert np.abs(predictor.predict_proba([TEXTS[i] for i in perm]) - probs[perm]).max() < 1e-5


def test_predict_rows(predictor):
    rows = predictor.predict(TEXTS)
    probs = predictor.predict_proba(TEXTS)
    assert len(rows) == len(TEXTS)
    for row, p in zip(rows, probs):
        assert set(row) == {"label", "confidence", "probs"}
        assert list(row["probs"]) == ["negative", "positive"]
        assert row["label"] == ["negative", "positive"][int(p.argmax())]
        assert row["confidence"] == pytest.approx(float(p.max()), abs=1e-6)
    single = predictor.predict("good")
    assert isinstance(single, dict) and single == predictor.predict(["good"])[0]
    assert predictor.predict([]) == []


def test_long_text_is_truncated(predictor):
    ids = TokenData([predictor.tokenizer(LONG, truncation=True, max_length=predictor.max_length)["input_ids"]])
    assert ids.lengths()[0] == predictor.max_length
    assert len(predictor.tokenizer(LONG)["input_ids"]) > predictor.max_length
    assert np.isfinite(predictor.predict_proba([LONG])).all()


def test_non_string_is_a_user_error(predictor):
    with pytest.raises(UserError, match="text 2 is not a string"):
        predictor.predict_proba(["good", None])


def test_lora_is_merged_for_serving(finished_run):
    model = Predictor.from_run(finished_run("lora"), backend="torch").model
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert type(model).__name__ == "TransferkitForSequenceClassification"
    assert not model.training


def test_int8_predictor_is_close(finished_run):
    run = finished_run("full")
    fp32 = Predictor.from_run(run).predict_proba(TEXTS)
    int8 = Predictor.from_run(run, quantize=True).predict_proba(TEXTS)
    assert int8.shape == fp32.shape
    assert np.abs(int8 - fp32).max() < 0.1


def test_predict_logits_restores_training_mode(finished_run):
    predictor = Predictor.from_run(finished_run("full"), backend="torch")  # its PyTorch model's modes
    model = predictor.model.train()
    tok = predictor.tokenizer
    ids = TokenData([tok(t, truncation=True, max_length=predictor.max_length)["input_ids"] for t in TEXTS[:4]])
    a = predict_logits(model, ids, batch_size=2)
    assert model.training
    b = predict_logits(model, ids, batch_size=64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    feats = pooled_features(model, ids, batch_size=2)
    assert feats.shape == (4, 32) and model.training
    with torch.no_grad():
        torch.testing.assert_close(model.eval().classifier(feats.clone()), a, rtol=0, atol=1e-5)
