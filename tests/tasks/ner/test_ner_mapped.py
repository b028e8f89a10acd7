"""Tagged (NER) data on the memory-mapped path (data.storage=mapped) against the in-memory one: the
same splits and summary for every streamed format, the same windows and batches, the same refusals
with no half-written cache, a cache that is reused and rebuilt when damaged, a tagger with the same
metrics."""
from __future__ import annotations

import gzip
import json
import logging
import random
import re

import numpy as np
import pandas as pd
import pytest

from helpers import make_tokenizer, tagged_sentences, tiny_config, write_conll
from transferkit.config.finetune import DataConfig
from transferkit.data import bundled, mapped
from transferkit.tasks.ner import mapped as mapped_tagged
from transferkit.data.batches import length_grouped_batches
from transferkit.data.split import SPLITS
from transferkit.tasks.ner.splits import prepare_tagged_splits
from transferkit.core.errors import UserError
from transferkit.tasks.ner import windows as mapped_windows
from transferkit.tasks.ner.task import TokenClassification


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 7 sentences, so every file here spans several chunks (and the last one is short)."""
    monkeypatch.setattr(mapped_tagged, "CHUNK_SENTENCES", 7)
    monkeypatch.setattr(mapped, "CHUNK_ROWS", 7)
    monkeypatch.setattr(mapped_tagged, "CHUNK_ROWS", 7)
    monkeypatch.setattr(mapped_windows, "CHUNK", 7)


def noisy_sentences(n: int = 150, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Tagged sentences with repeats (some with other tags) and IOB1/IOBES tags to convert."""
    rng = random.Random(seed)
    base = tagged_sentences(n, seed)
    out = []
    for sent in base:
        if rng.random() < 0.2 and out:  # a repeat of an earlier sentence, sometimes with other tags
            again = list(rng.choice(out))
            if rng.random() < 0.5:
                again = [(w, "O") if t == "B-LOC" else (w, t) for w, t in again]
            out.append(again)
            continue
        if rng.random() < 0.1:  # IOB1 style: an entity that starts with I-
            sent = [(w, "I-" + t[2:]) if t.startswith("B-") else (w, t) for w, t in sent]
        out.append(sent)
    return out


def write(path, sentences, fmt: str):
    if fmt.startswith("conll"):
        lines = ["-DOCSTART- O", ""]
        for sent in sentences:
            lines += [f"{w} X {t}" for w, t in sent] + [""]
        data = "\n".join(lines).encode("utf-8")
    elif fmt.startswith("jsonl"):
        data = "".join(json.dumps({"tokens": [w for w, _ in s], "tags": [t for _, t in s]}) + "\n"
                       for s in sentences).encode("utf-8")
    else:
        pd.DataFrame({"tokens": [[w for w, _ in s] for s in sentences],
                      "ner_tags": [[t for _, t in s] for s in sentences]}).to_parquet(path, index=False)
        return path
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return path


def both(caplog, **cfg) -> list:
    """The splits of `cfg` read in memory and through the mapped cache, each with the lines it logged."""
    caplog.set_level(logging.INFO, logger="transferkit")
    got = []
    for storage in ("memory", "mapped"):
        caplog.clear()
        got.append((prepare_tagged_splits(DataConfig(storage=storage, **cfg), 3), list(caplog.messages)))
    return got


def assert_same(a, b) -> None:
    for s in SPLITS:
        assert len(a[s]) == len(b[s]), s
        assert list(a[s].tokens) == list(b[s].tokens), s
        assert list(a[s].tags) == list(b[s].tags), s
        assert list(a[s].where) == list(b[s].where), s
        assert a[s].source == b[s].source
    assert a.label_names == b.label_names
    assert a.summary == b.summary


@pytest.mark.parametrize("fmt", ["conll", "conll.gz", "jsonl", "jsonl.gz", "parquet"])
def test_mapped_splits_equal_the_in_memory_splits(tmp_path, fmt, caplog):
    path = write(tmp_path / f"d.{fmt}", noisy_sentences(), fmt)
    (mem, mem_notes), (mapd, notes) = both(caplog, data=str(path), limit=80)
    assert isinstance(mapd.train, mapped_tagged.MappedTaggedSplit)
    assert mem.summary["dedupe"]["repeats_removed"] > 0 and mem.summary["dedupe"]["repeats_with_other_tags"] > 0
    assert_same(mem, mapd)
    assert any("memory-mapped cache" in n for n in notes)
    assert [n for n in notes if "memory-mapped" not in n] == mem_notes  # the IOB1 repair note, the summary lines
    assert any("started with I-X" in n for n in notes)


def test_explicit_files_with_a_carved_validation_split(tmp_path, caplog):
    sents = noisy_sentences(200, seed=1)
    train = write(tmp_path / "train.conll", sents[:150], "conll")
    test = write(tmp_path / "test.jsonl", sents[140:], "jsonl")  # ten sentences overlap training
    (mem, _), (mapd, _) = both(caplog, train=str(train), test=str(test))
    assert mem.summary["overlap_with_train"]["test"] > 0
    assert_same(mem, mapd)


def test_same_windows_and_batches_including_long_sentences(tmp_path, caplog):
    sents = noisy_sentences(60, seed=2)
    sents[5] = sents[5] * 12  # longer than a window: split into overlapping windows
    sents[9] = sents[9] * 7
    path = write(tmp_path / "d.conll", sents, "conll")
    (mem, _), (mapd, _) = both(caplog, data=str(path), dedupe=False)
    tok, task = make_tokenizer(), TokenClassification()
    for s in SPLITS:
        a, b = task.encode(tok, mem[s], 24), task.encode(tok, mapd[s], 24)
        assert isinstance(b, mapped_windows.MappedWindows) and len(a) == len(b)
        assert [list(x) for x in a.input_ids] == [x.tolist() for x in b.input_ids]
        assert [list(x) for x in a.labels] == [x.tolist() for x in b.labels]
        assert list(a.first_token) == list(b.first_token) and list(a.sentence) == b.sentence.tolist()
        assert a.start == b.start.tolist() and a.n_split == b.n_split and a.n_sentences() == b.n_sentences()
        assert a.lengths() == b.lengths()
        for batch in length_grouped_batches(a.lengths(), 8, seed=1, epoch=0):
            x, y = a.collate(batch, 0), b.collate(batch, 0)
            assert x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)
        assert task._gold(a) == [[int(t) for t in g] for g in task._gold(b)]
        assert list(task.texts(mem[s])) == list(task.texts(mapd[s]))
    assert a.n_split + task.encode(tok, mem.train, 24).n_split > 0  # a long sentence was split somewhere


def bad(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


GOOD = "".join(f"w{i} O\nAlice B-PER\n\n" for i in range(20))


@pytest.mark.parametrize("name, content, expected", [
    ("bad.conll", (GOOD + "lonely\n").encode(), "line 61 has one column"),
    ("bad.conll", (GOOD + "x B-PER\ny Q-PER\n").encode(), "unknown tag scheme: tag 'Q-PER'"),
    ("bad.conll", b"", "file is empty (no sentences)"),
    ("bad.conll", GOOD.encode() + b"caf\xe9 O\n", "not valid UTF-8 at line 61"),
    ("bad.conll.gz", gzip.compress(GOOD.encode())[:-12], "not a readable gzip file"),
    ("bad.jsonl", ('{"tokens": ["a"], "tags": ["O"]}\n' * 9 + "{oops\n").encode(), "line 10 is not valid JSON"),
    ("bad.jsonl", ('{"tokens": ["a"], "tags": ["O"]}\n' * 9 + '{"tokens": ["a", "b"], "tags": ["O"]}\n').encode(),
     "line 10 has 2 tokens but 1 tags"),
    ("bad.jsonl", ('{"tokens": ["a"], "tags": ["O"]}\n' * 9 + '{"tokens": "a b", "tags": ["O"]}\n').encode(),
     "holds a str at line 10"),
    ("bad.jsonl", b'{"words": ["a"], "label": ["O"]}\n', "no tags column found"),
    ("bad.jsonl.gz", gzip.compress(b"\n\n"), "file is empty (no sentences)"),
])
def test_bad_files_are_refused_like_the_in_memory_reader(tmp_path, name, content, expected):
    path = bad(tmp_path, name, content)
    messages = []
    for storage in ("memory", "mapped"):
        with pytest.raises(UserError) as e:
            prepare_tagged_splits(DataConfig(data=str(path), storage=storage), 0)
        messages.append(str(e.value))
    assert expected in messages[1], messages
    assert re.findall(r"(?:row|line) \d+", messages[0]) == re.findall(r"(?:row|line) \d+", messages[1])
    tagged = bundled.cache_dir() / "tagged"
    assert not tagged.exists() or not any(tagged.iterdir())  # no half-written cache is left


def test_an_unknown_entity_type_in_the_test_file_is_named_alike(tmp_path):
    train = write(tmp_path / "train.conll", tagged_sentences(40), "conll")
    test_rows = tagged_sentences(10, seed=4)
    test_rows[6] = test_rows[6] + [("Acme", "B-ORG")]
    test = write(tmp_path / "test.conll", test_rows, "conll")
    messages = []
    for storage in ("memory", "mapped"):
        with pytest.raises(UserError) as e:
            prepare_tagged_splits(DataConfig(train=str(train), test=str(test), storage=storage), 0)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "entity type 'ORG' in the test split" in messages[1]


def test_the_cache_is_reused_and_a_damaged_one_rebuilt(tmp_path, monkeypatch):
    path = write(tmp_path / "d.jsonl", noisy_sentences(), "jsonl")
    first = prepare_tagged_splits(DataConfig(data=str(path), storage="memory"), 3)
    assert_same(first, prepare_tagged_splits(DataConfig(data=str(path), storage="mapped"), 3))
    folders = list((bundled.cache_dir() / "tagged").iterdir())
    assert len(folders) == 1
    assert {p.name for p in folders[0].iterdir()} == {"rows.arrow", "keys.npy", "tag_keys.npy", "meta.json"}

    real_build = mapped_tagged._build
    monkeypatch.setattr(mapped_tagged, "_build", lambda *a, **k: pytest.fail("a complete cache was parsed again"))
    assert_same(first, prepare_tagged_splits(DataConfig(data=str(path), storage="mapped"), 3))

    monkeypatch.setattr(mapped_tagged, "_build", real_build)
    (folders[0] / "tag_keys.npy").write_bytes(b"\x93NUMPY broken")  # damaged: rebuilt, no traceback
    assert_same(first, prepare_tagged_splits(DataConfig(data=str(path), storage="mapped"), 3))
    (folders[0] / "meta.json").write_text("[1, 2]")  # valid JSON, not the record: rebuilt too
    assert_same(first, prepare_tagged_splits(DataConfig(data=str(path), storage="mapped"), 3))


def test_a_damaged_window_cache_is_rebuilt(tmp_path):
    path = write(tmp_path / "d.conll", noisy_sentences(), "conll")
    splits = prepare_tagged_splits(DataConfig(data=str(path), storage="mapped"), 3)
    tok, task = make_tokenizer(), TokenClassification()
    first = task.encode(tok, splits.train, 24)
    want = [x.tolist() for x in first.input_ids]
    first.path.write_bytes(b"not arrow")
    again = task.encode(tok, splits.train, 24)
    assert [x.tolist() for x in again.input_ids] == want


def test_auto_maps_only_large_streamable_files(tmp_path, monkeypatch, caplog):
    path = write(tmp_path / "d.conll", noisy_sentences(), "conll")
    assert not hasattr(prepare_tagged_splits(DataConfig(data=str(path)), 3).train, "fingerprint")
    monkeypatch.setattr(mapped_tagged, "AUTO_BYTES", 100)
    assert hasattr(prepare_tagged_splits(DataConfig(data=str(path)), 3).train, "fingerprint")
    array = tmp_path / "d.json"
    array.write_text(json.dumps([{"tokens": [w for w, _ in s], "tags": [t for _, t in s]}
                                 for s in noisy_sentences()]), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="transferkit")
    whole = prepare_tagged_splits(DataConfig(data=str(array), storage="mapped"), 3)
    assert not hasattr(whole.train, "fingerprint") and any("JSON array" in n for n in caplog.messages)


def test_a_mapped_tagger_trains_like_an_in_memory_one(tmp_path, tiny_model_dir):
    from transferkit.recipes.finetune import FinetuneRun
    path = write_conll(tmp_path / "tags.conll", 160, seed=6)
    metrics = []
    for storage in ("memory", "mapped"):
        cfg = tiny_config(path, tiny_model_dir, tmp_path / storage, method="lora", max_steps=6, min_steps=0)
        cfg.task = "ner"
        cfg.data.storage = storage
        result = FinetuneRun(cfg).run()
        metrics.append([result.metrics["test"][k] for k in ("f1", "token_accuracy", "loss")])
    assert metrics[0] == pytest.approx(metrics[1], abs=1e-6)
    assert np.isfinite(metrics[1]).all()
