"""EDA's four operations on fixed seeds, tags kept aligned for NER, and the synonym sources."""
from __future__ import annotations

import json

import pytest

from transferkit.augmentation.eda import EDA
from transferkit.augmentation.synonyms import TableSynonyms, lexnames_from_man
from transferkit.core.errors import UserError

TABLE = TableSynonyms({"movie": ["film", "motion picture"], "great": ["excellent"], "boring": ["dull"],
                       "saw": ["watched"]})
WORDS = "This movie was great , not boring at all !".split()


def eda(**rates):
    return EDA(rates, TABLE)


@pytest.mark.parametrize("op, expected", [
    ("synonym", "This movie was excellent , not dull at all !"),
    ("insert", "This motion picture excellent movie was great , not boring at all !"),
    ("swap", "This at was great movie not boring , all !"),
    ("delete", "This movie was great , not boring at"),
])
def test_each_operation_on_a_fixed_seed(op, expected):
    words, tags = eda(**{op: 0.2}).copy(WORDS, None, "1-0-0", op)
    assert " ".join(words) == expected and tags is None
    assert eda(**{op: 0.2}).copy(WORDS, None, "1-0-0", op) == (words, None)  # same seed, same copy


def test_operations_take_turns_and_copies_are_seeded_per_example():
    e = eda(synonym=0.2, delete=0.3)
    copies = e.copies(WORDS, None, seed=7, example=0, copies=4)
    assert len(copies) == 4
    replaced = [c for c, _ in copies[0::2]]  # example 0: synonym, delete, synonym, delete
    assert all(len(c) == len(WORDS) for c in replaced)  # a replacement keeps one word per word here
    assert all(len(c) < len(WORDS) or c == WORDS for c, _ in copies[1::2])
    assert e.copies(WORDS, None, 7, 0, 4) == copies and e.copies(WORDS, None, 8, 0, 4) != copies


def test_stopwords_and_case_and_punctuation():
    words, _ = eda(synonym=1.0).copy("The Movie, the BORING one".split(), None, "0", "synonym")
    assert words[0] == "The" and words[1] in ("Film,", "Motion picture,") and words[3] == "DULL"


def test_deletion_never_empties_a_sentence():
    for seed in range(20):
        words, _ = eda(delete=1.0).copy(["only", "two"], None, str(seed), "delete")
        assert len(words) == 1


NER_WORDS = "John Smith saw a great movie in New York".split()
NER_TAGS = "B-PER I-PER O O O O O B-LOC I-LOC".split()


@pytest.mark.parametrize("op", ["synonym", "insert", "swap", "delete"])
def test_tags_stay_aligned_and_entities_untouched(op):
    e = eda(**{op: 0.5})
    for seed in range(30):
        words, tags = e.copy(NER_WORDS, NER_TAGS, str(seed), op)
        assert len(words) == len(tags)
        spans = [(w, t) for w, t in zip(words, tags) if t != "O"]
        assert spans == [("John", "B-PER"), ("Smith", "I-PER"), ("New", "B-LOC"), ("York", "I-LOC")]
        for i, t in enumerate(tags):  # an I- tag always continues the entity before it
            if t.startswith("I-"):
                assert tags[i - 1][2:] == t[2:]
        assert all(" " not in w for w in words)  # multiword synonyms became several words


def test_synonym_tables_from_files(tmp_path):
    tsv = tmp_path / "syn.tsv"
    tsv.write_text("# comment\nfilm\tmovie, picture,film\n", encoding="utf-8")
    assert TableSynonyms.from_file(tsv).synonyms("Film") == ["movie", "picture"]
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"good": ["fine"]}), encoding="utf-8")
    assert TableSynonyms.from_file(js).synonyms("good") == ["fine"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"good": "fine"}', encoding="utf-8")
    with pytest.raises(UserError, match="bad.json: expected a JSON object"):
        TableSynonyms.from_file(bad)
    (tmp_path / "bad.tsv").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(UserError, match="bad.tsv line 1"):
        TableSynonyms.from_file(tmp_path / "bad.tsv")
    with pytest.raises(UserError, match="not found"):
        TableSynonyms.from_file(tmp_path / "missing.tsv")


def test_lexnames_rebuilt_from_the_man_page_table():
    rows = "".join(f"{i:02d}\t{name}\tcontents\n" for i, name in enumerate(
        ["adj.all", "adj.pert", "adv.all"] + [f"noun.{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
        + [f"verb.{c}" for c in "abcdefghijklmno"]
        + ["adj.ppl"]))
    text = lexnames_from_man(".TS\n" + rows + ".TE\n")
    lines = text.splitlines()
    assert len(lines) == 45 and lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.a\t1"
    assert lines[-1] == "44\tadj.ppl\t3" and lines[29] == "29\tverb.a\t2"
    with pytest.raises(UserError, match="found 1 lexicographer files"):
        lexnames_from_man("00\tadj.all\tx\n")


def test_wordnet_synonyms_when_installed():
    from transferkit.augmentation.synonyms import wordnet_dir
    if not (wordnet_dir() / "lexnames").is_file():
        pytest.skip("WordNet not installed (make wordnet)")
    from transferkit.augmentation.synonyms import load_synonyms
    syn = load_synonyms("wordnet")
    assert "film" in syn.synonyms("movie") and "movie" in syn.synonyms("films") and syn.synonyms("the") == []


def test_leading_and_trailing_punctuation_survive_a_replacement():
    words, _ = eda(synonym=1.0).copy(['"great"', "(boring)"], None, "0", "synonym")
    assert words == ['"excellent"', "(dull)"]


def test_empty_synonyms_in_a_table_are_ignored():
    assert TableSynonyms({"good": ["", "  ", "fine"]}).synonyms("good") == ["fine"]
