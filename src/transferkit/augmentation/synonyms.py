"""Where EDA's synonyms come from: WordNet (through nltk) or a table the user gives.

A synonym source is anything with `synonyms(word) -> list[str]` (lowercase words in, candidate
replacements out, the word itself excluded), so tests and users with a domain thesaurus pass a
small table instead of WordNet:

    eda:synonym=0.1                    WordNet 3.0 (see below)
    eda:synonym=0.1,synonyms=syn.tsv   a table: `word<TAB>syn1,syn2` lines, or a JSON {"word": [...]}

WordNet is read by nltk's own reader. `nltk.download()` cannot reach its server from every
machine, so the files come from Debian's `wordnet-base` and `wordnet-sense-index` packages (WordNet
3.0): `make wordnet` downloads and unpacks them (no root needed) and `install_wordnet` copies the dictionary into
`<cache>/nltk_data/corpora/wordnet`. Debian ships no `lexnames` data file, which nltk's reader
needs; it is rebuilt from the table in the lexnames(5WN) man page that the same package carries.
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Protocol

from ..core import fs
from ..core.errors import UserError
from ..data.bundled import cache_dir

WORDNET_FILES = [f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")] + ["index.sense"]  # index.sense: wordnet-sense-index
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # lexnames' syntactic category numbers


class SynonymSource(Protocol):
    def synonyms(self, word: str) -> list[str]: ...


class TableSynonyms:
    """Synonyms from a mapping word -> replacements (lookups are lowercase)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {k.lower(): [s for s in v if s.strip() and s.lower() != k.lower()] for k, v in table.items()}

    def synonyms(self, word: str) -> list[str]:
        return list(self.table.get(word.lower(), ()))

    @classmethod
    def from_file(cls, path: str | Path) -> "TableSynonyms":
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"augment: synonym table not found: {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not UTF-8 text (byte {e.start})") from None
        if p.suffix.lower() == ".json":
            try:
                table = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(table, dict) or not all(
                    isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
                    for k, v in table.items()):
                raise UserError(f"{p}: expected a JSON object of word -> list of synonyms")
            return cls(table)
        table = {}
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            word, tab, rest = line.partition("\t")
            if not tab or not word.strip():
                raise UserError(f"{p} line {n}: expected `word<TAB>synonym,synonym,...`")
            table[word.strip()] = [s.strip() for s in rest.split(",") if s.strip()]
        return cls(table)


class WordNetSynonyms:
    """Lemmas of every WordNet synset of the word (its base form found by morphy), multiword ones
    with spaces, the word itself left out; sorted so a seed gives the same choice every time."""

    def __init__(self, root: Path) -> None:
        import nltk.data  # nltk is imported only when WordNet is used
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
        data_root = str(Path(root).parent.parent)  # nltk reads corpora only under a path it was given
        if data_root not in nltk.data.path:
            nltk.data.path.append(data_root)
        try:
            with warnings.catch_warnings():  # "multilingual functions are not available": none are used
                warnings.simplefilter("ignore")
                self.reader = WordNetCorpusReader(str(root), None)
        except (OSError, LookupError, ValueError) as e:
            raise UserError(f"WordNet in {root} cannot be read ({e}); run `make wordnet` again") from None
        self._cache: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        w = word.lower()
        if w not in self._cache:
            found = {lemma.name().replace("_", " ") for synset in self.reader.synsets(w) for lemma in synset.lemmas()}
            self._cache[w] = sorted(s for s in found if s.lower() != w)
        return list(self._cache[w])


def wordnet_dir() -> Path:
    return cache_dir() / "nltk_data" / "corpora" / "wordnet"


def load_synonyms(name: str) -> SynonymSource:
    """`wordnet` (installed under the cache, or from a Debian install) or a table file."""
    if name != "wordnet":
        return TableSynonyms.from_file(name)
    root = wordnet_dir()
    if not (root / "lexnames").is_file():
        if Path("/usr/share/wordnet/data.noun").is_file():  # `apt-get install wordnet-base` put it there
            install_wordnet(Path("/"))
        else:
            raise UserError("augment: WordNet is not installed; run `make wordnet` (Debian's wordnet-base, "
                            "unpacked under the cache), or give a table: eda:synonyms=FILE")
    return WordNetSynonyms(root)


def install_wordnet(debian_root: Path) -> Path:
    """Copy WordNet from an unpacked (or installed) wordnet-base under `debian_root` to `wordnet_dir()`."""
    src = debian_root / "usr" / "share" / "wordnet"
    man = debian_root / "usr" / "share" / "man" / "man5" / "lexnames.5WN.gz"
    missing = [f for f in WORDNET_FILES if not (src / f).is_file()]
    if missing or not man.is_file():
        raise UserError(f"{src}: not Debian's wordnet-base (missing {', '.join(missing) or man.name})")
    dest = wordnet_dir()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in WORDNET_FILES:
        shutil.copyfile(src / f, tmp / f)  # copies, not links: nltk's reader seeks in them
    (tmp / "lexnames").write_text(lexnames_from_man(gzip.decompress(man.read_bytes()).decode("utf-8")),
                                  encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    fs.replace(tmp, dest)
    return dest


def lexnames_from_man(man_page: str) -> str:
    """The `lexnames` file (`NN<TAB>name<TAB>category`) from the table in lexnames(5WN)."""
    rows = re.findall(r"^(\d\d)\t([a-z]+\.[A-Za-z]+)\s*\t", man_page, flags=re.M)
    if len(rows) < 45:
        raise UserError(f"lexnames(5WN) man page: found {len(rows)} lexicographer files, expected 45")
    return "".join(f"{num}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for num, name in rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m transferkit.augmentation.synonyms DEBIAN_ROOT`: install WordNet from unpacked .deb files."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m transferkit.augmentation.synonyms DEBIAN_ROOT", file=sys.stderr)
        return 2
    try:
        dest = install_wordnet(Path(args[0]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"WordNet installed in {dest} ({len(WORDNET_FILES)} files + lexnames); check: "
          f"{', '.join(WordNetSynonyms(dest).synonyms('film')[:5])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
