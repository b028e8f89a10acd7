"""prepare_splits: one file split by config, explicit files, limits, label checks and logging."""
from __future__ import annotations

import logging
from collections import Counter

import pytest

from transferkit.config.finetune import DataConfig
from transferkit.tasks.classify.splits import Splits, prepare_splits
from transferkit.core.errors import UserError


def csv_file(path, rows: list[tuple[str, object]], header: str = "text,label") -> str:
    path.write_text(header + "\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    return str(path)


def rows_for(counts: dict[object, int], prefix: str = "") -> list[tuple[str, object]]:
    return [(f"{prefix}{lab} sample {i}", lab) for lab, n in counts.items() for i in range(n)]


def test_single_file_split(tmp_path, caplog):
    f = csv_file(tmp_path / "d.csv", rows_for({"pos": 60, "neg": 40}))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_splits(DataConfig(data=f), seed=3)
    assert isinstance(s, Splits)
    assert s.label_names == ["neg", "pos"] and s.num_labels == 2
    assert [len(s[k].texts) for k in ("train", "validation", "test")] == [80, 10, 10]
    assert all(isinstance(y, int) and y in (0, 1) for y in s.train.labels)
    assert s.summary["sizes"] == {"train": 80, "validation": 10, "test": 10}
    assert s.summary["labels"]["test"] == {"neg": 4, "pos": 6}
    assert s.summary["dedupe"]["duplicates_removed"] == 0
    for split in (s.train, s.validation, s.test):  # ids decode back to each text's own label
        assert all(t.startswith(s.label_names[y]) for t, y in zip(split.texts, split.labels))
    out = "\n".join(caplog.messages)
    assert "split: train 80 | validation 10 | test 10" in out and "neg" in out and "pos" in out


def test_same_seed_same_splits(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 30, "b": 30}))
    a = prepare_splits(DataConfig(data=f), 1)
    b = prepare_splits(DataConfig(data=f), 1)
    assert a.test.texts == b.test.texts and a.train.labels == b.train.labels


def test_dedupe_keeps_duplicates_out_of_two_splits(tmp_path):
    rows = rows_for({"a": 30, "b": 30})
    rows += rows[:20] + [("a sample 0", "b")]  # repeats, one disagreeing (majority stays 'a')
    f = csv_file(tmp_path / "d.csv", rows)
    s = prepare_splits(DataConfig(data=f), 0)
    texts = [t for k in ("train", "validation", "test") for t in s[k].texts]
    assert len(texts) == len(set(texts)) == 60
    assert s.summary["dedupe"]["duplicates_removed"] == 21
    assert s.summary["overlap_with_train"] == {"validation": 0, "test": 0}


def test_integer_labels_sorted_numerically(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({10: 10, 2: 10, 1: 10}))
    s = prepare_splits(DataConfig(data=f), 0)
    assert s.label_names == ["1", "2", "10"]


def test_explicit_files(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}, "tr "))
    va = csv_file(tmp_path / "val.csv", rows_for({"a": 2, "b": 1}, "va "))
    te = csv_file(tmp_path / "test.csv", rows_for({"b": 2, "a": 1}, "te "))
    s = prepare_splits(DataConfig(data=None, train=tr, validation=va, test=te), 0)
    assert s.train.texts[0] == "tr a sample 0"  # explicit files keep their order
    assert len(s.validation.texts) == 3 and s.test.labels == [1, 1, 0]
    assert s.summary["mode"] == "files" and s.summary["sources"]["test"] == te


def test_explicit_train_without_validation_carves_ten_percent(tmp_path, caplog):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 50, "b": 50}))
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 3, "b": 3}, "t "))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_splits(DataConfig(train=tr, test=te), 0)
    assert len(s.train.texts) == 90 and len(s.validation.texts) == 10
    assert Counter(s.validation.labels) == {0: 5, 1: 5}
    assert not set(s.train.texts) & set(s.validation.texts)
    assert any("10% of" in ln for ln in caplog.messages)


def test_explicit_train_requires_test(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    with pytest.raises(UserError, match="data.test"):
        prepare_splits(DataConfig(train=tr), 0)


def test_test_without_train_rejected(tmp_path):
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 5, "b": 5}))
    with pytest.raises(UserError, match="need data.train"):
        prepare_splits(DataConfig(test=te), 0)


def test_no_data(tmp_path):
    with pytest.raises(UserError, match="no data given"):
        prepare_splits(DataConfig(data=None), 0)


def test_unknown_label_in_test_names_label_file_and_row(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    te = csv_file(tmp_path / "test.csv", [("fine", "a"), ("odd one", "c"), ("ok", "b")])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(train=tr, test=te), 0)
    msg = str(e.value)
    assert "\n" not in msg and "'c'" in msg and te in msg and "row 2" in msg and "test" in msg


def test_rare_class_landing_outside_training_is_reported(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 20, "b": 20}) + [("the lone one", "rare")])
    for seed in range(50):  # find a seed where the single 'rare' row is not in training
        try:
            prepare_splits(DataConfig(data=f), seed)
        except UserError as e:
            assert "'rare'" in str(e) and "row 41" in str(e) and f in str(e)
            return
    pytest.fail("no seed put the rare row outside training")


def test_single_class(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({"only": 20}))
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=f), 0)
    assert "single class 'only'" in str(e.value) and "need at least 2" in str(e.value) and f in str(e.value)


def test_limit_keeps_first_rows(tmp_path, caplog):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 50, "b": 50}))
    full = prepare_splits(DataConfig(data=f), 5)
    caplog.set_level(logging.INFO, logger="transferkit")
    lim = prepare_splits(DataConfig(data=f, limit=12), 5)
    assert lim.train.texts == full.train.texts[:12]
    assert lim.test.texts == full.test.texts  # the limit touches only training
    assert lim.summary["limit"] == 12 and any("first 12 of 80" in ln for ln in caplog.messages)


def test_limit_leaving_one_class_is_explained(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 10, "b": 10}))
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 2}, "t "))
    va = csv_file(tmp_path / "val.csv", rows_for({"a": 2, "b": 2}, "v "))
    with pytest.raises(UserError, match="after data.limit=5"):
        prepare_splits(DataConfig(train=tr, validation=va, test=te, limit=5), 0)


def test_zero_validation_fraction(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 10, "b": 10}))
    s = prepare_splits(DataConfig(data=f, split=[0.9, 0.0, 0.1]), 0)
    assert len(s.validation.texts) == 0 and len(s.test.texts) == 2


def test_hf_datasetdict_splits_used_as_given(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}),
        "validation": datasets.Dataset.from_dict({"text": ["v0", "v1"], "label": [0, 1]}),
        "test": datasets.Dataset.from_dict({"text": ["x0", "x1", "x2"], "label": [1, 0, 1]}),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    s = prepare_splits(DataConfig(data=str(tmp_path / "dd")), 0)
    assert s.summary["mode"] == "dataset splits"
    assert s.test.texts == ["x0", "x1", "x2"] and s.validation.texts == ["v0", "v1"]
    assert s.label_names == ["0", "1"]


def test_bundled_dataset_from_prepared_cache(write_cache):
    write_cache("movie-sentences", [f"s{i}" for i in range(40)], ["positive", "negative"] * 20)
    s = prepare_splits(DataConfig(data="movie-sentences"), 42)
    assert s.label_names == ["negative", "positive"] and s.summary["sizes"]["train"] == 32
