"""Hostile but realistic use, through the CLI: every case ends in one line and a known exit code.

Each case checks the exit code (2 for anything the user can fix), exactly one line on stderr, no
traceback, and that nothing was left behind (no run directory, no output file). The README's
reliability section counts these cases; `kinds()` below is what it reports.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from transferkit.cli import main

from helpers import expect_user_error, hold_after_first_checkpoint, make_sentences, wait_until, write_csv

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                    os.environ.get("PYTHONPATH", "")])}


def _fail(capsys, argv: list[str], *needles: str, after_work: bool = False) -> str:
    """Exit 2 with one error line. Before any work that is the only line on stderr; `after_work`
    (training had started) allows the run's progress lines before it."""
    if after_work:
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert "Traceback" not in err and lines[-1].startswith("transferkit: error: "), err
        assert sum(x.startswith("transferkit: error") for x in lines) == 1, err
        line = lines[-1]
    else:
        line = expect_user_error(capsys, argv)
    for n in needles:
        assert n in line, line
    return line


@pytest.fixture
def tiny(tiny_model_dir, sentiment_csv, tmp_path):
    """argv for a tiny finetune into tmp_path/run (2 steps)."""
    def argv(*extra: str, out: Path | None = None) -> list[str]:
        return ["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir),
                "--output-dir", str(out or tmp_path / "run"), "--max-steps", "2", *extra, "train.progress=false"]
    return argv


# ---- 1. non-finite and out-of-range numbers ---------------------------------------------------------

NON_FINITE_FINETUNE = [["--lr", "nan"], ["--lr", "inf"], ["--lr=-inf"], ["--epochs", "nan"], ["--epochs", "inf"],
                       ["train.warmup=nan"], ["train.weight_decay=inf"], ["train.head_lr=nan"],
                       ["train.max_grad_norm=nan"], ["train.layer_lr_decay=nan"], ["model.classifier_dropout=nan"],
                       ["--method", "lora", "method.lora_alpha=nan"], ["--method", "lora", "method.lora_dropout=inf"],
                       ["--method", "lora", "method.lora_plus_ratio=inf"], ["data.split=[nan,0.5,0.5]"],
                       ["--epochs", "1e9"], ["--seed", "-1"]]


@pytest.mark.parametrize("extra", NON_FINITE_FINETUNE, ids=lambda e: " ".join(e))
def test_finetune_refuses_non_finite(capsys, tiny, tmp_path, extra):
    _fail(capsys, tiny(*extra))
    assert not (tmp_path / "run").exists()


NON_FINITE_PRETRAIN = [["--lr", "nan"], ["--epochs", "inf"], ["mlm_probability=nan"], ["--heldout", "nan"],
                       ["mask_replace=inf"], ["train.warmup=nan"]]


@pytest.mark.parametrize("extra", NON_FINITE_PRETRAIN, ids=lambda e: " ".join(e))
def test_pretrain_refuses_non_finite(capsys, tmp_path, extra):
    corpus = tmp_path / "c.txt"
    corpus.write_text("One document here.\n\nAnother one there.\n", encoding="utf-8")
    _fail(capsys, ["pretrain", "--corpus", str(corpus), "--from-scratch", "--arch", "bert", "--train-tokenizer",
                   "--output-dir", str(tmp_path / "pt"), *extra])
    assert not (tmp_path / "pt").exists()


@pytest.mark.parametrize("extra", [["--temperature", "nan"], ["--temperature", "inf"], ["--top-p", "nan"],
                                   ["--top-k", "0"], ["--max-new-tokens", "0"]], ids=lambda e: " ".join(e))
def test_generate_refuses_bad_numbers_before_loading(capsys, tmp_path, extra):
    # the model does not exist: the options are checked first, so the error is about them
    line = _fail(capsys, ["generate", str(tmp_path / "no-model"), "Once", *extra])
    assert extra[0].lstrip("-").replace("-", "_") in line


def test_fill_mask_top_k_zero(capsys, tmp_path):
    _fail(capsys, ["fill-mask", str(tmp_path / "no-model"), "a [MASK] b", "--top-k", "0"], "top_k")


def test_compare_refuses_nan(capsys, tiny_model_dir, sentiment_csv, tmp_path):
    _fail(capsys, ["compare", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--methods", "full",
                   "--output-dir", str(tmp_path / "cmp"), "--lr", "nan"], "finite")
    assert not (tmp_path / "cmp").exists()


def test_predict_batch_size_zero(capsys, finished_run):
    _fail(capsys, ["predict", str(finished_run("full")), "good film", "--batch-size", "0"], "batch size")


def test_nan_loss_stops_the_run(capsys, tiny, tmp_path):
    """An lr that makes the loss overflow stops with one line; no metrics.json, a resumable run dir."""
    line = _fail(capsys, tiny("--lr", "1e30", "train.head_lr=1e30", "train.max_grad_norm=0",
                              "train.checkpoint_steps=1", out=tmp_path / "run"), after_work=True)
    assert "step" in line and ("nan" in line.lower() or "inf" in line.lower())
    assert not (tmp_path / "run" / "metrics.json").exists()
    for f in (tmp_path / "run").glob("*.jsonl"):
        _strict_json_lines(f)
    _fail(capsys, ["finetune", "--resume", str(tmp_path / "run"), "--data", "other.csv"], "cannot change")
    # the advice in the message is followed: the run resumes at the lower rate (its step-1 weights are
    # already ruined by the 1e30 step, so it stops again, now naming the new rate)
    line = _fail(capsys, ["finetune", "--resume", str(tmp_path / "run"), "train.lr=1e-3", "train.head_lr=1e-3"],
                 "learning rate 0.001", after_work=True)
    import yaml
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["lr"] == 0.001


# ---- 2. JSON the project writes is strict -------------------------------------------------------------

def _reject(token: str) -> None:
    raise AssertionError(f"non-standard JSON constant {token}")


def _strict_json_lines(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line in text.splitlines():
            json.loads(line, parse_constant=_reject)
    else:
        json.loads(text, parse_constant=_reject)


@pytest.mark.parametrize("method", ["full", "lora", "head_only"])
def test_run_json_files_are_strict(finished_run, method):
    files = [p for p in finished_run(method).rglob("*") if p.suffix in (".json", ".jsonl")]
    assert files
    for p in files:
        _strict_json_lines(p)


# ---- 3. damaged run directories -----------------------------------------------------------------------

def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _zero(p: Path) -> None:
    p.write_bytes(b"\0" * p.stat().st_size)


def _delete(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def _bad_json(p: Path) -> None:
    p.write_text('{"method": "lo', encoding="utf-8")


DAMAGE = {"truncated": _truncate, "zeroed": _zero, "deleted": _delete, "bad-json": _bad_json}
# (method, file inside the run, damages) for each artefact layout
DAMAGED_FILES = [
    ("full", "model/model.safetensors", ["truncated", "zeroed", "deleted"]),
    ("full", "model/config.json", ["zeroed", "bad-json", "deleted"]),
    ("full", "model", ["deleted"]),
    ("full", "run.json", ["truncated", "bad-json", "zeroed"]),
    ("lora", "adapter/adapter_model.safetensors", ["truncated", "zeroed", "deleted"]),
    ("lora", "adapter/adapter_config.json", ["bad-json", "deleted"]),
    ("lora", "adapter/tokenizer.json", ["truncated"]),
    ("adapter", "adapter/trainable.safetensors", ["truncated", "deleted"]),
    ("adapter", "adapter/method.json", ["bad-json", "deleted"]),
]
DAMAGE_CASES = [(m, f, d) for m, f, ds in DAMAGED_FILES for d in ds]


def _damaged_copy(finished_run, tmp_path: Path, method: str, rel: str, damage: str) -> Path:
    run = tmp_path / "damaged"
    shutil.copytree(finished_run(method), run)
    DAMAGE[damage](run / rel)
    return run


@pytest.mark.parametrize("method,rel,damage", DAMAGE_CASES, ids=[f"{m}-{f}-{d}" for m, f, d in DAMAGE_CASES])
def test_damaged_run_is_one_line(capsys, finished_run, tmp_path, sentiment_csv, method, rel, damage):
    run = _damaged_copy(finished_run, tmp_path, method, rel, damage)
    name = Path(rel).name
    commands = [["predict", str(run), "good film"],
                ["evaluate", str(run), "--data", str(sentiment_csv), "--output-dir", str(tmp_path / "rep")],
                ["export", str(run), str(tmp_path / "exported")]]
    if method == "lora":
        commands.append(["predict", "--adapter", f"a={run}", "a:good film"])
    for argv in commands:
        line = _fail(capsys, argv)
        assert name in line or "run.json" in line or str(run) in line, line
    assert not (tmp_path / "rep").exists() and not (tmp_path / "exported").exists()


def test_run_json_with_wrong_types(capsys, finished_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished_run("full"), run)
    info = json.loads((run / "run.json").read_text())
    for key, value in [("max_length", "long"), ("label_names", []), ("method", "no-such-method"),
                       ("method_options", {"lora_r": "x"})]:
        (run / "run.json").write_text(json.dumps({**info, key: value}))
        _fail(capsys, ["predict", str(run), "good film"], "run.json")


@pytest.fixture(scope="module")
def lm_folders(tmp_path_factory):
    """A tiny masked LM and a tiny causal LM folder, as `pretrain` writes them."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from helpers import make_tokenizer
    root = tmp_path_factory.mktemp("lms")
    mlm = BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64))
    mlm.save_pretrained(root / "mlm")
    make_tokenizer().save_pretrained(root / "mlm")
    clm = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2, n_positions=64))
    clm.save_pretrained(root / "clm")
    make_tokenizer().save_pretrained(root / "clm")
    return root


@pytest.mark.parametrize("kind", ["mlm", "clm"])
@pytest.mark.parametrize("damage", ["truncated", "zeroed", "bin-only", "config"])
def test_damaged_lm_folder(capsys, lm_folders, tmp_path, kind, damage):
    folder = tmp_path / kind
    shutil.copytree(lm_folders / kind, folder)
    if damage == "bin-only":
        import torch
        from safetensors.torch import load_file
        torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
        needle = "pytorch_model.bin"
    elif damage == "config":
        _bad_json(folder / "config.json")
        needle = "config.json"
    else:
        DAMAGE[damage](folder / "model.safetensors")
        needle = "model.safetensors"
    argv = (["fill-mask", str(folder), "good [MASK] film"] if kind == "mlm"
            else ["generate", str(folder), "good", "--max-new-tokens", "2"])
    _fail(capsys, argv, needle)


def test_bin_only_base_model_is_refused(capsys, tiny, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    base = tmp_path / "bin-base"
    shutil.copytree(tiny_model_dir, base)
    torch.save(load_file(str(base / "model.safetensors")), base / "pytorch_model.bin")
    (base / "model.safetensors").unlink()
    argv = tiny()
    argv[argv.index("--model") + 1] = str(base)
    _fail(capsys, argv, "pytorch_model.bin", "pickle")
    assert not (tmp_path / "run").exists()


# ---- 4. nothing from a run directory is unpickled -----------------------------------------------------

class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _unfinished(tiny, tmp_path: Path) -> Path:
    """A run killed after its last checkpoint: everything but metrics.json."""
    run = tmp_path / "run"
    assert main(tiny("train.checkpoint_steps=1", out=run)) == 0
    (run / "metrics.json").unlink()
    return run


def test_planted_pickle_never_runs(capsys, tiny, tmp_path):
    run = _unfinished(tiny, tmp_path)
    capsys.readouterr()
    marker = tmp_path / "pwned"
    last = run / "checkpoints" / "last"
    for name in ("rng.pt", "optimizer.pt"):
        (last / name).write_bytes(pickle.dumps(_Planted(marker)))
    main(["finetune", "--resume", str(run)])
    capsys.readouterr()
    assert not marker.exists()
    # a checkpoint in the old format (pickle files only) is refused by name, not loaded
    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoints")
    last.mkdir(parents=True)
    for name in ("rng.pt", "optimizer.pt"):
        (last / name).write_bytes(pickle.dumps(_Planted(marker)))
    (last / "state.json").write_text("{}")
    line = _fail(capsys, ["finetune", "--resume", str(run)], "pickle")
    assert not marker.exists(), line


def test_run_json_cannot_redirect_the_base(capsys, finished_run, tiny_model_dir, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(finished_run("lora"), run)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_model_dir, elsewhere)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "model_name": str(elsewhere), "model_path": str(elsewhere)}))
    _fail(capsys, ["predict", str(run), "good film"], str(elsewhere), "--base-model")
    assert main(["predict", str(run), "good film", "--base-model", str(elsewhere)]) == 0  # the user said so


# ---- 5. output locations ------------------------------------------------------------------------------

def test_output_dir_is_a_file(capsys, tiny, tmp_path):
    (tmp_path / "afile").write_text("keep")
    _fail(capsys, tiny(out=tmp_path / "afile"), "is a file")
    _fail(capsys, tiny(out=tmp_path / "afile" / "run"), "is a file")
    assert (tmp_path / "afile").read_text() == "keep"


def test_predict_output_in_missing_folder(capsys, finished_run, tmp_path):
    _fail(capsys, ["predict", str(finished_run("full")), "good", "--output", str(tmp_path / "no" / "p.jsonl")],
          "does not exist")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written in: a read-only tmpfs as root, else a chmod 555 folder."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


def test_read_only_outputs(capsys, tiny, finished_run, read_only_dir, tmp_path):
    _fail(capsys, tiny(out=read_only_dir / "run"), "not writable", "read-only")
    run = str(finished_run("full"))
    _fail(capsys, ["predict", run, "good", "--output", str(read_only_dir / "p.jsonl")], "not writable")
    _fail(capsys, ["evaluate", run, "--data", str(tmp_path / "x.csv"), "--output-dir", str(read_only_dir / "r")],
          "not writable")
    _fail(capsys, ["export", run, str(read_only_dir / "exp")], "not writable")
    assert not list(read_only_dir.iterdir())


def test_disk_full_while_finishing(capsys, tiny, tmp_path, monkeypatch):
    """The disk fills as metrics.json is written: one line, and the run resumes once space is back."""
    real = os.replace

    def full(src, dst, *a, **kw):
        if str(dst).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "replace", full)
    _fail(capsys, tiny(out=tmp_path / "run"), "disk is full", after_work=True)
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setattr(os, "replace", real)
    assert main(["finetune", "--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_the_interrupt_message_is_a_line_of_its_own_after_the_progress_bar(capsys, tiny, tmp_path, monkeypatch):
    from transferkit.training import loop
    real, calls = loop.Trainer._step, []

    def step(self, group):  # Ctrl-C at the third step, with the bar on screen
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, group)
    monkeypatch.setattr(loop.Trainer, "_step", step)
    argv = [a for a in tiny(out=tmp_path / "run") if a != "train.progress=false"] + ["--max-steps", "6"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "training:" in err  # the bar was drawn
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("transferkit: interrupted;") and "--resume" in last and "\r" not in last


def test_disk_full_during_evaluate_leaves_no_partial_report(capsys, finished_run, tmp_path, monkeypatch):
    """The disk fills as report.html is written: no evaluation.json or plots stay without it, and an existing
    report folder keeps what it had."""
    real = os.replace

    def full(src, dst, *a, **kw):
        if str(dst).endswith("report.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **kw)
    run = str(finished_run("full"))
    monkeypatch.setattr(os, "replace", full)
    _fail(capsys, ["evaluate", run, "--output-dir", str(tmp_path / "new")], "disk is full", after_work=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    _fail(capsys, ["evaluate", run, "--output-dir", str(tmp_path / "kept")], "disk is full", after_work=True)
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]
    monkeypatch.setattr(os, "replace", real)
    assert main(["evaluate", run, "--output-dir", str(tmp_path / "kept")]) == 0
    assert {"evaluation.json", "report.html", "notes.txt"} <= {p.name for p in (tmp_path / "kept").iterdir()}
    assert not list((tmp_path / "kept").glob(".report-*"))


def test_disk_full_inside_a_library_write_is_one_line(capsys, tiny, tmp_path, monkeypatch):
    """tokenizers raises a bare Exception("... (os error 28)") when the disk fills as it saves; matplotlib an
    OSError inside its own: either is "the disk is full", exit 2, and the run resumes once space is back."""
    from transformers import PreTrainedTokenizerBase
    real = PreTrainedTokenizerBase.save_pretrained

    def full(self, *args, **kwargs):
        raise Exception("No space left on device (os error 28)")
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
    _fail(capsys, tiny(out=tmp_path / "run"), "disk is full", after_work=True)
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", real)
    assert main(["finetune", "--resume", str(tmp_path / "run")]) == 0


# ---- 6. one run directory, one writer ---------------------------------------------------------------

def _holder(run: Path) -> subprocess.Popen:
    """Another process that holds the run directory's lock until killed (or its stdin closes: it never
    outlives the test, and no timer can let go of the lock while a slow test still needs it held)."""
    code = ("import sys; from transferkit.core.lock import RunLock; "
            f"RunLock({str(run)!r}, 'finetune').acquire(); print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_stale_lock_taken_over(capsys, tiny, tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        _fail(capsys, tiny(out=run), f"process {proc.pid}")
        assert [p.name for p in run.iterdir()] == [".lock"]
    finally:
        proc.kill()
        proc.wait()
    assert main(tiny(out=run)) == 0  # the lock of a dead process is stale
    capsys.readouterr()
    assert not (run / ".lock").exists() and (run / "metrics.json").is_file()


def test_resume_of_a_running_run_is_refused(capsys, tiny, tmp_path):
    run = _unfinished(tiny, tmp_path)
    capsys.readouterr()
    proc = _holder(run)
    try:
        _fail(capsys, ["finetune", "--resume", str(run)], f"process {proc.pid}")
    finally:
        proc.kill()
        proc.wait()


def test_evaluate_or_predict_on_a_run_still_training_names_the_process(capsys, tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        for argv in (["evaluate", str(run)], ["predict", str(run), "a good film"]):
            line = _fail(capsys, argv, f"being trained by process {proc.pid}")
            assert "--resume" not in line  # it was not interrupted
    finally:
        proc.kill()
        proc.wait()
    assert "--resume" in _fail(capsys, ["evaluate", str(run)], "not a finished transferkit run")


# ---- 7. interrupted runs --------------------------------------------------------------------------

def _tensors(run: Path) -> dict:
    from safetensors.torch import load_file
    out = {}
    for p in sorted((run / "model").glob("*.safetensors")):
        out.update(load_file(str(p)))
    return out


def test_sigterm_is_clean_and_resumes_to_the_same_model(capsys, tiny_model_dir, sentiment_csv, tmp_path):
    args = ["--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--epochs", "3", "--batch-size", "4",
            "--seed", "5", "train.checkpoint_steps=5", "train.progress=false"]
    ref = tmp_path / "ref"
    assert main(["finetune", *args, "--output-dir", str(ref)]) == 0
    run = tmp_path / "run"
    env, held = hold_after_first_checkpoint(tmp_path / "hold", ENV)  # the run cannot finish before SIGTERM
    proc = subprocess.Popen([sys.executable, "-m", "transferkit", "finetune", *args, "--output-dir", str(run)],
                            stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert wait_until(lambda: held.exists() or proc.poll() is not None, 600), "no checkpoint in 600 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert held.exists() and not (run / "metrics.json").exists()
    assert f"{run} continues with: transferkit finetune --resume {run}" in err and "Traceback" not in err
    assert not (run / ".lock").exists()
    capsys.readouterr()
    assert main(["finetune", "--resume", str(run)]) == 0
    a, b = _tensors(ref), _tensors(run)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    ra, rb = (json.loads((d / "metrics.json").read_text())["test"] for d in (ref, run))
    assert ra == rb


# ---- 8. what a run scores is what it was trained on --------------------------------------------------

def test_changed_data_file_before_evaluate(capsys, tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_sentences(80, seed=11))
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(data), "--model", str(tiny_model_dir), "--output-dir", str(run),
                 "--max-steps", "2", "train.progress=false"]) == 0
    assert main(["evaluate", str(run)]) == 0
    with data.open("a", encoding="utf-8") as f:
        f.write("a late extra row good,positive\n")
    capsys.readouterr()
    _fail(capsys, ["evaluate", str(run)], "d.csv", "changed", "--data")
    assert main(["evaluate", str(run), "--data", str(data)]) == 0


# ---- 9. smaller gaps ---------------------------------------------------------------------------------

def test_data_with_train_is_refused(capsys, tiny, sentiment_csv, tmp_path):
    _fail(capsys, tiny("--train", str(sentiment_csv), "--test", str(sentiment_csv)), "data.data")
    assert not (tmp_path / "run").exists()


def test_dotted_adapter_name(capsys, finished_run):
    _fail(capsys, ["predict", "--adapter", f"a.b={finished_run('lora')}", "a.b:good film"], "adapter name")


def test_empty_text_is_refused(capsys, finished_run):
    _fail(capsys, ["predict", str(finished_run("full")), ""], "empty")
    _fail(capsys, ["predict", "--adapter", f"a={finished_run('lora')}", "--use", "a", "   "], "empty")


def test_thousand_classes_error_is_short(capsys, tiny, tmp_path):
    rows = [(f"text number {i} {j}", f"class{i}") for i in range(1000) for j in range(2)]
    argv = tiny()
    argv[argv.index("--data") + 1] = str(write_csv(tmp_path / "many.csv", rows))
    line = _fail(capsys, argv)
    assert len(line) < 400, len(line)


def test_max_steps_beyond_the_epochs_stops_at_the_epochs(capsys, tiny_model_dir, sentiment_csv, tmp_path):
    run = tmp_path / "run"
    assert main(["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--output-dir", str(run),
                 "--epochs", "1", "--max-steps", "1000", "--batch-size", "16", "train.progress=false"]) == 0
    steps = json.loads((run / "metrics.json").read_text())["train"]["steps"]
    assert steps == 10  # 160 training rows / 16: one epoch, not 1000 steps


def test_integer_text_column(capsys, tiny, tmp_path):
    import pandas as pd
    path = tmp_path / "ints.parquet"
    pd.DataFrame({"text": list(range(40)), "label": ["a", "b"] * 20}).to_parquet(path)
    argv = tiny()
    argv[argv.index("--data") + 1] = str(path)
    _fail(capsys, argv, "text")


def test_unexpected_error_is_one_line_and_debug_shows_it(capsys, monkeypatch, finished_run):
    from transferkit import api

    def boom(*a, **kw):
        raise RuntimeError("something nobody expected")
    monkeypatch.setattr(api, "predict", boom)
    assert main(["predict", str(finished_run("full")), "good"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "internal error: RuntimeError: something nobody expected" in lines[0]
    assert "--debug" in lines[0]
    with pytest.raises(RuntimeError):
        main(["--debug", "predict", str(finished_run("full")), "good"])


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "bad-json"])
def test_damaged_pretrain_checkpoint_on_resume(capsys, tmp_path, damage):
    from transferkit import api
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(" ".join(t for t, _ in make_sentences(5, seed=i)) for i in range(30)), "utf-8")
    run = tmp_path / "pt"
    api.pretrain(objective="mlm", corpus=[str(corpus)], from_scratch=True, arch="bert", size="tiny",
                 train_tokenizer=True, vocab_size=200, max_length=32, output_dir=str(run), max_steps=4,
                 batch_size=8, **{"train.checkpoint_steps": 2, "train.progress": False})
    (run / "metrics.json").unlink()
    last = run / "checkpoints" / "last"
    target = last / ("state.json" if damage == "bad-json" else "trainable.safetensors")
    (_bad_json if damage == "bad-json" else DAMAGE[damage])(target)
    _fail(capsys, ["pretrain", "--resume", str(run)], str(last))


def test_nan_scores_are_never_printed(capsys, finished_run, monkeypatch):
    """A model whose outputs overflow on some input: an error naming the text, no NaN confidence."""
    from transferkit.inference import predictor as inference
    real = inference.row_outputs

    def overflowing(*a, **kw):
        out = [row.clone() for row in real(*a, **kw)]  # per input text, its logits
        out[1][:] = float("nan")
        return out
    run = finished_run("full")
    inference.Predictor.from_run(run)  # its backend is built and cached first: the error is the only line
    monkeypatch.setattr(inference, "row_outputs", overflowing)
    _fail(capsys, ["predict", str(run), "good film", "bad film"], "text 2", "non-finite")
    assert "nan" not in capsys.readouterr().out.lower()


def test_bad_option_found_while_building_leaves_no_run_dir(capsys, tiny, tmp_path):
    """target_modules is checked against the model only once it is built: still no run directory."""
    _fail(capsys, tiny("--method", "lora", "method.target_modules=no_such_layer"), "no_such_layer", after_work=True)
    assert not (tmp_path / "run").exists()
    given = tmp_path / "given"
    given.mkdir()  # a folder the user made stays, empty
    _fail(capsys, tiny("--method", "lora", "method.target_modules=no_such_layer", out=given), after_work=True)
    assert given.is_dir() and not list(given.iterdir())


def test_huge_integer_for_a_float_option(capsys, tiny, tmp_path):
    _fail(capsys, tiny("train.lr=1" + "0" * 400), "finite")


def test_empty_stale_lock_file_is_taken_over(capsys, tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("")  # a lock file whose process died before it wrote its record
    assert main(tiny(out=run)) == 0
    assert not (run / ".lock").exists()


@pytest.mark.parametrize("config", ["[1]", '{"model_type": ["bert"]}', "{}"])
def test_lm_config_of_the_wrong_shape(capsys, lm_folders, tmp_path, config):
    folder = tmp_path / "mlm"
    shutil.copytree(lm_folders / "mlm", folder)
    (folder / "config.json").write_text(config)
    _fail(capsys, ["fill-mask", str(folder), "good [MASK] film"], "config.json")
