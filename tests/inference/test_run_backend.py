"""A run's fastest gated backend (inference/run_backend.py): built on first use and cached in RUN/backend,
the same answers as PyTorch, a graph that disagrees refused, rebuilt when the run changes, never used on a
missing or damaged record."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import transferkit
from transferkit import api
from transferkit.core.errors import UserError
from transferkit.core.runs import RunInfo, trust_base
from transferkit.inference import Predictor, run_backend
from transferkit.inference.loading import labelled_split, run_task
from transferkit.serving.models import ModelSet

from helpers import expect_user_error, head_flipped, logged

TEXTS = ["a good film", "a dull plot", "great acting and a fine story", "boring"]


@pytest.fixture
def run(finished_run, tmp_path):
    """A private copy of the session's LoRA run (these tests build, damage and rebuild its cache)."""
    dst = tmp_path / "run"
    shutil.copytree(finished_run("lora"), dst, ignore=shutil.ignore_patterns("backend"))  # not yet cached
    return dst


def _record(run):
    return json.loads((run / "backend" / "gate.json").read_text())


def _test_texts(run):
    info = RunInfo.read(run)
    task = run_task(info)
    split, _ = labelled_split(run, info, task, None, None, None)
    return list(split.texts)


def test_the_default_builds_a_checked_cache_and_answers_as_pytorch(run):
    default = Predictor.from_run(run)
    record = _record(run)
    assert record["variant"] == default.backend or (record["variant"] == "torch" and default.backend == "torch")
    graph_file = run / "backend" / run_backend.VARIANTS.get(record["graph"], "missing")
    assert record["graph"] in run_backend.VARIANTS and graph_file.is_file()
    assert record["check"]["argmax_agreement"] >= 0.995 and record["check"]["max_prob_diff"] <= 1e-3
    assert record["checks"]["onnxruntime-fp32"]["items"] == len(_test_texts(run))
    assert set(record["rows_per_s"]) >= {"torch", record["graph"]}
    texts = _test_texts(run)
    torch_side = Predictor.from_run(run, backend="torch")
    graph = Predictor.from_run(run, backend="onnxruntime")
    assert torch_side.backend == "torch" and graph.backend == record["graph"]
    assert [r["label"] for r in default.predict(texts)] == [r["label"] for r in torch_side.predict(texts)]
    np.testing.assert_allclose(graph.predict_proba(texts), torch_side.predict_proba(texts), atol=1e-4)
    # the second load reads the cache: nothing is rebuilt
    stamp = (run / "backend" / "gate.json").stat().st_mtime_ns
    Predictor.from_run(run)
    assert (run / "backend" / "gate.json").stat().st_mtime_ns == stamp


def test_a_graph_that_disagrees_is_refused(run, monkeypatch):
    monkeypatch.setattr(run_backend, "write_graph", head_flipped(run_backend.write_graph))
    monkeypatch.setattr(run_backend, "fused_graph", lambda *a: 0)
    with logged() as lines:
        p = Predictor.from_run(run)
    assert p.backend == "torch"
    assert any("onnxruntime-fp32 refused" in line and "disagrees" in line for line in lines)
    record = _record(run)
    assert record["graph"] is None and record["variant"] == "torch"
    assert not (run / "backend" / "model.onnx").exists()
    with pytest.raises(UserError, match="no onnxruntime backend: no graph passed"):
        Predictor.from_run(run, backend="onnxruntime")


def test_the_cache_is_rebuilt_when_the_weights_change(run):
    Predictor.from_run(run)
    before = _record(run)
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if "lora_B" in k)
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(weights))
    torch_side = Predictor.from_run(run, backend="torch")
    graph = Predictor.from_run(run, backend="onnxruntime")
    after = _record(run)
    assert after["fingerprint"] != before["fingerprint"]
    np.testing.assert_allclose(graph.predict_proba(TEXTS), torch_side.predict_proba(TEXTS), atol=1e-4)


@pytest.mark.parametrize("damage", ["missing", "not json", "other fingerprint", "failing check", "edited graph"])
def test_a_missing_or_damaged_record_is_never_used(run, damage):
    Predictor.from_run(run)
    record_file = run / "backend" / "gate.json"
    record = _record(run)
    graph_file = run / "backend" / run_backend.VARIANTS[record["graph"]]
    if damage == "missing":
        record_file.unlink()
    elif damage == "not json":
        record_file.write_text("{\"format\": ")
    elif damage == "other fingerprint":
        record_file.write_text(json.dumps({**record, "fingerprint": "0" * 64}))
    elif damage == "failing check":
        record_file.write_text(json.dumps({**record, "check": {**record["check"], "argmax_agreement": 0.5}}))
    else:
        graph_file.write_bytes(graph_file.read_bytes() + b"\0")
    assert run_backend.cached(RunInfo.read(run))[0] is None
    with logged() as lines:
        p = Predictor.from_run(run, backend="onnxruntime")
    assert any("preparing the fastest backend" in line for line in lines)  # rebuilt, not trusted
    assert run_backend.cached(RunInfo.read(run))[0] is not None
    np.testing.assert_allclose(p.predict_proba(TEXTS), Predictor.from_run(run, backend="torch").predict_proba(TEXTS),
                               atol=1e-4)


def test_a_method_with_modules_of_its_own_stays_on_pytorch(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run("adapter"), run, ignore=shutil.ignore_patterns("backend"))
    assert Predictor.from_run(run).backend == "torch"
    record = _record(run)
    assert record["graph"] is None and "cannot be merged" in record["reason"]
    with pytest.raises(UserError, match="cannot be merged"):
        Predictor.from_run(run, backend="onnxruntime")


def test_no_cache_where_the_run_cannot_be_written_or_its_data_is_gone(run, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as m:
        m.setattr(run_backend.tempfile, "mkdtemp", refuse)
        with logged() as lines:
            assert Predictor.from_run(run).backend == "torch"
        assert any("predicts on PyTorch" in line and "cannot hold a cached backend" in line for line in lines)
    assert not (run / "backend").exists()
    config = run / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["data"] = str(tmp_path / "gone.csv")  # the run's data file is not on this machine
    config.write_text(yaml.safe_dump(cfg))
    with logged() as lines:
        assert Predictor.from_run(run).backend == "torch"
    assert any("test split cannot be read" in line for line in lines)


def test_cli_predict_takes_the_backend(run, capsys):
    from transferkit.cli.main import main
    assert main(["predict", str(run), *TEXTS[:2], "--backend", "onnxruntime"]) == 0
    graph = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", str(run), *TEXTS[:2], "--backend", "torch"]) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in graph] == [r["label"] for r in plain]
    assert "use it with --backend torch" in expect_user_error(capsys, ["predict", str(run), "x", "--backend",
                                                                       "onnxruntime", "--int8"])


def test_the_server_answers_each_run_on_its_backend(run):
    models = ModelSet({"m": run})
    entry = models.get("m")
    record = _record(run)
    assert entry.backend == record["variant"] and entry.shared == (record["variant"] == "torch")
    assert entry.describe()["backend"] == entry.backend
    got = torch.stack([row for row in models.run([("classify", "m", t) for t in TEXTS])]).softmax(-1).numpy()
    want = Predictor.from_run(run, backend="torch").predict_proba(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert ModelSet({"m": run}, backend="torch").get("m").backend == "torch"
    with pytest.raises(UserError, match="backend 'onnxruntime'"):
        ModelSet({"m": run}, backend="onnxruntime")


def test_an_export_still_runs_as_before(run, tmp_path):
    out = api.export(run, tmp_path / "onnx", format="onnx")
    assert Predictor.from_run(out).backend == "onnxruntime"


def test_pipeline_runs_on_the_default_backend_or_the_one_asked(run):
    default = transferkit.pipeline("text-classification", model=str(run))
    plain = transferkit.pipeline("text-classification", model=str(run), backend="torch")
    assert plain.predictor.backend == "torch" and default.predictor.backend == _record(run)["variant"]
    for a, b in zip(default(TEXTS), plain(TEXTS)):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-4
    with pytest.raises(UserError, match="backend 'onnxruntime' is for fine-tuned runs"):
        transferkit.pipeline("fill-mask", model="minilm-l6", backend="onnxruntime")


def test_a_backend_that_came_with_a_copied_run_is_checked_again(run, monkeypatch, tmp_path):
    Predictor.from_run(run)
    assert run_backend.cached(RunInfo.read(run))[0] is not None
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "another-machine"))  # this machine built nothing
    trust_base(RunInfo.read(run).model_path)  # ...but trains from the same base folder
    record, why = run_backend.cached(RunInfo.read(run))
    assert record is None and "not built and checked on this machine" in why
    with logged() as lines:
        Predictor.from_run(run, backend="onnxruntime")
    assert any("preparing the fastest backend" in line for line in lines)
    assert run_backend.cached(RunInfo.read(run))[0] is not None


@pytest.mark.parametrize("failure", ["trace", "disk full"])
def test_a_graph_that_cannot_be_built_leaves_pytorch_working(run, monkeypatch, failure):
    if failure == "trace":
        def broken(*args, **kwargs):
            raise RuntimeError("the tracer met an op it cannot export")
        monkeypatch.setattr(run_backend, "write_graph", broken)
    else:
        def full(path, obj, *args, **kwargs):
            raise UserError(f"cannot write {path}: the disk is full")
        monkeypatch.setattr(run_backend.fs, "write_json", full)
    with logged() as lines:
        p = Predictor.from_run(run)
    assert p.backend == "torch" and p.predict("a good film")["label"]
    assert any("predicts on PyTorch" in line for line in lines)
    assert not (run / "backend").exists()
