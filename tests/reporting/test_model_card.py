"""Model cards: every model folder a run or an export writes has a README.md that huggingface_hub parses, with the
right metadata and the run's test metrics, and whose Python block loads the folder with stock calls and predicts."""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tiny_config, write_conll, write_csv, write_label_sets, write_pairs, write_prompts, write_scores, \
    make_sentences
from transferkit import api, tasks
from transferkit.core.runs import RunInfo
from transferkit.config.finetune import RunConfig
from transferkit.reporting.model_card import card_text, refresh_run_card, write_onnx_card

DATA = {"classify": lambda p: write_csv(p / "d.csv", make_sentences(120)), "pair": lambda p: write_pairs(p / "d.csv", 120),
        "regression": lambda p: write_scores(p / "d.csv", 120), "multilabel": lambda p: write_label_sets(p / "d.jsonl", 120),
        "ner": lambda p: write_conll(p / "d.conll", 120), "generate": lambda p: write_prompts(p / "d.jsonl", 80)}


def _load(folder: Path):
    from huggingface_hub import ModelCard
    return ModelCard.load(folder / "README.md")


def _code(folder: Path) -> str:
    return re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)


def _run_code(folder: Path) -> str:
    """Run the card's Python block in this process (stdin closed: a prompt for remote code would fail); its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_code(folder), str(folder / "README.md"), "exec"), {"__name__": "card"})
    assert out.getvalue(), "the card's code printed no prediction"  # (a tiny random LM may write an empty line)
    return out.getvalue()


def _check_metadata(card, run: Path, library: str, task: str, method: str) -> None:
    data = card.data
    metrics = json.loads((run / "metrics.json").read_text())
    assert data.library_name == library
    assert data.pipeline_tag == tasks.get(task).pipeline_tag
    assert {"transferkit", method, task} <= set(data.tags)
    want = {k: v for k, v in metrics["test"].items() if isinstance(v, float)}
    got = {r.metric_type: r.metric_value for r in data.eval_results}
    assert got == pytest.approx(want) and want
    assert {r.dataset_split for r in data.eval_results} == {"test"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, clm_dir):
    """(task, method) -> a short run of it on the tiny models (trained once for the module)."""
    made: dict[tuple[str, str], Path] = {}

    def get(task: str, method: str) -> Path:
        if (task, method) not in made:
            root = tmp_path_factory.mktemp(f"{task}-{method}")
            model = clm_dir if task == "generate" else tiny_model_dir
            cfg = tiny_config(DATA[task](root), model, root / "run", method, max_steps=3, min_steps=0)
            cfg.task = task
            made[task, method] = api.finetune(cfg).run_dir
        return made[task, method]
    return get


# every task, and each kind of run folder: a transformers model folder, a peft adapter, transferkit's own format
CASES = [("classify", "full", "model", "transformers"), ("classify", "lora", "adapter", "peft"),
         ("classify", "bitfit", "adapter", "transferkit"), ("pair", "lora", "adapter", "peft"),
         ("regression", "full", "model", "transformers"), ("multilabel", "ia3", "adapter", "peft"),
         ("ner", "lora", "adapter", "peft"), ("ner", "full", "model", "transformers"),
         ("generate", "lora", "adapter", "peft"), ("generate", "full", "model", "transformers")]


@pytest.mark.parametrize("task,method,folder,library", CASES)
def test_a_run_folder_has_a_card_whose_code_loads_and_predicts(runs, tiny_model_dir, task, method, folder, library):
    run = runs(task, method)
    card = _load(run / folder)
    _check_metadata(card, run, library, task, method)
    assert card.data.base_model == Path(tiny_model_dir).name or task == "generate"
    assert card.data.model_name == run.name and not card.data.datasets  # a file of the user's is not a dataset name
    text = card.text
    info = json.loads((run / "run.json").read_text())
    if task != "generate":
        assert all(f"`{name}`" in text for name in info["label_names"])  # the label names
    for words in (f"transferkit's `{method}` method", "| epochs |", "| learning rate |", "| batch size |",
                  "| examples |", "| training time |", "| hardware |", "On the held-out test split"):
        assert words in text
    printed = _run_code(run / folder)
    if task in ("classify", "multilabel", "regression"):
        assert any(name in printed for name in info["label_names"])


def test_a_card_loads_with_stock_calls_alone(runs):
    """The peft card's lines in a fresh interpreter that never imports transferkit: stock transformers and peft."""
    folder = runs("classify", "lora") / "adapter"
    guard = ("import builtins\n_real = builtins.__import__\n"  # transferkit absent, as on a machine without it
             "def _no(name, *a, **k):\n    if name.startswith('transferkit'):\n        raise ImportError(name)\n"
             "    return _real(name, *a, **k)\n"
             "builtins.__import__ = _no\n")
    done = subprocess.run([sys.executable, "-c", guard + _code(folder)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "positive" in done.stdout and "negative" in done.stdout


def test_merged_and_onnx_exports_have_cards_that_load_and_predict(runs, tmp_path):
    run = runs("classify", "lora")
    merged = api.export(run, tmp_path / "merged")
    card = _load(merged)
    _check_metadata(card, run, "transformers", "classify", "lora")
    assert "merged export" in card.text and card.data.model_name == "merged"
    _run_code(merged)

    onnx = api.export(run, tmp_path / "onnx", format="onnx")
    card = _load(onnx)
    _check_metadata(card, run, "onnxruntime", "classify", "lora")
    assert "onnx" in card.data.tags and "fp32 weights" in card.text and "int8" not in card.text
    assert "import onnxruntime as ort" in _code(onnx) and "torch" not in _code(onnx)
    assert "negative" in _run_code(onnx) or "positive" in _run_code(onnx)


def test_an_onnx_card_says_the_precision_its_manifest_says(runs, tmp_path):
    run = runs("ner", "lora")
    for precision in ("fp32", "int8"):
        folder = tmp_path / precision
        folder.mkdir()
        manifest = {"precision": precision, "labels": RunInfo.read(run).label_names, "opset": 17,
                    "check": {"texts": 12, "argmax_agreement": 1.0, "data": "test split"}}
        if precision == "int8":
            manifest["int8"] = {"quantization": "dynamic", "metric": "f1", "fp32": 0.5, "int8": 0.49}
        write_onnx_card(folder, run, manifest)
        text = (folder / "README.md").read_text()
        assert ("int8" in text) == (precision == "int8")
        assert "AutoModelForTokenClassification" not in text and "logits[0].argmax(-1)" in text


def test_a_tune_trial_card_gets_its_test_scores_once_scored(tiny_model_dir, tmp_path):
    from transferkit.recipes.finetune import FinetuneRun
    run = FinetuneRun(tiny_config(write_csv(tmp_path / "d.csv", make_sentences(80)), tiny_model_dir, tmp_path / "trial",
                                  "full", max_steps=2))
    run.score_test = False  # as tune runs its trials
    run.run()
    card = _load(tmp_path / "trial" / "model")
    assert not card.data.eval_results and "Not scored on the test split" in card.text
    refresh_run_card(tmp_path / "trial", {"accuracy": 0.75, "f1": 0.5, "num_examples": 8})
    card = _load(tmp_path / "trial" / "model")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"accuracy": 0.75, "f1": 0.5}


def test_a_bundled_silver_dataset_is_named_and_called_silver():
    cfg = RunConfig()
    cfg.task, cfg.data.data = "ner", "wiki-ner-silver"
    info = RunInfo("runs/ner", "lora", "minilm-l6", "minilm-l6", ["O", "B-PER", "I-PER"], 128, "mean", 0.1, task="ner")
    metrics = {"test": {"f1": 0.7, "precision": 0.69}, "data": {"sizes": {"train": 9600, "validation": 1200,
                                                                          "test": 1200}}}
    from huggingface_hub import ModelCard
    card = ModelCard(card_text(info, tasks.get("ner"), cfg, metrics, Path("runs/ner/adapter"), "peft", "runs/ner"))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["wiki-ner-silver"] and "silver-labels" in card.data.tags
    assert card.data.eval_results[0].dataset_name == "wiki-ner-silver (silver labels) test split"
    assert "silver labels: made by a model, not by people" in card.text
    assert "9,600" in card.text and "finding entities of 1 types (PER)" in card.text
