"""Token classification plumbing: first-sub-token labels, windows with ownership, merging, entity spans."""
from __future__ import annotations

import string
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.core.errors import UserError
from transferkit.tasks.ner.spans import (
    EncodedWindows,
    encode_words,
    group_entities,
    merge_windows,
    plan_windows,
    word_offsets,
)

WORDS = ["apple", "inc", "play", "##ing", "##ed", "un", "##believ", "##able", "steve", "jobs", "the", "cat", "saw"]
LETTERS = list(string.ascii_lowercase)
PIECE_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + [".", ","] + LETTERS
               + ["##" + c for c in LETTERS])
NAMES = ["O", "B-ORG", "I-ORG", "B-PERSON", "I-PERSON", "B-GPE", "I-GPE"]


@pytest.fixture(scope="module")
def piece_tok(tmp_path_factory):
    """A fast WordPiece tokenizer whose unknown words fall apart into one '##' piece per letter."""
    from transformers import AutoTokenizer, BertTokenizer
    folder = tmp_path_factory.mktemp("piece-tok")
    BertTokenizer(vocab={w: i for i, w in enumerate(PIECE_VOCAB)}, do_lower_case=True).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast
    assert tok.tokenize("playing") == ["play", "##ing"]
    assert tok.tokenize("unbelievable") == ["un", "##believ", "##able"]
    return tok


@pytest.fixture(scope="module")
def bert_tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def pieces(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def check_ownership(enc: EncodedWindows, sentences, max_length):
    """Every word owned exactly once; the owned position holds the word's first sub-token."""
    seen = {}
    for i, firsts in enumerate(enc.first_token):
        assert len(enc.input_ids[i]) <= max_length
        assert len(enc.labels[i]) == len(enc.input_ids[i])
        for pos, w in firsts:
            key = (enc.sentence[i], w)
            assert key not in seen, f"{key} owned twice"
            seen[key] = (i, pos)
    assert set(seen) == {(s, w) for s, words in enumerate(sentences) for w in range(len(words))}
    return seen


def test_first_sub_token_carries_the_label(piece_tok):
    enc = encode_words(piece_tok, [["playing", "apple", "unbelievable"]], [[1, 2, 3]], max_length=32)
    assert pieces(piece_tok, enc.input_ids[0]) == ["[CLS]", "play", "##ing", "apple", "un", "##believ", "##able",
                                                   "[SEP]"]
    assert enc.labels == [[-100, 1, -100, 2, 3, -100, -100, -100]]
    assert enc.first_token == [[(1, 0), (3, 1), (4, 2)]]
    assert enc.sentence == [0] and enc.n_split == 0 and enc.has_labels


def test_special_tokens_get_ignore_label(bert_tok):
    enc = encode_words(bert_tok, [["good", "film"], ["the", "plot", "was", "dull"]], [[1, 0], [0, 0, 0, 1]],
                       max_length=64)
    for ids, labs in zip(enc.input_ids, enc.labels):
        assert ids[0] == bert_tok.cls_token_id and ids[-1] == bert_tok.sep_token_id
        assert labs[0] == -100 and labs[-1] == -100
    assert enc.labels[0] == [-100, 1, 0, -100]
    assert enc.labels[1] == [-100, 0, 0, 0, 1, -100]


def test_without_labels_everything_is_ignored_but_ownership_is_kept(piece_tok):
    sents = [["playing", "apple"] * 10]
    labelled = encode_words(piece_tok, sents, [[1] * 20], max_length=10, stride=3)
    bare = encode_words(piece_tok, sents, None, max_length=10, stride=3)
    assert bare.input_ids == labelled.input_ids and bare.first_token == labelled.first_token
    assert all(x == -100 for row in bare.labels for x in row)
    assert not bare.has_labels
    assert "labels" not in bare.collate([0, 1], pad_id=0)


def test_long_sentence_is_split_into_overlapping_windows(piece_tok):
    words = ["steve", "playing", "unbelievable", "cat", "jobs", "the", "apple", "saw", "inc", "played"] * 4
    short = ["the", "cat"]
    sents = [words, short]
    labels = [list(range(len(words))), [0, 1]]
    max_length = 12
    enc = encode_words(piece_tok, sents, labels, max_length=max_length, stride=4)
    assert enc.n_split == 1
    assert enc.sentence.count(1) == 1 and enc.sentence.count(0) > 1
    owners = check_ownership(enc, sents, max_length)
    # The label sits at the owning window's first sub-token of that word and nowhere else.
    for (s, w), (i, pos) in owners.items():
        assert enc.labels[i][pos] == labels[s][w]
        assert pieces(piece_tok, [enc.input_ids[i][pos]])[0] == piece_tok.tokenize(sents[s][w])[0]
    assert sum(x != -100 for row in enc.labels for x in row) == len(words) + len(short)
    # Windows are [CLS] + a slice of the sentence's sub-tokens + [SEP], starting at a word boundary.
    full = piece_tok(words, is_split_into_words=True)["input_ids"][1:-1]
    starts = []
    for i in [k for k, s in enumerate(enc.sentence) if s == 0]:
        toks = pieces(piece_tok, enc.input_ids[i])
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
        assert not toks[1].startswith("##")
        body = enc.input_ids[i][1:-1]
        lo = starts[-1] + 1 if starts else 0
        a = next(a for a in range(lo, len(full)) if full[a:a + len(body)] == body)
        starts.append(a)
        if len(starts) > 1:
            prev_len = len(enc.input_ids[i - 1]) - 2
            overlap = starts[-2] + prev_len - a
            assert 1 <= overlap <= 8  # about `stride` sub-tokens, cut at word boundaries
    assert starts[0] == 0 and starts[-1] + len(enc.input_ids[enc.sentence.index(1) - 1]) - 2 == len(full)


def test_plan_windows_cover_everything_and_move_on():
    starts = list(range(0, 60, 3))  # 20 words of 3 sub-tokens
    wins = plan_windows(starts, 60, budget=10, stride=4)
    assert wins[0][0] == 0 and wins[-1][1] == 60
    for (a, b), (a2, _) in pairwise(wins):
        assert b - a <= 10 and a < a2 <= b and a2 in starts
        assert b - a2 in (3, 6)  # the word-boundary overlap closest to 4
    assert plan_windows(starts, 60, budget=60, stride=4) == [(0, 60)]
    assert plan_windows([0, 5], 7, budget=3, stride=0) == [(0, 3), (3, 5), (5, 7)]  # the long word is cut
    # a short word, then one longer than a window: its first pieces fill the short word's window
    assert plan_windows([0, 1, 9], 11, budget=4, stride=0) == [(0, 4), (4, 8), (8, 11)]
    assert plan_windows([0, 1, 9], 11, budget=4, stride=1) == [(0, 4), (3, 7), (6, 9), (9, 11)]


def test_word_longer_than_a_window_is_cut_into_pieces(piece_tok):
    long = "supercalifragilistic"  # 20 letter pieces
    sents = [["the", long, "cat", "saw", "apple"]]
    enc = encode_words(piece_tok, sents, [[1, 2, 3, 4, 5]], max_length=8, stride=2)
    owners = check_ownership(enc, sents, 8)
    i, pos = owners[(0, 1)]
    assert pieces(piece_tok, [enc.input_ids[i][pos]]) == ["s"]
    assert enc.labels[i][pos] == 2
    # The word's later pieces and its copies in other windows are never labelled.
    labelled = [(k, p) for k, row in enumerate(enc.labels) for p, x in enumerate(row) if x == 2]
    assert labelled == [(i, pos)]
    assert enc.n_split == 1 and len(enc.input_ids) >= 4
    assert sorted(x for row in enc.labels for x in row if x != -100) == [1, 2, 3, 4, 5]


def one_hot_scores(enc: EncodedWindows, num_labels: int, pad: int = 0):
    """Per window: one-hot rows of the labels; ignored positions point at a wrong label on purpose."""
    out = []
    for row in enc.labels:
        s = np.zeros((len(row) + pad, num_labels))
        for p, x in enumerate(row):
            s[p, x if x != -100 else num_labels - 1] = 1.0
        out.append(s)
    return out


def test_merge_windows_round_trip(piece_tok):
    rng = np.random.default_rng(0)
    vocab_words = ["steve", "playing", "unbelievable", "cat", "jobs", "the", "apple", "saw", "inc", "zebra"]
    sents = [[vocab_words[j] for j in rng.integers(0, len(vocab_words), size=n)] for n in (1, 5, 37, 0, 60)]
    labels = [[int(x) for x in rng.integers(0, 6, size=len(s))] for s in sents]  # never 6, the decoy label
    enc = encode_words(piece_tok, sents, labels, max_length=16, stride=5)
    assert enc.n_split == 2
    merged = merge_windows(enc, one_hot_scores(enc, 7))
    assert [[w[0] for w in sent] for sent in merged] == labels
    assert all(w[1] == 1.0 and len(w[2]) == 7 and sum(w[2]) == 1.0 for sent in merged for w in sent)
    # torch tensors with padded rows work too
    import torch
    merged_t = merge_windows(enc, [torch.tensor(s, dtype=torch.bfloat16) for s in one_hot_scores(enc, 7, pad=3)])
    assert [[w[0] for w in sent] for sent in merged_t] == labels


def test_merge_windows_checks_shapes(piece_tok):
    enc = encode_words(piece_tok, [["the", "cat"]], [[0, 1]], max_length=16)
    with pytest.raises(ValueError):
        merge_windows(enc, [])
    with pytest.raises(ValueError):
        merge_windows(enc, [np.zeros((2, 3))])


def test_collate_pads_labels_with_ignore(piece_tok):
    enc = encode_words(piece_tok, [["the"], ["playing", "cat"]], [[1], [2, 3]], max_length=16)
    batch = enc.collate([0, 1], pad_id=0)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 1, -100, -100, -100], [-100, 2, -100, 3, -100]]
    assert enc.lengths() == [3, 5] and len(enc) == 2


def test_word_without_tokens_is_kept_as_unknown(piece_tok):
    enc = encode_words(piece_tok, [["the", "\u200b", "cat"]], [[1, 2, 3]], max_length=16)
    assert pieces(piece_tok, enc.input_ids[0]) == ["[CLS]", "the", "[UNK]", "cat", "[SEP]"]
    assert enc.labels[0] == [-100, 1, 2, 3, -100]


def test_user_errors(piece_tok):
    class Slow:
        is_fast = False

    with pytest.raises(UserError, match="fast tokenizer"):
        encode_words(Slow(), [["a"]], None, max_length=8)
    with pytest.raises(UserError, match="2 words but 1 labels"):
        encode_words(piece_tok, [["the", "cat"]], [[0]], max_length=8)
    with pytest.raises(UserError, match="no room"):
        encode_words(piece_tok, [["the", "cat"]], None, max_length=2)
    with pytest.raises(UserError, match="list of word strings"):
        encode_words(piece_tok, ["the cat"], None, max_length=8)
    assert encode_words(piece_tok, [], None, max_length=8).input_ids == []


def check_offsets(text, words):
    for w, s, e in words:
        assert text[s:e] == w and w.strip() == w and w


def test_word_offsets_bert_pre_tokenizer(bert_tok):
    text = "the cat saw the cat."
    words = word_offsets(bert_tok, text)
    assert words == [("the", 0, 3), ("cat", 4, 7), ("saw", 8, 11), ("the", 12, 15), ("cat", 16, 19), (".", 19, 20)]
    text = "  Zürich\tand  São Paulo,\n\nnaïve  café  "
    words = word_offsets(bert_tok, text)
    check_offsets(text, words)
    assert [w for w, _, _ in words] == ["Zürich", "and", "São", "Paulo", ",", "naïve", "café"]
    assert words[0][1:] == (2, 8) and words[2][1:] == (14, 17)
    text = "U.S. 北京大学"  # BERT's normalizer makes each CJK character a word
    words = word_offsets(bert_tok, text)
    check_offsets(text, words)
    assert [w for w, _, _ in words] == ["U", ".", "S", ".", "北", "京", "大", "学"]


def test_word_offsets_byte_level_and_fallback():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    text = "Hello  Zürich, São Paulo"
    words = word_offsets(tok, text)
    check_offsets(text, words)
    assert words == [("Hello", 0, 5), ("Zürich", 7, 13), (",", 13, 14), ("São", 15, 18), ("Paulo", 19, 24)]

    class NoPre:
        class backend_tokenizer:
            pre_tokenizer = None

    text = "São  Paulo,\tZürich!"
    assert word_offsets(NoPre(), text) == [("São", 0, 3), ("Paulo", 5, 10), (",", 10, 11), ("Zürich", 12, 18),
                                           ("!", 18, 19)]


def test_word_offsets_metaspace_splits_punctuation_off_words():
    """sentencepiece's pre-tokenizer (XLM-R, DeBERTa-v3) splits at whitespace alone: "Paris," would be one word
    where CoNLL-style training words have "Paris" and ","; runs of punctuation become words of their own."""
    from helpers import make_family_tokenizer
    tok = make_family_tokenizer("unigram")
    text = "Anna visited Paris, in May...  Zürich!\u00bfQué? l'été e-mail"
    words = word_offsets(tok, text)
    check_offsets(text, words)
    assert [w for w, _, _ in words] == ["Anna", "visited", "Paris", ",", "in", "May", "...", "Zürich", "!\u00bf", "Qué",
                                        "?", "l", "'", "été", "e", "-", "mail"]
    bpe = make_family_tokenizer("bpe")  # byte-level BPE splits punctuation itself: unchanged ("..." one word)
    assert [w for w, _, _ in word_offsets(bpe, "Paris, in May...")] == ["Paris", ",", "in", "May", "..."]


def words_of(text, spans):
    return [(text[s:e], s, e) for s, e in spans]


def test_group_entities_iob2():
    text = "aa bb cc dd ee"
    words = words_of(text, [(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)])
    ix = {n: i for i, n in enumerate(NAMES)}
    # B-I-I is one entity; scores are averaged
    ents = group_entities(text, words, [ix[x] for x in ["B-ORG", "I-ORG", "I-ORG", "O", "O"]],
                          [0.9, 0.6, 0.9, 1, 1], NAMES)
    assert ents == [{"entity_group": "ORG", "score": pytest.approx(0.8), "word": "aa bb cc", "start": 0, "end": 8}]
    assert isinstance(ents[0]["score"], float)
    # I- after O starts an entity; adjacent entities of different types stay apart; B-X B-X are two
    labs = ["O", "I-PERSON", "B-GPE", "I-ORG", "B-ORG"]
    ents = group_entities(text, words, [ix[x] for x in labs], [1, 0.5, 0.25, 0.75, 1.0], NAMES)
    assert [(e["entity_group"], e["word"], e["start"], e["end"], e["score"]) for e in ents] == [
        ("PERSON", "bb", 3, 5, 0.5), ("GPE", "cc", 6, 8, 0.25), ("ORG", "dd", 9, 11, 0.75), ("ORG", "ee", 12, 14, 1.0)]
    ents = group_entities(text, words, [ix[x] for x in ["B-GPE", "B-GPE", "I-GPE", "O", "I-GPE"]], [1] * 5, NAMES)
    assert [e["word"] for e in ents] == ["aa", "bb cc", "ee"]
    assert group_entities(text, words, [0] * 5, [1] * 5, NAMES) == []


APPLE = "Apple Inc. was founded by Steve Jobs in Cupertino, California."


def test_apple_example(bert_tok):
    words = word_offsets(bert_tok, APPLE)
    # The BERT pre-tokenizer makes every punctuation mark its own word, the '.' of "Inc." included.
    assert [w for w, _, _ in words] == ["Apple", "Inc", ".", "was", "founded", "by", "Steve", "Jobs", "in",
                                        "Cupertino", ",", "California", "."]
    tags = ["B-ORG", "I-ORG", "I-ORG", "O", "O", "O", "B-PERSON", "I-PERSON", "O", "B-GPE", "O", "B-GPE", "O"]
    ents = group_entities(APPLE, words, [NAMES.index(t) for t in tags], [0.9] * len(words), NAMES)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in ents] == [
        ("ORG", "Apple Inc.", 0, 10), ("PERSON", "Steve Jobs", 26, 36), ("GPE", "Cupertino", 40, 49),
        ("GPE", "California", 51, 61)]
    assert all(APPLE[e["start"]:e["end"]] == e["word"] and e["score"] == pytest.approx(0.9) for e in ents)


def test_end_to_end_text_to_entities(piece_tok):
    """Raw text -> words -> windows -> (perfect) scores -> merged words -> entities, over split windows."""
    words = word_offsets(piece_tok, APPLE)
    tags = ["B-ORG", "I-ORG", "I-ORG", "O", "O", "O", "B-PERSON", "I-PERSON", "O", "B-GPE", "O", "B-GPE", "O"]
    labels = [NAMES.index(t) for t in tags]
    enc = encode_words(piece_tok, [[w for w, _, _ in words]], [labels], max_length=10, stride=3)
    assert enc.n_split == 1
    merged = merge_windows(enc, one_hot_scores(enc, len(NAMES)))[0]
    ents = group_entities(APPLE, words, [m[0] for m in merged], [m[1] for m in merged], NAMES)
    assert [(e["entity_group"], e["word"]) for e in ents] == [
        ("ORG", "Apple Inc."), ("PERSON", "Steve Jobs"), ("GPE", "Cupertino"), ("GPE", "California")]


@settings(max_examples=80, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), max_size=30), budget=st.integers(1, 10), stride=st.integers(0, 20))
def test_plan_windows_properties(lengths, budget, stride):
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    n = sum(lengths)
    wins = plan_windows(starts, n, budget, stride)
    assert wins[0][0] == 0 and wins[-1][1] == n
    for a, b in wins:
        assert 0 < b - a <= budget or n == 0
    for (a, b), (a2, b2) in pairwise(wins):
        assert a < a2 <= b < b2  # no gap, always moving on
    assert len(wins) <= max(n, 1)  # never more windows than sub-tokens


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text("abcxyz", min_size=1, max_size=9), max_size=25), max_length=st.integers(3, 12),
       stride=st.integers(0, 6))
def test_encode_words_properties(piece_tok, words, max_length, stride):
    labels = [list(range(len(words)))]
    enc = encode_words(piece_tok, [words], labels, max_length=max_length, stride=stride)
    owners = check_ownership(enc, [words], max_length)
    for (_, w), (i, pos) in owners.items():
        assert enc.labels[i][pos] == w
    assert sorted(x for row in enc.labels for x in row if x != -100) == labels[0]
    assert enc.n_split == (len(enc.input_ids) > 1)
    merged = merge_windows(enc, one_hot_scores(enc, 26))
    assert [m[0] for m in merged[0]] == labels[0]
