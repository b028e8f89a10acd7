"""fill-mask and generate on tiny random models, from Python and the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import VOCAB, make_tokenizer
from transferkit import fill_mask, generate
from transferkit.cli import main
from transferkit.core.errors import UserError
from transferkit.inference.generation import TextGenerator
from transferkit.modeling.lm import build_from_scratch

TEXT = "the movie was [MASK] and the acting superb"


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    """A pretrain-style run directory: run/model/ holds a tiny BertForMaskedLM and its tokenizer."""
    run = tmp_path_factory.mktemp("mlm-run")
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = build_from_scratch("bert", "tiny", tok, "mlm")
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    return run


def test_fill_mask_returns_k_sorted_probabilities(mlm_run):
    rows = fill_mask(str(mlm_run), TEXT, top_k=5)
    assert len(rows) == 5
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores) and sum(scores) <= 1
    tokens = [r["token"] for r in rows]
    assert len(set(tokens)) == 5 and not set(tokens) & {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert all(t in VOCAB for t in tokens)  # never an id past the 39-word vocabulary (table has 39 rows here)
    assert rows[0]["sequence"] == TEXT.replace("[MASK]", tokens[0])
    # same model, run dir or its model/ folder, either mask spelling: same answer
    assert fill_mask(str(mlm_run / "model"), TEXT.replace("[MASK]", "<mask>"), top_k=5) == rows


def test_fill_mask_scores_are_the_model_softmax(mlm_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    model = AutoModelForMaskedLM.from_pretrained(mlm_run / "model").eval()
    tok = AutoTokenizer.from_pretrained(mlm_run / "model")
    enc = tok(TEXT, return_tensors="pt")
    pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero())
    with torch.no_grad():
        probs = model(**enc).logits[0, pos].softmax(-1)  # (V,)
    rows = fill_mask(model, TEXT, top_k=3, tokenizer=tok)
    for r in rows:
        assert r["score"] == pytest.approx(float(probs[r["token_id"]]), rel=1e-5)


def test_fill_mask_errors(mlm_run, tiny_model_dir, clm_dir):
    with pytest.raises(UserError, match="0 mask tokens"):
        fill_mask(str(mlm_run), "no mask here")
    with pytest.raises(UserError, match="2 mask tokens"):
        fill_mask(str(mlm_run), "[MASK] and <mask>")
    with pytest.raises(UserError, match="top_k"):
        fill_mask(str(mlm_run), TEXT, top_k=0)
    with pytest.raises(UserError, match="no trained masked-LM head"):  # a plain BertModel folder
        fill_mask(str(tiny_model_dir), TEXT)
    with pytest.raises(UserError, match="has no masked-LM head"):
        fill_mask(str(clm_dir), TEXT)


def test_generate_respects_max_new_tokens_and_greedy_is_deterministic(clm_dir):
    gen = TextGenerator.load(str(clm_dir))
    gen.model.generation_config.eos_token_id = None  # a random model may emit [SEP] early; count every token
    new_ids = gen.generate_ids("the movie was", max_new_tokens=7)
    assert new_ids.shape == (1, 7)
    assert torch.equal(gen.generate_ids("the movie was", max_new_tokens=7), new_ids)
    out = gen.generate("the movie was", max_new_tokens=7)
    assert out == ["the movie was" + gen.tokenizer.decode(new_ids[0], skip_special_tokens=True)]
    # the prompt reaches the model without the [SEP] a BERT vocabulary appends (it would end the text)
    prompt_ids = gen.tokenizer("the movie was")["input_ids"][:-1]
    full = gen.model.generate(torch.tensor([prompt_ids]), max_new_tokens=7, do_sample=False, pad_token_id=0)
    assert torch.equal(full[:, len(prompt_ids):], new_ids)


def test_generate_sampling_with_a_seed_is_reproducible(clm_dir):
    kw = dict(temperature=1.5, top_k=20, top_p=0.95, num_return_sequences=3)
    a = generate(str(clm_dir), "the plot", 12, seed=3, **kw)
    b = generate(str(clm_dir), "the plot", 12, seed=3, **kw)
    c = generate(str(clm_dir), "the plot", 12, seed=4, **kw)
    assert len(a) == 3 and a == b and a != c
    assert len(set(a)) > 1  # three samples at temperature 1.5 over a random model differ


def test_generate_errors(clm_dir, mlm_run):
    with pytest.raises(UserError, match="not a causal LM"):
        generate(str(mlm_run), "the plot")
    with pytest.raises(UserError, match="need sampling"):
        generate(str(clm_dir), "the plot", num_return_sequences=2)
    with pytest.raises(UserError, match="temperature"):
        generate(str(clm_dir), "the plot", temperature=-1)
    with pytest.raises(UserError, match="top_p"):
        generate(str(clm_dir), "the plot", temperature=1, top_p=1.5)
    with pytest.raises(UserError, match="chat template"):
        generate(str(clm_dir), "the plot", chat=True)
    with pytest.raises(UserError, match="512 positions"):
        generate(str(clm_dir), "the plot", max_new_tokens=600)
    with pytest.raises(UserError, match="not found"):
        generate("no-such-model", "the plot")


def test_cli_fill_mask_and_generate(mlm_run, clm_dir, capsys):
    assert main(["fill-mask", str(mlm_run), TEXT, "--top-k", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["token"] for r in rows] == [r["token"] for r in fill_mask(str(mlm_run), TEXT, top_k=3)]
    assert main(["generate", str(clm_dir), "the plot", "--max-new-tokens", "5", "--temperature", "1",
                 "--num-return-sequences", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- ") == 2 and out.count("the plot") == 2


@pytest.mark.parametrize("argv,msg", [
    (["fill-mask", "{mlm}", "no mask at all"], "0 mask tokens"),
    (["fill-mask", "{bert}", TEXT], "no trained masked-LM head"),
    (["fill-mask", "nowhere-model", TEXT], "not found"),
    (["generate", "{mlm}", "hello"], "not a causal LM"),
    (["generate", "{gpt2}", "the plot", "--max-new-tokens", "0"], "max_new_tokens"),
])
def test_cli_errors_exit_2(argv, msg, mlm_run, tiny_model_dir, clm_dir, capsys):
    paths = {"mlm": str(mlm_run), "bert": str(tiny_model_dir), "gpt2": str(clm_dir)}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transferkit: error:") and msg in err and "\n" not in err


def test_cloze_items_are_single_token_content_words_and_scored(mlm_run):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import cloze
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from transferkit.inference.generation import MaskFiller
    docs = ["The movie was really good and the acting was superb. This film had a very dull plot indeed.",
            "A story with wonderful music and a dreadful ending. The director made this quite boring film with music."]
    filler = MaskFiller.load(str(mlm_run))
    items = cloze.build_items(docs, [filler.tokenizer], n=10, seed=0)
    assert len(items) == 4  # four sentences of 8+ words, one item each
    for it in items:
        word = it["sentence"][it["start"]:it["end"]]
        assert word == it["word"] and word.isalpha() and len(word) >= 4
        assert word.lower() not in ENGLISH_STOP_WORDS  # "this", "with", "very" are eligible otherwise
        assert it["targets"] == [VOCAB.index(word.lower())]
    assert cloze.single_token(filler.tokenizer, "the unknownword here", 4, 15) is None  # [UNK] spans no vocab word
    r = cloze.score(filler, items, 0, batch_size=2)
    assert r["items"] == 4 and 0 <= r["top1"] <= r["top5"] <= 1


def test_fill_mask_reads_an_mlm_nsp_model_and_generate_a_llama(tmp_path):
    tok = make_tokenizer()
    torch.manual_seed(0)
    build_from_scratch("bert", "tiny", tok, "mlm+nsp").save_pretrained(tmp_path / "nsp")
    tok.save_pretrained(tmp_path / "nsp")
    assert len(fill_mask(str(tmp_path / "nsp"), TEXT, top_k=2)) == 2  # BertForPreTraining holds the MLM head
    build_from_scratch("llama", "tiny", tok, "clm").save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    gen = TextGenerator.load(str(tmp_path / "llama"))
    gen.model.generation_config.eos_token_id = None
    assert gen.generate_ids("a very", max_new_tokens=4, temperature=1.0, seed=1).shape == (1, 4)
