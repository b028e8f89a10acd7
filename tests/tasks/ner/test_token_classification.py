"""Token classification through the one run: every method trains a tagger on CoNLL data, scores it
with seqeval's strict entity metrics, and the run predicts entities with character offsets."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from transferkit import api
from transferkit.cli import main
from transferkit.tasks.ner.task import entity_metrics

from helpers import write_conll

METHODS = ["full", "lora", "adapter", "prefix", "ia3", "bitfit", "head_only"]


@pytest.fixture(scope="module")
def conll(tmp_path_factory) -> Path:
    return write_conll(tmp_path_factory.mktemp("ner") / "tags.conll", 300)


def test_entity_metrics_strict_iob2():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "I-LOC"]]  # an I- with no B- is no entity in strict mode
    m = entity_metrics(gold, pred)
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["token_accuracy"] == 0.75
    assert m["per_type"]["LOC"]["recall"] == 0.0 and m["per_type"]["PER"]["f1"] == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_tagger(method, conll, tiny_model_dir, tmp_path):
    result = api.finetune(task="ner", data=str(conll), model=str(tiny_model_dir), method=method, max_steps=4,
                          batch_size=16, output_dir=str(tmp_path / "run"), **{"train.progress": False})
    test = result.metrics["test"]
    assert {"precision", "recall", "f1", "token_accuracy", "per_type"} <= set(test)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["task"] == "ner" and info["label_names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    rows = api.predict(tmp_path / "run", ["the film with good great was quite dull"])
    assert set(rows[0]) == {"text", "entities"}
    for e in rows[0]["entities"]:
        assert set(e) == {"entity_group", "score", "word", "start", "end"}
        assert rows[0]["text"][e["start"]:e["end"]] == e["word"]


def test_a_trained_tagger_finds_the_entities(conll, tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--task", "ner", "--data", str(conll), "--model", str(tiny_model_dir),
                 "--method", "full", "--epochs", "8", "--lr", "3e-3", "--batch-size", "8", "--output-dir", str(run),
                 "train.progress=false", "train.head_lr=3e-3", "train.early_stopping_patience=0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["f1"] > 0.7, metrics["test"]
    assert (run / "report" / "report.html").is_file()
    capsys.readouterr()
    assert main(["predict", str(run), "the story with superb and a dreadful ending"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    groups = {(e["entity_group"], e["word"]) for e in row["entities"]}
    assert ("PER", "superb") in groups and ("LOC", "dreadful") in groups, row
    assert main(["evaluate", str(run)]) == 0  # the run's own (hash-checked) test split, entity metrics
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"precision", "recall", "f1", "token_accuracy"}
    assert printed["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6)


def test_bad_ner_input_is_one_line(capsys, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("good B-PER\nfilm\n\n", encoding="utf-8")  # a line with no tag
    code = main(["finetune", "--task", "ner", "--data", str(bad), "--model", str(tiny_model_dir),
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "line 2" in err[0], err
    assert not (tmp_path / "run").exists()


def test_evaluate_a_ner_run(conll, tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    api.finetune(task="ner", data=str(conll), model=str(tiny_model_dir), method="lora", max_steps=4,
                 output_dir=str(run), **{"train.progress": False})
    report = api.evaluate(run)  # the run's own test split, its file hash checked
    assert report["f1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test"]["f1"])
    assert (run / "report" / "report.html").is_file() and "per_type" in report
    other = tmp_path / "other.conll"
    other.write_text("good B-PER\nfilm O\n\nbad B-LOC\n\n", encoding="utf-8")
    assert api.evaluate(run, str(other), output_dir=tmp_path / "rep")["token_accuracy"] >= 0
    unknown = tmp_path / "unknown.conll"
    unknown.write_text("good B-ORG\n\n", encoding="utf-8")
    code = main(["evaluate", str(run), "--data", str(unknown), "--output-dir", str(tmp_path / "rep2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "B-ORG" in err[-1] and not (tmp_path / "rep2").exists()


def test_export_a_ner_run_loads_with_stock_calls(conll, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification
    run = tmp_path / "run"
    api.finetune(task="ner", data=str(conll), model=str(tiny_model_dir), method="lora", max_steps=2,
                 output_dir=str(run), **{"train.progress": False})
    out = api.export(run, tmp_path / "exported")  # checks the reloaded logits itself
    model = AutoModelForTokenClassification.from_pretrained(out, trust_remote_code=True).eval()
    logits = model(input_ids=torch.tensor([[2, 5, 6, 3]])).logits
    assert logits.shape == (1, 4, 5) and model.config.id2label[3] == "B-PER"


def test_compare_tabulates_ner_runs(conll, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--task", "ner", "--data", str(conll), "--model", str(tiny_model_dir),
                 "--methods", "full,lora", "--max-steps", "3", "--output-dir", str(out), "train.progress=false"])
    capsys.readouterr()
    assert code == 0
    md = (out / "compare.md").read_text()
    assert "| entity F1 % | token acc % |" in md and "entity F1 " in md.split("Against full fine-tuning")[1]
    rows = {r["method"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert set(rows) == {"full", "lora"}
    for name, r in rows.items():
        metrics = json.loads((out / name / "metrics.json").read_text())["test"]
        assert float(r["f1"]) == metrics["f1"] and float(r["token_accuracy"]) == metrics["token_accuracy"]
        assert float(r["predictor_f1"]) == pytest.approx(metrics["f1"], abs=1e-4)  # the saved model re-scored
        assert float(r["inference_per_s"]) > 0
    assert (out / "compare.png").stat().st_size > 1000
