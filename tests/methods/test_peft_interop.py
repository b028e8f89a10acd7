"""LoRA and IA3 adapter folders written by transferkit are plain PEFT folders: peft loads them as is."""
from __future__ import annotations

import json

import pytest
import torch

from transferkit import methods  # noqa: F401  (registers the methods)
from transferkit.config.finetune import MethodConfig
from transferkit.modeling.resolve import ResolvedModel, build_classifier, load_tokenizer
from transferkit.core.registry import METHODS
from transferkit.core.runs import RunInfo
from transferkit.inference.loading import load_run_model

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
    """The adapter folder of a real (tiny) run: peft's loader and load_run_model agree, merged or not."""
    from peft import PeftModel
    info = RunInfo.read(finished_run(name))
    tok = load_tokenizer(str(info.artifact_dir))
    base = build_classifier(ResolvedModel(info.model_name, info.model_path, info.pooling), info.label_names,
                            info.pooling, info.classifier_dropout, info.head_hidden, info.pool_layers)
    peft_logits = _logits(PeftModel.from_pretrained(base, info.artifact_dir), tok)
    torch.testing.assert_close(_logits(load_run_model(info), tok), peft_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(load_run_model(info, merge=True), tok), peft_logits, rtol=0, atol=1e-5)


def _stock_probs(adapter, auto_name, texts):
    """The sequence a peft user types, nothing of transferkit's called (its import registers the classes)."""
    import transformers
    from peft import PeftConfig, PeftModel
    from transformers import AutoTokenizer
    config = PeftConfig.from_pretrained(str(adapter))
    base = getattr(transformers, auto_name).from_pretrained(config.base_model_name_or_path)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    tok = AutoTokenizer.from_pretrained(str(adapter))
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, dim=-1), enc["attention_mask"]


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_stock_peft_sequence_loads_a_run(name, finished_run, tmp_path, monkeypatch):
    from transferkit.inference import Predictor
    run = finished_run(name)
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((run / "base").resolve())
    assert not list((run / "base").glob("*.safetensors"))  # the encoder's weights are not copied per run
    monkeypatch.chdir(tmp_path)  # an absolute path: it works from any working directory
    probs, _ = _stock_probs(run / "adapter", "AutoModelForSequenceClassification", TEXTS)
    ours = Predictor.from_run(run).predict_proba(TEXTS)
    torch.testing.assert_close(probs, torch.from_numpy(ours), rtol=0, atol=1e-5)


def test_stock_peft_sequence_without_transferkit(finished_run, tmp_path):
    """trust_remote_code=True where transferkit cannot be imported (as on a machine without it) gives the
    same probabilities: the base folder's own modeling file reads the encoder from its recorded path."""
    import subprocess
    import sys
    from transferkit.inference import Predictor
    run = finished_run("lora")
    script = f"""
import json, sys, torch
sys.modules["transferkit"] = None  # any import of transferkit now fails
from peft import PeftConfig, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
config = PeftConfig.from_pretrained({str(run / 'adapter')!r})
base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path, trust_remote_code=True)
model = PeftModel.from_pretrained(base, {str(run / 'adapter')!r}).eval()
tok = AutoTokenizer.from_pretrained({str(run / 'adapter')!r})
with torch.no_grad():
    p = torch.softmax(model(**tok({TEXTS!r}, padding=True, return_tensors="pt")).logits, -1)
print(json.dumps(p.tolist()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    probs = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(probs, torch.from_numpy(Predictor.from_run(run).predict_proba(TEXTS)), rtol=0, atol=1e-5)


def test_stock_peft_token_classification_loads_a_ner_run(tiny_model_dir, tmp_path):
    from transferkit import api
    from transferkit.core.runs import RunInfo
    from helpers import FILLER, POSITIVE
    lines = []
    for i in range(40):
        lines += [f"{w} O" for w in FILLER[i % 5:i % 5 + 4]] + [f"{POSITIVE[i % 8]} B-PER", ""]
    (tmp_path / "tags.conll").write_text("\n".join(lines), encoding="utf-8")
    run = api.finetune(task="ner", data=str(tmp_path / "tags.conll"), model=str(tiny_model_dir), method="lora",
                       max_steps=4, batch_size=8, max_length=32, output_dir=str(tmp_path / "run"),
                       **{"train.progress": False}).run_dir
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "TOKEN_CLS"
    texts = ["the movie good", "a film with superb acting"]
    probs, mask = _stock_probs(run / "adapter", "AutoModelForTokenClassification", texts)
    model = load_run_model(RunInfo.read(run), merge=True).eval()
    tok = load_tokenizer(str(run / "adapter"))
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = torch.softmax(model(**enc).logits, dim=-1)
    keep = mask.bool()
    torch.testing.assert_close(probs[keep], ours[keep], rtol=0, atol=1e-5)


@pytest.mark.parametrize("task", ["regression", "multilabel", "pair"])
def test_stock_peft_sequence_keeps_the_heads_settings(task, tiny_model_dir, tmp_path):
    """A LoRA run of a regression (output in the targets' units), multi-label (tuned thresholds in the head)
    or pair task (token types from the separator): the stock peft sequence gives the run's own outputs."""
    import transformers
    from peft import PeftConfig, PeftModel
    from transformers import AutoTokenizer

    from transferkit import api
    from transferkit.inference import Predictor
    from helpers import tiny_config, write_label_sets, write_pairs, write_scores
    write = {"regression": write_scores, "multilabel": write_label_sets, "pair": write_pairs}[task]
    data = write(tmp_path / ("d.jsonl" if task == "multilabel" else "d.csv"), 80)
    cfg = tiny_config(data, tiny_model_dir, tmp_path / "run", "lora", max_steps=10, lr=1e-2)
    cfg.task = task
    run = api.finetune(cfg).run_dir
    config = PeftConfig.from_pretrained(str(run / "adapter"))
    base = transformers.AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path)
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(run / "adapter"))
    inputs = [("a good and great film", "the movie")] if task == "pair" else ["a good and great film"]
    enc = tok(*zip(*inputs), return_tensors="pt") if task == "pair" else tok(inputs, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    ours = Predictor.from_run(run).predict(inputs)[0]
    if task == "regression":
        assert float(logits[0]) == pytest.approx(ours["values"]["score"], abs=1e-5)
    elif task == "multilabel":
        assert torch.sigmoid(logits).tolist() == pytest.approx(list(ours["probs"].values()), abs=1e-5)
    else:
        assert torch.softmax(logits, -1).tolist() == pytest.approx(list(ours["probs"].values()), abs=1e-5)
