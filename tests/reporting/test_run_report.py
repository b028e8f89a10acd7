"""Evaluation artefacts: files written, HTML self-contained and escaped, atomic writes."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from transferkit.reporting.metrics import full_report
from transferkit.reporting.run_report import most_confidently_wrong, plot_confusion_matrix, plot_loss_curves, write_report

LABELS = ["negative", "positive"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(steps: int = 60) -> list[dict]:
    records: list[dict] = []
    for step in range(1, steps + 1):
        records.append({"type": "train", "step": step, "epoch": step / 20, "loss": 0.7 / (1 + step / 20), "lr": 1e-4})
        if step % 20 == 0:
            records.append({"type": "eval", "step": step, "epoch": step / 20, "split": "validation",
                            "loss": 0.6 / (1 + step / 30), "accuracy": 0.6 + step / 300})
    return records


def _example() -> dict:
    texts = ["good film", "bad <script>alert(1)</script> & worse", "fine", "awful", "great", "meh"]
    y_true = [1, 0, 1, 0, 1, 0]
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
    y_pred = probs.argmax(axis=1).tolist()
    return {
        "report": full_report(y_true, y_pred, LABELS),
        "texts": texts,
        "y_true": y_true,
        "probs": probs,
        "label_names": LABELS,
    }


def _write(out: Path, **overrides) -> dict[str, Path]:
    kwargs = {**_example(), "history": _history(), "title": "Eval <test>",
              "extra": {"model": "minilm-l6", "method": "lora", "run dir": "runs/x"}}
    kwargs.update(overrides)
    return write_report(out, **kwargs)


def test_writes_all_four_files(tmp_path: Path) -> None:
    paths = _write(tmp_path / "eval")
    assert set(paths) == {"json", "confusion_matrix", "loss_curves", "html"}
    names = {p.name for p in paths.values()}
    assert names == {"evaluation.json", "confusion_matrix.png", "loss_curves.png", "report.html"}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["confusion_matrix"].read_bytes().startswith(PNG_MAGIC)
    assert paths["loss_curves"].read_bytes().startswith(PNG_MAGIC)


def test_evaluation_json_has_report_and_wrong_list(tmp_path: Path) -> None:
    paths = _write(tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    ex = _example()
    for key, value in ex["report"].items():
        assert data[key] == value
    wrong = data["most_confidently_wrong"]
    # Wrong rows: idx 1 (0.8 positive), idx 5 (0.55 positive), idx 2 (0.6 negative).
    assert [w["confidence"] for w in wrong] == pytest.approx([0.8, 0.6, 0.55])
    assert wrong[0] == {"text": ex["texts"][1], "true": "negative", "predicted": "positive",
                        "confidence": pytest.approx(0.8)}
    assert all(w["true"] != w["predicted"] for w in wrong)


def test_most_confidently_wrong_sorted_and_limited() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    y_true = rng.integers(0, 3, size=200).tolist()
    texts = [f"t{i}" for i in range(200)]
    wrong = most_confidently_wrong(texts, y_true, probs, ["a", "b", "c"], top=15)
    assert len(wrong) == 15
    confidences = [w["confidence"] for w in wrong]
    assert confidences == sorted(confidences, reverse=True)
    assert all(w["true"] != w["predicted"] for w in wrong)
    n_wrong = int((probs.argmax(axis=1) != np.array(y_true)).sum())
    assert len(most_confidently_wrong(texts, y_true, probs, ["a", "b", "c"], top=10_000)) == n_wrong
    assert most_confidently_wrong(texts, y_true, probs, ["a", "b", "c"], top=0) == []


def test_html_self_contained_and_escaped(tmp_path: Path) -> None:
    page = _write(tmp_path)["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; worse" in page
    assert "Eval &lt;test&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2
    for expected in ("minilm-l6", "lora", "runs/x", "f1_macro", "true \\ predicted", "negative", "positive"):
        assert expected in page


def test_html_confusion_table_rows_are_true_labels(tmp_path: Path) -> None:
    page = _write(tmp_path)["html"].read_text(encoding="utf-8")
    # The HTML row headed by a true label holds that row of the matrix.
    cm = _example()["report"]["confusion_matrix"]
    row = re.search(r"<tr><th>negative</th>(.*?)</tr>", page).group(1)
    assert re.findall(r">(\d+)</td>", row) == [str(v) for v in cm[0]]


def test_empty_history(tmp_path: Path) -> None:
    paths = _write(tmp_path, history=[])
    assert paths["loss_curves"].read_bytes().startswith(PNG_MAGIC)
    out = plot_loss_curves([], tmp_path / "empty.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_history_with_odd_records(tmp_path: Path) -> None:
    history = [
        {"type": "train", "step": 1, "loss": float("nan")},
        {"type": "train", "step": 2, "loss": 0.5},
        {"type": "eval", "step": 2, "split": "test", "loss": 0.1, "accuracy": 0.9},
        {"type": "eval", "step": 2, "split": "validation", "loss": 0.4},
        {"type": "other"},
    ]
    assert plot_loss_curves(history, tmp_path / "odd.png").stat().st_size > 0


def test_no_wrong_examples_and_many_labels(tmp_path: Path) -> None:
    names = [f"class ${i} with a rather long name" for i in range(12)]
    y = list(range(12)) * 2
    probs = np.eye(12)[y]
    paths = write_report(tmp_path, report=full_report(y, y, names), texts=[str(i) for i in y], y_true=y,
                         probs=probs, label_names=names, history=_history(5), title="t")
    assert "No misclassified examples." in paths["html"].read_text(encoding="utf-8")
    assert json.loads(paths["json"].read_text())["most_confidently_wrong"] == []
    assert plot_confusion_matrix([[0] * 12] * 12, names, tmp_path / "zeros.png").stat().st_size > 0


def test_writing_is_atomic(tmp_path: Path) -> None:
    _write(tmp_path)
    paths = _write(tmp_path)  # overwriting existing files also goes through temp names
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths.values())
    umask = os.umask(0o022)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in paths.values())


def test_failed_replace_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "evaluation.json"
    target.write_text("old", encoding="utf-8")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    from transferkit.core import fs
    monkeypatch.setattr(fs.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path)
    assert os.listdir(tmp_path) == ["evaluation.json"]
    assert target.read_text(encoding="utf-8") == "old"


def test_mismatched_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _write(tmp_path, texts=["only one"])
    with pytest.raises(ValueError):
        _write(tmp_path, probs=np.ones((6, 3)) / 3)
    assert os.listdir(tmp_path) == []


def test_nan_in_report_gives_strict_json(tmp_path: Path) -> None:
    ex = _example()
    ex["report"]["loss"] = float("nan")
    paths = _write(tmp_path, report=ex["report"])
    assert json.loads(paths["json"].read_text())["loss"] is None
