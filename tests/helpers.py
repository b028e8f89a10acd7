"""Test helpers: the synthetic sentiment corpus, the tiny BERT config and tokenizer, tiny run configs."""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

POSITIVE = ["good", "great", "fine", "excellent", "wonderful", "lovely", "superb", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "poor", "dreadful", "weak"]
FILLER = ["the", "movie", "film", "was", "is", "a", "plot", "story", "acting", "really", "very", "quite",
          "and", "with", "this", "that", "cast", "ending", "music", "script", "scenes", "director"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + POSITIVE + NEGATIVE + FILLER
VOCAB_SIZE = 128  # the embedding table is larger than the vocabulary, like real checkpoints
LABELS = ["negative", "positive"]
RUN_EPOCHS = {"head_only": 10}  # epochs of the shared runs: over cached features they are nearly free


def make_sentences(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` distinct (text, label) pairs: filler words plus one or two sentiment words."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        label = LABELS[len(rows) % 2]
        words = rng.choices(FILLER, k=rng.randint(3, 14))
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def tagged_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Filler words with a PER name (one or two words from POSITIVE) and sometimes a LOC (from NEGATIVE)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [(w, "O") for w in rng.choices(FILLER, k=rng.randint(3, 9))]
        name = [(w, "I-PER") for w in rng.sample(POSITIVE, rng.randint(1, 2))]
        name[0] = (name[0][0], "B-PER")
        at = rng.randint(0, len(words))
        if rng.random() < 0.5:  # a place; the name goes in afterwards as one block, so never around it
            words.insert(rng.randint(0, at) if rng.random() < 0.5 else rng.randint(at, len(words)),
                         (rng.choice(NEGATIVE), "B-LOC"))
        words[at:at] = name
        out.append(words)
    return out


def write_conll(path: Path, n: int, seed: int = 0) -> Path:
    """A CoNLL file of `n` tagged sentences (`tagged_sentences`)."""
    lines = ["-DOCSTART- O", ""]
    for sent in tagged_sentences(n, seed):
        lines += [f"{w} X {t}" for w, t in sent] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[tuple[Any, Any]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """A text,text_pair,label CSV of `n` pairs: "same" when both sentences share a sentiment, else "different"."""
    rows = make_sentences(2 * n, seed)
    rng = random.Random(seed)
    pairs = [(a, b, "same" if ya == yb else "different")
             for (a, ya), (b, yb) in zip(rows[:n], rng.sample(rows[n:], n))]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(("text", "text_pair", "label"))
        w.writerows(pairs)
    return path


def write_scores(path: Path, n: int, seed: int = 0) -> Path:
    """A text,score CSV: a rating near +2 for a positive sentence and -2 for a negative one, with noise."""
    rng = random.Random(seed)
    rows = [(t, round((2.0 if y == "positive" else -2.0) + rng.gauss(0, 0.5), 3)) for t, y in make_sentences(n, seed)]
    return write_csv(path, rows, ("text", "score"))


def write_label_sets(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL file of `n` {"text", "labels"} rows: the sentence's sentiment, "long" for more than 8 words
    (so a row has one or two labels)."""
    with path.open("w", encoding="utf-8") as f:
        for text, label in make_sentences(n, seed):
            labels = [label] + (["long"] if len(text.split()) > 8 else [])
            f.write(json.dumps({"text": text, "labels": labels}) + "\n")
    return path


def write_prompts(path: Path, n: int, seed: int = 0) -> Path:
    """Generation rows (JSONL prompt/completion): a review of sentiment and filler words -> "great film" or
    "dull film"."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            good = rng.random() < 0.5
            words = [rng.choice(POSITIVE if good else NEGATIVE) if rng.random() < 0.4 else rng.choice(FILLER)
                     for _ in range(rng.randint(3, 12))] + [rng.choice(POSITIVE if good else NEGATIVE)]
            rng.shuffle(words)
            f.write(json.dumps({"prompt": " ".join(words), "completion": "great film" if good else "dull film"}) + "\n")
    return path


def tiny_bert_config(dropout: float = 0.1) -> Any:
    from transformers import BertConfig
    return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


def save_tiny_bert(folder: Path, hidden: int, seed: int) -> Path:
    """A tiny random BERT of width `hidden` (weights from `seed`) with the test tokenizer, saved in `folder`."""
    import torch
    from transformers import BertModel
    cfg = tiny_bert_config()
    cfg.hidden_size, cfg.intermediate_size = hidden, 2 * hidden
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def tiny_classifier(folder: Path, head_hidden: int = 0) -> Any:
    """A transferkit classifier (mean pooling, the LABELS) over the encoder saved in `folder`."""
    from transferkit.modeling.resolve import ResolvedModel, build_classifier
    return build_classifier(ResolvedModel("tiny", str(folder), "mean"), LABELS, "mean", 0.1, head_hidden)


def eval_logits(model: Any, batch: dict) -> Any:
    """The model's logits on a collated batch, in eval mode and without gradients."""
    import torch
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()


@dataclass(frozen=True)
class Family:
    """An encoder family's tiny test model: its config class, the settings that make it tiny over the test
    corpus, and its tokenizer ("wordpiece": `make_tokenizer`; "bpe": RoBERTa's byte-level BPE; "unigram":
    XLM-R's sentencepiece-style Metaspace unigram)."""

    config: str
    settings: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "wordpiece"


# One row per encoder family (a new family costs one row). Hidden 32, 2 layers; RoBERTa and XLM-R keep their
# checkpoints' single token type and padding id 1; DeBERTa-v2 is configured as DeBERTa-v3 (relative attention,
# no absolute positions); ModernBERT mixes global and sliding-window layers (a window shorter than the texts).
FAMILIES: dict[str, Family] = {
    "bert": Family("BertConfig"),
    "roberta": Family("RobertaConfig", {"type_vocab_size": 1}, "bpe"),
    "xlm-roberta": Family("XLMRobertaConfig", {"type_vocab_size": 1}, "unigram"),
    "electra": Family("ElectraConfig", {"embedding_size": 16}),
    "distilbert": Family("DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
    "mpnet": Family("MPNetConfig"),  # its relative bias reads 32 buckets whatever the config says: kept
    "deberta-v2": Family("DebertaV2Config", {"relative_attention": True, "position_biased_input": False,
                                             "pos_att_type": ["p2c", "c2p"], "position_buckets": 16,
                                             "norm_rel_ebd": "layer_norm", "share_att_key": True}),
    "modernbert": Family("ModernBertConfig", {"global_attn_every_n_layers": 2, "local_attention": 8}),
}
_SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def make_family_tokenizer(kind: str) -> Any:
    """The tokenizer of a FAMILIES row, built offline from the test corpus."""
    if kind == "wordpiece":
        return make_tokenizer()
    words = sorted({w for t, _ in make_sentences(200) for w in t.split()})
    if kind == "unigram":  # whole corpus words, and single characters for any other word (a name: several pieces)
        from transformers import XLMRobertaTokenizer
        chars = sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?"))
        vocab = [(s, 0.0) for s in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
        vocab += [("\u2581" + w, -5.0) for w in words] + [("\u2581", -8.0)] + [(c, -10.0) for c in chars]
        return XLMRobertaTokenizer(vocab=vocab, model_max_length=64)
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([t for t, _ in make_sentences(200)], trainer)
    model = json.loads(backend.to_str())["model"]
    return RobertaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], model_max_length=64)


def tiny_family_config(family: str, tokenizer: Any) -> Any:
    """A tiny config of `family` (a FAMILIES row) over `tokenizer`'s vocabulary and special tokens."""
    import transformers
    row = FAMILIES[family]
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
           "eos_token_id": tokenizer.sep_token_id}
    if family == "modernbert":
        ids.update(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    sizes = {} if family == "distilbert" else _SIZES  # DistilBERT names its sizes itself
    return getattr(transformers, row.config)(vocab_size=max(VOCAB_SIZE, len(tokenizer)), max_position_embeddings=128,
                                             **sizes, **ids, **row.settings)


def make_tokenizer() -> Any:
    from transformers import BertTokenizer
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True, model_max_length=64)
    return tok


def tiny_config(data: Path, model_dir: Path, output_dir: Path | None, method: str = "full", **train: Any) -> Any:
    """A RunConfig for a fast run of the tiny model on a CSV."""
    from transferkit.config.finetune import RunConfig
    cfg = RunConfig()
    cfg.data.data = str(data)
    cfg.model.name = str(model_dir)
    cfg.method.name = method
    cfg.train.epochs = 1
    cfg.train.batch_size = 16
    cfg.train.progress = False
    cfg.output_dir = str(output_dir) if output_dir is not None else None
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@contextlib.contextmanager
def interrupted_at_step(n: int) -> Iterator[None]:
    """Inside: the n-th optimizer step raises KeyboardInterrupt (a Ctrl-C mid-run), which must end the block."""
    import pytest

    from transferkit.training import loop as train
    real_step, calls = train.Trainer._step, {"n": 0}

    def step(self: Any, group: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_step(self, group)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train.Trainer, "_step", step)
        with pytest.raises(KeyboardInterrupt):
            yield


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def logged(level: int = logging.INFO) -> Iterator[list[str]]:
    """transferkit's messages logged inside the block: for a fixture shared by several tests, where pytest's
    caplog (one test's) cannot reach."""
    logger, lines = logging.getLogger("transferkit"), []
    handler, before = _Lines(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


# The sitecustomize.py that `hold_after_first_checkpoint` puts first on a run's PYTHONPATH. In a process
# that imports transferkit.training.loop it wraps `Trainer.save_checkpoint`: the first checkpoint is followed by
# a wait that only a signal ends (SIGINT raises KeyboardInterrupt, and so does SIGTERM under the CLI), and
# the main process creates the marker file once that checkpoint is complete. Other processes (torchrun,
# a launcher that trains nothing) import nothing more than they would.
_HOLD_SITECUSTOMIZE = """
import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

MARKER = os.environ.get("TRANSFERKIT_TEST_HOLD_MARKER")


def _hold_after_first_checkpoint(train):
    import time
    from pathlib import Path
    save = train.Trainer.save_checkpoint

    def save_then_hold(self):
        save(self)
        if self.acc.is_main_process:
            Path(MARKER).touch()
        end = time.monotonic() + 900  # bounded: no process outlives a test that died before its signal
        while time.monotonic() < end:
            time.sleep(0.05)
        raise SystemExit("held 900 s after the first checkpoint and no signal came")
    train.Trainer.save_checkpoint = save_then_hold


class _OnImport(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transferkit.training.loop":
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _hold_after_first_checkpoint(module)
            spec.loader.exec_module = exec_module
        return spec


if MARKER:
    sys.meta_path.insert(0, _OnImport())
"""


def hold_after_first_checkpoint(folder: Path, env: dict) -> tuple[dict, Path]:
    """`env` for a `transferkit` command that cannot finish before the test interrupts it, and the
    marker file that says when to: after the run's first checkpoint its training processes wait
    until a signal stops them, and the main one creates the marker once that checkpoint is complete.

    A test that polls for a checkpoint and then signals races the end of the run: on a loaded machine
    the run can finish first. Waiting for the marker cannot lose that race, and needs no fixed sleep.
    The wait comes from outside the code under test (a sitecustomize.py in `folder`, first on the
    PYTHONPATH that the command and every process it starts inherit), so transferkit has no hook for it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_HOLD_SITECUSTOMIZE, encoding="utf-8")
    marker = folder / "held"
    path = [str(folder), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "TRANSFERKIT_TEST_HOLD_MARKER": str(marker), "PYTHONPATH": os.pathsep.join(path)}, marker


def wait_until(done: Callable[[], Any], seconds: float) -> bool:
    """Poll `done()` until it is true (True) or `seconds` pass (False): a bound against a hang, not a
    guess at how long something takes."""
    import time
    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def expect_user_error(capsys: Any, argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2 and exactly one stderr line; returns that line."""
    from transferkit.cli import main
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("transferkit: error: ")
    return lines[0]


# What a launch that never reached the test's code says: the rendezvous or gloo's sockets failed
# (a port another process took between torchrun picking it and the workers binding it, a reset peer).
_NETWORK_FAILURES = ("DistNetworkError", "RendezvousConnectionError", "RendezvousTimeoutError", "connectFullMesh",
                     "Address already in use", "EADDRINUSE", "Connection reset by peer", "Connection refused",
                     "Broken pipe", "TCPStore", "timed out")


def torchrun(args: list[str], env: dict, processes: int = 2, timeout: int = 600) -> Any:
    """`python -m torch.distributed.run --standalone --nproc-per-node N ARGS`, as a user starts it.

    A failure shows the launcher's output in the assertion (a bare CalledProcessError hides it). A
    launch whose sockets failed before the workers ran is tried once more: that is the machine's ports,
    not the code under test; any other failure fails the test at once."""
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *args]
    for attempt in (1, 2):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0 or attempt == 2 or not any(s in done.stderr for s in _NETWORK_FAILURES):
            break
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def head_flipped(write_graph: Callable[..., None]) -> Callable[..., None]:
    """A graph writer that traces, instead of the model it is given, a copy whose classifier weights are scaled
    by -3: a graph that must fail the check against the PyTorch model."""
    def write(model: Any, path: Path, example: dict, per_token: bool) -> None:
        import torch
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.classifier.weight.mul_(-3.0)
        write_graph(other, path, example, per_token)
    return write
