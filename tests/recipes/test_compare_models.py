"""`compare --models`: every method on every model, one run directory per cell, one table comparing them."""
from __future__ import annotations

import csv
import subprocess

import pytest

from transferkit import api, cli
from transferkit.modeling.resolve import parse_models
from transferkit.recipes.compare.run import model_folders

from helpers import save_tiny_bert

OPTIONS = {"max_steps": 2, "batch_size": 16, "train.progress": "false"}


@pytest.fixture(scope="module")
def wider_model(tmp_path_factory):
    """A second tiny BERT (hidden 48) under a folder name that collides with nothing."""
    return save_tiny_bert(tmp_path_factory.mktemp("wide") / "wide-bert", hidden=48, seed=1)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_model_dir, wider_model, sentiment_csv):
    out = tmp_path_factory.mktemp("models") / "out"
    argv = ["compare", "--methods", "head_only,lora", "--models", f"{tiny_model_dir},{wider_model}",
            "--data", str(sentiment_csv), "--output-dir", str(out), "--inference-repeats", "1",
            "--max-steps", "2", "--batch-size", "16", "train.progress=false"]
    assert cli.main(argv) == 0
    return out, argv


def test_every_method_runs_on_every_model_in_its_own_folder(grid, tiny_model_dir, wider_model):
    out, _ = grid
    folders = model_folders([str(tiny_model_dir), str(wider_model)])
    for model, folder in folders.items():
        for method in ("head_only", "lora"):
            run = out / folder / method
            assert (run / "metrics.json").is_file()
            assert api.make_config(str(run / "config.yaml"), {}).model.name == model
    rows = list(csv.DictReader(open(out / "compare.csv", encoding="utf-8")))
    assert [(r["model"], r["method"]) for r in rows] == [(m, x) for m in folders for x in ("head_only", "lora")]
    assert all(r["status"] == "ok" and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert int(rows[2]["total"]) > int(rows[0]["total"])  # the wider model has more parameters


def test_the_table_has_a_model_column_ranks_the_models_and_repeats_its_command(grid, tiny_model_dir, wider_model):
    out, _ = grid
    md = (out / "compare.md").read_text()
    assert "| model | method |" in md and "Models by their best accuracy:" in md
    assert f"--methods head_only,lora --models {tiny_model_dir},{wider_model} " in md
    assert f"--output-dir {out}`" in md and "model.name=" not in md
    assert (out / "compare.png").stat().st_size > 1000


def test_a_rerun_reuses_every_cell(grid, monkeypatch):
    out, argv = grid
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a finished cell ran again"))
    assert cli.main(argv) == 0


@pytest.mark.parametrize("extra,message", [
    (["--models", "no-such-model"], "no-such-model"),
    (["--models", ","], "--models names no model"),
    (["--models", "{model}", "--train-sizes", "8"], "does not combine with --train-sizes"),
])
def test_bad_models_stop_before_anything_runs(extra, message, tmp_path, tiny_model_dir, sentiment_csv, capsys,
                                              monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a method ran"))
    argv = ["compare", "--methods", "head_only", "--data", str(sentiment_csv), "--output-dir",
            str(tmp_path / "out"), *[e.format(model=tiny_model_dir) for e in extra]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_model_names_become_distinct_folder_names():
    assert parse_models("minilm-l6, mpnet-base,minilm-l6") == ["minilm-l6", "mpnet-base"]
    assert model_folders(["minilm-l6", "/a/enc/", "/b/enc", "x/logs"]) == {
        "minilm-l6": "minilm-l6", "/a/enc/": "enc", "/b/enc": "enc-2", "x/logs": "logs-2"}
