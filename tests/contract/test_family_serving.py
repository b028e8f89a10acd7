"""Serving and exporting runs of other encoder families: several runs on one base (the mixed-batch predictor
and the server's model set) give each text its own run's result, and a run exports to a merged folder and to
ONNX that reproduce it. BERT has the full tests (tests/inference, tests/exporting); these run the same paths on
RoBERTa (byte-level BPE, one token type, padding id 1) and MPNet (relative attention bias, no token types)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transferkit import Predictor, api
from transferkit.serving.models import ModelSet

from helpers import make_sentences, tiny_config, write_csv, write_pairs

TEXTS = ["good film", "awful boring plot with dull acting and a weak script", "the movie", "superb cast",
         "Anna saw this film", "fine music"]
SHARED = ("lora", "ia3", "bitfit", "head_only")  # the methods that share a base encoder


@pytest.fixture(scope="module", params=["bert", "roberta", "mpnet"])
def family_runs(request, tmp_path_factory, family_model_dir) -> dict[str, Path]:
    """One short run of each shared-base method on the family, and a pair run (LoRA)."""
    from transferkit.reporting import run_report
    family = request.param
    data = write_csv(tmp_path_factory.mktemp("data") / "d.csv", make_sentences(60, seed=4))
    pairs = write_pairs(tmp_path_factory.mktemp("data") / "p.csv", 60)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_report, "_figure_png", lambda fig: run_report.plt.close(fig) or b"")  # no figures: faster
        for method in (*SHARED, "pair"):
            cfg = tiny_config(pairs if method == "pair" else data, family_model_dir(family),
                              tmp_path_factory.mktemp(f"{family}-{method}") / "run", "lora" if method == "pair"
                              else method, max_steps=3, epochs=None, lr=1e-2, head_lr=1e-2, early_stopping_patience=0)
            cfg.task = "pair" if method == "pair" else "classify"
            runs[method] = api.finetune(cfg).run_dir
    return runs


def test_mixed_batches_equal_each_run_alone(family_runs):
    runs = {m: family_runs[m] for m in SHARED}
    alone = {m: Predictor.from_run(r) for m, r in runs.items()}
    names = [SHARED[i % len(SHARED)] for i in range(len(TEXTS))]
    same = np.stack([alone[m].predict_proba([TEXTS[0]])[0] for m in SHARED])  # [runs, labels]
    assert np.abs(same[:, None] - same[None]).max(-1)[~np.eye(len(SHARED), dtype=bool)].min() > 1e-4  # routing shows
    multi = Predictor.from_runs(runs, batch_size=4)
    for text, name, row in zip(TEXTS, names, multi.predict(TEXTS, adapters=names)):
        assert row["adapter"] == name
        assert np.abs(np.array(list(row["probs"].values())) - alone[name].predict_proba([text])[0]).max() < 1e-5
    # the server's model set: the shared runs in one pass over the base, the pair run alone
    models = ModelSet({**runs, "pair": family_runs["pair"]})
    logits = models.run([("classify", n, t) for n, t in zip(names, TEXTS)])
    for text, name, row in zip(TEXTS, names, logits):  # logits [labels] per item
        assert np.abs(row.float().softmax(-1).numpy() - alone[name].predict_proba([text])[0]).max() < 1e-5


@pytest.mark.parametrize("method", ["lora", "pair"])
def test_merged_and_onnx_exports_reproduce_the_run(method, family_runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    run = family_runs[method]
    merged = api.export(run, tmp_path / "merged")  # checks its own logits against the run's before writing
    model = AutoModelForSequenceClassification.from_pretrained(merged, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    inputs = [("a good film", "a great plot"), ("a dull plot", "a good film")] if method == "pair" else TEXTS
    enc = (tok([a for a, _ in inputs], [b for _, b in inputs], padding=True, return_tensors="pt") if method == "pair"
           else tok(inputs, padding=True, return_tensors="pt"))
    probs = model(**enc).logits.softmax(-1).detach().numpy()  # what a transformers user gets, token types and all
    reference = Predictor.from_run(run)
    assert np.abs(probs - reference.predict_proba(inputs)).max() < 1e-5
    onnx = api.export(run, tmp_path / "onnx", format="onnx")
    assert np.abs(Predictor.from_run(onnx).predict_proba(inputs) - reference.predict_proba(inputs)).max() < 1e-5
