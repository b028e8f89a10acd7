"""`transferkit pretrain` end to end on tiny models: each objective's loss falls, runs resume exactly,
continued pretraining gives a new head its own lr, the result fine-tunes, bad input exits 2 with one line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from transferkit import api
from transferkit.training import loop as train
from transferkit.cli import main
from transferkit.core.errors import UserError

from helpers import expect_user_error, interrupted_at_step, make_sentences


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.getbasetemp() / "tk-cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """120 documents of 5 sentences each, blank-line separated."""
    rows = [t for t, _ in make_sentences(600, seed=3)]
    docs = [" ".join(s.capitalize() + "." for s in rows[i:i + 5]) for i in range(0, 600, 5)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def _tiny(corpus: Path, out: Path, objective: str, arch: str, **kw):
    opts = dict(objective=objective, corpus=[str(corpus)], from_scratch=True, arch=arch, size="tiny",
                train_tokenizer=True, vocab_size=300, max_length=48, output_dir=str(out), lr=2e-3,
                **{"train.progress": False})
    opts.update(kw)
    return api.pretrain(**opts)


def _train_losses(run_dir: Path) -> list[float]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["type"] == "train"]


@pytest.mark.parametrize("objective,arch,auto", [("mlm", "bert", "AutoModelForMaskedLM"),
                                                 ("clm", "gpt2", "AutoModelForCausalLM"),
                                                 ("clm", "llama", "AutoModelForCausalLM"),
                                                 ("mlm+nsp", "bert", "AutoModelForPreTraining")])
def test_each_objective_learns(corpus, tmp_path, monkeypatch, objective, arch, auto):
    import transformers
    monkeypatch.setattr(train, "LOG_EVERY", 5)
    result = _tiny(corpus, tmp_path / "run", objective, arch, max_steps=20, batch_size=8)
    losses = _train_losses(result.run_dir)
    assert len(losses) == 4 and losses[-1] < 0.85 * losses[0], losses
    m = result.metrics
    assert m["train"]["tokens_per_s"] > 0 and m["train"]["tokens"] > 0
    assert m["heldout"]["perplexity"] == pytest.approx(2.718281828 ** (m["heldout"].get("mlm_loss", m["heldout"]["loss"])))
    if objective == "mlm+nsp":
        assert 0 <= m["heldout"]["nsp_accuracy"] <= 1
    model = getattr(transformers, auto).from_pretrained(result.model_dir)  # a plain Hugging Face folder
    tok = transformers.AutoTokenizer.from_pretrained(result.model_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_resume_matches_uninterrupted(corpus, tmp_path, caplog):
    from transferkit.modeling.tokenizers import train_tokenizer
    # one tokenizer for both runs: the tokenizers library breaks frequency ties differently per process
    train_tokenizer(corpus.read_text().split("\n\n"), "wordpiece", 300, out_dir=tmp_path / "tok")
    kw = dict(max_steps=12, batch_size=8, train_tokenizer=False, tokenizer=str(tmp_path / "tok"),
              **{"train.checkpoint_steps": 5, "train.eval_steps": 6})
    a = _tiny(corpus, tmp_path / "a", "mlm", "bert", **kw)
    with interrupted_at_step(8):
        _tiny(corpus, tmp_path / "b", "mlm", "bert", **kw)
    assert not (tmp_path / "b" / "model").exists() and (tmp_path / "b" / "checkpoints" / "last").is_dir()
    caplog.set_level(logging.INFO, logger="transferkit")
    b = api.pretrain(resume=tmp_path / "b")
    assert any("resuming" in line and "step 5" in line for line in caplog.messages)
    assert b.metrics["heldout"]["loss"] == pytest.approx(a.metrics["heldout"]["loss"], abs=1e-4)
    assert _train_losses(b.run_dir) == pytest.approx(_train_losses(a.run_dir), abs=1e-4)
    with pytest.raises(UserError, match="already finished"):
        api.pretrain(resume=tmp_path / "b")


def test_continued_pretraining_then_finetune(tiny_model_dir, corpus, sentiment_csv, tmp_path):
    """A BertModel folder without an MLM head: the new head trains at its own lr; the result fine-tunes."""
    from transformers import AutoModelForMaskedLM

    from transferkit.objectives import mlm
    from transferkit.recipes.pretrain import resolve_train_config
    from transferkit.training.optim import param_groups
    from transferkit.modeling.lm import load_for_objective
    model, _ = load_for_objective(str(tiny_model_dir), "mlm")
    assert model.newly_initialized
    wrapped = mlm.MLM().wrap(model, model.newly_initialized)
    groups = param_groups(wrapped, lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    fast = {id(p) for g in groups if g["lr"] == 1e-3 for p in g["params"]}
    new = {id(p) for n, p in model.named_parameters() if n in model.newly_initialized}
    assert fast == new  # exactly the new head weights (not the tied embeddings) learn at the head lr

    result = api.pretrain(objective="mlm", corpus=[str(corpus)], model=str(tiny_model_dir),
                          output_dir=str(tmp_path / "pt"), max_steps=4, batch_size=8, max_length=32,
                          **{"train.progress": False})
    assert result.metrics["train"]["head_lr"] == mlm.MLM.head_lr_new
    assert result.metrics["train"]["lr"] == mlm.MLM.lr_continued
    AutoModelForMaskedLM.from_pretrained(result.model_dir)
    from transferkit.config.pretrain import PretrainConfig
    assert resolve_train_config(PretrainConfig(from_scratch=True), mlm.MLM(), False).lr == mlm.MLM.lr_scratch
    ft = api.finetune(data=str(sentiment_csv), model=str(result.model_dir), max_steps=2,
                      output_dir=str(tmp_path / "ft"), batch_size=8, **{"train.progress": False})
    assert "accuracy" in ft.metrics["test"]


_fail = expect_user_error


def test_cli_errors(capsys, tmp_path, corpus):
    out = tmp_path / "run"
    base = ["pretrain", "--output-dir", str(out), "--from-scratch", "--arch", "bert", "--size", "tiny",
            "--train-tokenizer", "--vocab-size", "200", "--max-steps", "1"]
    line = _fail(capsys, base + ["--corpus", str(tmp_path / "missing.txt")])
    assert "corpus file not found" in line and "missing.txt" in line
    line = _fail(capsys, base + ["--corpus", str(corpus), "--objective", "electra"])
    assert "unknown objective 'electra'" in line and "mlm+nsp" in line
    (tmp_path / "latin1.txt").write_bytes("first document\n\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    line = _fail(capsys, base + ["--corpus", str(tmp_path / "latin1.txt")])
    assert "latin1.txt: not valid UTF-8 at line 3" in line
    line = _fail(capsys, base + ["--corpus", str(corpus), "--objective", "clm"])
    assert "does not fit arch bert" in line
    line = _fail(capsys, ["pretrain", "--corpus", str(corpus), "--output-dir", str(out)])
    assert "--model" in line and "--from-scratch" in line
    line = _fail(capsys, base + ["--corpus", str(corpus), "mlm_probability=1.5"])
    assert "mlm_probability" in line
    assert not out.exists()  # no half-written run directory


def test_cli_runs(capsys, tmp_path, corpus):
    out = tmp_path / "run"
    code = main(["pretrain", "--objective", "clm", "--corpus", str(corpus), "--from-scratch", "--arch", "gpt2",
                 "--size", "tiny", "--train-tokenizer", "--vocab-size", "300", "--max-steps", "2", "--max-length",
                 "32", "--output-dir", str(out), "train.progress=false"])
    assert code == 0
    err = capsys.readouterr().err
    assert "tokens/s" in err and "held-out: loss=" in err
    assert (out / "model" / "config.json").is_file() and (out / "metrics.json").is_file()
