"""The Python API on the tiny model: run directories, reloading artefacts, resume and seeds."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import transferkit
from transferkit import api
from transferkit.training import loop as train
from transferkit.core.errors import UserError
from transferkit.inference import Predictor
from transferkit.core.registry import METHODS

from helpers import LABELS, RUN_EPOCHS, interrupted_at_step, logged, tiny_config

HEADLINE = {"accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted"}
TEXTS = ["a good and great film", "awful boring plot with dull acting", "the movie", "superb",
         "this film was really quite terrible and the script was weak and the ending was poor"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", METHODS.names())
def test_run_directory(method, finished_run):
    run = finished_run(method)
    artifact = METHODS.get(method).artifact
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    for name in (artifact, "checkpoints", "report"):
        assert (run / name).is_dir(), name
    assert (run / "checkpoints" / "last" / "state.json").is_file()
    assert not list(run.glob("*.tmp"))
    for name in ("report.html", "confusion_matrix.png", "loss_curves.png", "evaluation.json"):
        assert (run / "report" / name).stat().st_size > 0

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == HEADLINE | {"loss"}
    assert all(0.0 <= metrics["test"][k] <= 1.0 for k in HEADLINE)
    assert metrics["method"] == method
    epochs = RUN_EPOCHS.get(method, 2)
    assert metrics["train"]["steps"] == 10 * epochs and metrics["train"]["samples"] == 160 * epochs
    assert metrics["data"]["sizes"] == {"train": 160, "validation": 20, "test": 20}
    info_json = json.loads((run / "run.json").read_text())
    h, width = info_json.get("head_hidden", 0), 32 * info_json.get("pool_layers", 1)  # tiny hidden size 32
    assert metrics["params"]["head"] == (width * 2 + 2 if not h else width * h + h + 2 * h + 2)
    if method == "head_only":
        assert metrics["params"]["trainable"] == metrics["params"]["head"]

    info = json.loads((run / "run.json").read_text())
    assert info["method"] == method and info["label_names"] == LABELS
    evals = [r for r in _records(run) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [10 * (e + 1) for e in range(epochs)]
    cfg = transferkit.RunConfig.from_yaml(run / "config.yaml")
    assert cfg.method.name == method and cfg.output_dir == str(run)


def test_full_fine_tuning_learns(finished_run):
    metrics = json.loads((finished_run("full") / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.75
    train_loss = [r["loss"] for r in _records(finished_run("full")) if r["type"] == "train"]
    assert train_loss[-1] < train_loss[0]


def test_head_only_caches_features(finished_run, tiny_model_dir):
    from safetensors.torch import load_file
    run = finished_run("head_only")
    feats = load_file(str(run / "cache" / "features.safetensors"))
    width = 32 * json.loads((run / "run.json").read_text())["pool_layers"]  # last k layers, concatenated
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"train": (160, width), "validation": (20, width),
                                                             "test": (20, width)}
    # the encoder stayed frozen: the saved encoder equals the starting one
    from transformers import AutoModel
    start = AutoModel.from_pretrained(tiny_model_dir)
    trained = Predictor.from_run(run, backend="torch").model
    for n, p in start.named_parameters():
        if "pooler" not in n:
            torch.testing.assert_close(trained.encoder.get_parameter(n), p, rtol=0, atol=0)
    params = json.loads((run / "metrics.json").read_text())["params"]
    assert params["trainable"] == params["head"] == sum(p.numel() for p in trained.classifier.parameters())
    # the head trained: it differs from the one the run started with (seeded the same way)
    from accelerate.utils import set_seed

    from transferkit.modeling.resolve import ResolvedModel, build_classifier
    info = json.loads((run / "run.json").read_text())
    set_seed(42)
    start_head = build_classifier(ResolvedModel("tiny", str(tiny_model_dir), "mean"), LABELS, "mean", 0.1,
                                  info["head_hidden"], info["pool_layers"]).classifier
    diffs = [(a - b).abs().max().item() for a, b in zip(start_head.parameters(), trained.classifier.parameters())]
    assert len(diffs) == (4 if info["head_hidden"] else 2) and min(diffs) > 1e-4
    from transferkit.tasks.classify.splits import prepare_splits
    data_cfg = transferkit.RunConfig.from_yaml(run / "config.yaml").data
    labels = torch.tensor(prepare_splits(data_cfg, 42).train.labels)
    with torch.no_grad():
        loss = {name: torch.nn.functional.cross_entropy(head.eval()(feats["train"]), labels).item()
                for name, head in (("start", start_head), ("trained", trained.classifier))}
    assert loss["trained"] < loss["start"] - 0.05, loss
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.75


def test_full_model_loads_with_auto_class(finished_run):
    """After `import transferkit` the saved folder is a plain AutoModelForSequenceClassification."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    run = finished_run("full")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    assert type(model).__name__ == "TransferkitForSequenceClassification"
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert (run / "model" / "modeling_transferkit.py").is_file()
    tok = AutoTokenizer.from_pretrained(run / "model")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    expected = Predictor.from_run(run).predict_proba(TEXTS)
    assert abs(probs - expected).max() < 1e-5


def test_full_model_loads_with_trust_remote_code(finished_run, tmp_path):
    """Without importing transferkit, `trust_remote_code=True` uses the copied modeling file."""
    run = finished_run("full")
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "assert 'transferkit' not in sys.modules, 'transferkit was imported'\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "enc = tok(json.loads(sys.argv[2]), padding=True, return_tensors='pt')\n"
        "with torch.no_grad(): p = torch.softmax(m(**enc).logits, -1)\n"
        "print(json.dumps({'module': type(m).__module__, 'probs': p.tolist()}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", script, str(run / "model"), json.dumps(TEXTS)],
                          capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "modeling_transferkit" in out["module"] and not out["module"].startswith("transferkit")
    expected = Predictor.from_run(run).predict_proba(TEXTS)
    assert abs(torch.tensor(out["probs"]).numpy() - expected).max() < 1e-5


def test_lora_adapter_loads_with_peft(finished_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoTokenizer

    from transferkit.modeling.resolve import ResolvedModel, build_classifier
    run = finished_run("lora")
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert not (run / "model").exists()
    base = build_classifier(ResolvedModel("tiny", str(tiny_model_dir), "mean"), LABELS, "mean", 0.1)
    model = PeftModel.from_pretrained(base, run / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)
    expected = Predictor.from_run(run).predict_proba(TEXTS)
    assert abs(probs.numpy() - expected).max() < 1e-5
    # the adapter changed the model: the untouched base predicts differently
    fresh = build_classifier(ResolvedModel("tiny", str(tiny_model_dir), "mean"), LABELS, "mean", 0.1).eval()
    with torch.no_grad():
        base_probs = torch.softmax(fresh(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)
    assert abs(base_probs.numpy() - expected).max() > 1e-4


def test_evaluate_matches_training_test_metrics(finished_run, tmp_path):
    run = finished_run("full")
    report = api.evaluate(run, output_dir=tmp_path / "eval")
    test = json.loads((run / "metrics.json").read_text())["test"]
    for k in HEADLINE:
        assert report[k] == pytest.approx(test[k], abs=1e-9), k
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["accuracy"] == report["accuracy"]
    assert (tmp_path / "eval" / "report.html").is_file()


def test_evaluate_on_a_labelled_file(finished_run, tmp_path, sentiment_rows):
    from helpers import write_csv
    data = write_csv(tmp_path / "more.csv", [(t, y) for t, y in sentiment_rows[:30]], ("sentence", "sentiment"))
    report = api.evaluate(finished_run("full"), str(data), output_dir=tmp_path / "eval")
    assert report["num_examples"] == 30
    assert sum(map(sum, report["confusion_matrix"])) == 30


def test_predict_api_and_files(finished_run, tmp_path):
    run = finished_run("full")
    rows = api.predict(run, TEXTS, output=str(tmp_path / "out.jsonl"))
    assert [r["text"] for r in rows] == TEXTS
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == rows
    ref = Predictor.from_run(run).predict(TEXTS)
    assert [r["label"] for r in rows] == [r["label"] for r in ref]
    with pytest.raises(UserError, match="no texts"):
        api.predict(run, [])


# ---- resume ------------------------------------------------------------------------------------------

def _resume_cfg(sentiment_csv, tiny_model_dir, out):
    return tiny_config(sentiment_csv, tiny_model_dir, out, "full", epochs=2, checkpoint_steps=5, lr=3e-3,
                       early_stopping_patience=0)


@pytest.fixture(scope="module")
def resumed(tiny_model_dir, sentiment_csv, tmp_path_factory):
    """Run A uninterrupted; run B interrupted before step 8 (last checkpoint: step 5, mid-epoch), then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    info = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "LOG_EVERY", 3)  # records at steps 3, 6, 9, ...: one falls after the checkpoint
        run_a = api.finetune(_resume_cfg(sentiment_csv, tiny_model_dir, tmp / "a")).run_dir
        run_b = tmp / "b"
        with interrupted_at_step(8):
            api.finetune(_resume_cfg(sentiment_csv, tiny_model_dir, run_b))
        info["state"] = json.loads((run_b / "checkpoints" / "last" / "state.json").read_text())
        info["files"] = sorted(p.name for p in run_b.iterdir())
        info["records"] = _records(run_b)
        with pytest.raises(UserError, match="not a finished transferkit run"):
            Predictor.from_run(run_b)
        with logged() as logs:
            info["result"] = api.finetune(resume=run_b)
        info["logs"] = logs
    return run_a, run_b, info


def test_interrupt_leaves_a_resumable_run(resumed):
    _, _, info = resumed
    state = info["state"]
    assert (state["global_step"], state["epoch"], state["batch_in_epoch"]) == (5, 0, 5)
    assert info["files"] == ["checkpoints", "config.yaml", "data.json", "metrics.jsonl"]
    assert [r["step"] for r in info["records"]] == [3, 6]
    assert any("resuming" in m and "at step 5 of 20" in m for m in info["logs"])


def test_resume_matches_uninterrupted(resumed):
    run_a, run_b, info = resumed
    a = json.loads((run_a / "metrics.json").read_text())
    b = json.loads((run_b / "metrics.json").read_text())
    assert b["test"] == info["result"].metrics["test"]
    for split in ("test", "validation"):
        assert b[split] == pytest.approx(a[split], abs=1e-6), split
    assert b["train"]["steps"] == a["train"]["steps"] == 20
    assert b["train"]["samples"] == a["train"]["samples"] == 320
    assert b["train"]["best_step"] == a["train"]["best_step"]
    pa = Predictor.from_run(run_a).predict_proba(TEXTS)
    pb = Predictor.from_run(run_b).predict_proba(TEXTS)
    assert abs(pa - pb).max() < 1e-6
    with pytest.raises(UserError, match="already finished"):
        api.finetune(resume=run_b)


def test_resume_history_has_no_duplicates(resumed):
    run_a, run_b, _ = resumed
    recs_a, recs_b = _records(run_a), _records(run_b)
    keys = [(r["type"], r["step"]) for r in recs_b]
    assert len(keys) == len(set(keys))
    assert keys == [(r["type"], r["step"]) for r in recs_a]
    evals_a = [r for r in recs_a if r["type"] == "eval"]
    evals_b = [r for r in recs_b if r["type"] == "eval"]
    assert [r["step"] for r in evals_b] == [10, 20]
    for ra, rb in zip(evals_a, evals_b):
        assert rb == pytest.approx(ra, abs=1e-6)
    # train records whose averaging window lies wholly after the resume point (step 5)
    for ra, rb in zip(recs_a, recs_b):
        if ra["type"] == "train" and ra["step"] >= 9:
            assert rb == pytest.approx(ra, abs=1e-6)


def test_resume_history_equals_uninterrupted(resumed):
    run_a, run_b, _ = resumed
    for ra, rb in zip(_records(run_a), _records(run_b), strict=True):
        assert rb == pytest.approx(ra, abs=1e-6)


def test_resume_head_only_reuses_feature_cache(tiny_model_dir, sentiment_csv, tmp_path, monkeypatch, caplog):
    real_step = train.Trainer._step
    calls = {"n": 0}

    def interrupted(self, group):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(self, group)
    monkeypatch.setattr(train.Trainer, "_step", interrupted)
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", "head_only", checkpoint_steps=2)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(cfg)
    assert (tmp_path / "run" / "cache" / "features.safetensors").is_file()
    caplog.set_level(logging.INFO, logger="transferkit")
    api.finetune(resume=tmp_path / "run")
    assert any("using cached encoder features" in m for m in caplog.messages)
    assert any("at step 2 of 10" in m for m in caplog.messages)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["steps"] == 10


def test_resume_errors(tmp_path):
    with pytest.raises(UserError, match="no config.yaml"):
        api.finetune(resume=tmp_path)


# ---- seeds -------------------------------------------------------------------------------------------

def _seed_run(sentiment_csv, tiny_model_dir, out, seed):
    cfg = tiny_config(sentiment_csv, tiny_model_dir, out, "full", max_steps=6, seed=seed, lr=3e-3)
    return api.finetune(cfg)


def _classifier_weight(run: Path) -> torch.Tensor:
    from safetensors.torch import load_file
    return load_file(str(run / "model" / "model.safetensors"))["classifier.weight"]


@pytest.fixture(scope="module")
def seed7(tiny_model_dir, sentiment_csv, tmp_path_factory):
    return _seed_run(sentiment_csv, tiny_model_dir, tmp_path_factory.mktemp("seed") / "a", 7)


def test_same_seed_same_run(tiny_model_dir, sentiment_csv, tmp_path, seed7):
    a = seed7
    b = _seed_run(sentiment_csv, tiny_model_dir, tmp_path / "b", 7)
    for split in ("test", "validation"):
        assert a.metrics[split] == b.metrics[split]
    assert torch.equal(_classifier_weight(a.run_dir), _classifier_weight(b.run_dir))
    assert _records(a.run_dir) == _records(b.run_dir)


def test_different_seed_different_split_and_weights(tiny_model_dir, sentiment_csv, tmp_path, seed7):
    from transferkit.tasks.classify.splits import prepare_splits
    a = seed7
    b = _seed_run(sentiment_csv, tiny_model_dir, tmp_path / "b", 8)
    cfg = transferkit.RunConfig.from_yaml(a.run_dir / "config.yaml").data
    test_a = set(prepare_splits(cfg, 7).test.texts)
    test_b = set(prepare_splits(cfg, 8).test.texts)
    assert test_a != test_b and len(test_a) == len(test_b) == 20
    assert not torch.equal(_classifier_weight(a.run_dir), _classifier_weight(b.run_dir))


# ---- config handling in finetune -------------------------------------------------------------------------

def test_finetune_short_overrides(tiny_model_dir, sentiment_csv, tmp_path):
    result = api.finetune(data=str(sentiment_csv), model=str(tiny_model_dir), method="head_only", max_steps=3,
                          batch_size=32, seed=5, output_dir=str(tmp_path / "run"),
                          **{"train.progress": False})
    cfg = transferkit.RunConfig.from_yaml(result.run_dir / "config.yaml")
    assert (cfg.method.name, cfg.train.max_steps, cfg.train.batch_size, cfg.train.seed) == ("head_only", 3, 32, 5)
    assert result.metrics["train"]["steps"] == 3 and result.metrics["train"]["samples"] == 96


def test_config_yaml_repeats_a_run(finished_run, tmp_path):
    """A run's config.yaml fed back (with a new output_dir) reproduces its test metrics."""
    run = finished_run("head_only")
    again = api.finetune(str(run / "config.yaml"), output_dir=str(tmp_path / "again"))
    before = json.loads((run / "metrics.json").read_text())
    assert again.metrics["test"] == pytest.approx(before["test"], abs=1e-6)


def test_finetune_rejects_bad_config_before_creating_anything(tiny_model_dir, sentiment_csv, tmp_path):
    with pytest.raises(UserError, match=r"train.warmup must be in \[0, 1\)"):
        api.finetune(tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", warmup=1.5))
    with pytest.raises(UserError, match="unknown config key 'train.nope'"):
        api.finetune(tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run"), **{"train.nope": 1})
    assert not (tmp_path / "run").exists()
