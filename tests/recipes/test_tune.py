"""`tune`: trials are run directories, pruning, resume, two workers on one study, the space file."""
from __future__ import annotations

import json
import os
import sqlite3

import pytest
import torch

from helpers import make_sentences, wait_until, write_csv
from transferkit import api, cli
from transferkit.core.errors import UserError
from transferkit.recipes.tune import TuneRun, default_space, read_space

FAST = {"train.max_steps": 6, "train.batch_size": 16, "train.eval_steps": 3}
SPACE = "train.epochs: 1\ntrain.batch_size: 16\nmethod.lora_r: {choices: [2, 4]}\ntrain.lr: {low: 1.0e-3, high: 3.0e-2, log: true}\n"


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("tune") / "d.csv", make_sentences(160, seed=6))


def _space(tmp_path, text=SPACE):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def _states(out):
    with sqlite3.connect(out / "study.db") as db:
        return [s for (s,) in db.execute("select state from trials order by number")]


def test_three_trials_are_run_directories_and_the_best_sees_the_test_split(tiny_model_dir, data_csv, tmp_path):
    out = tmp_path / "study"
    result = api.tune(data=str(data_csv), model=str(tiny_model_dir), method="lora", n_trials=3, keep=2,
                      space=str(_space(tmp_path)), output_dir=out, **FAST)
    assert result.summary["trials"] == 3 and len(result.trials) == 3
    kept = sorted(p.name for p in (out / "trials").iterdir())
    assert len(kept) == 2  # the best two
    for name in kept:
        m = json.loads((out / "trials" / name / "metrics.json").read_text())
        assert m["test"] is None  # trials never score the test split
        assert "accuracy" in m["validation"]
    assert result.best_run.name in kept and (out / "best.yaml").is_file()
    assert (result.best_run / "report" / "evaluation.json").is_file()  # the best alone was scored on the test split
    assert set(result.best_params) >= {"method", "method.lora_r", "train.lr"}
    assert result.best_params["method.lora_r"] in (2, 4) and 1e-3 <= result.best_params["train.lr"] <= 3e-2
    assert "optimisation history" in (out / "report.html").read_text()
    assert len((out / "trials.csv").read_text().splitlines()) == 4
    run = api.finetune(str(out / "best.yaml"), output_dir=str(tmp_path / "again"))
    assert json.loads((run.run_dir / "run.json").read_text())["method_options"]["lora_r"] == result.best_params["method.lora_r"]


def test_a_hopeless_trial_is_pruned_and_leaves_only_its_record(tiny_model_dir, data_csv, tmp_path):
    out = tmp_path / "study"
    run = TuneRun(api.make_config(None, {"data.data": str(data_csv), "model.name": str(tiny_model_dir),
                                         "train.max_steps": 12, "train.eval_steps": 3, "train.epochs": 1}),
                  output_dir=out, method="lora", n_trials=3, space=_space(tmp_path), metric="loss")
    run.space_overrides["train.lr"].low = 1e-7
    study = run.study()
    for lr in (2e-2, 3e-2):  # two good trials (the pruner's warm-up) set the median validation loss
        study.enqueue_trial({"method.lora_r": 4, "train.lr": lr})
    study.enqueue_trial({"method.lora_r": 2, "train.lr": 1e-7})  # it barely moves from the initial loss
    result = run.run()
    states = _states(out)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    assert not (out / "trials" / "trial-002").exists()
    assert result.summary["pruned"] == 1 and result.summary["pruned_seconds"] >= 0
    pruned = [t for t in result.trials if t["state"] == "PRUNED"][0]
    assert pruned["pruned_at"] == 0  # stopped at its first evaluation, after 3 of its 12 steps


def test_resume_after_an_interruption(tiny_model_dir, data_csv, tmp_path, monkeypatch):
    out = tmp_path / "study"
    from transferkit.recipes import finetune as ft
    calls = {"n": 0}
    real_fit = ft.FinetuneRun.fit

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second trial
        return real_fit(self)
    monkeypatch.setattr(ft.FinetuneRun, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.tune(data=str(data_csv), model=str(tiny_model_dir), n_trials=3, space=str(_space(tmp_path)),
                 output_dir=out, **FAST)
    monkeypatch.setattr(ft.FinetuneRun, "fit", real_fit)
    assert _states(out)[0] == "COMPLETE"
    result = api.tune(resume=out)
    states = _states(out)
    assert states.count("COMPLETE") >= 3 and result.summary["complete"] >= 3
    assert cli.main(["tune", "--resume", str(out), "--n-trials", "4"]) == 0  # more trials on the same study
    assert _states(out).count("COMPLETE") >= 4


def test_two_workers_share_one_study(tiny_model_dir, data_csv, tmp_path, monkeypatch):
    out = tmp_path / "study"
    threads = torch.get_num_threads()
    real, first = TuneRun._objective, [True]

    def after_the_other_worker_took_one(self, trial):
        # This process is warm and the other starts cold: on a loaded machine this one could run every trial
        # before the other took one. So its first trial waits (bounded) until the other worker has a trial.
        if first:
            first.clear()
            wait_until(lambda: any(t.user_attrs.get("worker") not in (None, os.getpid())
                                   for t in trial.study.get_trials(deepcopy=False)), 600)
        return real(self, trial)
    monkeypatch.setattr(TuneRun, "_objective", after_the_other_worker_took_one)
    # 10 epochs (80 steps) a trial, evaluated every 40 steps
    result = api.tune(data=str(data_csv), model=str(tiny_model_dir), n_trials=6, workers=2,
                      space=str(_space(tmp_path, SPACE.replace("train.epochs: 1", "train.epochs: 10"))),
                      output_dir=out, **{**FAST, "train.max_steps": None, "train.eval_steps": 40})
    states = _states(out)
    finished = [s for s in states if s in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 6 and len(states) <= 7, states  # none lost; at most one started as the other ended
    assert len({t["worker"] for t in result.trials}) == 2  # both processes took trials
    numbers = [t["number"] for t in result.trials]
    assert numbers == sorted(set(numbers))
    assert torch.get_num_threads() == threads  # the workers' share of the cores ends with the study


def test_default_space_reads_the_method_options():
    lora = default_space("lora")
    assert lora["method.lora_r"].choices == [4, 8, 16, 32] and lora["train.lr"].log
    assert "method.adapter_reduction" in default_space("adapter") and "train.layer_lr_decay" in default_space("full")
    assert not any(k.startswith("method.") for k in default_space("bitfit"))


@pytest.mark.parametrize("text, msg", [
    ("train.nope: {low: 1, high: 2}", "unknown config key 'train.nope'"),
    ("method.adapter_reduction: {choices: [8]}", "method.adapter_reduction is not an option of lora"),
    ("train.lr: {low: 1.0e-3, high: 1.0e-4}", "low 0.001 must be below high 0.0001"),
    ("train.lr: {low: 0, high: 1.0e-3, log: true}", "a log range needs low > 0"),
    ("train.warmup: {low: 0.1, high: 1.5}", "train.warmup = 1.5"),
    ("train.lr: {low: 1.0e-4, hi: 1.0e-3}", "unknown field 'hi'"),
    ("method.lora_r: {choices: []}", "choices must be a non-empty list"),
    ("- just a list", "expected a mapping"),
])
def test_a_bad_space_file_is_one_line_and_exit_2(tiny_model_dir, data_csv, tmp_path, capsys, text, msg):
    path = _space(tmp_path, text)
    with pytest.raises(UserError, match="space file"):
        read_space(path, ["lora"])
    out = tmp_path / "s"
    assert cli.main(["tune", "--data", str(data_csv), "--model", str(tiny_model_dir), "--space", str(path),
                     "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_options(tiny_model_dir, data_csv, tmp_path, capsys):
    for argv, msg in [(["--n-trials", "0"], "--n-trials 0"), (["--workers", "0"], "--workers 0"),
                      (["--method", "magic"], "magic"), (["--timeout", "soon"], "--timeout 'soon'")]:
        assert cli.main(["tune", "--data", str(data_csv), "--model", str(tiny_model_dir), "--output-dir",
                         str(tmp_path / "x"), *argv]) == 2
        assert msg in capsys.readouterr().err
    assert cli.main(["tune", "--resume", str(tmp_path / "none")]) == 2
    assert "not a tune output folder" in capsys.readouterr().err
