"""Regression: targets read strictly, metrics against scipy, standardised training with answers in the
targets' units everywhere (predictor, stock transformers, ONNX, the server), and the bundled scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

import transferkit
from transferkit import api
from transferkit.config.finetune import DataConfig
from transferkit.core.errors import UserError
from transferkit.core.runs import trust_base
from transferkit.inference import Predictor
from transferkit.tasks import get
from transferkit.tasks.regression.dataset import parse_movie_scores
from transferkit.tasks.regression.metrics import regression_metrics
from transferkit.tasks.regression.read import load_targets

from helpers import expect_user_error, tiny_config, write_csv, write_scores


def test_targets_are_read_from_csv_jsonl_and_several_columns(tmp_path):
    one = load_targets(str(write_csv(tmp_path / "a.csv", [("good", "1.5"), ("bad", "-2")], ("text", "score"))))
    assert one.labels == [(1.5,), (-2.0,)] and one.label_columns == ["score"]
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "good", "x": 1, "y": 0.5}\n{"text": "bad", "x": -1, "y": 2}\n', encoding="utf-8")
    two = load_targets(str(path), label_column="x,y")
    assert two.labels == [(1.0, 0.5), (-1.0, 2.0)] and two.label_columns == ["x", "y"]


@pytest.mark.parametrize("value,message", [("high", "row 2.*not a finite number"), ("nan", "not a finite number"),
                                           ("inf", "not a finite number"), ("", "row 2.*missing")])
def test_bad_targets_are_refused_naming_the_row(tmp_path, value, message):
    path = write_csv(tmp_path / "a.csv", [("good", "1"), ("bad", value)], ("text", "score"))
    with pytest.raises(UserError, match=message):
        load_targets(str(path))


def test_cli_refuses_a_non_numeric_target_with_exit_2(tmp_path, tiny_model_dir, capsys):
    rows = [(f"text {i}", str(i)) for i in range(30)] + [("odd", "five")]
    data = write_csv(tmp_path / "a.csv", rows, ("text", "score"))
    line = expect_user_error(capsys, ["finetune", "--task", "regression", "--data", str(data), "--model",
                                      str(tiny_model_dir), "--output-dir", str(tmp_path / "run"), "--max-steps", "2"])
    assert "'five'" in line and "row 31" in line and not (tmp_path / "run").exists()


def test_a_constant_target_and_an_unknown_loss_are_refused(tmp_path):
    path = write_csv(tmp_path / "a.csv", [(f"text {i}", "3") for i in range(30)], ("text", "score"))
    with pytest.raises(UserError, match="same value in every training row"):
        get("regression").prepare(DataConfig(data=str(path)), 42)
    cfg = tiny_config(path, tmp_path, None)
    cfg.task, cfg.train.loss = "classify", "huber"
    with pytest.raises(UserError, match="a classify run trains with 'auto'"):
        get("classify").configure(cfg)


def test_metrics_match_scipy():
    t = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0], [4.0, 2.0], [6.0, 1.5]])
    p = np.array([[1.5, 0.5], [1.0, 1.0], [3.5, 4.0], [4.5, 3.0], [5.0, 1.0]])
    m = regression_metrics(t, p, ["a", "b"])
    for k, name in enumerate("ab"):
        per = m["per_target"][name]
        assert per["mse"] == pytest.approx(np.mean((p[:, k] - t[:, k]) ** 2))
        assert per["mae"] == pytest.approx(np.mean(np.abs(p[:, k] - t[:, k])))
        assert per["pearson"] == pytest.approx(pearsonr(p[:, k], t[:, k])[0])
        assert per["spearman"] == pytest.approx(spearmanr(p[:, k], t[:, k])[0])
    assert m["pearson"] == pytest.approx((m["per_target"]["a"]["pearson"] + m["per_target"]["b"]["pearson"]) / 2)
    assert regression_metrics(t, np.ones_like(t), ["a", "b"])["pearson"] == 0.0  # constant predictions: 0, not NaN


def test_movie_scores_keep_every_sentence_with_its_score():
    raw = b"1\t2.5\tA fine film.\n2\t0\tA film.\n3\t-1.25\tA dull film.\n"
    df = parse_movie_scores(raw)
    assert df.text.tolist() == ["A fine film.", "A film.", "A dull film."] and df.score.tolist() == [2.5, 0.0, -1.25]


@pytest.fixture(scope="module")
def trained_regression_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("regression")
    cfg = tiny_config(write_scores(root / "s.csv", 160), tiny_model_dir, root / "run", "full", max_steps=40, lr=5e-3)
    cfg.task = "regression"
    return api.finetune(cfg)


@pytest.fixture
def regression_run(trained_regression_run, tiny_model_dir):
    trust_base(tiny_model_dir)  # each test here has a fresh cache, which holds the list of trusted bases
    return trained_regression_run.run_dir


def test_training_standardises_targets_and_answers_in_their_units(trained_regression_run, regression_run):
    info = json.loads((regression_run / "run.json").read_text())
    head = info["head"]
    assert head["problem_type"] == "regression" and len(head["output_scale"]) == 1
    assert 1.0 < head["output_scale"][0] < 3.0  # the sd of ratings near +-2
    test = trained_regression_run.metrics["test"]
    assert {"mse", "mae", "pearson", "spearman"} <= set(test) and test["pearson"] > 0.5
    rows = api.predict(regression_run, ["a good and great film", "awful boring plot"])
    assert rows[0]["values"]["score"] > rows[1]["values"]["score"]
    assert (regression_run / "report" / "scatter.png").is_file()


def test_stock_transformers_and_onnx_give_the_runs_values(regression_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline
    ours = Predictor.from_run(regression_run).predict("a good and great film")["values"]["score"]
    api.export(regression_run, tmp_path / "merged")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged", trust_remote_code=True)
    assert model.config.problem_type == "regression"
    stock = pipeline("text-classification", model=str(tmp_path / "merged"), trust_remote_code=True,
                     function_to_apply="none")
    assert stock("a good and great film")[0]["score"] == pytest.approx(ours, abs=1e-4)
    ours_pipe = transferkit.pipeline("text-classification", model=regression_run)("a good and great film")
    assert ours_pipe == [{"label": "score", "score": pytest.approx(ours, abs=1e-5)}]
    api.export(regression_run, tmp_path / "onnx", format="onnx")
    graph = Predictor.from_run(tmp_path / "onnx").predict("a good and great film")["values"]["score"]
    assert graph == pytest.approx(ours, abs=1e-4)


def test_the_loss_is_mse_or_huber_on_standardised_targets():
    task = get("regression")
    task.head = {"output_scale": [2.0], "output_shift": [0.0]}
    out = type("Out", (), {"logits": torch.tensor([[4.0], [0.0]])})()
    batch = {"labels": torch.tensor([[0.0], [1.0]])}
    task.loss_name = "mse"
    loss, items, _ = task.loss(out, batch)
    assert items == 2 and float(loss) == pytest.approx((4 / 2) ** 2 + (1 / 2) ** 2)
    task.loss_name = "huber"
    assert float(task.loss(out, batch)[0]) == pytest.approx((2 - 0.5) + 0.5 * 0.5 ** 2)


def test_routes_answer_with_values(regression_run):
    from fastapi.testclient import TestClient

    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    ours = Predictor.from_run(regression_run).predict("a good and great film")["values"]["score"]
    with TestClient(create_app(ModelSet({"rate": regression_run}), default_model="rate", max_wait_ms=5)) as client:
        one = client.post("/predict", json={"inputs": "a good and great film"})
        assert one.status_code == 200 and one.json() == [{"label": "score", "score": pytest.approx(ours, abs=1e-5)}]
        many = client.post("/v1/classify", json={"model": "rate", "input": ["a good and great film", "dull"]})
        assert many.json()["data"][0]["values"]["score"] == pytest.approx(ours, abs=1e-5)
        assert client.post("/predict", json={"inputs": ""}).status_code == 422
        assert client.post("/predict", json={"inputs": [["a", "b"]]}).status_code == 422
