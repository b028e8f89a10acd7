"""Several runs on one base encoder: each text's result equals its own run served alone."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import FILLER, make_sentences, tiny_config, write_csv
from transferkit import Predictor, api, cli
from transferkit.core.errors import UserError

TEXTS = ["good film", "awful boring plot with dull acting and a weak script", "the movie", "superb cast",
         "bad", "this film was really quite terrible and the ending was poor", "fine music", "the plot"]


def _train(tmp_path_factory, tiny_model_dir, rows, name: str, method: str = "lora", **model) -> Path:
    data = write_csv(tmp_path_factory.mktemp(f"data-{name}") / "d.csv", rows)
    out = tmp_path_factory.mktemp(f"run-{name}") / "run"
    cfg = tiny_config(data, tiny_model_dir, out, method, epochs=1, lr=1e-2, head_lr=1e-2, early_stopping_patience=0)
    for k, v in model.items():
        cfg.override(k, v)
    return api.finetune(cfg).run_dir


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA run with three labels (the sentiment rows plus filler-only 'neutral' rows)."""
    rng = random.Random(1)
    neutral = {" ".join(rng.choices(FILLER, k=rng.randint(3, 10))) for _ in range(120)}
    rows = make_sentences(120, seed=3) + [(t, "neutral") for t in sorted(neutral)[:60]]
    return _train(tmp_path_factory, tiny_model_dir, rows, "three", **{"method.lora_r": 4})


@pytest.fixture(scope="module")
def runs(finished_run, three_class_run) -> dict[str, Path]:
    return {"sent": finished_run("lora"), "three": three_class_run, "head": finished_run("head_only")}


@pytest.fixture(scope="module")
def multi(runs):
    return Predictor.from_runs(runs, batch_size=3)


@pytest.fixture(scope="module")
def alone(runs):
    """Each run served by itself (LoRA merged into the weights): the reference."""
    return {name: Predictor.from_run(run, backend="torch") for name, run in runs.items()}


def test_mixed_batch_equals_each_adapter_alone(multi, alone):
    names = ["sent", "three", "head", "three", "sent", "head", "three", "sent"]
    rows = multi.predict(TEXTS, adapters=names)
    slots, layers = multi.model.mixers["lora"]._stack  # the LoRA rows ran through the stacked weights, not peft's loop
    assert set(slots) == {"sent", "three"} and len(layers) == 4  # query and value of 2 layers
    assert [r["adapter"] for r in rows] == names
    for text, name, row in zip(TEXTS, names, rows):
        ref = alone[name].predict_proba([text])[0]
        assert list(row["probs"]) == alone[name].label_names  # its own label set
        assert np.abs(np.array(list(row["probs"].values())) - ref).max() < 1e-5
        assert row["label"] == alone[name].label_names[int(ref.argmax())]
    assert sorted(alone["three"].label_names) == ["negative", "neutral", "positive"]
    # the three adapters really differ on the same text, so a routing mistake would show
    same = multi.predict(["good film"] * 3, adapters=["sent", "three", "head"])
    assert len({round(r["probs"]["positive"], 6) for r in same}) == 3


def test_grouped_strategy_gives_the_same_results(runs, multi):
    grouped = Predictor.from_runs(runs, batch_size=3, strategy="grouped")
    names = ["three", "sent", "head", "sent", "three", "three", "head", "sent"]
    a, b = multi.predict(TEXTS, adapters=names), grouped.predict(TEXTS, adapters=names)
    for x, y in zip(a, b):
        assert x["label"] == y["label"]
        assert max(abs(x["probs"][k] - y["probs"][k]) for k in x["probs"]) < 1e-5


def test_switching_adapters_keeps_one_base(multi, alone):
    encoder = multi.model.encoder
    weight = next(p for n, p in encoder.named_parameters() if "base_layer" in n)
    ptr = weight.data_ptr()
    for name in ["three", "sent", "head", "three"]:
        got = multi.predict_proba(TEXTS, adapter=name)
        ref = alone[name].predict_proba(TEXTS)
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5
    assert multi.model.encoder is encoder and weight.data_ptr() == ptr  # nothing reloaded
    multi.set_adapter("three")
    assert multi.label_names == alone["three"].label_names
    assert np.abs(multi.predict_proba(TEXTS) - alone["three"].predict_proba(TEXTS)).max() < 1e-5
    multi.set_adapter("sent")
    # one encoder's parameters, not one per run
    n_base = sum(p.numel() for n, p in encoder.named_parameters() if "lora_" not in n)
    assert n_base == sum(p.numel() for p in alone["sent"].model.encoder.parameters())


def test_order_and_single_text(multi, alone):
    names = ["sent", "three"] * 4
    fwd = multi.predict(TEXTS, adapters=names)
    rev = multi.predict(TEXTS[::-1], adapters=names[::-1])
    assert [r["label"] for r in rev[::-1]] == [r["label"] for r in fwd]
    single = multi.predict("good film", adapter="three")
    assert isinstance(single, dict) and single["adapter"] == "three"
    assert multi.predict([], adapter="three") == []


def test_bad_calls_are_user_errors(multi):
    with pytest.raises(UserError, match="unknown adapter 'nope'; loaded adapters: sent, three, head"):
        multi.predict(["good"], adapter="nope")
    with pytest.raises(UserError, match="2 names for 1 texts"):
        multi.predict(["good"], adapters=["sent", "three"])
    with pytest.raises(UserError, match="not both"):
        multi.predict(["good"], adapter="sent", adapters=["sent"])
    with pytest.raises(UserError, match="strategy"):
        type(multi)(multi.model, multi.tokenizer, strategy="fast")


def test_runs_that_cannot_share_a_base(finished_run, tmp_path, tiny_model_dir):
    from transferkit.core.runs import trust_base
    with pytest.raises(UserError, match="method .full. cannot share a base model .only bitfit, head_only, ia3 and lora"):
        Predictor.from_runs({"a": finished_run("lora"), "b": finished_run("full")})
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other_base)
    moved = tmp_path / "moved"
    shutil.copytree(finished_run("lora"), moved)
    info = json.loads((moved / "run.json").read_text())
    info["model_path"] = str(other_base)
    (moved / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="run.json names the base model folder .*other-base.*--base-model"):
        Predictor.from_runs({"b": moved})  # a folder no run here was trained on
    trust_base(str(other_base))  # as if a run had been trained on it
    with pytest.raises(UserError, match="'b' .* was trained on .*other-base.*must share one base model"):
        Predictor.from_runs({"a": finished_run("lora"), "b": moved})
    with pytest.raises(UserError, match="must share one base model"):  # an override does not hide the mismatch
        Predictor.from_runs({"a": finished_run("lora"), "b": moved}, base_model=str(tiny_model_dir))
    with pytest.raises(UserError, match="run directory not found"):
        Predictor.from_runs({"a": tmp_path / "missing"})
    with pytest.raises(UserError, match="no runs given"):
        Predictor.from_runs({})


def test_dora_adapter_is_served_group_by_group(tmp_path_factory, tiny_model_dir, finished_run):
    dora = _train(tmp_path_factory, tiny_model_dir, make_sentences(80, seed=5), "dora", **{"method.use_dora": "true"})
    multi = Predictor.from_runs({"sent": finished_run("lora"), "dora": dora}, batch_size=4)
    assert not multi.model.tasks["dora"].mixable and multi.model.tasks["sent"].mixable
    names = ["dora", "sent"] * 4
    rows = multi.predict(TEXTS, adapters=names)
    ref = {"dora": Predictor.from_run(dora), "sent": Predictor.from_run(finished_run("lora"))}
    for text, name, row in zip(TEXTS, names, rows):
        assert np.abs(np.array(list(row["probs"].values())) - ref[name].predict_proba([text])[0]).max() < 1e-5


def test_api_predict_with_tags_and_adapter_column(runs, alone, tmp_path):
    rows = api.predict(runs, ["three:good film", "sent:the movie", "bad plot"], adapter="head")
    assert [(r["adapter"], r["text"]) for r in rows] == [("three", "good film"), ("sent", "the movie"),
                                                         ("head", "bad plot")]
    assert rows[0]["label"] == alone["three"].predict(["good film"])[0]["label"]
    data = write_csv(tmp_path / "mixed.csv", [("good film", "three"), ("awful plot", "sent")], header=("text", "task"))
    out = tmp_path / "preds.csv"
    rows = api.predict(runs, input=str(data), adapter_column="task", output=str(out))
    assert [r["adapter"] for r in rows] == ["three", "sent"]
    lines = out.read_text().splitlines()
    assert lines[0] == "text,adapter,label,confidence,probs" and len(lines) == 3
    with pytest.raises(UserError, match="need several runs"):
        api.predict(runs["sent"], ["good"], adapter="sent")


def test_cli_predict_several_adapters(capsys, runs, tmp_path):
    flags = [f"--adapter={n}={r}" for n, r in runs.items()]
    assert cli.main(["predict", *flags, "three:good film", "sent:bad plot"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["adapter"] for r in rows] == ["three", "sent"] and len(rows[0]["probs"]) == 3
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", *flags, "--use", "head", "good film", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["adapter"] == "head"
    # an untagged text without --use, an unknown adapter in the file, a malformed flag: exit 2, no output
    data = write_csv(tmp_path / "m.csv", [("good film", "topic")], header=("text", "task"))
    bad = tmp_path / "bad.jsonl"
    for argv, msg in [([*flags, "good film"], "text 1 has no adapter tag"),
                      ([*flags, "--input", str(data), "--adapter-column", "task", "--output", str(bad)],
                       "names topic, which are not loaded"),
                      (["--adapter", "sent", "good"], "expected NAME=RUN_DIR"),
                      (["--use", "sent", str(runs["sent"]), "good"], "need runs given with --adapter")]:
        assert cli.main(["predict", *argv]) == 2
        assert msg in capsys.readouterr().err
    assert not bad.exists()


def test_ia3_rows_are_scaled_by_their_own_vectors(tmp_path_factory, tiny_model_dir, finished_run, tmp_path):
    """IA3 rows mix with LoRA rows in one batch; vectors pushed far from 1 make their effect large."""
    import torch
    from safetensors.torch import load_file, save_file
    run = _train(tmp_path_factory, tiny_model_dir, make_sentences(80, seed=9), "ia3", "ia3")
    weights = run / "adapter" / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(0)
    state = {k: (v * (0.2 + 2 * torch.rand(v.shape, generator=g)) if k.endswith("ia3_l") else v)
             for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights))
    assert sum(k.endswith("ia3_l") for k in state) == 6  # key, value, feed-forward in each of 2 layers
    multi = Predictor.from_runs({"ia3": run, "sent": finished_run("lora")}, batch_size=4)
    alone = {"ia3": Predictor.from_run(run), "sent": Predictor.from_run(finished_run("lora"))}
    names = ["ia3", "sent"] * 4
    rows = multi.predict(TEXTS, adapters=names)
    # the tiny model's probabilities stay near 0.5, so the tolerance is tight and the effect checked below
    for text, name, row in zip(TEXTS, names, rows):
        assert np.abs(np.array(list(row["probs"].values())) - alone[name].predict_proba([text])[0]).max() < 2e-6
    got = multi.predict_proba(TEXTS, adapter="ia3")
    assert np.abs(got - alone["ia3"].predict_proba(TEXTS)).max() < 2e-6
    for vec in multi.model.mixers["ia3"].buffers():  # vectors of ones: the same head on the plain encoder
        vec.fill_(1.0)
    assert np.abs(multi.predict_proba(TEXTS, adapter="ia3") - got).max() > 5e-5


def test_bitfit_rows_add_their_own_bias_differences(tmp_path_factory, tiny_model_dir, finished_run, tmp_path):
    """BitFit rows mix with LoRA and head-only rows in one batch; biases pushed far from the base make their effect large."""
    import torch
    from safetensors.torch import load_file, save_file
    run = _train(tmp_path_factory, tiny_model_dir, make_sentences(80, seed=11), "bitfit", "bitfit")
    weights = run / "adapter" / "trainable.safetensors"
    g = torch.Generator().manual_seed(0)
    state = {k: (v + torch.randn(v.shape, generator=g) if not k.startswith("classifier.") else v)
             for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights))
    assert any("LayerNorm" in k for k in state) and any("pooler" not in k and "query" in k for k in state)
    multi = Predictor.from_runs({"bitfit": run, "sent": finished_run("lora"), "head": finished_run("head_only")},
                                batch_size=4)
    assert multi.model.tasks["bitfit"].mixable and multi.model.mixers["bitfit"].offsets["bitfit"]
    alone = {n: Predictor.from_run(r) for n, r in
             {"bitfit": run, "sent": finished_run("lora"), "head": finished_run("head_only")}.items()}
    names = ["bitfit", "sent", "head", "bitfit"] * 2
    rows = multi.predict(TEXTS, adapters=names)
    for text, name, row in zip(TEXTS, names, rows):
        assert np.abs(np.array(list(row["probs"].values())) - alone[name].predict_proba([text])[0]).max() < 1e-5
    got = multi.predict_proba(TEXTS, adapter="bitfit")
    assert np.abs(got - alone["bitfit"].predict_proba(TEXTS)).max() < 1e-5
    for vec in multi.model.mixers["bitfit"].buffers():  # no bias differences: the same head on the plain encoder
        vec.zero_()
    assert np.abs(multi.predict_proba(TEXTS, adapter="bitfit") - got).max() > 1e-3
    # a tensor that is not an encoder bias is refused, naming the file
    state["encoder.embeddings.word_embeddings.weight"] = torch.zeros(2, 2)
    save_file(state, str(weights))
    with pytest.raises(UserError, match="trainable.safetensors: encoder.embeddings.word_embeddings.weight is not "
                                        "an encoder bias"):
        Predictor.from_runs({"bitfit": run, "sent": finished_run("lora")})


@pytest.mark.parametrize("method", ["lora", "head_only", "bitfit"])
def test_taggers_and_classifiers_share_one_encoder_pass(method, runs, tiny_model_dir, tmp_path):
    """An NER run on the same base mixes with sentence classifiers; each text's answer equals its run alone."""
    from helpers import NEGATIVE, POSITIVE
    rng = random.Random(2)
    lines = []
    for _ in range(60):
        words = [(w, "O") for w in rng.choices(FILLER, k=4)] + [(rng.choice(POSITIVE), "B-PER")]
        words.insert(2, (rng.choice(NEGATIVE), "B-LOC"))
        lines += [f"{w} {t}" for w, t in words] + [""]
    (tmp_path / "tags.conll").write_text("\n".join(lines), encoding="utf-8")
    ner = api.finetune(task="ner", data=str(tmp_path / "tags.conll"), model=str(tiny_model_dir), method=method,
                       max_steps=20, lr=1e-2, batch_size=8, max_length=12, output_dir=str(tmp_path / "ner"),
                       **{"train.progress": False}).run_dir
    shared = Predictor.from_runs({**runs, "ner": ner})
    texts = TEXTS + ["the story with superb and a dreadful ending and the cast was really very good"]  # > 12 tokens
    names = [["sent", "three", "head", "ner"][i % 4] for i in range(len(texts))]
    names[-1] = "ner"  # the long text goes to the tagger: windows of its own, merged back
    rows = shared.predict(texts, adapters=names)
    alone = {n: Predictor.from_run(r) for n, r in {**runs, "ner": ner}.items()}
    for text, name, row in zip(texts, names, rows):
        assert row["adapter"] == name
        if name == "ner":
            want = alone["ner"].predict(text)["entities"]
            assert [(e["entity_group"], e["start"], e["end"]) for e in row["entities"]] == \
                [(e["entity_group"], e["start"], e["end"]) for e in want]
            assert np.allclose([e["score"] for e in row["entities"]], [e["score"] for e in want], atol=1e-5)
        else:
            ref = alone[name].predict_proba([text])[0]
            assert np.abs(np.array(list(row["probs"].values())) - ref).max() < 1e-5
    with pytest.raises(UserError, match="predict_logits is for sentence classifiers"):
        shared.predict_logits(texts[:1], ["ner"])


def test_pairs_scores_label_sets_and_tags_share_one_encoder_pass(runs, tiny_model_dir, tmp_path):
    """A pair classifier, a regressor, a multi-label run and a tagger on one base, in one mixed batch: each
    input's answer equals its run alone (the pair rows read their own token types)."""
    from helpers import write_conll, write_label_sets, write_pairs, write_scores
    trained = {}
    for task, path in (("pair", write_pairs(tmp_path / "p.csv", 80)), ("regression", write_scores(tmp_path / "s.csv", 80)),
                       ("multilabel", write_label_sets(tmp_path / "m.jsonl", 80)),
                       ("ner", write_conll(tmp_path / "t.conll", 60))):
        cfg = tiny_config(path, tiny_model_dir, tmp_path / task, "lora", max_steps=10, lr=1e-2, head_lr=1e-2)
        cfg.task = task
        trained[task] = api.finetune(cfg).run_dir
    assert json.loads((trained["pair"] / "run.json").read_text())["head"]["pair_sep_id"] == 3  # BERT: types 0/1
    shared = Predictor.from_runs({**trained, "sent": runs["sent"]})
    inputs = [("good film", "the plot"), "awful boring plot", "superb cast and a good film", "Anna visited Paris .",
              "the movie", ("bad", "superb")]
    names = ["pair", "regression", "multilabel", "ner", "sent", "pair"]
    rows = shared.predict(inputs, adapters=names)
    alone = {n: Predictor.from_run(r) for n, r in {**trained, "sent": runs["sent"]}.items()}
    for item, name, row in zip(inputs, names, rows):
        want = alone[name].predict(item)
        assert row["adapter"] == name
        for key, value in want.items():
            if key == "entities":
                assert [(e["entity_group"], e["start"]) for e in row[key]] == [(e["entity_group"], e["start"]) for e in value]
            elif isinstance(value, dict):
                assert row[key] == pytest.approx(value, abs=1e-5), (name, key)
            elif isinstance(value, float):
                assert row[key] == pytest.approx(value, abs=1e-5), (name, key)
            else:
                assert row[key] == value, (name, key)
    # two texts with one adapter name each are two inputs, even where the first run reads a pair of texts
    two = shared.predict(["awful boring plot", "the movie"], adapters=["regression", "sent"])
    assert [r["adapter"] for r in two] == ["regression", "sent"]
