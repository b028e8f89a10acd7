"""transferkit.pipeline against transformers.pipeline on the same folders: same keys, shapes and values."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import (BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification, BertTokenizerFast,
                          pipeline as hf_pipeline)

import transferkit
from transferkit import api
from transferkit.core.errors import UserError

from helpers import FILLER, NEGATIVE, POSITIVE, VOCAB, tiny_bert_config

PIECES = ["cup", "##er", "##tino", "##s", "##ly", "jobs", "apple"]  # words that split into sub-tokens
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["good films and cupertino", "the movie was really dull", "apple jobs in cupertino and the films",
         "superb", "bad  acting, with   a great   cast"]


def _tokenizer(folder):
    from transformers import BertTokenizer
    slow = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB + PIECES)}, do_lower_case=True, model_max_length=64)
    slow.save_pretrained(folder)
    BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)  # tokenizer.json: the fast one too


def _folder(tmp_path_factory, name, cls, labels=None):
    folder = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    cfg = tiny_bert_config(dropout=0.0)
    if labels:
        cfg.num_labels, cfg.id2label = len(labels), dict(enumerate(labels))
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    model = cls(cfg)
    if labels:
        with torch.no_grad():  # confident, varied outputs: a small random head gives near-uniform scores
            model.classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    _tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory):
    return _folder(tmp_path_factory, "seq", BertForSequenceClassification, ["neg", "neu", "pos"])


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return _folder(tmp_path_factory, "tok", BertForTokenClassification, TAGS)


def _close(ours, theirs):
    """Equal structures, floats within 1e-5."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            _close(a, b)
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), (ours, theirs)
        for k in theirs:
            _close(ours[k], theirs[k])
    elif isinstance(theirs, str) or isinstance(theirs, int) and not hasattr(theirs, "dtype"):
        assert ours == theirs
    else:
        assert float(ours) == pytest.approx(float(theirs), abs=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}, {"top_k": 2}, {"top_k": 1}], ids=str)
def test_text_classification_matches_transformers(seq_dir, kwargs):
    theirs = hf_pipeline("text-classification", model=str(seq_dir))
    ours = transferkit.pipeline("sentiment-analysis", model=str(seq_dir))
    _close(ours(TEXTS[0], **kwargs), theirs(TEXTS[0], **kwargs))
    _close(ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs))
    _close(ours(TEXTS, batch_size=2, **kwargs), ours(TEXTS, **kwargs))  # padding differs: float noise only


def _quoted(text, entities):
    """transformers' grouped entities with `word` as the span of the text they cover (what ours gives)."""
    return [{**e, "word": text[e["start"]:e["end"]]} for e in entities]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_transformers(tok_dir, strategy):
    theirs = hf_pipeline("token-classification", model=str(tok_dir), aggregation_strategy=strategy)
    ours = transferkit.pipeline("ner", model=str(tok_dir), aggregation_strategy=strategy)
    got, want = ours(TEXTS), theirs(TEXTS)
    assert sum(len(w) for w in want) >= 5  # the random head tags something, so the comparison has content
    for text, g, w in zip(TEXTS, got, want):
        # ours quotes the text, transformers decodes the grouped sub-tokens (the sub-tokens themselves for "none")
        _close(g, w if strategy == "none" else _quoted(text, w))
    one = theirs(TEXTS[2])
    _close(ours(TEXTS[2]), one if strategy == "none" else _quoted(TEXTS[2], one))


def test_token_classification_default_is_transformers_default(tok_dir):
    _close(transferkit.pipeline("token-classification", model=str(tok_dir))(TEXTS[2]),
           hf_pipeline("token-classification", model=str(tok_dir))(TEXTS[2]))


def test_fill_mask_matches_transformers_on_real_words(tmp_path_factory):
    folder = _folder(tmp_path_factory, "mlm", BertForMaskedLM)
    text = "the movie was [MASK] and the acting superb"
    theirs = hf_pipeline("fill-mask", model=str(folder))(text, top_k=120)
    ours = transferkit.pipeline("fill-mask", model=str(folder))
    words = set(VOCAB[5:] + PIECES)  # transformers also ranks special and past-the-vocabulary ids; ours never does
    want = [r for r in theirs if r["token_str"] in words][:4]
    _close(ours(text, top_k=4), want)
    both = ours([text, "a [MASK] film"], top_k=2)
    assert len(both) == 2 and all(len(r) == 2 for r in both)


def _word_level_tokenizer(folder):
    """A fast tokenizer that adds no special tokens (as GPT-2's does not), words split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[SEP]")
    tok.save_pretrained(folder)
    return tok


def test_text_generation_matches_transformers_greedy(tmp_path_factory):
    from transferkit.modeling.lm import build_from_scratch
    folder = tmp_path_factory.mktemp("gpt2")
    tok = _word_level_tokenizer(folder)
    torch.manual_seed(0)
    build_from_scratch("gpt2", "tiny", tok, "clm").save_pretrained(folder)
    theirs = hf_pipeline("text-generation", model=str(folder))
    ours = transferkit.pipeline("text-generation", model=str(folder))
    prompt = "the movie was"
    want = theirs(prompt, max_new_tokens=6, do_sample=False)
    assert want[0]["generated_text"] != prompt  # it generated words
    assert ours(prompt, max_new_tokens=6) == want
    assert ours([prompt, "a good"], max_new_tokens=3) == theirs([prompt, "a good"], max_new_tokens=3, do_sample=False)
    assert ours(prompt, max_new_tokens=6, return_full_text=False) == theirs(prompt, max_new_tokens=6, do_sample=False,
                                                                              return_full_text=False)


def test_runs_and_their_exports_agree_with_transformers(finished_run, tmp_path):
    run = finished_run("lora")
    out = api.export(run, tmp_path / "exported")
    theirs = hf_pipeline("text-classification", model=str(out))  # transferkit's classes are registered on import
    texts = ["a good and great film", "awful boring plot"]
    for model in (run, out):
        _close(transferkit.pipeline("text-classification", model=str(model))(texts, top_k=None),
               theirs(texts, top_k=None))


def test_ner_run_and_its_export_through_transformers(tiny_model_dir, tmp_path):
    rng = random.Random(0)
    lines = []
    for _ in range(60):
        words = [(w, "O") for w in rng.choices(FILLER, k=4)] + [(rng.choice(POSITIVE), "B-PER")]
        words.insert(2, (rng.choice(NEGATIVE), "B-LOC"))
        lines += [f"{w} {t}" for w, t in words] + [""]
    data = tmp_path / "tags.conll"
    data.write_text("\n".join(lines), encoding="utf-8")
    run = api.finetune(task="ner", data=str(data), model=str(tiny_model_dir), method="lora", max_steps=40, lr=1e-2, max_length=32,
                       batch_size=8, output_dir=str(tmp_path / "run"),
                       **{"train.progress": False}).run_dir
    out = api.export(run, tmp_path / "exported")
    texts = ["the film with good was quite dull", "superb acting and dreadful music"]
    theirs = hf_pipeline("token-classification", model=str(out), aggregation_strategy="first")(texts)
    for model in (run, out):
        _close(transferkit.pipeline("ner", model=str(model), aggregation_strategy="first")(texts), theirs)
    # one text alone pads and orders its batch differently from two: equal to float rounding
    _close(api.predict(run, texts)[0]["entities"],
           transferkit.pipeline("ner", model=str(run), aggregation_strategy="first")(texts[0]))


def test_pipeline_refuses_bad_requests(seq_dir, tok_dir, finished_run, tiny_model_dir):
    with pytest.raises(UserError, match="unknown pipeline task"):
        transferkit.pipeline("summarization", model=str(seq_dir))
    with pytest.raises(UserError, match="unknown option 'top_q'"):
        transferkit.pipeline("text-classification", model=str(seq_dir), top_q=2)
    with pytest.raises(UserError, match="aggregation_strategy 'best'"):
        transferkit.pipeline("ner", model=str(tok_dir), aggregation_strategy="best")
    with pytest.raises(UserError, match="is a classify run; open it with pipeline\\('text-classification'"):
        transferkit.pipeline("ner", model=str(finished_run("full")))
    with pytest.raises(UserError, match="no trained text-classification head"):
        transferkit.pipeline("text-classification", model=str(tiny_model_dir))  # a bare encoder
    clf = transferkit.pipeline("text-classification", model=str(seq_dir))
    with pytest.raises(UserError, match="top_k must be"):
        clf("good", top_k=0)
    with pytest.raises(UserError, match="text 2 is empty"):
        clf(["good", " "])
    with pytest.raises(UserError, match="batch size"):
        clf(["good"], batch_size=0)
    assert clf([]) == []
