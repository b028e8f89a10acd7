"""train.report_to: a run's records and test metrics read back from TensorBoard's event files and MLflow's SQLite
store, tune's trials grouped, and an unknown or uninstalled tracker refused before any work."""
from __future__ import annotations

import json

import pytest

from helpers import expect_user_error, make_sentences, tiny_config, write_csv
from transferkit import api
from transferkit.config import trackers
from transferkit.training import tracking


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("tracking") / "d.csv", make_sentences(120, seed=3))


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """The same steps, and values equal to float32 precision (TensorBoard keeps float32)."""
    assert [s for s, _ in got] == [s for s, _ in want] and want
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def test_tensorboard_and_mlflow_get_the_records_the_config_and_the_test_metrics(tiny_model_dir, data_csv, tmp_path,
                                                                                 monkeypatch):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_config(data_csv, tiny_model_dir, tmp_path / "runs" / "lora", "lora", max_steps=12, eval_steps=5,
                      epochs=None, report_to="tensorboard,mlflow")
    run = api.finetune(cfg).run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["accuracy"]) for r in records if r["type"] == "eval"]
    losses = [(r["step"], r["loss"]) for r in records if r["type"] == "train"]

    events = EventAccumulator(str(run / "tracking" / "tensorboard"))
    events.Reload()
    _same([(e.step, e.value) for e in events.Scalars("validation/accuracy")], evals)
    _same([(e.step, e.value) for e in events.Scalars("train/loss")], losses)
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["test"]["accuracy"])

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # beside the runs, experiment "runs"
    found = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
    assert [r.info.run_name for r in found] == ["lora"] and found[0].info.status == "FINISHED"
    data = found[0].data
    assert data.metrics["test/accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    _same([(m.step, m.value) for m in client.get_metric_history(found[0].info.run_id, "validation/accuracy")], evals)
    # the config as hyperparameters, the training values as the run resolved them
    assert data.params["method.name"] == "lora" and float(data.params["train.lr"]) == metrics["train"]["lr"]
    assert data.params["train.report_to"] == "tensorboard,mlflow"


def test_tune_reports_one_tracker_run_per_trial_under_its_folder(tiny_model_dir, data_csv, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "study"
    api.tune(data=str(data_csv), model=str(tiny_model_dir), method="lora", n_trials=2, keep=1, output_dir=out,
             **{"train.max_steps": 4, "train.eval_steps": 2, "train.batch_size": 16, "train.report_to": "tensorboard"})
    folders = sorted(p.name for p in (out / "tracking" / "tensorboard").iterdir())
    assert folders == ["trial-000", "trial-001"]  # kept even where the trial's own folder was removed
    assert len(list((out / "trials").iterdir())) == 1
    for name in folders:
        events = EventAccumulator(str(out / "tracking" / "tensorboard" / name))
        events.Reload()
        assert [e.step for e in events.Scalars("validation/accuracy")] == [2, 4]


def test_a_compare_child_learns_its_group_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.GROUP_ENV, str(tmp_path / "cmp"))
    monkeypatch.setenv(tracking.RUN_ENV, "lora")
    where = tracking.place(tmp_path / "cmp" / "lora")
    assert where == tracking.Place(tmp_path / "cmp" / "tracking" / "tensorboard" / "lora", tmp_path / "cmp" / "mlflow.db",
                                   "cmp", "lora")
    monkeypatch.delenv(tracking.GROUP_ENV)
    assert tracking.place(tmp_path / "runs" / "x").tensorboard_dir == tmp_path / "runs" / "x" / "tracking" / "tensorboard"


@pytest.mark.parametrize("value,message", [("tensorboard,bogus", "unknown tracker 'bogus'"),
                                           ("wandb", "the wandb package is not installed")])
def test_a_bad_or_missing_tracker_is_one_line_before_any_work(tiny_model_dir, data_csv, tmp_path, capsys, monkeypatch,
                                                              value, message):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    line = expect_user_error(capsys, ["finetune", "--data", str(data_csv), "--model", str(tiny_model_dir),
                                      "--output-dir", str(tmp_path / "run"), f"train.report_to={value}"])
    assert message in line
    assert not (tmp_path / "run").exists()
    assert trackers.parse("none") == [] and trackers.parse(None) == []
