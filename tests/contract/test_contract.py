"""The contract every registered method and task keeps: for each task row below and each method that suits
the task, a tiny run trains, saves, loads back (`Predictor.from_run`), predicts rows of the task's shape,
evaluates its test split, serves through the shared-base model set, and exports to a merged folder where the
method merges. Adding a task or a method is one folder or file in src/ plus (for a task) one row here.

The same on every encoder family of helpers.FAMILIES (one row there per family): every method on classify,
and every other encoder task with each method on one family, rotating, so each task meets every family; the
reloaded run predicts what the run predicted right after training."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from transferkit import api, tasks
from transferkit.core.errors import UserError
from transferkit.core.registry import METHODS
from transferkit.inference import Predictor
from transferkit.serving.models import ModelSet

from helpers import (FAMILIES, make_sentences, tiny_config, write_conll, write_csv, write_label_sets, write_pairs,
                     write_prompts, write_scores)


@dataclass(frozen=True)
class TaskCase:
    """A task's row: how to write a small training file, what to predict, which keys every output row has."""

    write_data: Callable[[Path], Path]
    inputs: tuple[Any, ...]
    output_keys: frozenset[str]
    model: str = "tiny_model_dir"  # the fixture naming the base model folder (an encoder, or a decoder)
    # how the server's model set answers the inputs (default: its batched forward pass, per (task, run, input))
    serve: Callable[[ModelSet, str, list], list] = staticmethod(lambda models, task, inputs: models.run(
        [(task, "m", x) for x in inputs]))


TASK_CASES: dict[str, TaskCase] = {
    "classify": TaskCase(lambda d: write_csv(d / "sentiment.csv", make_sentences(120)),
                         ("a good film", "a dull plot"), frozenset({"label", "confidence", "probs"})),
    "pair": TaskCase(lambda d: write_pairs(d / "pairs.csv", 120),
                     (("a good film", "a great plot"), {"text": "a dull plot", "text_pair": "a good film"}),
                     frozenset({"label", "confidence", "probs"})),
    "regression": TaskCase(lambda d: write_scores(d / "scores.csv", 120), ("a good film", "a dull plot"),
                           frozenset({"values"})),
    "multilabel": TaskCase(lambda d: write_label_sets(d / "tags.jsonl", 120), ("a good film", "a dull plot"),
                           frozenset({"labels", "probs"})),
    "ner": TaskCase(lambda d: write_conll(d / "tags.conll", 120),
                    ("Anna visited Paris in May .", "nothing here"), frozenset({"entities"})),
    "generate": TaskCase(lambda d: write_prompts(d / "prompts.jsonl", 120), ("a good film", [
        {"role": "user", "content": "a dull plot"}]), frozenset({"prompt", "generated_text"}), model="clm_dir",
        serve=lambda models, task, inputs: models.call("m", lambda p, items: p.predict(items), inputs)),
}

PAIRS = [(m, t) for t in TASK_CASES for m in METHODS.names()]


def test_every_registered_task_has_a_row():
    assert sorted(TASK_CASES) == tasks.TASKS.names()


def _flat(row: Any) -> list[Any]:
    """A row's leaves in order (dict keys included), for comparing rows up to float noise."""
    if isinstance(row, dict):
        return [x for k in row for x in (k, *_flat(row[k]))]
    if isinstance(row, (list, tuple)):
        return [x for v in row for x in _flat(v)]
    return [row]


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("contract-data")
    return {name: case.write_data(folder) for name, case in TASK_CASES.items()}


@pytest.mark.parametrize("method,task", PAIRS, ids=[f"{m}-{t}" for m, t in PAIRS])
def test_method_on_task(method, task, task_data, tmp_path, request):
    case = TASK_CASES[task]
    cfg = tiny_config(task_data[task], request.getfixturevalue(case.model), tmp_path / "run", method, max_steps=4,
                      epochs=None, early_stopping_patience=0)
    cfg.task = task
    if not METHODS.get(method).suits(tasks.get(task)):
        with pytest.raises(UserError):  # a method that does not suit the task says so in one line
            api.finetune(cfg)
        assert not (tmp_path / "run").exists()
        return
    run = api.finetune(cfg).run_dir
    assert (run / "run.json").is_file() and (run / "metrics.json").is_file()

    # load and predict: one output row per input, of the task's shape
    predictor = Predictor.from_run(run)
    rows = predictor.predict(list(case.inputs))
    assert len(rows) == len(case.inputs)
    assert all(set(r) == set(case.output_keys) for r in rows)
    # one input alone: its row (scores equal up to float noise: alone it is not padded)
    assert _flat(predictor.predict(case.inputs[0])) == pytest.approx(_flat(rows[0]), abs=1e-5)

    # the default backend (a gated onnxruntime graph where one passes and is faster) answers as PyTorch does,
    # and every run whose method folds into the weights has a graph, except a task with no one-pass graph
    on_torch = Predictor.from_run(run, backend="torch").predict(list(case.inputs))
    assert _flat(on_torch) == pytest.approx(_flat(rows), abs=1e-4)
    try:
        on_graph = Predictor.from_run(run, backend="onnxruntime")
    except UserError as e:
        assert "cannot be merged" in str(e) or (tasks.get(task).onnx_refusal or "\0") in str(e)
    else:
        assert on_graph.backend.startswith("onnxruntime")
        assert _flat(on_graph.predict(list(case.inputs))) == pytest.approx(_flat(on_torch), abs=1e-4)

    # evaluate the run's own test split
    report = api.evaluate(run)
    assert all(k in report for k in tasks.get(task).headline_metrics)

    # serve: the model set answers every input (shared base or alone, as the method allows)
    models = ModelSet({"m": run})
    answers = case.serve(models, task, list(case.inputs))
    assert len(answers) == len(case.inputs) and all(a is not None for a in answers)

    # export a merged folder, or (a method whose inference model keeps modules of its own) a one-line refusal
    out = tmp_path / "export"
    try:
        api.export(run, out)
    except UserError as e:
        assert "cannot be merged" in str(e) and not out.exists()
    else:
        assert (out / "config.json").is_file()


# ---- every encoder family ----------------------------------------------------------------------------------

OTHER_FAMILIES = [f for f in FAMILIES if f != "bert"]  # BERT: the rows above
ENCODER_TASKS = [t for t, case in TASK_CASES.items() if case.model == "tiny_model_dir" and t != "classify"]
FAMILY_RUNS = [(m, "classify", f) for m in METHODS.names() for f in OTHER_FAMILIES] + [
    (m, t, OTHER_FAMILIES[(i + 2 * j) % len(OTHER_FAMILIES)])
    for j, t in enumerate(ENCODER_TASKS) for i, m in enumerate(METHODS.names())]
FAMILY_RUNS = [(m, t, f) for m, t, f in FAMILY_RUNS if METHODS.get(m).suits(tasks.get(t))]
# (method, family) -> its one-line refusal: ModernBERT's layers have no bias terms
FAMILY_REFUSALS = {("bitfit", "modernbert"): "bitfit: this modernbert encoder has no bias terms"}


def test_every_encoder_task_meets_every_family():
    assert {(t, f) for _, t, f in FAMILY_RUNS} == {(t, f) for t in ["classify", *ENCODER_TASKS] for f in OTHER_FAMILIES}


@pytest.mark.parametrize("method,task,family", FAMILY_RUNS, ids=[f"{m}-{t}-{f}" for m, t, f in FAMILY_RUNS])
def test_method_on_family(method, task, family, task_data, family_model_dir, tmp_path, monkeypatch, no_figures):
    """Train a few steps, save, reload: the reloaded run predicts what the trained model in memory predicted."""
    from transferkit.core.runs import RunInfo
    from transferkit.inference.loading import run_task
    from transferkit.modeling.resolve import load_tokenizer
    from transferkit.tasks.base import Task
    case = TASK_CASES[task]
    cfg = tiny_config(task_data[task], family_model_dir(family), tmp_path / "run", method, max_steps=2, epochs=None,
                      early_stopping_patience=0)
    cfg.task = task
    if method == "setfit":  # its first stage's pairs, not max_steps, set its time
        cfg.override("method.setfit_max_pairs", 32)
    if (method, family) in FAMILY_REFUSALS:
        with pytest.raises(UserError, match=FAMILY_REFUSALS[method, family]):
            api.finetune(cfg)
        assert not (tmp_path / "run").exists()
        return
    trained = {}
    real = Task.evaluate_test

    def keep(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:  # the model as training left it
        trained["model"] = model
        return real(self, model, *args, **kwargs)
    monkeypatch.setattr(Task, "evaluate_test", keep)
    run = api.finetune(cfg).run_dir
    info = RunInfo.read(run)
    right_after = Predictor(trained["model"], load_tokenizer(str(info.artifact_dir)), info.label_names,
                            info.max_length, task=run_task(info)).predict(list(case.inputs))
    rows = Predictor.from_run(run).predict(list(case.inputs))
    assert all(set(r) == set(case.output_keys) for r in rows)
    assert _flat(rows) == pytest.approx(_flat(right_after), abs=1e-5)
