"""Parameter accounting on the meta device against the reference figures in DATA.md."""
from __future__ import annotations

import json

import pytest

from transferkit.cli import main
from transferkit.errors import UserError
from transferkit.params import parameter_report

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
