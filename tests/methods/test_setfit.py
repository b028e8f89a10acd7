"""The few-shot contrastive method: pairs, stage 1 pulling same-label sentences together, then a head;
saved, loaded and predicted like any run; refused for token tasks."""
from __future__ import annotations

import logging
import pytest
import torch

from transferkit import api
from transferkit.core.errors import UserError
from transferkit.methods.setfit import PairData, PairModel, SetFit, draw_pairs, similarity_loss

from helpers import make_sentences, tiny_config, write_csv


def test_pairs_are_balanced_and_never_self():
    labels = [0, 0, 0, 1, 1, 2]
    pairs = draw_pairs(labels, iterations=5, max_pairs=10_000, seed=0)
    pos = [p for p in pairs if p[2] == 1.0]
    neg = [p for p in pairs if p[2] == 0.0]
    assert len(neg) == 5 * 6 and len(pos) == 5 * 5  # label 2 has no partner of its own label
    assert all(i != j and labels[i] == labels[j] for i, j, _ in pos)
    assert all(labels[i] != labels[j] for i, j, _ in neg)
    assert draw_pairs(labels, 5, 10_000, 0) == pairs and draw_pairs(labels, 5, 10_000, 1) != pairs
    assert len(draw_pairs(labels, 5, 7, 0)) == 7


def test_similarity_loss():
    class Out:
        logits = torch.tensor([0.9, 0.2, 0.6])
    loss, n, correct = similarity_loss(Out, {"labels": torch.tensor([1.0, 0.0, 0.0])})
    assert torch.isclose(loss, torch.tensor(0.01 + 0.04 + 0.36)) and n == 3 and correct == 2


def _similarities(run_dir, texts_by_label):
    """Mean cosine similarity of same-label and other-label pairs under the run's saved encoder."""
    from transferkit.inference import Predictor
    p = Predictor.from_run(run_dir, backend="torch")  # the PyTorch encoder's pooled vectors
    vecs = {}
    for label, texts in texts_by_label.items():
        enc = p.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            vecs[label] = torch.nn.functional.normalize(p.model.pool(enc["input_ids"], enc["attention_mask"]), dim=-1)
    a, b = vecs.values()
    same = ((a @ a.T).mean() + (b @ b.T).mean()) / 2
    return float(same), float((a @ b.T).mean())


def test_setfit_trains_saves_loads_and_predicts(tiny_model_dir, tmp_path, caplog):
    rows = make_sentences(48)
    data = write_csv(tmp_path / "few.csv", rows)
    texts = {y: [t for t, lab in make_sentences(40, seed=5) if lab == y][:10] for y in ("negative", "positive")}
    base = tiny_config(data, tiny_model_dir, tmp_path / "base", "head_only", epochs=1)
    before = _similarities(api.finetune(base).run_dir, texts)
    caplog.set_level(logging.INFO, logger="transferkit")
    cfg = tiny_config(data, tiny_model_dir, tmp_path / "run", "setfit", epochs=30, lr=1e-2, head_lr=1e-2)
    cfg.method.setfit_lr, cfg.method.setfit_epochs = 1e-3, 2.0
    result = api.finetune(cfg)
    stage = result.metrics["train"]["contrastive"]
    assert stage["pairs"] == 2 * 20 * result.metrics["data"]["sizes"]["train"]  # 20 rounds, a pair of each kind
    assert stage["steps"] == -(-stage["pairs"] // 16) * 2
    planned = SetFit(cfg.method).own_stage(list(result.metrics["data"]["labels"]["train"].values()))  # plan's figure
    assert (planned.steps, planned.what, planned.batch_size) == (stage["steps"], f"{stage['pairs']:,} sentence pairs", 32)
    assert any("setfit stage 1" in line and "training the encoder's" in line for line in caplog.messages)
    after = _similarities(result.run_dir, texts)
    # stage 1 pulled same-label sentences together relative to other-label ones
    assert after[0] - after[1] > before[0] - before[1] + 0.05
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert (result.run_dir / "contrastive" / "checkpoints").is_dir()
    out = api.predict(result.run_dir, ["a wonderful film", "a dreadful plot"])
    assert [r["label"] for r in out] == ["positive", "negative"]
    scored = api.evaluate(result.run_dir)
    assert scored["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=1e-6)


def test_pair_model_reads_the_classifier_encoder(tiny_model_dir):
    from transferkit.modeling.resolve import build_classifier, resolve_model, load_tokenizer
    model = build_classifier(resolve_model(str(tiny_model_dir)), ["a", "b"], "mean", 0.0, 0, 1)
    tok = load_tokenizer(str(tiny_model_dir))
    from transferkit.data.batches import TokenData
    data = PairData(TokenData([tok("good film")["input_ids"], tok("bad plot here")["input_ids"]], [0, 1]),
                    [(0, 1, 0.0), (0, 0, 1.0)])
    assert data.lengths() == [5, 4]
    batch = data.collate([0, 1], 0)
    model.eval()
    sim = PairModel(model)(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert sim.shape == (2,) and torch.isclose(sim[1], torch.tensor(1.0), atol=1e-5)


def test_setfit_is_refused_for_ner(tiny_model_dir, tmp_path):
    cfg = tiny_config(tmp_path / "x.conll", tiny_model_dir, tmp_path / "run", "setfit")
    cfg.task = "ner"
    with pytest.raises(UserError, match="method setfit trains on pairs of sentence vectors"):
        api.finetune(cfg)


@pytest.mark.parametrize("stop_at", [3, 9])  # inside stage 1 (6 steps), inside stage 2
def test_an_interrupted_setfit_run_resumes_to_the_same_model(stop_at, tiny_model_dir, tmp_path, monkeypatch):
    from transferkit.training import loop as train
    data = write_csv(tmp_path / "few.csv", make_sentences(24))

    def config(out):
        cfg = tiny_config(data, tiny_model_dir, out, "setfit", epochs=3, lr=1e-2, head_lr=1e-2,
                          checkpoint_steps=1, early_stopping_patience=0)
        cfg.method.setfit_lr, cfg.method.setfit_max_pairs = 1e-3, 96
        return cfg
    whole = api.finetune(config(tmp_path / "whole"))
    real_step, calls = train.Trainer._step, {"n": 0}

    def interrupted(self, group):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return real_step(self, group)
    monkeypatch.setattr(train.Trainer, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(config(tmp_path / "cut"))
    monkeypatch.setattr(train.Trainer, "_step", real_step)
    resumed = api.finetune(resume=tmp_path / "cut")
    assert resumed.metrics["test"] == whole.metrics["test"]
    assert resumed.metrics["train"]["contrastive"]["steps"] == whole.metrics["train"]["contrastive"]["steps"] == 6
