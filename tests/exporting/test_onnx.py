"""ONNX export: a graph that plain onnxruntime runs with the run's outputs, refused when it does not
reproduce the PyTorch model, int8 only through its gate, and `predict`/serving on the export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import NEGATIVE, POSITIVE, expect_user_error, head_flipped, write_conll
from transferkit import Predictor, api, cli
from transferkit.core.errors import UserError
from transferkit.exporting import onnx_export
from transferkit.inference import onnx_gate

TEXTS = ["good film", "awful boring plot with dull acting", "the movie", "superb cast and a lovely ending"]


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory) -> tuple[Path, Path]:
    run = finished_run("lora")
    return run, api.export(run, tmp_path_factory.mktemp("onnx") / "out", format="onnx")


def test_plain_onnxruntime_gives_the_runs_logits(exported):
    """What a user of onnxruntime does with the folder: AutoTokenizer + InferenceSession, no transferkit."""
    import onnxruntime as ort
    from transformers import AutoTokenizer
    run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "model.onnx", "tokenizer.json",
                                                     "tokenizer_config.json"]
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(TEXTS, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input_ids": enc["input_ids"].astype(np.int64),
                                "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
    model = Predictor.from_run(run, device="cpu", backend="torch").model
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(enc["input_ids"]).long(),
                     attention_mask=torch.from_numpy(enc["attention_mask"]).long()).logits.numpy()
    assert got.shape == (4, 2) and np.abs(got - want).max() < 1e-4


def test_manifest_records_task_labels_and_the_check(exported):
    run, out = exported
    m = json.loads((out / "manifest.json").read_text())
    assert (m["format"], m["precision"], m["task"], m["labels"]) == ("transferkit-onnx", "fp32", "classify",
                                                                     ["negative", "positive"])
    assert m["opset"] == onnx_export.OPSET and m["source"]["method"] == "lora"
    assert m["check"]["texts"] == m["check"]["items"] > 0 and m["check"]["argmax_agreement"] >= 0.995
    assert m["check"]["max_prob_diff"] < 1e-4
    text = (out / "manifest.json").read_text()
    assert str(run) not in text and str(run.parent) not in text  # no path of this machine
    assert "/" not in m["source"]["model"] and "/" not in m["check"]["data"]


def test_predictor_and_cli_predict_run_the_export(exported, capsys):
    run, out = exported
    p = Predictor.from_run(out)
    assert type(p.model).__name__ == "OnnxModule"
    assert np.abs(p.predict_proba(TEXTS) - Predictor.from_run(run).predict_proba(TEXTS)).max() < 1e-5
    assert cli.main(["predict", str(out), *TEXTS, "--backend", "onnxruntime"]) == 0
    onnx_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert cli.main(["predict", str(run), *TEXTS]) == 0
    torch_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in torch_rows]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(onnx_rows, torch_rows)) < 1e-5


def test_backend_must_fit_the_folder(exported, capsys):
    run, out = exported
    assert "--int8 quantises the PyTorch model" in expect_user_error(
        capsys, ["predict", str(run), "x", "--backend", "onnxruntime", "--int8"])
    assert "is an ONNX export" in expect_user_error(capsys, ["predict", str(out), "x", "--backend", "torch"])
    assert "export with --int8" in expect_user_error(capsys, ["predict", str(out), "x", "--int8"])


def test_a_graph_that_disagrees_is_refused_and_nothing_written(finished_run, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "write_graph", head_flipped(onnx_export.write_graph))
    with pytest.raises(UserError, match="disagrees with the PyTorch model.*argmax agreement"):
        api.export(finished_run("lora"), tmp_path / "out", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_int8_export_passes_its_gate_or_is_refused_with_numbers(finished_run, tmp_path, monkeypatch):
    run = finished_run("full")
    out = api.export(run, tmp_path / "q", format="onnx", int8=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "int8" and m["int8"]["metric"] == "accuracy"
    assert m["int8"]["vs_fp32"]["argmax_agreement"] >= 0.995 and m["int8"]["fp32"] - m["int8"]["int8"] <= 0.005
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "model.onnx", "tokenizer.json",
                                                     "tokenizer_config.json"]
    assert Predictor.from_run(out).predict("a lovely film")["label"] in ("negative", "positive")
    monkeypatch.setattr(onnx_gate, "INT8_MIN_AGREEMENT", 1.01)  # no graph can agree on more than every text
    with pytest.raises(UserError, match=r"int8 quantisation refused.*argmax agreement with fp32 \d+\.\d\d% "
                                        r"\(need 101\.0%\), accuracy"):
        api.export(run, tmp_path / "refused", format="onnx", int8=True)
    assert not (tmp_path / "refused").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_methods_that_keep_their_own_modules_are_refused(finished_run, tmp_path, capsys):
    msg = expect_user_error(capsys, ["export", str(finished_run("adapter")), str(tmp_path / "o"), "--format", "onnx"])
    assert "cannot be merged" in msg and not (tmp_path / "o").exists()


def test_option_combinations_are_checked(finished_run, tmp_path, capsys):
    run = str(finished_run("lora"))
    assert "--format onnx" in expect_user_error(capsys, ["export", run, str(tmp_path / "a"), "--int8"])
    assert "does not apply" in expect_user_error(capsys, ["export", run, str(tmp_path / "b"), "--format", "onnx",
                                                          "--plain"])


def test_damaged_exports_are_one_line_errors(exported, tmp_path, capsys):
    import shutil
    _, out = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "model.onnx").write_bytes(b"\x08\x07not a graph")
    assert "model.onnx: cannot load the ONNX model" in expect_user_error(capsys, ["predict", str(bad), "x"])
    m = json.loads((out / "manifest.json").read_text())
    for field, value, said in [("labels", [], "'labels'"), ("format", "other", "format"),
                               ("max_length", float("nan"), "manifest.json"), ("task", "poetry", "poetry")]:
        shutil.copy(out / "model.onnx", bad / "model.onnx")
        (bad / "manifest.json").write_text(json.dumps({**m, field: value}))
        assert said in expect_user_error(capsys, ["predict", str(bad), "x"])
    (bad / "manifest.json").write_text("{ torn")
    assert "manifest.json" in expect_user_error(capsys, ["predict", str(bad), "x"])


def test_a_tagger_exports_with_per_token_outputs(tiny_model_dir, tmp_path, monkeypatch):
    data = write_conll(tmp_path / "tags.conll", 200)
    run = api.finetune(task="ner", data=str(data), model=str(tiny_model_dir), method="lora", max_steps=6,
                       output_dir=str(tmp_path / "run"), **{"train.progress": False}).run_dir
    # a tiny tagger loses too much to int8 for the real gate; the gate's arithmetic is tested above
    monkeypatch.setattr(onnx_gate, "INT8_MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(onnx_gate, "INT8_MAX_METRIC_DROP", 1.0)
    out = api.export(run, tmp_path / "onnx", format="onnx", int8=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "ner" and m["outputs"]["logits"] == ["batch", "sequence", "tags"] and m["int8"]["metric"] == "f1"
    assert m["check"]["items"] > m["check"]["texts"]  # scored per token
    assert m["int8"]["vs_fp32"]["items"] == m["check"]["items"]
    texts = ["the film with " + POSITIVE[0] + " in " + NEGATIVE[0], "nothing here at all"]
    fp32 = api.export(run, tmp_path / "fp32", format="onnx")
    got, want = Predictor.from_run(fp32).predict(texts), Predictor.from_run(run).predict(texts)
    strip = [[{k: v for k, v in e.items() if k != "score"} for e in r["entities"]] for r in got]
    assert strip == [[{k: v for k, v in e.items() if k != "score"} for e in r["entities"]] for r in want]
    scores = [(e["score"], f["score"]) for r, s in zip(got, want) for e, f in zip(r["entities"], s["entities"])]
    assert all(abs(a - b) < 1e-5 for a, b in scores)


def test_serving_an_onnx_export(exported):
    from transferkit.serving.models import ModelSet
    run, out = exported
    models = ModelSet({"onnx": out, "torch": run})
    assert models.get("onnx").method == "lora (onnx fp32)" and not models.get("onnx").shared
    got = models.run([("classify", "onnx", t) for t in TEXTS] + [("classify", "torch", t) for t in TEXTS])
    a, b = torch.stack(got[:4]), torch.stack(got[4:])
    assert torch.allclose(a, b, atol=1e-5)
