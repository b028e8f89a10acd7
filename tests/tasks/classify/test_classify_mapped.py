"""The memory-mapped data path (data.storage=mapped) against the in-memory one: same splits, same
batches, same refusals, a cache that is reused and rebuilt when damaged, a run with the same metrics."""
from __future__ import annotations

import json
import logging
import random
import re

import numpy as np
import pandas as pd
import pytest

from helpers import make_tokenizer, tiny_config, write_csv
from transferkit.config.finetune import DataConfig
from transferkit.data import bundled, mapped
from transferkit.tasks.classify import mapped as classify_mapped
from transferkit.data.batches import TokenData, sorted_batches
from transferkit.tasks.classify.splits import prepare_splits
from transferkit.data.split import SPLITS, dedupe, dedupe_rows, text_hashes
from transferkit.data.tokens import tokenize
from transferkit.core.errors import UserError

WORDS = "good bad fine awful great poor nice dull film plot".split()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 7 rows, so every file here spans several chunks (and the last one is short)."""
    monkeypatch.setattr(mapped, "CHUNK_ROWS", 7)


def noisy_rows(n: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts from few words: many repeats (some with other labels, some with a leading space)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        t = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        rows.append((t if rng.random() < 0.7 else " " + t, rng.choice(["pos", "neg", "mid"])))
    return rows


def write(path, rows, fmt: str):
    df = pd.DataFrame(rows, columns=["text", "label"])
    if fmt == "csv":
        write_csv(path, rows)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(path, index=False)
    return path


def both(caplog, **cfg) -> tuple:
    """The splits of `cfg` read in memory and through the mapped cache, each with the lines it logged."""
    caplog.set_level(logging.INFO, logger="transferkit")
    got = []
    for storage in ("memory", "mapped"):
        caplog.clear()
        got.append((prepare_splits(DataConfig(storage=storage, **cfg), 3), list(caplog.messages)))
    return got


def assert_same(a, b) -> None:
    for s in SPLITS:
        assert list(a[s].texts) == list(b[s].texts), s
        assert a[s].labels == b[s].labels, s
    assert a.label_names == b.label_names
    assert a.summary == b.summary


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_mapped_splits_equal_the_in_memory_splits(tmp_path, fmt, caplog):
    path = write(tmp_path / f"d.{fmt}", noisy_rows(), fmt)
    (mem, _), (mapd, notes) = both(caplog, data=str(path))
    assert isinstance(mapd.train.texts, mapped.MappedTexts) and isinstance(mem.train.texts, list)
    assert mem.summary["dedupe"]["conflicts_removed"] > 0 and mem.summary["dedupe"]["relabelled"] > 0
    assert_same(mem, mapd)
    assert any("memory-mapped cache" in n for n in notes)


def test_explicit_files_with_a_carved_validation_split_and_overlap_counts(tmp_path, caplog):
    rows = noisy_rows(200, seed=1)
    train = write(tmp_path / "train.csv", rows, "csv")
    test = write(tmp_path / "test.jsonl", noisy_rows(40, seed=2) + rows[:5], "jsonl")
    (mem, _), (mapd, _) = both(caplog, train=str(train), test=str(test))
    assert mem.summary["overlap_rows_with_train"]["test"] > 0  # the test file repeats training texts
    assert_same(mem, mapd)


def test_same_token_rows_and_batches(tmp_path, caplog):
    path = write(tmp_path / "d.csv", noisy_rows(), "csv")
    (mem, _), (mapd, _) = both(caplog, data=str(path))
    tok = make_tokenizer()
    a = TokenData(tokenize(tok, mem.train.texts, 6), list(mem.train.labels))
    b = TokenData(tokenize(tok, mapd.train.texts, 6), list(mapd.train.labels))
    assert not isinstance(b.ids, list)  # ids read from the mapped token file
    assert a.lengths() == b.lengths()
    for batch in sorted_batches(a.lengths(), 16, None):
        x, y = a.collate(batch, 0), b.collate(batch, 0)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].equal(y[k]), k
    again = tokenize(tok, mapd.train.texts, 6)  # the second call reads the token cache
    assert again.path == b.ids.path


def test_dedupe_rows_matches_dedupe():
    rows = noisy_rows(500, seed=4)
    texts = [t.strip() for t, _ in rows]
    labels = [y for _, y in rows]
    want_t, want_y, want_r = dedupe(texts, labels)
    got_rows, got_y, got_r = dedupe_rows(text_hashes(texts), labels)
    assert [texts[i] for i in got_rows] == want_t and got_y == want_y and got_r == want_r
    assert dedupe_rows(np.zeros(0, np.uint64), [])[2].rows_out == 0


def test_numeric_labels_are_decided_over_the_whole_file(tmp_path, caplog):
    rows = [(f"text {i}", str(i % 3)) for i in range(60)]
    rows[50] = ("text 50", "2.0")  # still integral: ints
    path = write(tmp_path / "d.csv", rows, "csv")
    (mem, _), (mapd, _) = both(caplog, data=str(path))
    assert mem.label_names == ["0", "1", "2"]
    assert_same(mem, mapd)
    rows[55] = ("text 55", "other")  # one non-number in a late chunk: every label stays a string
    path = write(tmp_path / "e.csv", rows, "csv")
    (mem, _), (mapd, _) = both(caplog, data=str(path))
    assert "2.0" in mem.label_names
    assert_same(mem, mapd)


@pytest.mark.parametrize("content, fmt, expected", [
    ("text,label\n" + "a b,pos\n" * 20 + ",neg\n", "csv", "empty or missing text(s) in column 'text' (first at row 21)"),
    ("text,label\n" + "a b,pos\n" * 20 + "c d\n", "csv", "missing label(s) in column 'label' (first at row 21)"),
    ("text,label\n" + "a b,pos\n" * 9 + "c,d,e\n", "csv", "Expected 2 fields in line 11, saw 3"),
    ("text,label\n", "csv", "no data rows (only a header)"),
    ('{"text": "a", "label": 1}\n' * 9 + "{oops\n", "jsonl", "line 10 is not valid JSON"),
    ('{"text": "a", "label": 1}\n' * 9 + "[1]\n", "jsonl", "line 10 is a JSON list, expected an object"),
    ('{"text": "a", "label": 1}\n' * 9 + '{"text": 3, "label": 1}\n', "jsonl", "holds int values, not strings"),
    ("words,label\nfoo,1\n", "csv", "no text column found"),
])
def test_bad_files_are_refused_like_the_in_memory_reader(tmp_path, content, fmt, expected):
    path = tmp_path / f"bad.{fmt}"
    path.write_text(content, encoding="utf-8")
    messages = []
    for storage in ("memory", "mapped"):
        with pytest.raises(UserError) as e:
            prepare_splits(DataConfig(data=str(path), storage=storage), 0)
        messages.append(str(e.value))
    assert expected in messages[1]
    # the same first bad row or line (counts in a streamed message are those of its chunk)
    assert re.findall(r"(?:row|line) \d+", messages[0]) == re.findall(r"(?:row|line) \d+", messages[1])
    tables = bundled.cache_dir() / "tables"
    assert not tables.exists() or not any(tables.iterdir())  # no half-written cache is left


def test_non_utf8_names_the_line_like_the_in_memory_reader(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\n" + b"fine,pos\n" * 30 + b"caf\xe9,neg\n")
    messages = []
    for storage in ("memory", "mapped"):
        with pytest.raises(UserError) as e:
            prepare_splits(DataConfig(data=str(path), storage=storage), 0)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "line 32" in messages[1]


def test_the_cache_is_reused_and_a_damaged_one_rebuilt(tmp_path, monkeypatch):
    path = write(tmp_path / "d.csv", noisy_rows(), "csv")
    # the in-memory splits stand for the first result: the mapped file is damaged in place below, and a
    # mapping of a file truncated under it must not be read (that is a bus error, by design of mmap)
    first = prepare_splits(DataConfig(data=str(path), storage="memory"), 3)
    assert_same(first, prepare_splits(DataConfig(data=str(path), storage="mapped"), 3))
    tables = list((bundled.cache_dir() / "tables").iterdir())
    assert len(tables) == 1 and {p.name for p in tables[0].iterdir()} == {"rows.arrow", "keys.npy", "meta.json"}

    real_build = classify_mapped._build
    monkeypatch.setattr(classify_mapped, "_build", lambda *a, **k: pytest.fail("a complete cache was parsed again"))
    assert_same(first, prepare_splits(DataConfig(data=str(path), storage="mapped"), 3))

    monkeypatch.setattr(classify_mapped, "_build", real_build)
    (tables[0] / "rows.arrow").write_bytes(b"not arrow")  # damaged: rebuilt, no traceback
    assert_same(first, prepare_splits(DataConfig(data=str(path), storage="mapped"), 3))
    meta = json.loads((tables[0] / "meta.json").read_text())
    assert meta["rows"] == 300 and "columns" in meta


def test_auto_maps_only_large_streamable_files(tmp_path, monkeypatch, caplog):
    csv_path = write(tmp_path / "d.csv", noisy_rows(), "csv")
    array = tmp_path / "d.json"
    array.write_text(json.dumps([{"text": t, "label": y} for t, y in noisy_rows()]), encoding="utf-8")
    small = prepare_splits(DataConfig(data=str(csv_path)), 3)
    assert isinstance(small.train.texts, list)  # under AUTO_BYTES
    monkeypatch.setattr(mapped, "AUTO_BYTES", 100)
    assert isinstance(prepare_splits(DataConfig(data=str(csv_path)), 3).train.texts, mapped.MappedTexts)
    caplog.set_level(logging.INFO, logger="transferkit")
    whole = prepare_splits(DataConfig(data=str(array), storage="mapped"), 3)
    assert isinstance(whole.train.texts, list) and any("JSON array" in n for n in caplog.messages)


def test_bad_storage_value_is_refused(tmp_path, sentiment_csv, tiny_model_dir):
    from transferkit.config.checks import validate
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "runs")
    cfg.data.storage = "disk"
    with pytest.raises(UserError, match="data.storage must be auto, memory or mapped"):
        validate(cfg)


def test_a_mapped_run_trains_like_an_in_memory_run(tmp_path, tiny_model_dir):
    from transferkit.recipes.finetune import FinetuneRun
    path = write(tmp_path / "d.csv", [(t, "pos" if "good" in t or "great" in t else "neg")
                                      for t, _ in noisy_rows(400, seed=5)], "csv")
    metrics = []
    for storage in ("memory", "mapped"):
        cfg = tiny_config(path, tiny_model_dir, tmp_path / storage, method="lora", max_steps=6, min_steps=0)
        cfg.data.storage = storage
        result = FinetuneRun(cfg).run()
        metrics.append([result.metrics["test"][k] for k in ("accuracy", "f1_macro", "loss")])
    assert metrics[0] == pytest.approx(metrics[1], abs=1e-6)
