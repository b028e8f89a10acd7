"""`transferkit compare` on the tiny model: one row per method, reuse, resume, a crashing method, errors.

Two real child processes run in this file (a fresh lora run and the resumption of an interrupted
full run); everything else reuses their run directories or fakes the child with a one-liner.
"""
from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from transferkit import api, cli
from transferkit.recipes.compare import run as comparison
from transferkit.core.errors import UserError
from transferkit.core.registry import METHODS

from helpers import interrupted_at_step, logged

OPTIONS = {"max_steps": 2, "batch_size": 16, "train.checkpoint_steps": 1, "train.progress": "false"}


def _options(sentiment_csv: Path, tiny_model_dir: Path) -> dict:
    return {"data": str(sentiment_csv), "model": str(tiny_model_dir), **OPTIONS}


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_model_dir, sentiment_csv):
    """OUT/full interrupted after its first checkpoint (in this process), then `compare full,lora`."""
    out = tmp_path_factory.mktemp("compare") / "out"
    options = _options(sentiment_csv, tiny_model_dir)
    cfg = api.make_config(None, {api.SHORT_KEYS.get(k, k): v for k, v in options.items()})
    cfg.method.name, cfg.output_dir = "full", str(out / "full")
    with interrupted_at_step(2):
        api.finetune(cfg)
    assert not (out / "full" / "metrics.json").exists()
    with logged() as logs:
        result = api.compare("full,lora", output_dir=out, inference_repeats=1, **options)
    return out, options, result, logs


def test_one_row_per_method_with_plausible_numbers(compared):
    out, _, result, _ = compared
    assert result.failed == [] and [r["method"] for r in result.rows] == ["full", "lora"]
    rows = {r["method"]: r for r in result.rows}
    for r in rows.values():
        assert r["status"] == "ok"
        assert 0 < r["trainable"] <= r["total"] and 0 < r["trainable_pct"] <= 100
        assert 100 < r["peak_rss_mb"] < 8000 and 0 < r["rss_before_train_mb"] <= r["peak_rss_mb"]
        assert r["train_seconds"] > 0 and r["samples_per_s"] > 0 and r["wall_seconds"] > r["train_seconds"]
        assert r["inference_per_s"] > 0 and r["steps"] == 2
        assert 0 < r["weights_mb"] < r["artifact_mb"]
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["f1_macro"] <= 1
        assert r["predictor_accuracy"] == pytest.approx(r["accuracy"], abs=1e-6)  # saved model = trained model
    assert rows["full"]["trainable_pct"] == 100 and rows["lora"]["trainable"] < rows["full"]["trainable"]
    assert rows["lora"]["weights_mb"] < rows["full"]["weights_mb"]
    assert rows["lora"]["lr"] != rows["full"]["lr"]  # each method at its own default learning rate

    table = [line for line in result.markdown.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == ["method", "full", "lora"]
    assert "- lora:" in result.markdown and "of the parameters train" in result.markdown
    assert (out / "compare.md").read_text() == result.markdown
    with (out / "compare.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["method"] for r in csv_rows] == ["full", "lora"]
    assert float(csv_rows[1]["accuracy"]) == rows["lora"]["accuracy"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp"))


def test_each_method_is_a_normal_run_in_its_own_process(compared):
    out, _, _, logs = compared
    for method in ("full", "lora"):
        run = out / method
        assert (run / "run.json").is_file() and (run / METHODS.get(method).artifact).is_dir()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["method"] == method and metrics["memory"]["peak_rss_mb"] > 0
        attempts = json.loads((out / "logs" / f"{method}.json").read_text())
        assert [a["exit_code"] for a in attempts] == [0]
        assert "-m transferkit finetune" in " ".join(attempts[0]["command"])
    # the child's output was streamed line by line with the method's name in front
    assert any(line.startswith("[lora] trainable params:") for line in logs)
    assert "trainable params:" in (out / "logs" / "lora.log").read_text()


def test_interrupted_run_is_resumed(compared):
    out, _, _, logs = compared
    attempts = json.loads((out / "logs" / "full.json").read_text())
    assert attempts[0]["mode"] == "resume" and attempts[0]["command"][-2:] == ["--resume", str(out / "full")]
    assert any(line.startswith(f"[full] resuming {out / 'full'} at step 1 of 2") for line in logs)
    assert json.loads((out / "full" / "metrics.json").read_text())["train"]["steps"] == 2


def test_rerun_reuses_finished_runs(compared, monkeypatch, caplog):
    out, options, first, _ = compared
    stamps = {m: (out / m / "metrics.json").stat().st_mtime_ns for m in ("full", "lora")}

    def no_child(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(subprocess, "Popen", no_child)
    caplog.set_level(logging.INFO, logger="transferkit")
    # a progress bar drawn or not changes nothing a run computes
    again = api.compare(["lora", "full"], output_dir=out, inference_repeats=1, **{**options, "train.progress": "true"})
    assert [r["method"] for r in again.rows] == ["lora", "full"]
    assert {m: (out / m / "metrics.json").stat().st_mtime_ns for m in stamps} == stamps
    assert sum("reusing the finished run" in line for line in caplog.messages) == 2
    before = {r["method"]: r["accuracy"] for r in first.rows}
    assert {r["method"]: r["accuracy"] for r in again.rows} == before


def test_changed_settings_are_refused(compared, capsys):
    out, options, _, _ = compared
    with pytest.raises(UserError, match=r"lora was run with train.max_steps=2, not 3"):
        api.compare("lora", output_dir=out, **{**options, "max_steps": 3})


def test_a_crashing_method_does_not_cost_the_table(tmp_path, tiny_model_dir, sentiment_csv, monkeypatch, capsys):
    monkeypatch.setattr(comparison, "_child_command", lambda plan, config: [
        sys.executable, "-c", "import sys; print('loading'); print('boom', file=sys.stderr); sys.exit(3)"])
    o = _options(sentiment_csv, tiny_model_dir)
    rc = cli.main(["compare", "--methods", "lora", "--data", o["data"], "--model", o["model"], "--max-steps", "1",
                   "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 1 and "1 method(s) failed: lora" in captured.err
    assert "[lora] boom" in captured.err and "| lora | failed (exit 3) |" in captured.out
    assert "failed (exit 3)" in (tmp_path / "out" / "compare.md").read_text()
    assert "boom" in (tmp_path / "out" / "logs" / "lora.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--methods", "full,nope"], "unknown method 'nope'"),
    (["--methods", " , "], "no methods to compare"),
    (["--methods", "full", "--method", "lora"], "--method and --resume belong to finetune"),
    (["--methods", "full", "--lr", "-1"], "train.lr must be > 0"),
    (["--methods", "full", "--limit", "0"], "data.limit must be > 0"),
    (["--methods", "full", "--data", "missing.csv"], "missing.csv"),
])
def test_bad_input_stops_before_anything_runs(argv, message, tmp_path, tiny_model_dir, sentiment_csv, capsys,
                                              monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a method ran"))
    base = ["compare", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--output-dir",
            str(tmp_path / "out")]
    assert cli.main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferkit: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_default_is_every_registered_method():
    assert comparison.parse_methods(None) == METHODS.names()
    assert comparison.parse_methods("lora, full,lora") == ["lora", "full"]


def test_api_function_is_not_shadowed_by_a_module(compared):
    import transferkit
    assert callable(transferkit.compare) and transferkit.compare is api.compare


def test_reused_run_with_old_defaults_is_flagged(compared, tmp_path, caplog):
    import shutil
    out, options, _, _ = compared
    shutil.copytree(out / "lora", tmp_path / "lora")
    metrics = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    metrics["train"]["lr"] = 12.5  # as if lora's default learning rate had changed since this run
    (tmp_path / "lora" / "metrics.json").write_text(json.dumps(metrics))
    base = api.make_config(None, {api.SHORT_KEYS.get(k, k): v for k, v in options.items()})
    caplog.set_level(logging.INFO, logger="transferkit")
    plan = comparison._plan(base, "lora", tmp_path)
    assert plan.state == "finished" and len(caplog.messages) == 1 and "lr 12.5 -> 0.001" in caplog.messages[0]
    assert comparison._plan(base, "lora", out).state == "finished" and len(caplog.messages) == 1
