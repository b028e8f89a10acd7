"""Generation: the row layouts and their refusals, templates, the completion-only loss mask, packing that keeps
rows apart, tiny runs that save what stock transformers and peft load back (greedy text equal), the methods a
decoder takes or refuses, resume, and the surfaces over a run (predict, generate, pipeline, evaluate, export)."""
from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

import transferkit
from transferkit import api
from transferkit.config.finetune import DataConfig
from transferkit.core.errors import UserError
from transferkit.core.runs import trust_base
from transferkit.inference import Predictor
from transferkit.tasks.generate.batches import GenData, PackedGenData, pack
from transferkit.tasks.generate.dataset import headline_rows
from transferkit.tasks.generate.format import IGNORE, choose_template, encode_rows, render_prompt
from transferkit.tasks.generate.metrics import generation_metrics
from transferkit.tasks.generate.model import CausalLM
from transferkit.tasks.generate.read import load_rows, prepare_splits

from helpers import (FILLER, NEGATIVE, POSITIVE, expect_user_error, interrupted_at_step, make_tokenizer, tiny_config,
                     write_prompts)

WORDS = POSITIVE + NEGATIVE + FILLER
CHAT = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}")


def write_rows(path, n: int = 120, seed: int = 0):
    return write_prompts(path, n, seed)


def decoder(folder, arch: str = "llama", chat: bool = False):
    from transferkit.modeling.lm import build_from_scratch
    tok = make_tokenizer()
    if chat:
        tok.chat_template = CHAT
    torch.manual_seed(0)
    build_from_scratch(arch, "tiny", tok, "clm").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return decoder(tmp_path_factory.mktemp("llama"))


@pytest.fixture(autouse=True)
def _trusted(llama):
    """Each test has a fresh cache (tests/tasks/conftest.py): the module's decoder is trusted again."""
    trust_base(str(llama))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("gen") / "rows.jsonl")


def gen_config(data, model, out, method="full", **train):
    cfg = tiny_config(data, model, out, method, **{"epochs": 4, **train})
    cfg.task = "generate"
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, llama, rows):
    """A full and a LoRA run of the tiny llama (trained once for the module)."""
    out = tmp_path_factory.mktemp("runs")
    trust_base(str(llama))
    return {m: api.finetune(gen_config(rows, llama, out / m, m, epochs=10, lr=3e-3 if m == "full" else 1e-2)).run_dir
            for m in ("full", "lora")}


# ---- rows ------------------------------------------------------------------------------------------
def test_every_layout_is_read(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}]}) + "\n", encoding="utf-8")
    chat = load_rows(str(tmp_path / "a.jsonl"))
    assert chat.prompts == [(("system", "be brief"), ("user", "hi"))] and chat.completions == ["hello"]
    (tmp_path / "b.csv").write_text("prompt,completion\nwhat,that\n", encoding="utf-8")
    assert load_rows(str(tmp_path / "b.csv")).prompts == [(("user", "what"),)]
    (tmp_path / "c.jsonl").write_text(json.dumps({"instruction": "add", "input": "1 2", "output": "3"}) + "\n"
                                      + json.dumps({"instruction": "say hi", "input": "", "output": "hi"}) + "\n")
    alpaca = load_rows(str(tmp_path / "c.jsonl"))
    assert [p[0][1] for p in alpaca.prompts] == ["add\n\n1 2", "say hi"] and alpaca.completions == ["3", "hi"]
    (tmp_path / "d.csv").write_text("input,output\nx,y\n", encoding="utf-8")
    assert load_rows(str(tmp_path / "d.csv")).completions == ["y"]
    (tmp_path / "e.csv").write_text("q,a\nx,y\n", encoding="utf-8")
    assert load_rows(str(tmp_path / "e.csv"), "q", "a").completions == ["y"]


@pytest.mark.parametrize("name,content,message", [
    ("a.csv", "prompt,answer\nx,y\n", "found no completion column"),
    ("b.csv", "prompt,completion\nx,\n", "empty or missing completion"),
    ("c.csv", "prompt,completion\n ,y\n", "empty or missing prompt"),
    ("d.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "must be the assistant's reply"),
    ("e.jsonl", json.dumps({"messages": [{"role": "bot", "content": "hi"}]}), "has role 'bot'"),
    ("f.jsonl", json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}), "no user turn"),
])
def test_bad_rows_are_refused_naming_what(tmp_path, name, content, message):
    (tmp_path / name).write_text(content + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_rows(str(tmp_path / name))


def test_cli_refuses_bad_data_in_one_line_and_writes_nothing(tmp_path, llama, capsys):
    (tmp_path / "a.csv").write_bytes(b"prompt,completion\ncaf\xe9,x\n")
    line = expect_user_error(capsys, ["finetune", "--task", "generate", "--data", str(tmp_path / "a.csv"),
                                      "--model", str(llama), "--output-dir", str(tmp_path / "run")])
    assert "UTF-8" in line and not (tmp_path / "run").exists()
    rows = str(write_rows(tmp_path / "r.jsonl"))
    bert_line = expect_user_error(capsys, ["finetune", "--task", "generate", "--data", rows, "--model",
                                           str(make_bert(tmp_path)), "--output-dir", str(tmp_path / "run")])
    assert "not a causal LM" in bert_line and not (tmp_path / "run").exists()


def make_bert(tmp_path):
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    make_tokenizer().save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def test_repeated_prompts_are_dropped_before_the_split(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps({"prompt": f"p {i % 40}", "completion": "c"}) for i in range(80)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    splits = prepare_splits(DataConfig(data=str(path)), 42)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 40
    assert not set(splits.train.texts) & set(splits.test.texts)


# ---- formatting and the loss mask ------------------------------------------------------------------
def test_templates():
    plain, chat = make_tokenizer(), make_tokenizer()
    chat.chat_template = CHAT
    assert choose_template(plain, "auto") == "plain" and choose_template(chat, "auto") == "chat"
    with pytest.raises(UserError, match="no chat template"):
        choose_template(plain, "chat")
    assert render_prompt(plain, (("user", "good film"),), "plain") == "good film\n"
    assert render_prompt(plain, (("system", "s"), ("user", "u")), "plain") == "System: s\nUser: u\nAssistant: "
    turns = (("user", "good film"),)
    assert render_prompt(chat, turns, "chat") == chat.apply_chat_template(
        [{"role": "user", "content": "good film"}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_only_the_completion_and_its_end_carry_loss(template):
    tok = make_tokenizer()
    tok.chat_template = CHAT
    prompt, completion = (("user", "the film was good"),), "good film"
    ids, labels = encode_rows(tok, [prompt], [completion], template, 64)
    # [SEP] ends a BERT vocabulary's text
    want = tok(completion, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    n_prompt = len(ids[0]) - len(want)
    assert labels[0] == [IGNORE] * n_prompt + want and ids[0][n_prompt:] == want
    assert tok.decode(ids[0][:n_prompt]) == tok.decode(tok(render_prompt(tok, prompt, template),
                                                           add_special_tokens=False)["input_ids"])
    everything = encode_rows(tok, [prompt], [completion], template, 64, completion_only=False)[1][0]
    assert everything == ids[0]
    batch = GenData(ids, labels).collate([0], 0)  # position t predicts label t+1
    assert batch["labels"].tolist() == want
    assert batch["lm_positions"].tolist() == list(range(n_prompt - 1, len(ids[0]) - 1))
    # too long: the prompt's end goes, the completion stays whole
    cut_ids, cut_labels = encode_rows(tok, [prompt], [completion], template, len(want) + 2)
    assert len(cut_ids[0]) == len(want) + 2 and cut_labels[0][-len(want):] == want


# ---- packing ---------------------------------------------------------------------------------------
def test_packing_fills_blocks_and_keeps_every_row_once():
    lengths = [9, 3, 7, 2, 5, 5, 1, 8]
    blocks = pack(lengths, 10)
    assert sorted(i for b in blocks for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in blocks) and len(blocks) == 4  # 40 tokens: four full blocks


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_packed_rows_loss_equals_its_loss_alone(tmp_path, arch):
    from transformers import AutoModelForCausalLM
    folder = decoder(tmp_path / arch, arch)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = make_tokenizer()
    rng = random.Random(1)
    prompts = [(("user", " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))),) for _ in range(7)]
    completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(7)]
    ids, labels = encode_rows(tok, prompts, completions, "plain", 64, completion_only=False)
    rows = GenData(ids, labels)
    packed = PackedGenData(rows, 40)
    assert len(packed) < len(rows)
    wrapped = CausalLM(model)

    def per_target(batch):
        with torch.no_grad():
            logits = wrapped(**batch).logits
        return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    alone = {i: per_target(rows.collate([i], 0)) for i in range(len(rows))}
    batch = packed.collate(list(range(len(packed))), 0)
    together = per_target(batch)
    at = 0
    for block in packed.blocks:  # targets come block by block, row by row
        for i in block:
            n = len(alone[i])
            assert torch.allclose(together[at:at + n], alone[i], atol=1e-5), f"row {i}"
            at += n
    assert at == len(together)
    # without the restarting position ids the rows see each other: the check above would fail
    mixed = per_target({**batch, "position_ids": None})
    assert not torch.allclose(mixed, together, atol=1e-3)


# ---- runs ------------------------------------------------------------------------------------------
def test_a_run_learns_and_reports(runs):
    for method, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert {"rouge1", "rouge2", "rougeL", "exact_match", "loss", "perplexity"} <= set(metrics["test"])
        evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in evals if r.get("type") == "eval"]
        assert losses[-1] < losses[0], method
        page = (run / "report" / "report.html").read_text(encoding="utf-8")
        assert "Best examples" in page and "Worst examples" in page
        saved = json.loads((run / "report" / "evaluation.json").read_text())
        assert saved["rougeL"] == pytest.approx(metrics["test"]["rougeL"])
        assert {"prompt", "reference", "output", "rougeL"} <= set(saved["rows"][0])
    for method in runs:  # "film" alone is half the answer; the right adjective is the rest
        assert json.loads((runs[method] / "metrics.json").read_text())["test"]["rougeL"] > 0.75, method


def _stock_greedy(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt + "\n", add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, eos_token_id=tok.sep_token_id,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_stock_transformers_and_peft_generate_what_the_run_does(runs):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    prompt = "good film with a dull plot"
    full_dir, lora_dir = runs["full"] / "model", runs["lora"] / "adapter"
    full = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    cfg = PeftConfig.from_pretrained(lora_dir)
    lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg.base_model_name_or_path), lora_dir).eval()
    for model, folder, run in ((full, full_dir, runs["full"]), (lora, lora_dir, runs["lora"])):
        ours = Predictor.from_run(run).predict(prompt)
        n = json.loads((run / "run.json").read_text())["head"]["generation"]["max_new_tokens"]
        assert ours["generated_text"] == _stock_greedy(model, AutoTokenizer.from_pretrained(folder), prompt, n)
        assert ours["prompt"] == prompt


def test_the_surfaces_over_a_run(runs, tmp_path, capsys):
    run = runs["lora"]
    want = Predictor.from_run(run).predict(["good film", "dull plot"])
    assert transferkit.pipeline("text-generation", model=str(run))("good film") == \
        [{"generated_text": want[0]["generated_text"]}]
    assert api.generate(str(run), "dull plot", 8) == [Predictor.from_run(run).predict("dull plot", max_new_tokens=8)
                                                      ["generated_text"]]
    assert api.generate(str(run), "dull plot") == [Predictor.from_run(run).predict("dull plot")["generated_text"]]
    from transferkit.cli import main
    assert main(["predict", str(run), "good film", "dull plot", "--output", str(tmp_path / "p.jsonl")]) == 0
    assert [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()] == want
    report = api.evaluate(run, output_dir=tmp_path / "report")
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert report["rougeL"] == pytest.approx(saved["rougeL"])
    assert report["loss"] == pytest.approx(saved["loss"], rel=1e-4)
    out = api.export(run, tmp_path / "merged")  # a merged folder AutoModelForCausalLM loads
    from transformers import AutoModelForCausalLM, AutoTokenizer
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    n = json.loads((run / "run.json").read_text())["head"]["generation"]["max_new_tokens"]
    assert _stock_greedy(merged, AutoTokenizer.from_pretrained(out), "good film", n) == want[0]["generated_text"]
    with pytest.raises(UserError, match="key-value cache"):
        api.export(run, tmp_path / "onnx", format="onnx")
    with pytest.raises(UserError, match="max_new_tokens"):
        Predictor.from_run(run).predict("good", max_new_tokens=0)


@pytest.mark.parametrize("method", ["adapter", "prefix", "head_only", "setfit"])
def test_methods_that_need_an_encoder_refuse_by_name(method, rows, llama, tmp_path):
    with pytest.raises(UserError, match=f"method {method} does not apply to a generate run's causal LM"):
        api.finetune(gen_config(rows, llama, tmp_path / "run", method))
    assert not (tmp_path / "run").exists()


def test_bitfit_refuses_a_decoder_without_biases_and_trains_gpt2(rows, llama, tmp_path):
    trust_base(str(llama))
    with pytest.raises(UserError, match="no bias terms"):
        api.finetune(gen_config(rows, llama, tmp_path / "run", "bitfit", max_steps=2, epochs=None))
    gpt2 = decoder(tmp_path / "gpt2", "gpt2")
    trust_base(str(gpt2))
    run = api.finetune(gen_config(rows, gpt2, tmp_path / "bitfit", "bitfit", max_steps=3, epochs=None)).run_dir
    assert Predictor.from_run(run).predict("good film")["generated_text"] is not None


def test_ia3_and_packing_and_all_token_loss_train(rows, llama, tmp_path):
    trust_base(str(llama))
    cfg = gen_config(rows, llama, tmp_path / "ia3", "ia3", max_steps=3, epochs=None)
    cfg.data.packing, cfg.train.loss = True, "all"
    result = api.finetune(cfg)
    plain = api.finetune(gen_config(rows, llama, tmp_path / "plain", "ia3", max_steps=3, epochs=None))
    # packed blocks hold several rows; every token scored gives more items per step than the completions alone
    assert result.metrics["train"]["samples"] < plain.metrics["train"]["samples"]
    assert result.metrics["train"]["scored_items"] > plain.metrics["train"]["scored_items"]


def test_an_interrupted_run_resumes_to_the_same_weights(rows, llama, tmp_path):
    trust_base(str(llama))
    whole = api.finetune(gen_config(rows, llama, tmp_path / "whole", "lora", epochs=None, max_steps=6,
                                    checkpoint_steps=2)).run_dir
    with interrupted_at_step(4):
        api.finetune(gen_config(rows, llama, tmp_path / "cut", "lora", epochs=None, max_steps=6, checkpoint_steps=2))
    resumed = api.finetune(resume=tmp_path / "cut").run_dir
    a = load_file(str(whole / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- metrics and the bundled data ------------------------------------------------------------------
def test_rouge_and_exact_match():
    metrics, rows = generation_metrics(["the cat sat", "Big News"], ["the cat sat", "big  news today"])
    assert rows[0] == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "exact_match": 1.0}
    assert rows[1]["exact_match"] == 0.0 and rows[1]["rouge1"] == pytest.approx(2 * (2 / 3 * 1) / (2 / 3 + 1))
    assert metrics["exact_match"] == 0.5


def test_headline_rows_take_the_first_line_and_the_opening():
    article = "Ad sales boost profit\n\nQuarterly profits jumped.\n\n" + " ".join(["word"] * 50) + "\n\nMore text."
    df = headline_rows([article])
    assert df["completion"].tolist() == ["Ad sales boost profit"]
    assert df["prompt"][0].startswith("Quarterly profits jumped.") and "More text" not in df["prompt"][0]


def test_plan_counts_a_decoder_and_its_generation_cache(llama, rows):
    from transferkit.training.memory_estimate import training_memory
    lora = training_memory(str(llama), "lora", batch_size=4, max_length=16, task="generate")
    full = training_memory(str(llama), "full", batch_size=4, max_length=16, task="generate")
    bigger = training_memory(str(llama), "lora", batch_size=8, max_length=16, task="generate")
    assert full.trainable_params == full.total_params and 0 < lora.trainable_params < full.total_params
    assert lora.gradients < full.gradients and bigger.activations > lora.activations
    # keys and values of 2 layers x 2 heads x 64 dims for 16 prompts of 16 tokens, plus one step's logits
    vocab = json.loads((llama / "config.json").read_text())["vocab_size"]
    assert lora.generation == 2 * 2 * 2 * 64 * 16 * 16 * 4 + 16 * vocab * 4
    result = api.plan(task="generate", data=str(rows), model=str(llama), dry_run_steps=0)
    assert {p.method for p in result.methods} == {"full", "lora", "ia3"}  # bitfit: no biases to train
    assert any("bitfit left out" in n for n in result.notes)


def test_plan_ranks_decoders_by_how_likely_they_find_the_completions(llama, rows, runs):
    """The decoder tuned on these rows finds their completions likelier than the untuned one it started from, so
    `plan --models` ranks it first; the score is minus the completion tokens' cross-entropy in bits per byte."""
    tuned = runs["full"] / "model"
    trust_base(str(tuned))
    result = api.plan(task="generate", data=str(rows), models=f"{llama},{tuned}", methods="lora", dry_run_steps=0)
    ranked = {m["name"]: m for m in result.models}
    assert ranked[str(tuned)]["rank"] == 1 and ranked[str(llama)]["rank"] == 2
    assert {m["measure"] for m in result.models} == {"-bits/byte"}
    assert ranked[str(llama)]["score"] < ranked[str(tuned)]["score"] < 0
    assert "ranked by -bits/byte of the untuned model" in result.table


def test_compare_and_tune_take_generation_runs(rows, llama, tmp_path):
    result = api.compare("full,lora", task="generate", data=str(rows), model=str(llama), epochs=2,
                         output_dir=tmp_path / "cmp", **{"train.progress": False})
    table = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "ROUGE-L" in table and {r["method"] for r in result.rows} == {"full", "lora"}
    study = api.tune(task="generate", data=str(rows), model=str(llama), method="lora", n_trials=2, epochs=1,
                     output_dir=tmp_path / "tune", **{"train.progress": False})
    assert study.best_value is not None and "rougeL" in study.test_metrics
