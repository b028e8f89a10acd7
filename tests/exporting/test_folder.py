"""Export: a merged model folder that loads with transformers alone and gives the run's logits."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_sentences, tiny_config, write_csv
from transferkit import Predictor, api, cli
from transferkit.core.errors import UserError

TEXTS = ["good film", "awful boring plot with dull acting", "the movie", "superb cast and a lovely ending"]


def _hf_probs(folder: Path, **kwargs) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.softmax(model(**tok(TEXTS, padding=True, return_tensors="pt")).logits, -1).numpy()


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA run whose linear head reads [CLS]: the one kind a stock BERT classifier can hold."""
    data = write_csv(tmp_path_factory.mktemp("cls-data") / "d.csv", make_sentences(80, seed=7))
    out = tmp_path_factory.mktemp("cls-run") / "run"
    cfg = tiny_config(data, tiny_model_dir, out, "lora", epochs=1, lr=1e-2, head_lr=1e-2, early_stopping_patience=0)
    cfg.model.pooling, cfg.model.head = "cls", "linear"
    return api.finetune(cfg).run_dir


@pytest.mark.parametrize("method", ["lora", "head_only", "full", "ia3"])
def test_export_round_trip(finished_run, tmp_path, method):
    run = finished_run(method)
    out = api.export(run, tmp_path / "exported")
    assert out == tmp_path / "exported" and (out / "model.safetensors").is_file()
    assert (out / "modeling_transferkit.py").is_file() and (out / "tokenizer_config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]  # no temporary folder left behind
    ref = Predictor.from_run(run).predict_proba(TEXTS)
    got = _hf_probs(out, trust_remote_code=True)
    assert np.abs(got - ref).max() < 1e-5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "negative", "1": "positive"}
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any("lora_" in k or "base_layer" in k for k in f.keys())  # merged, plain weights


def test_export_loads_without_transferkit(finished_run, tmp_path):
    out = api.export(finished_run("lora"), tmp_path / "m")
    code = ("import sys, json, torch\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            f"m = AutoModelForSequenceClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()\n"
            f"t = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
            "assert 'transferkit' not in sys.modules, 'transferkit was imported'\n"
            "with torch.no_grad():\n"
            f"    print(json.dumps(torch.softmax(m(**t({TEXTS!r}, padding=True, return_tensors='pt')).logits, -1).tolist()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin",
                               "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    probs = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert np.abs(probs - Predictor.from_run(finished_run("lora")).predict_proba(TEXTS)).max() < 1e-5


def test_plain_export_is_a_stock_bert_classifier(cls_run, tmp_path):
    from transformers import AutoModelForSequenceClassification
    out = api.export(cls_run, tmp_path / "plain", plain=True)
    assert not (out / "modeling_transferkit.py").exists()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert type(AutoModelForSequenceClassification.from_pretrained(out)).__name__ == "BertForSequenceClassification"
    ref = Predictor.from_run(cls_run).predict_proba(TEXTS)
    assert np.abs(_hf_probs(out) - ref).max() < 1e-5
    assert np.abs(ref[:, 0] - ref[0, 0]).max() > 1e-4  # texts differ, so a wrong head would show


def test_plain_export_of_a_mean_pooled_run_is_refused(finished_run, tmp_path):
    with pytest.raises(UserError, match="--plain needs a \\[CLS\\]-reading linear head.*mean-pooled"):
        api.export(finished_run("lora"), tmp_path / "plain", plain=True)
    with pytest.raises(UserError, match="hidden layer.*2 layers"):
        api.export(finished_run("head_only"), tmp_path / "plain", plain=True)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_errors(finished_run, tmp_path, monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(UserError, match="exists and is not empty"):
        api.export(finished_run("lora"), busy)
    with pytest.raises(UserError, match="run directory not found"):
        api.export(tmp_path / "nope", tmp_path / "out")
    # a method whose inference model keeps its own modules cannot be merged
    with pytest.raises(UserError, match="method 'adapter' cannot be merged.*e.g. encoder.encoder.layer.0.*adapter"):
        api.export(finished_run("adapter"), tmp_path / "out")
    from transferkit.inference import loading
    monkeypatch.setattr(loading, "load_run_model", lambda info, merge=False, base_model=None: torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="cannot be merged into the encoder's weights"):
        api.export(finished_run("lora"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export(capsys, finished_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder is fine
    assert cli.main(["export", str(finished_run("lora")), str(empty)]) == 0
    assert (empty / "config.json").is_file()
    assert cli.main(["export", str(finished_run("lora")), str(tmp_path / "p"), "--plain"]) == 2
    assert "--plain needs" in capsys.readouterr().err and not (tmp_path / "p").exists()
