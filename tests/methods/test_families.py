"""Every method on every encoder family of helpers.FAMILIES (tiny random models): what trains, what is saved,
where layout-specific methods attach, that a prefix-wrapped attention is the family's own attention plus the
prefix, and one-line refusals for a family a method does not know."""
from __future__ import annotations

import re

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config.finetune import MethodConfig, TrainConfig
from transferkit.core.errors import UserError
from transferkit.core.registry import METHODS
from transferkit.data.batches import TokenData
from transferkit.methods import prefix_attention
from transferkit.methods.adapter import AdapterLinear
from transferkit.methods.base import is_head_param
from transferkit.modeling.classifier import TransferkitForSequenceClassification
from transferkit.modeling.resolve import load_tokenizer
from transferkit.tasks.classify.task import classification_loss
from transferkit.training.loop import Trainer

from helpers import FAMILIES, eval_logits, make_sentences, tiny_classifier

TEXTS = [t for t, _ in make_sentences(12, seed=3)] + ["Anna visited Paris in May ."]  # ragged: padded batches
Y = [i % 2 for i in range(len(TEXTS))]
OTHERS = [f for f in FAMILIES if f != "bert"]  # BERT: tests/methods/test_methods.py
# (method, family) -> what the one-line refusal says: ModernBERT's layers have no biases
REFUSED = {("bitfit", "modernbert"): "bitfit: this modernbert encoder has no bias terms"}




def _batch(folder):
    tok = load_tokenizer(str(folder))
    data = TokenData([tok(t)["input_ids"] for t in TEXTS], Y)
    return data, data.collate(list(range(len(TEXTS))), tok.pad_token_id)


@torch.no_grad()
def _pooled(model, batch):
    model.eval()
    return model.pool(batch["input_ids"], batch["attention_mask"]).clone()  # [batch, hidden]


def _one_step(model, data, tmp_path):
    from accelerate import Accelerator
    cfg = TrainConfig(batch_size=len(data), epochs=1, lr=1e-2, head_lr=1e-2, warmup=0.0, progress=False)
    trainer = Trainer(model, data, cfg, run_dir=tmp_path, accelerator=Accelerator(cpu=True), pad_id=0,
                      loss_fn=classification_loss)
    trainer.model.train()
    trainer._step([list(range(len(data)))])
    return trainer.acc.unwrap_model(trainer.model)


@pytest.mark.parametrize("family", OTHERS)
@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract_on_family(name, family, family_model_dir, tmp_path):
    """One step changes exactly the trainable parameters (the method's and the head's); save/load and
    for_inference keep the logits. A method that cannot apply says so in one line."""
    folder = family_model_dir(family)
    torch.manual_seed(0)
    method = METHODS.get(name)(MethodConfig(name=name))
    if (name, family) in REFUSED:
        with pytest.raises(UserError, match=REFUSED[name, family]) as e:
            method.apply(tiny_classifier(folder))
        assert "\n" not in str(e.value)
        return
    model = method.apply(tiny_classifier(folder))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(is_head_param(n) for n in trainable), f"{name} does not train the head"
    # head_only trains the head; setfit's apply too (its contrastive stage tunes the encoder before, in fit)
    assert name in ("head_only", "setfit") or any(not is_head_param(n) for n in trainable), f"{name}: head alone"

    data, batch = _batch(folder)
    model = _one_step(model, data, tmp_path)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed - trainable == set(), f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert trainable - changed == set(), f"trainable parameters did not change: {sorted(trainable - changed)[:5]}"

    trained = eval_logits(model, batch)
    method.save(model, tmp_path / "artifact")
    reloaded = method.load(tmp_path / "artifact", lambda: tiny_classifier(folder))
    torch.testing.assert_close(eval_logits(reloaded, batch), trained, rtol=0, atol=1e-6)
    torch.testing.assert_close(eval_logits(method.for_inference(reloaded), batch), trained, rtol=0, atol=1e-5)


# ---- where the layout-specific methods attach ----------------------------------------------------------------

LORA_TARGETS = {"roberta": {"query", "value"}, "xlm-roberta": {"query", "value"}, "electra": {"query", "value"},
                "distilbert": {"q_lin", "v_lin"}, "mpnet": {"q", "v"}, "deberta-v2": {"query_proj", "value_proj"},
                "modernbert": {"Wqkv"}}
# IA3: keys and values scaled on their outputs, the feed-forward output projection on its inputs (intermediate 64);
# ModernBERT's keys and values come out of the fused Wqkv (3 x 32 outputs)
IA3_VECTORS = {
    "bert-layout": {"attention.self.key": 32, "attention.self.value": 32, "output.dense": 64},
    "distilbert": {"attention.k_lin": 32, "attention.v_lin": 32, "ffn.lin2": 64},
    "mpnet": {"attention.attn.k": 32, "attention.attn.v": 32, "output.dense": 64},
    "deberta-v2": {"attention.self.key_proj": 32, "attention.self.value_proj": 32, "output.dense": 64},
    "modernbert": {"attn.Wqkv": 96, "mlp.Wo": 64},
}
ADAPTED = {"bert-layout": ("attention.output.dense", "output.dense"), "distilbert": ("attention.out_lin", "ffn.lin2"),
           "mpnet": ("attention.attn.o", "output.dense"), "deberta-v2": ("attention.output.dense", "output.dense"),
           "modernbert": ("attn.Wo", "mlp.Wo")}


def _layout(family):
    return family if family in IA3_VECTORS else "bert-layout"


@pytest.mark.parametrize("family", OTHERS)
def test_lora_and_ia3_default_targets(family, family_model_dir):
    folder = family_model_dir(family)
    lora = METHODS.get("lora")(MethodConfig(name="lora")).apply(tiny_classifier(folder))
    assert {n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in lora.named_parameters() if ".lora_A." in n} == \
        LORA_TARGETS[family]
    ia3 = METHODS.get("ia3")(MethodConfig(name="ia3")).apply(tiny_classifier(folder))
    vectors: dict[str, set[tuple[int, int]]] = {}
    for n, p in ia3.named_parameters():
        if ".ia3_l." in n:
            layer, module = _in_layer(n.split(".ia3_l.")[0])
            vectors.setdefault(module, set()).add((layer, p.numel()))
    assert vectors == {m: {(0, size), (1, size)} for m, size in IA3_VECTORS[_layout(family)].items()}


def _in_layer(name):
    """(layer index, module name inside the layer) of a module's dotted name."""
    m = re.search(r"\.layers?\.(\d+)\.(.+)$", name)
    return int(m.group(1)), m.group(2)


@pytest.mark.parametrize("kind,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
@pytest.mark.parametrize("family", OTHERS)
def test_adapter_placement_and_near_identity_start(family, kind, per_layer, family_model_dir):
    folder = family_model_dir(family)
    _, batch = _batch(folder)
    torch.manual_seed(0)
    base = tiny_classifier(folder)
    before = eval_logits(base, batch)
    model = METHODS.get("adapter")(MethodConfig(name="adapter", adapter_kind=kind, adapter_reduction=4)).apply(base)
    wrapped = {_in_layer(n)[1] for n, m in model.named_modules() if isinstance(m, AdapterLinear)}
    assert sum(isinstance(m, AdapterLinear) for m in model.modules()) == 2 * per_layer
    assert wrapped == set(ADAPTED[_layout(family)][2 - per_layer:])
    assert torch.allclose(eval_logits(model, batch), before, atol=1e-3)  # near-identity start


# ---- prefix tuning: the family's own attention plus a prefix ---------------------------------------------------

def _hidden_prefix(mask, prefix):
    """extend_mask with the prefix masked out: the wrapped attention must then be the original one."""
    assert mask is not None, "the test batch is padded: every attention gets a mask"
    blocked = torch.finfo(mask.dtype).min if mask.is_floating_point() else 0
    return torch.cat([torch.full_like(mask[..., :1], blocked).expand(*mask.shape[:-1], prefix), mask], dim=-1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prefix_is_the_familys_attention_plus_a_prefix(family, family_model_dir, monkeypatch):
    """With the prefix masked out each wrapper computes what the original layer computes (positions, rotary,
    relative bias, sliding window and all); with it, padded batches equal texts one by one, the prefix changes
    the output, and sdpa and eager agree."""
    folder = family_model_dir(family)
    _, batch = _batch(folder)
    # MPNet and DeBERTa-v2 compute their attention themselves (eager only)
    for impl in ["sdpa", "eager"] if tiny_classifier(folder).encoder._supports_sdpa else ["eager"]:
        torch.manual_seed(0)
        base = tiny_classifier(folder)
        base.encoder.config._attn_implementation = impl
        plain = _pooled(base, batch)
        model = METHODS.get("prefix")(MethodConfig(name="prefix", prefix_tokens=3)).apply(base)
        with torch.no_grad():  # the tiny random encoder attends almost uniformly: give the prefix weight
            for n, p in model.named_parameters():
                if ".prefix_" in n:
                    p.normal_()
        with monkeypatch.context() as m:
            m.setattr(prefix_attention, "extend_mask", _hidden_prefix)
            torch.testing.assert_close(_pooled(model, batch), plain, rtol=0, atol=1e-5)
        together = _pooled(model, batch)
        assert (together - plain).abs().max() > 0.01
        for i in range(len(TEXTS)):
            n = int(batch["attention_mask"][i].sum())
            one = {"input_ids": batch["input_ids"][i:i + 1, :n], "attention_mask": batch["attention_mask"][i:i + 1, :n]}
            torch.testing.assert_close(_pooled(model, one)[0], together[i], rtol=0, atol=1e-5)
        if impl == "sdpa":
            model.encoder.config._attn_implementation = "eager"
            torch.testing.assert_close(_pooled(model, batch), together, rtol=0, atol=1e-5)


def test_prefix_refuses_attention_kernels_whose_masks_it_cannot_extend(family_model_dir):
    """flash and flex kernels take no 4-d mask (a sliding window is a kernel flag there): one line, not a wrong
    attention."""
    model = METHODS.get("prefix")(MethodConfig(name="prefix")).apply(tiny_classifier(family_model_dir("modernbert")))
    attn = model.encoder.layers[0].attn.attn
    attn.config._attn_implementation = "flash_attention_2"  # the setting alone: nothing here runs it
    with pytest.raises(UserError, match=r"^prefix: the flash_attention_2 attention implementation is not supported"):
        prefix_attention._attention_function(attn)


# ---- families a method does not know ---------------------------------------------------------------------------

def _renamed(folder, model_type):
    """The tiny model of `folder` as if its config named another (unlisted) model type."""
    model = tiny_classifier(folder)
    model.config.encoder["model_type"] = model_type
    return model


@pytest.mark.parametrize("name", ["adapter", "prefix", "lora", "ia3", "bitfit"])
def test_an_unlisted_family_with_a_known_layout_works(name, family_model_dir):
    """A BERT clone of a model type no table lists (e.g. a new RoBERTa variant): found by its layer names."""
    method = METHODS.get(name)(MethodConfig(name=name, **({"target_modules": ["key", "value", "output.dense"]}
                                                          if name == "ia3" else {})))
    model = method.apply(_renamed(family_model_dir("roberta"), "roberta-variant"))
    assert any(p.requires_grad and not is_head_param(n) for n, p in model.named_parameters())


class _Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mixer = torch.nn.Linear(8, 8)
        self.ff = torch.nn.Linear(8, 8)


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import PretrainedConfig
        self.config = PretrainedConfig(hidden_size=8)
        self.config.model_type = "foo"
        self.layers = torch.nn.ModuleList([_Layer(), _Layer()])


@pytest.mark.parametrize("name,what", [
    ("adapter", r"each layer needs attention and feed-forward output projections, found none of: "
                r"attention\.output\.dense \+ output\.dense; attention\.out_lin \+ ffn\.lin2; .*mlp\.Wo$"),
    ("prefix", r"each layer needs query/key/value projections, found none of: attention\.self\.query \+ "
               r"attention\.self\.key \+ attention\.self\.value; .*attn\.Wqkv$")])
def test_an_unknown_layout_is_one_line_naming_what_is_missing(name, what):
    model = TransferkitForSequenceClassification(
        TransferkitForSequenceClassification.config_class(encoder={"model_type": "bert", "hidden_size": 8},
                                                          num_labels=2), encoder=_Encoder())
    model.config.encoder["model_type"] = "foo"
    with pytest.raises(UserError, match=rf"^{name}: unsupported encoder layout \(foo\): {what}") as e:
        METHODS.get(name)(MethodConfig(name=name)).apply(model)
    assert "\n" not in str(e.value)


def test_prefix_refuses_an_unlisted_attention_that_mixes_in_positions():
    """RoFormer names its layers like BERT but rotates keys inside its self-attention (sinusoidal_pos): the
    BERT wrapper would drop that, so prefix refuses it; adapters, which only follow output projections, apply."""
    from transformers import RoFormerConfig, RoFormerModel
    encoder = RoFormerModel(RoFormerConfig(vocab_size=64, embedding_size=16, hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=32))
    model = TransferkitForSequenceClassification.with_encoder(encoder, 2)
    with pytest.raises(UserError, match=r"^prefix: unsupported encoder layout \(roformer\): its self-attention "
                                        r"takes sinusoidal_pos, .*; lora adapts any encoder$"):
        METHODS.get("prefix")(MethodConfig(name="prefix")).apply(model)
    adapted = METHODS.get("adapter")(MethodConfig(name="adapter")).apply(
        TransferkitForSequenceClassification.with_encoder(encoder, 2))
    assert any(isinstance(m, AdapterLinear) for m in adapted.modules())


# ---- bitfit and token types ------------------------------------------------------------------------------------

def test_bitfit_trains_what_biases_a_modernbert_has(tmp_path):
    """ModernBERT checkpoints have no biases (refused above); one configured with them trains those alone."""
    from transformers import ModernBertConfig, ModernBertModel
    encoder = ModernBertModel(ModernBertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                               cls_token_id=2, sep_token_id=3, attention_bias=True, mlp_bias=True))
    model = METHODS.get("bitfit")(MethodConfig(name="bitfit")).apply(
        TransferkitForSequenceClassification.with_encoder(encoder, 2))
    trained = {n for n, p in model.named_parameters() if p.requires_grad and not is_head_param(n)}
    assert trained == {f"encoder.layers.{i}.{m}.bias" for i in range(2)
                       for m in ("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo")}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_token_types_reach_only_encoders_that_read_them(family, family_model_dir):
    """A pair's token types (second text: 1) change what BERT and ELECTRA compute; every other family reads no
    token types (none in its forward, or a single type), so given ones are dropped rather than failing
    (RoBERTa: index out of range) or passing unread."""
    folder = family_model_dir(family)
    _, batch = _batch(folder)
    model = tiny_classifier(folder)
    types = (torch.arange(batch["input_ids"].shape[1]) > 3).long().expand_as(batch["input_ids"])  # [batch, seq]
    with torch.no_grad():
        model.eval()
        given = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=types).logits
    differs = bool((given - eval_logits(model, batch)).abs().max() > 1e-6)
    assert differs == (family in ("bert", "electra"))
