"""Sentence pairs: the layouts read and refused, the pair encoding, inputs on every surface, the bundled NSP
table, and stock transformers giving the project's scores."""
from __future__ import annotations

import json

import pytest
import torch

import transferkit
from transferkit import api
from transferkit.config.finetune import DataConfig
from transferkit.core.errors import UserError
from transferkit.core.runs import trust_base
from transferkit.inference import Predictor
from transferkit.modeling.classifier import pair_token_types
from transferkit.tasks import get
from transferkit.tasks.pair.dataset import nsp_pairs
from transferkit.tasks.pair.read import load_pairs
from transferkit.tasks.pair.task import as_pair, pair_ids

from helpers import expect_user_error, tiny_config, write_pairs

ROWS = [("a good film", "a great plot", "same"), ("a dull plot", "a good film", "different")]


def _write(path, header, rows=ROWS):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [("text", "text_pair", "label"), ("sentence1", "sentence2", "label"),
                                    ("premise", "hypothesis", "label"), ("question", "answer", "label"),
                                    ("Sentence1", "Sentence2", "Label")])
def test_pair_columns_are_found_by_their_usual_names(tmp_path, header):
    data = load_pairs(str(_write(tmp_path / "p.csv", header)))
    assert data.texts == [("a good film", "a great plot"), ("a dull plot", "a good film")]
    assert data.labels == ["same", "different"]


def test_named_columns_and_jsonl(tmp_path):
    path = _write(tmp_path / "p.jsonl", ("left", "right", "y"))
    data = load_pairs(str(path), text_column="left,right", label_column="y")
    assert data.texts[1] == ("a dull plot", "a good film")


@pytest.mark.parametrize("header,column,message", [
    (("text", "label", "other"), None, "found the text column 'text' but not its pair 'text_pair'"),
    (("a", "b", "label"), None, "no pair of text columns found"),
    (("text", "text_pair", "label"), "text", "two text columns"),
    (("text", "text_pair", "label"), "text,text", "both texts of a pair"),
    (("text", "text_pair", "label"), "text,nope", "text column 'nope' not found"),
])
def test_bad_pair_layouts_are_one_line(tmp_path, header, column, message):
    with pytest.raises(UserError, match=message):
        load_pairs(str(_write(tmp_path / "p.csv", header)), text_column=column)


def test_cli_refuses_a_missing_second_column_with_exit_2(tmp_path, tiny_model_dir, capsys):
    data = _write(tmp_path / "p.csv", ("text", "label", "x"))
    line = expect_user_error(capsys, ["finetune", "--task", "pair", "--data", str(data), "--model", str(tiny_model_dir),
                                      "--output-dir", str(tmp_path / "run"), "--max-steps", "2"])
    assert "not its pair 'text_pair'" in line and not (tmp_path / "run").exists()


def test_mapped_storage_is_refused_for_pairs(tmp_path):
    cfg = DataConfig(data=str(write_pairs(tmp_path / "p.csv", 40)), storage="mapped")
    with pytest.raises(UserError, match="pair data is read in memory"):
        get("pair").prepare(cfg, 42)


def test_pairs_are_split_as_one_key_and_repeats_removed(tmp_path):
    path = write_pairs(tmp_path / "p.csv", 60)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[1:6]) + "\n")  # five pairs repeated
    splits = get("pair").prepare(DataConfig(data=str(path)), 42)
    assert splits.summary["dedupe"]["duplicates_removed"] == 5
    assert all(isinstance(t, tuple) and len(t) == 2 for t in splits.train.texts)
    assert sum(splits.summary["sizes"].values()) == 60


def test_pair_encoding_matches_the_tokenizer_and_cuts_the_longer_text(tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a, b = "a good film", "the plot is dull and the acting awful and boring"
    ids = pair_ids(tok, [(a, b)], None)[0]
    enc = tok(a, b)
    assert ids.tolist() == enc["input_ids"]
    # the model's own token types are the tokenizer's
    assert pair_token_types(torch.tensor(ids[None]), tok.sep_token_id)[0].tolist() == enc["token_type_ids"]
    cut = pair_ids(tok, [(a, b)], 10)[0].tolist()
    assert len(cut) == 10 and cut == tok(a, b, truncation="longest_first", max_length=10)["input_ids"]
    first = cut[1:cut.index(tok.sep_token_id)]
    assert first == tok(a, add_special_tokens=False)["input_ids"]  # the shorter text is kept whole


def test_inputs_are_pairs_in_every_form():
    task = get("pair")
    assert task.check_inputs([("a", "b"), ["c", "d"], {"text": "e", "text_pair": "f"}]) == [("a", "b"), ("c", "d"),
                                                                                          ("e", "f")]
    assert task.is_single({"text": "a", "text_pair": "b"}) and task.is_single(["a", "b"])
    assert not task.is_single([["a", "b"]])
    assert task.cli_inputs(["a", "b", "c", "d"]) == [("a", "b"), ("c", "d")]
    with pytest.raises(UserError, match="two at a time"):
        task.cli_inputs(["a", "b", "c"])
    for bad, message in ((("a",), "not a pair"), (("a", ""), "its text_pair is empty"), (("a", 3), "not a string")):
        with pytest.raises(UserError, match=message):
            as_pair(bad, 1)
    assert task.input_problem(["a", "b"], 100) is None
    assert task.input_problem("one text", 100)[0] == 422
    assert task.input_problem(["a" * 60, "b" * 60], 100)[0] == 413


def test_the_nsp_table_is_balanced_and_split_by_summary():
    docs = [f"Doc {d} starts here. It goes on with {d}. Then it ends at {d}." for d in range(200)]
    df = nsp_pairs(docs, seed=1)
    assert len(df) == 200 and set(df.label) == {"IsNext", "NotNext"}
    for split, part in df.groupby("split"):
        counts = part.label.value_counts()
        assert abs(counts["IsNext"] - counts["NotNext"]) <= 1
    doc_of = {}
    for d, text in enumerate(docs):
        for sentence in (text.split(". ")):
            doc_of[sentence.rstrip(".") + "."] = d
    for row in df.itertuples():
        a, b = doc_of[row.text], doc_of[row.text_pair]
        assert (a == b) == (row.label == "IsNext")
    split_of = {}
    for row in df.itertuples():  # every summary, and every NotNext sentence's summary, in one split only
        for d in (doc_of[row.text], doc_of[row.text_pair]):
            assert split_of.setdefault(d, row.split) == row.split
    assert nsp_pairs(docs, seed=1).equals(df)


@pytest.fixture(scope="module")
def trained_pair_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("pair")
    cfg = tiny_config(write_pairs(root / "p.csv", 120), tiny_model_dir, root / "run", "lora", max_steps=20, lr=1e-2)
    cfg.task = "pair"
    return api.finetune(cfg).run_dir


@pytest.fixture
def pair_run(trained_pair_run, tiny_model_dir):
    trust_base(tiny_model_dir)  # each test here has a fresh cache, which holds the list of trusted bases
    return trained_pair_run


def test_a_pair_run_predicts_pairs_through_the_api_pipeline_and_files(pair_run, tmp_path):
    rows = api.predict(pair_run, [("a good film", "a great plot"), {"text": "a dull plot", "text_pair": "superb"}])
    assert [set(r) for r in rows] == [{"text", "text_pair", "label", "confidence", "probs"}] * 2
    inp = _write(tmp_path / "in.csv", ("sentence1", "sentence2", "label"))
    out = tmp_path / "out.csv"
    api.predict(pair_run, input=str(inp), output=str(out))
    assert out.read_text().splitlines()[0].startswith("text,text_pair,label,confidence,p_")
    pipe = transferkit.pipeline("text-classification", model=pair_run)
    one = pipe({"text": "a good film", "text_pair": "a great plot"})
    assert one["label"] == rows[0]["label"] and one["score"] == pytest.approx(rows[0]["confidence"], abs=1e-6)


def test_stock_transformers_give_the_same_scores_as_the_run(pair_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    out = tmp_path / "merged"
    api.export(pair_run, out)
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok("a good film", "a great plot", return_tensors="pt")  # with the tokenizer's own token types
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1)[0]
    ours = Predictor.from_run(pair_run).predict(("a good film", "a great plot"))
    assert [float(p) for p in probs] == pytest.approx(list(ours["probs"].values()), abs=1e-5)
    stock = pipeline("text-classification", model=str(out), trust_remote_code=True)
    assert stock({"text": "a good film", "text_pair": "a great plot"})["score"] == pytest.approx(ours["confidence"],
                                                                                                abs=1e-5)


def test_onnx_export_of_a_pair_run_agrees(pair_run, tmp_path):
    out = tmp_path / "onnx"
    api.export(pair_run, out, format="onnx")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "pair" and manifest["check"]["argmax_agreement"] >= 0.995
    ours = Predictor.from_run(pair_run).predict([("a good film", "a great plot")])
    graph = Predictor.from_run(out).predict([("a good film", "a great plot")])
    assert graph[0]["label"] == ours[0]["label"]
    assert graph[0]["confidence"] == pytest.approx(ours[0]["confidence"], abs=1e-4)


def test_classify_routes_serve_pairs(pair_run):
    from fastapi.testclient import TestClient

    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    with TestClient(create_app(ModelSet({"nli": pair_run}), default_model="nli", max_wait_ms=5)) as client:
        ours = Predictor.from_run(pair_run).predict(("a good film", "a great plot"))
        one = client.post("/predict", json={"inputs": ["a good film", "a great plot"]})
        assert one.status_code == 200 and one.json()[0]["label"] == ours["label"]
        many = client.post("/v1/classify", json={"model": "nli", "input": [["a good film", "a great plot"],
                                                                         ["a dull plot", "superb"]]})
        assert many.status_code == 200 and len(many.json()["data"]) == 2
        assert many.json()["data"][0]["probs"] == pytest.approx(list(ours["probs"].values()), abs=1e-5)
        for bad in ({"inputs": "one text"}, {"inputs": [["a", ""]]}, {"inputs": [["a", "b", "c"]]}):
            assert client.post("/predict", json=bad).status_code == 422, bad
