"""Paraphrase and back-translation mechanics on a tiny random GPT-2: batching, caching, drop rules."""
from __future__ import annotations

import json

import pytest

from transferkit.augmentation import parse_spec
from transferkit.augmentation.generative import GenerativeAugmenter, _clean, _read_cache
from transferkit.core.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))


TEXTS = ["a good film", "the plot was bad", "great acting and a fine story", "a dull film"]


def augmenter(clm_dir, kind="paraphrase", **opts):
    spec = f"{kind}:model={clm_dir}," + ",".join(f"{k}={v}" for k, v in opts.items())
    return GenerativeAugmenter(kind, parse_spec(spec.rstrip(","))[0].options, seed=3)


def test_generates_caches_and_reuses(clm_dir):
    aug = augmenter(clm_dir, copies=2, temperature=1.0, max_drift=10, batch=3)
    first = aug.generate(TEXTS)
    assert len(first) == len(TEXTS) and aug.generated == 2 * len(TEXTS)
    cache = _read_cache(aug.cache_path())
    assert len(cache) == len(TEXTS) and all(len(v) == 2 for v in cache.values())
    again = augmenter(clm_dir, copies=2, temperature=1.0, max_drift=10, batch=2)  # batch size: same cache
    assert again.cache_path() == aug.cache_path()
    assert again.generate(TEXTS) == first and again.generated == 0  # nothing generated the second time
    other_seed = GenerativeAugmenter("paraphrase", aug.options, seed=4)
    assert other_seed.cache_path() != aug.cache_path()


def test_batched_and_one_at_a_time_agree_greedy(clm_dir):
    batched = augmenter(clm_dir, temperature=0, batch=4, max_drift=10)
    single = augmenter(clm_dir, temperature=0, batch=1, max_drift=10)
    prompts = ["a good film", "the plot was bad and long"]
    assert batched.generator.run(prompts, 0.0, 0, 6) == single.generator.run(prompts, 0.0, 0, 6)


def test_drop_rules_are_counted(clm_dir):
    aug = augmenter(clm_dir, copies=4, max_drift=0.5)
    kept = aug._keep("a good film here", ["A good film, here!", "", "a fine film here", "a fine film here",
                                          "one two three four five six seven eight nine", "a nice film there"])
    assert kept == ["a fine film here", "a nice film there"]
    assert aug.dropped == {"same as input": 1, "length drift": 1, "repeat": 1, "empty": 1}


def test_a_torn_cache_line_is_skipped(clm_dir):
    aug = augmenter(clm_dir, max_drift=10)
    path = aug.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": "k1", "out": ["x"]}) + "\n" + '{"key": "k2", "ou', encoding="utf-8")
    assert _read_cache(path) == {"k1": ["x"]}


def test_backtranslate_through_one_causal_model(clm_dir):
    aug = augmenter(clm_dir, "backtranslate", max_drift=10, temperature=1.0)
    out = aug.generate(TEXTS[:2])
    assert len(out) == 2 and aug.generated == 2


def test_replies_are_cleaned():
    assert _clean('Sure! Here is the paraphrase: "A fine film."\nMore text') == "A fine film."
    assert _clean("\n\n  Paraphrase: the plot was weak") == "the plot was weak"


def test_a_model_that_is_not_a_generator_is_refused(tiny_model_dir):
    with pytest.raises(UserError, match="is not a generator"):
        GenerativeAugmenter("paraphrase", parse_spec(f"paraphrase:model={tiny_model_dir}")[0].options, 0)
    with pytest.raises(UserError, match="not found"):
        GenerativeAugmenter("paraphrase", parse_spec("paraphrase:model=/no/such/model")[0].options, 0)


def test_the_largest_seed_a_run_takes_works(clm_dir):
    aug = GenerativeAugmenter("paraphrase", parse_spec(f"paraphrase:model={clm_dir},temperature=1,max_drift=10")[0].options,
                              seed=2**32 - 1)
    assert len(aug.generate(TEXTS[:1])) == 1
