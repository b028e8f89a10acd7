"""Tagged (NER) data: CoNLL / JSON / Parquet / datasets folders, tag schemes, splits and every refusal."""
from __future__ import annotations

import json
import logging

import pytest

from transferkit.config.finetune import DataConfig
from transferkit.tasks.ner.splits import TaggedSplit, TaggedSplits, prepare_tagged_splits
from transferkit.tasks.ner.schemes import to_iob2
from transferkit.tasks.ner.read import TaggedTable, load_tagged, load_tagged_splits
from transferkit.core.errors import UserError

PER, LOC, ORG = ("Alice", "Bob", "Carol"), ("Paris", "Oslo", "Rome"), ("Acme", "Initech")



def sentences(n: int, prefix: str = "s", types: tuple[str, ...] = ("PER", "LOC")) -> list[tuple[list[str], list[str]]]:
    """n distinct sentences; sentence i has one entity of types[i % len(types)] (LOC ones are two tokens)."""
    out = []
    for i in range(n):
        kind = types[i % len(types)]
        if kind == "LOC":
            toks, tags = ["New", LOC[i % 3]], ["B-LOC", "I-LOC"]
        elif kind == "ORG":
            toks, tags = [ORG[i % 2]], ["B-ORG"]
        else:
            toks, tags = [PER[i % 3]], ["B-PER"]
        out.append(([f"{prefix}{i}", "saw"] + toks + ["."], ["O", "O"] + tags + ["O"]))
    return out


def conll(path, sents, extra_columns: bool = False, docstart: bool = False) -> str:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for toks, tags in sents:
        lines += [f"{t} NN B-NP {g}" if extra_columns else f"{t}\t{g}" for t, g in zip(toks, tags)]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def jsonl(path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def records(sents, tags_key: str = "tags") -> list[dict]:
    return [{"tokens": t, tags_key: g} for t, g in sents]


def decode(split: TaggedSplit, names: list[str]) -> list[list[str]]:
    return [[names[i] for i in ids] for ids in split.tags]


# --- CoNLL -----------------------------------------------------------------------------

def test_conll_docstart_and_extra_columns(tmp_path):
    f = tmp_path / "d.conll"
    f.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
                 "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nBonn NNP B-NP B-LOC\n",
                 encoding="utf-8")
    t = load_tagged(str(f))
    assert isinstance(t, TaggedTable) and len(t) == 3
    assert t.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["Bonn"]]
    assert t.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert t.where == ["line 3", "line 8", "line 13"] and t.source == str(f) and t.notes == []


@pytest.mark.parametrize("ext", [".txt", ".bio", ".iob", ".tsv"])
def test_conll_extensions_crlf_and_header(tmp_path, ext):
    f = tmp_path / f"d{ext}"
    f.write_bytes(b"token\ttag\r\nJohn\tB-PER\r\nruns\tO\r\n\r\nRome\tB-LOC\r\n")
    t = load_tagged(str(f))
    assert t.tokens == [["John", "runs"], ["Rome"]] and t.tags == [["B-PER", "O"], ["B-LOC"]]
    assert t.where == ["line 2", "line 5"]
    assert any("line 1 read as a header" in n for n in t.notes)


def test_conll_line_without_tag(tmp_path):
    f = tmp_path / "d.conll"
    f.write_text("John B-PER\nruns O\n\nRome\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.conll: line 4 has one column \('Rome'\); expected a token and its tag"):
        load_tagged(str(f))


def test_conll_not_utf8_names_line(tmp_path):
    f = tmp_path / "d.conll"
    f.write_bytes(b"John B-PER\n\nM\xfcnchen B-LOC\n")
    with pytest.raises(UserError, match=r"d\.conll: not valid UTF-8 at line 3"):
        load_tagged(str(f))


def test_conll_empty_and_missing_and_unsupported(tmp_path):
    f = tmp_path / "d.conll"
    f.write_text("\n-DOCSTART- O\n\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.conll: file is empty \(no sentences\)"):
        load_tagged(str(f))
    with pytest.raises(UserError, match=r"train file not found: .*nope\.conll"):
        load_tagged(str(tmp_path / "nope.conll"), role="train")
    csv = tmp_path / "d.csv"
    csv.write_text("tokens,tags\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported file type '\.csv' for tagged data"):
        load_tagged(str(csv))


def test_conll_unknown_scheme_names_exact_line(tmp_path):
    f = tmp_path / "d.conll"
    f.write_text("John B-PER\n\nin O\nRome LOC\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_tagged(str(f))
    assert str(e.value) == (f"unknown tag scheme: tag 'LOC' at {f} line 4; "
                            "expected IOB2 (B-X / I-X / O) or IOBES (S-X / E-X as well)")


# --- tag schemes -----------------------------------------------------------------------

def test_to_iob2_schemes():
    assert to_iob2(["B-PER", "I-PER", "O", "B-LOC"], "x") == ["B-PER", "I-PER", "O", "B-LOC"]
    # IOB1: an entity starts with I-X; B-X only between two adjacent entities of one type
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"], "x") == \
        ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    # IOBES
    assert to_iob2(["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "E-ORG"], "x") == \
        ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC", "B-ORG"]
    assert to_iob2(["B-geo-loc", "I-geo-loc", "O"], "x") == ["B-geo-loc", "I-geo-loc", "O"]


@pytest.mark.parametrize("bad", ["PER", "X-ORG", "B-", "o", "B_PER"])
def test_to_iob2_unknown_scheme(bad):
    with pytest.raises(UserError, match=rf"unknown tag scheme: tag '{bad}' at f\.conll line 5, token 2; expected IOB2"):
        to_iob2(["O", bad], "f.conll line 5")


def test_iobes_file_converted_with_note(tmp_path):
    f = tmp_path / "d.bio"
    f.write_text("John S-PER\nin O\nNew B-LOC\nYork E-LOC\n\nRome S-LOC\n", encoding="utf-8")
    t = load_tagged(str(f))
    assert t.tags == [["B-PER", "O", "B-LOC", "I-LOC"], ["B-LOC"]]
    assert any("IOBES" in n and "S-X -> B-X" in n for n in t.notes)
    assert not any("started with I-X" in n for n in t.notes)


def test_iob1_repaired_and_counted(tmp_path):
    f = tmp_path / "d.iob"
    f.write_text("John B-PER\n\nsaw O\nJane I-PER\nDoe I-PER\nin O\nRome I-LOC\n\nBob I-PER\n", encoding="utf-8")
    t = load_tagged(str(f))
    assert t.tags == [["B-PER"], ["O", "B-PER", "I-PER", "O", "B-LOC"], ["B-PER"]]
    note = [n for n in t.notes if "started with I-X" in n]
    assert note and "3 entities started with I-X (IOB1 style; first at line 4)" in note[0]


# --- JSON / Parquet / datasets -----------------------------------------------------------

def test_jsonl_string_tags(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"id": 1, "tokens": ["John", "runs"], "tags": ["B-PER", "O"]}, {},
                                     {"id": 2, "tokens": ["in", "Oslo"], "tags": ["O", "I-LOC"]}][::2])
    t = load_tagged(f)
    assert t.tokens == [["John", "runs"], ["in", "Oslo"]] and t.tags == [["B-PER", "O"], ["O", "B-LOC"]]
    assert t.where == ["line 1", "line 2"]
    assert any("1 entity started with I-X (IOB1 style; first at line 2, token 2)" in n for n in t.notes)


def test_json_array_ner_tags_and_column_notes(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"tokens": ["a", "Rome"], "ner_tags": ["O", "B-LOC"], "tags": ["X", "Y"]}]),
                 encoding="utf-8")
    with pytest.raises(UserError, match=r"unknown tag scheme: tag 'X' at .*d\.json record 1, token 1"):
        load_tagged(str(f))  # `tags` comes first among the candidates ...
    t = load_tagged(str(f), tags_column="ner_tags")  # ... and the other one can be named
    assert t.tags == [["O", "B-LOC"]] and t.where == ["record 1"]
    f.write_text(json.dumps([{"words": ["a", "Rome"], "ner_tags": ["O", "B-LOC"], "labels": ["O", "O"]}]),
                 encoding="utf-8")
    t = load_tagged(str(f))
    assert t.tags == [["O", "B-LOC"]]
    assert any("using column 'ner_tags' as the tags; also present: 'labels'" in n for n in t.notes)
    with pytest.raises(UserError, match=r"d\.json: tokens column 'toks' not found; available columns: words"):
        load_tagged(str(f), tokens_column="toks")


def test_jsonl_int_tags_with_label_names(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"tokens": ["John", "in", "Rome"], "ner_tags": [1, 0, 3]}])
    t = load_tagged(f, label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    assert t.tags == [["B-PER", "O", "B-LOC"]]


def test_int_tags_without_label_names(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"tokens": ["John"], "ner_tags": ["B-PER"]},
                                     {"tokens": ["John", "ran"], "ner_tags": [1, 0]}])
    with pytest.raises(UserError) as e:
        load_tagged(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: tags column 'ner_tags' holds integer ids (first at line 2, token 1)")
    assert "pass label_names" in msg and "\n" not in msg


def test_int_tags_out_of_range(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"tokens": ["John", "ran"], "tags": [1, 7]}])
    with pytest.raises(UserError, match=r"line 1, token 2: tag id 7 is out of range for the 3 tag names \(ids 0\.\.2"):
        load_tagged(f, label_names=["O", "B-PER", "I-PER"])


@pytest.mark.parametrize("rec, match", [
    ({"tokens": [], "tags": []}, r"line 2 is an empty sentence \(no tokens\)"),
    ({"tokens": ["a", "b"], "tags": ["O"]}, r"line 2 has 2 tokens but 1 tags; each token needs exactly one tag"),
    ({"tokens": ["a", 5], "tags": ["O", "O"]}, r"line 2, token 2 is a int \(5\), not a string"),
    ({"tokens": ["a", " "], "tags": ["O", "O"]}, r"line 2, token 2 is empty"),
    ({"tokens": "a b", "tags": ["O", "O"]}, r"tokens column 'tokens' holds a str at line 2, expected a list of tokens"),
    ({"tokens": ["a"], "tags": None}, r"line 2 has no tags"),
    ({"tokens": ["a"], "tags": [""]}, r"line 2, token 1: the tag is empty"),
    ({"tokens": ["a"], "tags": [1.5]}, r"line 2, token 1: tag 1.5 is a float"),
    ({"tokens": ["a"], "tags": ["PER"]}, r"unknown tag scheme: tag 'PER' at .*d\.jsonl line 2, token 1"),
])
def test_sentence_errors_name_file_and_line(tmp_path, rec, match):
    f = jsonl(tmp_path / "d.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, rec])
    with pytest.raises(UserError, match=match) as e:
        load_tagged(f)
    assert "d.jsonl" in str(e.value) and "\n" not in str(e.value)


def test_parquet_string_and_int_tags(tmp_path):
    import pandas as pd

    f = tmp_path / "d.parquet"
    pd.DataFrame({"tokens": [["John", "runs"], ["in", "Oslo"]], "tags": [["B-PER", "O"], ["O", "B-LOC"]]}) \
        .to_parquet(f, index=False)
    t = load_tagged(str(f))
    assert t.tokens == [["John", "runs"], ["in", "Oslo"]] and t.tags == [["B-PER", "O"], ["O", "B-LOC"]]
    assert t.where == ["row 1", "row 2"] and all(isinstance(x, str) for s in t.tokens for x in s)
    g = tmp_path / "ids.parquet"
    pd.DataFrame({"words": [["John", "runs"]], "ner_tags": [[1, 0]]}).to_parquet(g, index=False)
    assert load_tagged(str(g), label_names=["O", "B-PER", "I-PER"]).tags == [["B-PER", "O"]]
    with pytest.raises(UserError, match="holds integer ids"):
        load_tagged(str(g))
    h = tmp_path / "bad.parquet"
    pd.DataFrame({"tokens": [["a", "b"]], "tags": [["O"]]}).to_parquet(h, index=False)
    with pytest.raises(UserError, match=r"bad\.parquet: row 1 has 2 tokens but 1 tags"):
        load_tagged(str(h))


TAG_NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def hf_dataset(rows: list[tuple[list[str], list[int]]]):
    import datasets

    features = datasets.Features({"id": datasets.Value("string"),
                                  "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=TAG_NAMES))})
    return datasets.Dataset.from_dict({"id": [str(i) for i in range(len(rows))], "tokens": [r[0] for r in rows],
                                       "ner_tags": [r[1] for r in rows]}, features=features)


def id_rows(sents) -> list[tuple[list[str], list[int]]]:
    return [(t, [TAG_NAMES.index(g) for g in tags]) for t, tags in sents]


def test_hf_folder_classlabel_names(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    hf_dataset([(["John", "in", "Rome"], [1, 0, 3]), (["Mary", "Ann"], [1, 2])]).save_to_disk(str(folder))
    t = load_tagged(str(folder))
    assert t.tokens == [["John", "in", "Rome"], ["Mary", "Ann"]]
    assert t.tags == [["B-PER", "O", "B-LOC"], ["B-PER", "I-PER"]] and t.where == ["row 1", "row 2"]

    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": hf_dataset([(["John"], [1])]),
                          "test": hf_dataset([(["Rome"], [3])])}).save_to_disk(str(dd))
    t = load_tagged(str(dd))
    assert t.source == f"{dd} [train]" and t.tags == [["B-PER"]]
    both = load_tagged_splits(str(dd))
    assert set(both) == {"train", "test"} and both["test"].tags == [["B-LOC"]]


def test_hf_folder_unlabelled_id_refused(tmp_path):
    folder = tmp_path / "ds"
    hf_dataset([(["John", "runs"], [1, -1])]).save_to_disk(str(folder))
    with pytest.raises(UserError, match=r"ds: row 1, token 2: tag id -1 is out of range for the 5 tag names"):
        load_tagged(str(folder))


# --- prepare_tagged_splits --------------------------------------------------------------

def test_split_one_file(tmp_path, caplog):
    f = conll(tmp_path / "d.conll", sentences(100), extra_columns=True, docstart=True)
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(data=f), seed=3)
    assert isinstance(s, TaggedSplits)
    assert s.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and s.num_labels == 5
    assert s.entity_types == ["LOC", "PER"]
    assert [len(s[k]) for k in ("train", "validation", "test")] == [80, 10, 10]
    assert s.summary["sizes"] == {"train": 80, "validation": 10, "test": 10}
    assert s.summary["tokens"]["train"] == sum(len(t) for t in s.train.tokens)
    ent = s.summary["entities"]
    assert sum(ent[k]["LOC"] + ent[k]["PER"] for k in ent) == 100
    assert s.summary["seed"] == 3 and s.summary["split"] == [0.8, 0.1, 0.1] and s.summary["mode"] == "split"
    assert s.summary["sources"]["test"] == f and s.summary["dedupe"]["repeats_removed"] == 0
    assert json.loads(json.dumps(s.summary)) == s.summary  # goes into run.json as is
    by_tokens = {tuple(t): g for t, g in sentences(100)}
    for k in ("train", "validation", "test"):  # ids decode back to each sentence's own tags
        assert decode(s[k], s.label_names) == [by_tokens[tuple(t)] for t in s[k].tokens]
        assert all(w.startswith("line ") for w in s[k].where)
    out = "\n".join(caplog.messages)
    assert f"data: {f}" in out
    assert "split: train 80 | validation 10 | test 10 sentences (seed 3, fractions 0.8/0.1/0.1)" in out
    assert "tokens: train" in out and "entity" in out and "LOC" in out and "PER" in out


def test_split_reproducible_by_seed(tmp_path):
    f = conll(tmp_path / "d.conll", sentences(60))
    a = prepare_tagged_splits(DataConfig(data=f), 1)
    b = prepare_tagged_splits(DataConfig(data=f), 1)
    c = prepare_tagged_splits(DataConfig(data=f), 2)
    assert a.test.tokens == b.test.tokens and a.train.tags == b.train.tags and a.train.where == b.train.where
    assert a.test.tokens != c.test.tokens


def test_explicit_files(tmp_path, caplog):
    tr = conll(tmp_path / "train.conll", sentences(20, "tr"))
    va = conll(tmp_path / "val.conll", sentences(4, "va"))
    te = conll(tmp_path / "test.conll", sentences(6, "te"))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(train=tr, validation=va, test=te), 0)
    assert [len(s[k]) for k in ("train", "validation", "test")] == [20, 4, 6]
    assert s.train.tokens[0][0] == "tr0"  # explicit files keep file order
    assert s.test.where[:2] == ["line 1", "line 6"] and s.test.source == f"{te} (test)"
    assert s.summary["mode"] == "files" and s.summary["split"] is None and s.summary["dedupe"] is None
    assert f"data: train {tr}, validation {va}, test {te}" in "\n".join(caplog.messages)


def test_explicit_files_without_validation_carve_ten_percent(tmp_path, caplog):
    tr = conll(tmp_path / "train.conll", sentences(40, "tr"))
    te = conll(tmp_path / "test.conll", sentences(5, "te"))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(train=tr, test=te), 7)
    assert [len(s[k]) for k in ("train", "validation", "test")] == [36, 4, 5]
    assert not {tuple(t) for t in s.train.tokens} & {tuple(t) for t in s.validation.tokens}
    assert all(t[0].startswith("tr") for t in s.validation.tokens)
    assert any("using 10% of" in ln and "(4 sentences)" in ln for ln in caplog.messages)
    again = prepare_tagged_splits(DataConfig(train=tr, test=te), 7)
    assert again.validation.tokens == s.validation.tokens


def test_dataset_dict_splits_used_as_given(tmp_path):
    import datasets

    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": hf_dataset(id_rows(sentences(20, "tr"))),
                          "validation": hf_dataset(id_rows(sentences(3, "va"))),
                          "test": hf_dataset(id_rows(sentences(4, "te")))}).save_to_disk(str(dd))
    s = prepare_tagged_splits(DataConfig(data=str(dd)), 0)
    assert s.summary["mode"] == "dataset splits"
    assert [len(s[k]) for k in ("train", "validation", "test")] == [20, 3, 4]
    assert s.test.source == f"{dd} [test] (test)" and s.test.where[0] == "row 1"


def test_jsonl_int_tags_through_prepare(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    f = jsonl(tmp_path / "d.jsonl", [{"tokens": t, "ner_tags": [names.index(g) for g in tags]}
                                     for t, tags in sentences(30)])
    s = prepare_tagged_splits(DataConfig(data=f), 0, label_names=names)
    assert s.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    with pytest.raises(UserError, match="holds integer ids"):
        prepare_tagged_splits(DataConfig(data=f), 0)


def test_columns_from_config(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"w": t, "t": g} for t, g in sentences(30)])
    s = prepare_tagged_splits(DataConfig(data=f, text_column="w", label_column="t"), 0)
    assert len(s.train) == 24
    with pytest.raises(UserError, match=r"no tokens column found \(looked for tokens, words\).*data\.text_column"):
        prepare_tagged_splits(DataConfig(data=f), 0)


def test_dedupe_drops_repeats_first_wins(tmp_path, caplog):
    sents = sentences(50)
    repeats = sents[:8] + [(sents[0][0], ["O"] * len(sents[0][0]))]  # 9 repeats, one with other tags
    f = conll(tmp_path / "d.conll", sents + repeats)
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(data=f), 0)
    all_tokens = [tuple(t) for k in ("train", "validation", "test") for t in s[k].tokens]
    assert len(all_tokens) == len(set(all_tokens)) == 50
    assert s.summary["dedupe"] == {"sentences_in": 59, "sentences_out": 50, "repeats_removed": 9,
                                   "repeats_with_other_tags": 1}
    assert s.summary["overlap_with_train"] == {"validation": 0, "test": 0}
    assert any(ln.startswith("dedupe: 59 sentences -> 50: 9 repeated token sequences removed") for ln in caplog.messages)
    kept = s.summary["entities"]
    assert sum(sum(v.values()) for v in kept.values()) == 50  # the first (tagged) copy of sentence 0 won
    off = prepare_tagged_splits(DataConfig(data=f, dedupe=False), 0)
    assert sum(len(off[k]) for k in ("train", "validation", "test")) == 59 and off.summary["dedupe"] is None


def test_limit_keeps_first_training_sentences(tmp_path, caplog):
    f = conll(tmp_path / "d.conll", sentences(50))
    full = prepare_tagged_splits(DataConfig(data=f), 0)
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(data=f, limit=10), 0)
    assert s.train.tokens == full.train.tokens[:10] and s.test.tokens == full.test.tokens
    assert s.summary["limit"] == 10 and s.summary["train_sentences_before_limit"] == 40
    assert "limit: using the first 10 of 40 training sentences" in caplog.messages


def test_tag_in_test_not_seen_in_training(tmp_path):
    tr = conll(tmp_path / "train.conll", sentences(20, "tr", types=("PER",)))
    te = conll(tmp_path / "test.conll", sentences(4, "te", types=("PER", "ORG")))
    with pytest.raises(UserError) as e:
        prepare_tagged_splits(DataConfig(train=tr, test=te), 0)
    msg = str(e.value)
    assert msg.startswith(f"entity type 'ORG' in the test split ({te} line 6) does not occur in the training data")
    assert "training entity types (1): PER" in msg and "\n" not in msg


def test_no_entity_in_training(tmp_path):
    f = conll(tmp_path / "d.conll", [([f"w{i}", "x"], ["O", "O"]) for i in range(20)])
    with pytest.raises(UserError, match=r"training data .*d\.conll has no entities \(every tag is O\)"):
        prepare_tagged_splits(DataConfig(data=f), 0)


def test_too_few_sentences(tmp_path):
    f = conll(tmp_path / "d.conll", sentences(8))
    with pytest.raises(UserError, match=r"d\.conll: 8 sentence\(s\) are too few for split 0\.8/0\.1/0\.1: "
                                        r"the validation split would get 1; need at least 2 per split"):
        prepare_tagged_splits(DataConfig(data=f), 0)
    tr = conll(tmp_path / "train.conll", sentences(10, "tr"))
    one = conll(tmp_path / "one.conll", sentences(1, "te"))
    with pytest.raises(UserError, match=r"test data .*one\.conll has 1 sentence\(s\); need at least 2"):
        prepare_tagged_splits(DataConfig(train=tr, test=one), 0)
    two = conll(tmp_path / "two.conll", sentences(2, "te"))
    with pytest.raises(UserError, match=r"train\.conll: 10 training sentence\(s\) leave 1 for validation"):
        prepare_tagged_splits(DataConfig(train=tr, test=two), 0)
    with pytest.raises(UserError, match=r"data\.limit=1 leaves 1 training sentence"):
        prepare_tagged_splits(DataConfig(data=conll(tmp_path / "d2.conll", sentences(30)), limit=1), 0)


def test_source_combinations_refused(tmp_path):
    f = conll(tmp_path / "d.conll", sentences(20))
    with pytest.raises(UserError, match="give either data.data or data.train/validation/test; not both"):
        prepare_tagged_splits(DataConfig(data=f, train=f), 0)
    with pytest.raises(UserError, match="data.train is set but data.test is not"):
        prepare_tagged_splits(DataConfig(train=f), 0)
    with pytest.raises(UserError, match="need data.train as well"):
        prepare_tagged_splits(DataConfig(test=f), 0)
    with pytest.raises(UserError, match="no data given"):
        prepare_tagged_splits(DataConfig(), 0)


def test_overlap_and_identical_files_warn(tmp_path, caplog):
    tr = conll(tmp_path / "train.conll", sentences(20, "tr"))
    same = conll(tmp_path / "copy.conll", sentences(20, "tr"))
    caplog.set_level(logging.INFO, logger="transferkit")
    s = prepare_tagged_splits(DataConfig(train=tr, validation=same, test=same), 0)
    assert s.summary["identical_to_train"] == ["validation", "test"]
    assert sum("identical to the training file" in ln for ln in caplog.messages) == 2
