"""Augmentation inside a run: only the training split grows, NER tags stay aligned, mixup and EDA
train end to end, and `transferkit augment` writes the set without training."""
from __future__ import annotations

import csv
import json
import random

import pytest

from transferkit import api
from transferkit.config.finetune import RunConfig
from transferkit.recipes.finetune import FinetuneRun

from helpers import FILLER, NEGATIVE, POSITIVE, expect_user_error, tiny_config


@pytest.fixture(scope="module")
def synonyms(tmp_path_factory):
    """A synonym table over the tiny vocabulary (so the tiny tokenizer knows every new word)."""
    path = tmp_path_factory.mktemp("syn") / "syn.tsv"
    words = [w for w in FILLER if w.isalpha()]
    rows = [f"{a}\t{b}" for a, b in zip(words, words[1:] + words[:1])]
    rows += [f"{POSITIVE[i]}\t{POSITIVE[(i + 1) % len(POSITIVE)]}" for i in range(len(POSITIVE))]
    rows += [f"{NEGATIVE[i]}\t{NEGATIVE[(i + 1) % len(NEGATIVE)]}" for i in range(len(NEGATIVE))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _setup(cfg) -> FinetuneRun:
    run = FinetuneRun(cfg)
    run.setup()
    return run


def test_only_the_training_split_is_augmented(sentiment_csv, tiny_model_dir, tmp_path, synonyms):
    plain = _setup(tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "a"))
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "b")
    cfg.data.augment = f"eda:synonym=0.2,swap=0.2,copies=3,synonyms={synonyms}"
    aug = _setup(cfg)
    for split in ("validation", "test"):  # the same rows, in the same order, as without augmentation
        assert aug.splits[split].texts == plain.splits[split].texts
        assert aug.splits[split].labels == plain.splits[split].labels
    n = len(plain.splits.train)
    assert aug.splits.train.texts[:n] == plain.splits.train.texts
    record = aug.splits.summary["augment"]
    assert record["rows_before"] == n and record["rows_after"] == len(aug.splits.train) > 2 * n
    held_out = set(plain.splits.validation.texts) | set(plain.splits.test.texts)
    assert not held_out & set(aug.splits.train.texts[n:]) - set(plain.splits.train.texts)
    # every new row keeps its source's label: the table maps sentiment words to words of the same sentiment
    names = aug.splits.label_names
    for text, label in zip(aug.splits.train.texts[n:], aug.splits.train.labels[n:]):
        own = POSITIVE if names[label] == "positive" else NEGATIVE
        assert set(text.split()) & set(own)


def test_eda_and_mixup_train_end_to_end(sentiment_csv, tiny_model_dir, tmp_path, synonyms):
    result = api.finetune(tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", "lora", lr=1e-2),
                          augment=f"eda:synonym=0.1,delete=0.1,copies=2,synonyms={synonyms}+mixup:alpha=0.4")
    m = result.metrics
    assert m["data"]["augment"]["rows_after"] > m["data"]["augment"]["rows_before"]
    assert m["train"]["samples"] == m["data"]["augment"]["rows_after"]  # one epoch over the grown split
    assert RunConfig.from_yaml(result.run_dir / "config.yaml").data.augment.startswith("eda:")
    assert m["test"]["accuracy"] >= 0  # it scored; training went through the mixup loss


def _conll(path, n=60):
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        sent = [(w, "O") for w in rng.choices(FILLER, k=5)]
        at = rng.randint(0, 5)
        sent[at:at] = [(POSITIVE[0], "B-PER"), (POSITIVE[1], "I-PER")]
        lines += [f"{w} {t}" for w, t in sent] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_ner_runs_augment_with_aligned_tags(tiny_model_dir, tmp_path, synonyms):
    data = _conll(tmp_path / "tags.conll")
    cfg = tiny_config(data, tiny_model_dir, tmp_path / "run")
    cfg.task = "ner"
    cfg.data.augment = f"eda:synonym=0.3,insert=0.3,swap=0.3,delete=0.3,copies=4,synonyms={synonyms}"
    run = _setup(cfg)
    names = run.splits.label_names
    train = run.splits.train
    assert run.splits.summary["augment"]["rows_after"] == len(train) > 60
    for words, tags in zip(train.tokens, train.tags):
        assert len(words) == len(tags)
        entity = [(w, names[t]) for w, t in zip(words, tags) if names[t] != "O"]
        assert entity == [(POSITIVE[0], "B-PER"), (POSITIVE[1], "I-PER")]
    for bad, words in (("paraphrase", "cannot keep NER tags aligned"), ("mixup", "mixup mixes pooled sentence")):
        cfg.data.augment = bad
        with pytest.raises(Exception, match=words):
            _setup(cfg)


def test_augment_command_writes_the_set(sentiment_csv, tmp_path, synonyms, capsys):
    from transferkit.cli import main
    out = tmp_path / "aug.csv"
    assert main(["augment", "--data", str(sentiment_csv), "--augment",
                 f"eda:swap=0.3,copies=2,synonyms={synonyms}", "--output", str(out)]) == 0
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    originals = [r for r in rows if r["origin"] == "original"]
    assert len(originals) == 200 and len(rows) > 300
    first_copy = next(r for r in rows if r["origin"] != "original")
    src = originals[int(first_copy["origin"].split()[-1]) - 1]
    assert sorted(src["text"].split()) == sorted(first_copy["text"].split()) and src["label"] == first_copy["label"]
    assert "-> " in capsys.readouterr().err
    ner = _conll(tmp_path / "t.conll")
    result = api.augment(str(ner), f"eda:synonym=0.5,synonyms={synonyms}", tmp_path / "t.jsonl", task="ner")
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == result["rows_after"] and all(len(r["tokens"]) == len(r["tags"]) for r in lines)


@pytest.mark.parametrize("argv, words", [
    (["--augment", "eda:synonym=1.2", "--output", "{tmp}/o.csv"], "eda:synonym must be in [0, 1]"),
    (["--augment", "mixup", "--output", "{tmp}/o.csv"], "adds no texts"),
    (["--augment", "eda:swap=0.1", "--output", "{tmp}/o.txt"], "must end in"),
    (["--augment", "eda:swap=0.1", "--output", "{tmp}/nodir/o.csv"], "does not exist"),
    (["--augment", "paraphrase:model={tmp}", "--output", "{tmp}/o.csv"], "no config.json"),
])
def test_augment_command_bad_input(argv, words, sentiment_csv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    line = expect_user_error(capsys, ["augment", "--data", str(sentiment_csv), *argv])
    assert words in line
    assert not (tmp_path / "o.csv").exists()


def test_finetune_refuses_a_bad_spec_before_reading_data(tmp_path, capsys):
    line = expect_user_error(capsys, ["finetune", "--data", str(tmp_path / "missing.csv"),
                                      "data.augment=eda:copies=2"])
    assert "sets no operation" in line and not list(tmp_path.iterdir())


def test_copies_equal_to_held_out_texts_are_not_added():
    from transferkit.augmentation import parse_spec
    from transferkit.augmentation.apply import augment_texts
    from transferkit.augmentation.synonyms import TableSynonyms
    import transferkit.augmentation.apply as apply_mod
    steps = parse_spec("eda:synonym=1.0,copies=1,synonyms=x")
    real = apply_mod._eda
    try:
        apply_mod._eda = lambda step: __import__("transferkit.augmentation.eda", fromlist=["EDA"]).EDA(
            step.options, TableSynonyms({"good": ["fine"]}))
        texts, _, report = augment_texts(["a good film"], [1], steps, 0, "spec")
        assert texts == ["a good film", "a fine film"]
        texts, _, report = augment_texts(["a good film"], [1], steps, 0, "spec", exclude=["a fine  film"])
        assert texts == ["a good film"] and report.rows_after == 1
    finally:
        apply_mod._eda = real


def test_resume_refuses_changed_augmented_rows(sentiment_csv, tiny_model_dir, tmp_path, synonyms, monkeypatch):
    from transferkit.training import loop as train
    table = tmp_path / "syn.tsv"
    table.write_text(synonyms.read_text(encoding="utf-8"), encoding="utf-8")
    cfg = tiny_config(sentiment_csv, tiny_model_dir, tmp_path / "run", checkpoint_steps=1)
    cfg.data.augment = f"eda:synonym=0.3,copies=1,synonyms={table}"

    def stop(self, group):
        raise KeyboardInterrupt
    monkeypatch.setattr(train.Trainer, "_step", stop)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(cfg)
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "augment.json").read_text())["rows"] > 160
    table.write_text("the\tan\n", encoding="utf-8")  # another synonym table: other rows
    with pytest.raises(Exception, match="augment.json: the augmented training rows differ"):
        api.finetune(resume=tmp_path / "run")
