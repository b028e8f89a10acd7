"""LoRA and IA3 adapter folders written by transferkit are plain PEFT folders: peft loads them as is."""
from __future__ import annotations

import json

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config import MethodConfig
from transferkit.models import ResolvedModel, build_classifier, load_tokenizer
from transferkit.registry import METHODS
from transferkit.runinfo import RunInfo

from helpers import LABELS

TEXTS = ["a good and great film", "awful boring plot with dull acting", "the movie", "superb"]


def _base(tiny_model_dir):
    return build_classifier(ResolvedModel("tiny", str(tiny_model_dir), "mean"), LABELS, "mean", 0.1)


@torch.no_grad()
def _logits(model, tok):
    model.eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


@pytest.mark.parametrize("name,options", [("lora", {"lora_r": 4, "use_rslora": True}), ("ia3", {})],
                         ids=["lora", "ia3"])
def test_method_save_loads_with_peft(name, options, tiny_model_dir, tmp_path):
    from peft import PeftModel
    torch.manual_seed(0)
    method = METHODS.get(name)(MethodConfig(name=name, **options))
    model = method.apply(_base(tiny_model_dir))
    with torch.no_grad():  # move every trainable tensor off its initial value, as training would
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    tok = load_tokenizer(str(tiny_model_dir))
    expected = _logits(model, tok)
    method.save(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == name.upper() and config["task_type"] == "SEQ_CLS"
    peft_model = PeftModel.from_pretrained(_base(tiny_model_dir), tmp_path / "adapter")
    ours = method.load(tmp_path / "adapter", lambda: _base(tiny_model_dir))
    torch.testing.assert_close(_logits(peft_model, tok), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(ours, tok), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_finetuned_run_adapter_loads_with_peft(name, finished_run):
    """The adapter folder of a real (tiny) run: peft's loader and RunInfo.load_model agree, merged or not."""
    from peft import PeftModel
    info = RunInfo.read(finished_run(name))
    tok = load_tokenizer(str(info.artifact_dir))
    base = build_classifier(ResolvedModel(info.model_name, info.model_path, info.pooling), info.label_names,
                            info.pooling, info.classifier_dropout, info.head_hidden, info.pool_layers)
    peft_logits = _logits(PeftModel.from_pretrained(base, info.artifact_dir), tok)
    torch.testing.assert_close(_logits(info.load_model(), tok), peft_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(info.load_model(merge=True), tok), peft_logits, rtol=0, atol=1e-5)
