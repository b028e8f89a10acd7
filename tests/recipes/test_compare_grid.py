"""`compare --train-sizes --seeds --augment`: every (method [+ augmentation], size, seed) is a run of its own
on sampled files; the table gives mean and spread per size; a rerun reuses; bad options fail first."""
from __future__ import annotations

import csv
import logging
from collections import Counter

import pytest

from transferkit import api
from transferkit.recipes.compare.grid import augment_variants, parse_sizes

from helpers import FILLER, expect_user_error, logged

OPTIONS = {"max_steps": 3, "batch_size": 8, "train.progress": "false"}


@pytest.fixture(scope="module")
def synonyms(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "syn.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in zip(FILLER, FILLER[1:])), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_model_dir, sentiment_csv, synonyms):
    out = tmp_path_factory.mktemp("grid") / "out"
    with logged() as logs:
        result = api.compare("head_only", data=str(sentiment_csv), model=str(tiny_model_dir), output_dir=out,
                             train_sizes="4,8", seeds=2, augment=f"eda:swap=0.2,copies=2,synonyms={synonyms}",
                             test_rows=20, **OPTIONS)
    return out, result, logs


def _rows(path):
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_cell_is_a_run_on_its_own_sample(grid):
    out, result, _ = grid
    assert not result.failed and len(result.cells) == 2 * 2 * 2  # 2 sizes x 2 seeds x (plain, +eda)
    for size in (4, 8):
        for seed in (42, 43):
            train = _rows(out / "data" / f"n{size}-s{seed}" / "train.csv")
            assert Counter(r["label"] for r in train) == {"negative": size, "positive": size}
            val = _rows(out / "data" / f"n{size}-s{seed}" / "validation.csv")
            assert Counter(r["label"] for r in val) == {"negative": size, "positive": size}
            assert not {r["text"] for r in train} & {r["text"] for r in val}
            for variant in ("head_only", "head_only+eda"):
                assert (out / variant / f"n{size}-s{seed}" / "metrics.json").is_file()
    a, b = (_rows(out / "data" / f"n4-s{s}" / "train.csv") for s in (42, 43))
    assert {r["text"] for r in a} != {r["text"] for r in b}  # each seed draws its own examples
    test = _rows(out / "data" / "test.csv")
    assert len(test) == 20 and Counter(r["label"] for r in test) == {"negative": 10, "positive": 10}
    aug = next(c for c in result.cells if c["variant"] == "head_only+eda" and c["size"] == 4)
    plain = next(c for c in result.cells if c["variant"] == "head_only" and c["size"] == 4)
    assert aug["train_rows"] > plain["train_rows"] == 8


def test_table_means_and_spreads(grid):
    out, result, _ = grid
    row = next(r for r in result.rows if r["variant"] == "head_only" and r["size"] == 8)
    accs = [c["accuracy"] for c in result.cells if c["variant"] == "head_only" and c["size"] == 8]
    assert row["seeds"] == 2 and row["accuracy"] == pytest.approx(sum(accs) / 2)
    assert row["accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    md = (out / "sizes.md").read_text(encoding="utf-8")
    assert "| head_only+eda |" in md and "4/class" in md and " ± " in md
    assert (out / "sizes.png").read_bytes()[:4] == b"\x89PNG" and len(_rows(out / "cells.csv")) == 8


def test_rerun_reuses_every_cell(grid, tiny_model_dir, sentiment_csv, synonyms, monkeypatch, caplog):
    out, first, _ = grid
    from transferkit.recipes.compare import run as comparison
    monkeypatch.setattr(comparison, "_run_child", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    caplog.set_level(logging.INFO, logger="transferkit")
    again = api.compare("head_only", data=str(sentiment_csv), model=str(tiny_model_dir), output_dir=out,
                        train_sizes="4,8", seeds=2, augment=f"eda:swap=0.2,copies=2,synonyms={synonyms}",
                        test_rows=20, **OPTIONS)
    assert "(8 finished)" in caplog.messages[0] and again.rows == first.rows


def test_a_grid_in_parts_trains_the_cells_of_the_whole(grid, tiny_model_dir, sentiment_csv, tmp_path):
    out, whole, _ = grid
    part = api.compare("head_only", data=str(sentiment_csv), model=str(tiny_model_dir), output_dir=tmp_path / "part",
                       train_sizes="4", seeds=1, seed_offset=1, test_rows=20, **OPTIONS)
    assert [(c["size"], c["seed"]) for c in part.cells] == [(4, 43)]
    for name in ("n4-s43/train.csv", "n4-s43/validation.csv", "test.csv"):  # the split and test sample of seed 42
        assert (tmp_path / "part" / "data" / name).read_bytes() == (out / "data" / name).read_bytes()
    same = next(c for c in whole.cells if c["variant"] == "head_only" and c["size"] == 4 and c["seed"] == 43)
    assert part.cells[0]["accuracy"] == same["accuracy"] and part.cells[0]["f1_macro"] == same["f1_macro"]


def test_parsers():
    assert parse_sizes("32, 8,8") == [8, 32] and parse_sizes(None) == [None]
    assert augment_variants(["eda:swap=0.1", "mixup"]) == [("eda", "eda:swap=0.1"), ("mixup", "mixup")]
    assert augment_variants("eda:swap=0.1+mixup")[0][0] == "eda+mixup"


@pytest.mark.parametrize("extra, message", [
    (["--train-sizes", "8,x"], "'x' is not a whole number"),
    (["--train-sizes", "0"], "must be in [1, 1000000]"),
    (["--seeds", "0", "--train-sizes", "8"], "--seeds 0"),
    (["--augment", "eda:swap=2"], "eda:swap must be in [0, 1]"),
    (["--test-rows", "0"], "--test-rows 0"),
    (["--seed-offset", "-1"], "--seed-offset -1"),
    (["--train-sizes", "8", "data.augment=eda:swap=0.1"], "leave data.augment unset"),
])
def test_bad_grid_options(extra, message, tmp_path, tiny_model_dir, sentiment_csv, capsys):
    line = expect_user_error(capsys, ["compare", "--methods", "head_only", "--data", str(sentiment_csv), "--model",
                                      str(tiny_model_dir), "--output-dir", str(tmp_path / "out"), *extra])
    assert message in line
    assert not (tmp_path / "out").exists()


def test_a_grid_folder_sampled_from_other_data_is_refused(grid, tiny_model_dir, tmp_path, capsys):
    out, _, _ = grid
    from helpers import make_sentences, write_csv
    other = write_csv(tmp_path / "other.csv", make_sentences(120, seed=9))
    line = expect_user_error(capsys, ["compare", "--methods", "head_only", "--data", str(other), "--model",
                                      str(tiny_model_dir), "--output-dir", str(out), "--train-sizes", "4"])
    assert "was sampled with other" in line and "manifest.json" in line


def test_grid_cells_read_the_sampled_columns(tiny_model_dir, tmp_path):
    from helpers import make_sentences, write_csv
    data = write_csv(tmp_path / "cols.csv", make_sentences(80), header=("sentence", "polarity"))
    result = api.compare("head_only", data=str(data), text_column="sentence", label_column="polarity",
                         model=str(tiny_model_dir), output_dir=tmp_path / "out", train_sizes="4", **OPTIONS)
    assert not result.failed and result.rows[0]["accuracy"] is not None


def test_ner_grids_are_refused_with_one_line(tmp_path, tiny_model_dir, capsys):
    conll = tmp_path / "t.conll"
    conll.write_text("good B-PER\nfilm O\n\nbad B-LOC\nplot O\n\n" * 10, encoding="utf-8")
    line = expect_user_error(capsys, ["compare", "--task", "ner", "--methods", "head_only", "--data", str(conll),
                                      "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o"),
                                      "--seeds", "2"])
    assert "no one class per example" in line
