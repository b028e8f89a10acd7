"""load_table / read_texts: every format, column detection, and one-line errors for bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from transferkit.data import read_texts
from transferkit.tasks.classify.read import LabelledData, load_hf_splits, load_table
from transferkit.core.errors import UserError


def write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return str(path)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- formats ---------------------------------------------------------------------------

def test_csv(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n  good film ,pos\n"bad, very bad",neg\nNA,pos\n')
    d = load_table(f)
    assert isinstance(d, LabelledData)
    assert d.texts == ["good film", "bad, very bad", "NA"]  # "NA" is a text, not a missing value
    assert d.labels == ["pos", "neg", "pos"]
    assert d.source == f


def test_csv_crlf_bom_and_multiline(tmp_path):
    f = write(tmp_path / "d.csv", b'\xef\xbb\xbftext,label\r\n"two\r\nlines",a\r\nok,b\r\n')
    d = load_table(f)
    assert d.texts == ["two\r\nlines", "ok"]
    assert d.labels == ["a", "b"]


def test_tsv(tmp_path):
    f = write(tmp_path / "d.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n")
    d = load_table(f)
    assert d.texts == ["fine", "awful"]
    assert d.labels == [1, 0]


def test_jsonl_with_blank_lines(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0, "extra": [1]}]
    f = write(tmp_path / "d.jsonl", json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n\n")
    d = load_table(f)
    assert d.texts == ["a", "b"] and d.labels == [1, 0]


def test_json_array(tmp_path):
    f = write(tmp_path / "d.json", json.dumps([{"review": "x", "class": "c1"}, {"review": "y", "class": "c2"}]))
    d = load_table(f)
    assert d.texts == ["x", "y"] and d.labels == ["c1", "c2"]


def test_parquet_float_labels_become_int(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"content": ["a", "b", "c"], "target": [1.0, 0.0, 2.0]}).to_parquet(f)
    d = load_table(str(f))
    assert d.labels == [1, 0, 2] and all(type(v) is int for v in d.labels)


def test_non_integral_float_labels_kept(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\na,0.5\nb,1\n")
    assert load_table(f).labels == ["0.5", "1"]


def test_numeric_string_labels_become_int(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\na,1.0\nb, 2 \n")
    assert load_table(f).labels == [1, 2]


def test_hf_dataset_folder_with_class_label(tmp_path):
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 1]}, features=feats)
    ds.save_to_disk(str(tmp_path / "ds"))
    d = load_table(str(tmp_path / "ds"))
    assert d.texts == ["a", "b", "c"] and d.labels == ["neg", "pos", "pos"]


def test_hf_datasetdict_folder(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"tweet": ["a", "b"], "labels": [0, 1]}),
        "test": datasets.Dataset.from_dict({"tweet": ["c"], "labels": [1]}),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    d = load_table(str(tmp_path / "dd"))
    assert d.texts == ["a", "b"] and d.source.endswith("[train]")
    splits = load_hf_splits(str(tmp_path / "dd"))
    assert set(splits) == {"train", "test"} and splits["test"].texts == ["c"]


def test_hf_missing_class_label_is_missing(tmp_path):
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, -1]}, features=feats).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError) as e:
        load_table(str(tmp_path / "ds"))
    assert "missing label" in one_line(e) and "row 2" in str(e.value)


# --- columns -----------------------------------------------------------------------------

@pytest.mark.parametrize("tcol,lcol", [("text", "label"), ("sentence", "sentiment"), ("document", "category"),
                                       ("tweet", "target"), ("Review", "Class")])
def test_auto_detection(tmp_path, tcol, lcol):
    f = write(tmp_path / "d.csv", f"id,{tcol},{lcol}\n1,hello,x\n2,world,y\n")
    d = load_table(f)
    assert d.texts == ["hello", "world"] and d.labels == ["x", "y"]


def test_explicit_columns(tmp_path):
    f = write(tmp_path / "d.csv", "body,text,tag,label\nthe body,ignored,t1,l1\n")
    d = load_table(f, text_column="body", label_column="tag")
    assert d.texts == ["the body"] and d.labels == ["t1"]


def test_missing_named_column(tmp_path):
    f = write(tmp_path / "d.csv", "body,tag\nx,y\n")
    with pytest.raises(UserError) as e:
        load_table(f, text_column="body", label_column="lable")
    msg = one_line(e)
    assert "'lable'" in msg and f in msg and "body, tag" in msg


def test_no_detectable_text_column(tmp_path):
    f = write(tmp_path / "d.csv", "body,label\nx,y\n")
    with pytest.raises(UserError) as e:
        load_table(f)
    msg = one_line(e)
    assert "no text column" in msg and f in msg and "body, label" in msg


def test_same_text_and_label_column(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,y\n")
    with pytest.raises(UserError, match="both 'text'"):
        load_table(f, text_column="text", label_column="text")


# --- errors --------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.csv")
    with pytest.raises(UserError) as e:
        load_table(p)
    assert one_line(e) == f"data file not found: {p}"
    with pytest.raises(UserError, match="test file not found"):
        load_table(p, role="test")


def test_unknown_name_mentions_bundled(tmp_path):
    with pytest.raises(UserError) as e:
        load_table("movie-sentenses")
    assert "movie-sentences" in one_line(e)


def test_unsupported_extension(tmp_path):
    f = write(tmp_path / "d.xlsx", "x")
    with pytest.raises(UserError) as e:
        load_table(f)
    assert "'.xlsx'" in one_line(e) and f in str(e.value)


@pytest.mark.parametrize("name,content", [("d.csv", ""), ("d.csv", "  \n\n"), ("d.jsonl", "\n"), ("d.tsv", "")])
def test_empty_file(tmp_path, name, content):
    f = write(tmp_path / name, content)
    with pytest.raises(UserError) as e:
        load_table(f)
    assert "empty" in one_line(e) and f in str(e.value)


def test_header_only(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n")
    with pytest.raises(UserError, match="no data rows"):
        load_table(f)


def test_empty_parquet(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(f)
    with pytest.raises(UserError, match="empty"):
        load_table(str(f))


def test_blank_texts_reported_with_first_row_and_count(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\nok,a\n"   ",b\nfine,a\n,b\n')
    with pytest.raises(UserError) as e:
        load_table(f)
    msg = one_line(e)
    assert f in msg and "2 empty or missing text" in msg and "row 2" in msg and "'text'" in msg


def test_nan_text_in_parquet(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "label": ["x", "y", "x"]}).to_parquet(f)
    with pytest.raises(UserError) as e:
        load_table(str(f))
    assert "1 empty or missing text" in one_line(e) and "row 2" in str(e.value)


def test_missing_labels(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\na,x\nb,\nc, \nd,y\n")
    with pytest.raises(UserError) as e:
        load_table(f)
    msg = one_line(e)
    assert f in msg and "2 missing label" in msg and "row 2" in msg


def test_missing_labels_parquet_nan(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.0, float("nan")]}).to_parquet(f)
    with pytest.raises(UserError, match="row 3"):
        load_table(str(f))


def test_missing_label_in_jsonl_names_line(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": null}\n')
    with pytest.raises(UserError) as e:
        load_table(f)
    assert "line 3" in one_line(e)


def test_non_utf8_csv(tmp_path):
    f = write(tmp_path / "d.csv", b"text,label\ncaf\xc3\xa9,a\nna\xefve,b\n")
    with pytest.raises(UserError) as e:
        load_table(f)
    msg = one_line(e)
    assert f in msg and "line 3" in msg and "byte offset 21" in msg and "0xef" in msg


@pytest.mark.parametrize("ext", [".tsv", ".jsonl"])
def test_non_utf8_other_text_formats(tmp_path, ext):
    f = write(tmp_path / f"d{ext}", b"\xff")
    with pytest.raises(UserError, match="line 1, byte offset 0"):
        load_table(f)


def test_malformed_json_line(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": }\n')
    with pytest.raises(UserError) as e:
        load_table(f)
    msg = one_line(e)
    assert f in msg and "line 2" in msg and "not valid JSON" in msg


def test_json_line_not_object(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match="line 2 is a JSON list"):
        load_table(f)


def test_malformed_csv(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\na,b\nc,d,e,f\n')
    with pytest.raises(UserError) as e:
        load_table(f)
    assert "not valid CSV" in one_line(e) and f in str(e.value)


def test_unreadable_parquet(tmp_path):
    f = write(tmp_path / "d.parquet", b"not parquet at all")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_table(f)


def test_plain_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="save_to_disk"):
        load_table(str(tmp_path / "folder"))


def test_multi_label_rejected(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": ["x", "y"]}\n')
    with pytest.raises(UserError, match="one label per row"):
        load_table(f)


# --- read_texts and bundled names ----------------------------------------------------------

def test_read_texts(tmp_path):
    assert read_texts(write(tmp_path / "in.txt", "first\n  second \n\n")) == ["first", "second"]
    assert read_texts(write(tmp_path / "in.csv", "id,text\n1,a\n2,b\n")) == ["a", "b"]
    with pytest.raises(UserError, match="input file not found"):
        read_texts(str(tmp_path / "missing.txt"))


def test_bundled_name_reads_cache(write_cache):
    write_cache("movie-sentences", [" great ", "dull"], ["positive", "negative"])
    d = load_table("movie-sentences")
    assert d.texts == ["great", "dull"] and d.labels == ["positive", "negative"]
    assert d.source == "movie-sentences"


@pytest.mark.parametrize("storage", ["memory", "mapped"])
def test_a_header_naming_a_column_twice_is_refused(tmp_path, storage):
    """`text,text,label` would have read the first `text` column silently (pandas renames the second `text.1`)."""
    from transferkit.config.finetune import DataConfig
    from transferkit.tasks import get
    path = tmp_path / "dup.csv"
    path.write_text("text,text,label\n" + "".join(f"a {i},b {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)),
                    encoding="utf-8")
    with pytest.raises(UserError, match=r"dup.csv: the header names column 'text' twice \(columns 1 and 2\)"):
        get("classify").prepare(DataConfig(data=str(path), storage=storage), 42)


@pytest.mark.parametrize("text", ["   ", "\u200b", "\x01\x02", "\ufeff \u2028", "\u200d\t"])
def test_texts_of_nothing_visible_are_refused_alike(text, tmp_path):
    """Whitespace, control and zero-width characters tokenize to nothing: refused wherever "   " is, not labelled."""
    from transferkit.tasks import get
    from transferkit.tasks.rows import check_texts
    with pytest.raises(UserError, match="text 2 is empty"):
        check_texts(["a good film", text])
    assert get("classify").input_problem(text, 1000) == (422, "empty text")
    path = tmp_path / "t.csv"
    path.write_text(f"text,label\na good film,pos\n\"{text}\",neg\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty or missing text"):
        load_table(str(path))
    assert not get("classify").input_problem("caf\u00e9 \u200b", 1000)  # a visible character is enough
