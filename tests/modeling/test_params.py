"""Parameter accounting on the meta device against the reference figures in DATA.md."""
from __future__ import annotations

import json

import pytest

from transferkit.cli import main
from transferkit.core.errors import UserError
from transferkit.modeling.params import parameter_report

BERT_BASE_POOLER = 768 * 768 + 768  # BertForSequenceClassification has it; transferkit's classifier pools itself


def test_bert_base_full_matches_reference_without_pooler():
    r = parameter_report("bert-base-uncased", "full")
    assert r["total"] == r["trainable"] == 109_483_778 - BERT_BASE_POOLER
    assert r["head"] == 768 * 2 + 2


def test_lora_r8_query_value_is_294912():
    r = parameter_report("bert-base-uncased", "lora", lora_r=8)
    assert r["method_params"] == 294_912
    assert r["trainable"] == 294_912 + 1_538  # peft also trains the head
    assert r["adapted_matrices"] == 24


def test_lora_r16_attention_reproduces_textbook_share():
    r = parameter_report("bert-base-uncased", "lora", lora_r=16,
                         target_modules=["query", "key", "value", "attention.output.dense"])
    assert r["method_params"] == 1_179_648
    assert r["adapted_weights"] == 28_311_552
    assert round(100 * r["method_share_of_adapted"], 2) == 4.17


def test_head_only_and_local_config(tmp_path, tiny_model_dir):
    r = parameter_report(str(tiny_model_dir / "config.json"), "head_only")
    assert r["trainable"] == r["head"] == 32 * 2 + 2
    assert parameter_report(str(tiny_model_dir), "head_only")["total"] == r["total"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="unknown method"):
        parameter_report("bert-base-uncased", "nope")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match="no model_type"):
        parameter_report(str(bad), "full")
    with pytest.raises(UserError, match="target_modules"):
        parameter_report("bert-base-uncased", "lora", target_modules=["nonexistent"])


def test_cli_params(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["params", "--model", "bert-base-uncased", "--method", "lora", "--lora-r", "16",
                 "--target-modules", "query,key,value,attention.output.dense"]) == 0
    out = capsys.readouterr().out
    assert "1,179,648" in out and "4.17%" in out and "28,311,552" in out
    assert main(["params", "--model", "not-a-model-anywhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be resolved offline" in err[0] and "bert-base-uncased" in err[0]


# ---- the other methods on bert-base, counted by hand ----------------------------------------------------
H, LAYERS, FFN = 768, 12, 3072
BERT_BASE_NO_POOLER = 109_483_778 - BERT_BASE_POOLER
HEAD = H * 2 + 2


def test_pfeiffer_adapter_reduction_16():
    r = parameter_report("bert-base-uncased", "adapter", adapter_kind="pfeiffer", adapter_reduction=16)
    per_adapter = H * 48 + 48 + 48 * H + H  # down (768 -> 48) + up (48 -> 768), with biases
    assert r["method_params"] == LAYERS * per_adapter == 894_528
    assert r["trainable"] == 894_528 + HEAD  # Pfeiffer: LayerNorms stay frozen
    assert r["total"] == BERT_BASE_NO_POOLER + 894_528
    assert r["adapted_matrices"] == LAYERS


def test_houlsby_adapter_trains_layer_norms():
    r = parameter_report("bert-base-uncased", "adapter", adapter_kind="houlsby", adapter_reduction=16)
    assert r["method_params"] == 2 * 894_528  # after attention and after the feed-forward block
    layer_norms = LAYERS * 2 * 2 * H  # two LayerNorms per layer, weight + bias
    assert r["trainable"] == 2 * 894_528 + layer_norms + HEAD


def test_bitfit_counts_every_encoder_bias():
    r = parameter_report("bert-base-uncased", "bitfit")
    # per layer: query/key/value/attention-output biases, attention LayerNorm bias, intermediate (3072),
    # output, output LayerNorm bias; plus the embedding LayerNorm bias
    per_layer = 4 * H + H + FFN + H + H
    assert r["method_params"] == LAYERS * per_layer + H == 102_144
    assert r["trainable"] == 102_144 + HEAD
    assert r["total"] == BERT_BASE_NO_POOLER


def test_ia3_prefix_and_lora_variants():
    ia3 = parameter_report("bert-base-uncased", "ia3")
    assert ia3["method_params"] == LAYERS * (H + H + FFN) == 55_296  # key, value outputs; feed-forward input
    assert ia3["trainable"] == 55_296 + HEAD
    prefix = parameter_report("bert-base-uncased", "prefix", prefix_tokens=20)
    assert prefix["method_params"] == LAYERS * 2 * 20 * H == 368_640  # a key and a value per virtual token
    assert prefix["trainable"] == 368_640 + HEAD
    all_linear = parameter_report("bert-base-uncased", "lora", lora_r=8, target_modules=["all-linear"])
    per_layer = 4 * 8 * (H + H) + 8 * (H + FFN) + 8 * (FFN + H)
    assert all_linear["method_params"] == LAYERS * per_layer == 1_327_104
    assert all_linear["adapted_matrices"] == 6 * LAYERS
    dora = parameter_report("bert-base-uncased", "lora", lora_r=8, use_dora=True)
    assert dora["method_params"] == 294_912 + 2 * LAYERS * H  # plus one magnitude vector per matrix
    assert parameter_report("bert-base-uncased", "lora", lora_r=8, use_rslora=True)["method_params"] == 294_912


def test_cli_params_adapter(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["params", "--model", "bert-base-uncased", "--method", "adapter", "--adapter-reduction", "16"]) == 0
    out = capsys.readouterr().out
    assert "894,528" in out and "896,066" in out
    assert main(["params", "--model", "bert-base-uncased", "--method", "bitfit"]) == 0
    assert "102,144" in capsys.readouterr().out


def test_api_function_survives_its_first_call():
    """`transferkit.params` stays the function after a call imports the counting module."""
    import transferkit
    transferkit.params("bert-base-uncased", "lora")
    assert callable(transferkit.params)
    assert transferkit.params("bert-base-uncased", "lora")["method_params"] == 294_912
