"""Several processes training one run: two gloo processes on the tiny model give the metrics of one
process with the same global batch, resume a run that one process started, write the run directory
once, and gather evaluation rows exactly once however unevenly they divide."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferkit import api
from transferkit.training import distributed
from transferkit.core.errors import UserError

from helpers import (expect_user_error, hold_after_first_checkpoint, interrupted_at_step, logged, make_sentences,
                     make_tokenizer, tiny_bert_config, tiny_config, torchrun, wait_until, write_conll)

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def still_model(tmp_path_factory) -> Path:
    """The tiny BERT without dropout: one process and two then compute the same gradients."""
    import torch
    from transformers import BertModel
    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(dropout=0.0)).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _cfg(data, model, out, method="full", **train_kw):
    cfg = tiny_config(data, model, out, method, epochs=2, lr=3e-3, early_stopping_patience=0, checkpoint_steps=5,
                      **train_kw)
    cfg.model.classifier_dropout = 0.0
    return cfg


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if "checkpoints" not in p.parts)


def _same_run(a: dict, b: dict) -> None:
    assert b["train"]["steps"] == a["train"]["steps"] and b["train"]["samples"] == a["train"]["samples"]
    for split in ("test", "validation"):
        for key, value in a[split].items():
            if isinstance(value, float):
                assert b[split][key] == pytest.approx(value, abs=1e-4), (split, key)


@pytest.fixture(scope="module")
def one_and_two(still_model, sentiment_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("processes")
    one = api.finetune(_cfg(sentiment_csv, still_model, tmp / "one"))
    with logged() as logs:
        two = api.finetune(_cfg(sentiment_csv, still_model, tmp / "two"), processes=2)
    return one, two, logs


def test_two_processes_train_the_run_one_process_trains(one_and_two):
    one, two, logs = one_and_two
    assert any("training with 2 processes (torchrun, gloo)" in m for m in logs)
    _same_run(one.metrics, two.metrics)
    assert two.metrics == _metrics(two.run_dir)


def test_rank_zero_alone_writes_the_run_directory(one_and_two):
    one, two, _ = one_and_two
    assert _files(two.run_dir) == _files(one.run_dir)  # nothing twice, nothing left half-written
    records = [json.loads(line) for line in (two.run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (one.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["type"], r["step"]) for r in records] == [(r["type"], r["step"]) for r in expected]
    assert [r["lr"] for r in records if r["type"] == "train"] == [r["lr"] for r in expected if r["type"] == "train"]


def test_a_run_resumes_with_another_process_count(still_model, sentiment_csv, tmp_path, one_and_two):
    """Interrupted with one process after its step-5 checkpoint, finished by two: the uninterrupted run's metrics."""
    one, _, _ = one_and_two
    run = tmp_path / "run"
    with interrupted_at_step(8):
        api.finetune(_cfg(sentiment_csv, still_model, run))
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["global_step"] == 5
    resumed = api.finetune(resume=run, processes=2)
    _same_run(one.metrics, resumed.metrics)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_trains_the_run_one_process_trains(still_model, sentiment_csv, tmp_path, capfd, caplog, method):
    """train.parallel=fsdp: a sharded copy trains; metrics, files and whole-tensor checkpoints as one process's."""
    def cfg(out):
        c = _cfg(sentiment_csv, still_model, out, method)
        c.train.parallel = "fsdp"
        if method == "lora":
            c.method.options.lora_dropout = 0.0  # dropout draws differ between one stream and two
        return c
    one = api.finetune(cfg(tmp_path / "one"))
    capfd.readouterr()
    caplog.set_level(logging.INFO, logger="transferkit")  # the processes log at the caller's level
    two = api.finetune(cfg(tmp_path / "two"), processes=2)
    assert "2 processes (fsdp)" in capfd.readouterr().err  # rank 0's log: the run was sharded
    _same_run(one.metrics, two.metrics)
    assert two.metrics["train"]["best_step"] == one.metrics["train"]["best_step"]
    assert _files(two.run_dir) == _files(one.run_dir)
    for name in ("trainable.safetensors", "optimizer.safetensors"):  # whole tensors: any process count resumes
        a, b = (_tensors(r.run_dir / "checkpoints" / "last" / name) for r in (one, two))
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
        assert all(torch_close(a[k], b[k]) for k in a), name


def torch_close(a, b) -> bool:
    import torch
    return bool(torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3))


def test_fsdp_resumes_a_run_one_process_started(still_model, sentiment_csv, tmp_path, one_and_two):
    one, _, _ = one_and_two
    run = tmp_path / "run"
    cfg = _cfg(sentiment_csv, still_model, run)
    cfg.train.parallel = "fsdp"  # ignored by one process; the two that resume shard the run
    with interrupted_at_step(8):
        api.finetune(cfg)
    resumed = api.finetune(resume=run, processes=2)
    _same_run(one.metrics, resumed.metrics)


def test_fsdp_with_mixup_is_refused(sentiment_csv, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="mixup"):
        api.finetune(data=str(sentiment_csv), model=str(tiny_model_dir), output_dir=str(tmp_path / "r"),
                     augment="mixup:alpha=0.4", **{"train.parallel": "fsdp"})
    with pytest.raises(UserError, match="train.parallel must be ddp or fsdp"):
        api.finetune(data=str(sentiment_csv), model=str(tiny_model_dir), output_dir=str(tmp_path / "r"),
                     **{"train.parallel": "zero3"})


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_tagger_trains_with_two_processes(still_model, tmp_path, parallel):
    conll = write_conll(tmp_path / "tags.conll", 120)
    kw = dict(task="ner", data=str(conll), model=str(still_model), method="lora", max_steps=6, batch_size=16,
              **{"train.progress": False, "model.classifier_dropout": 0.0, "train.parallel": parallel})
    one = api.finetune(output_dir=str(tmp_path / "one"), **kw)
    two = api.finetune(output_dir=str(tmp_path / "two"), processes=2, **kw)
    assert two.metrics["train"]["steps"] == one.metrics["train"]["steps"] == 6
    assert two.metrics["test"]["token_accuracy"] == pytest.approx(one.metrics["test"]["token_accuracy"], abs=1e-6)
    assert two.metrics["test"]["f1"] == pytest.approx(one.metrics["test"]["f1"], abs=1e-6)


def test_evaluation_rows_are_gathered_exactly_once(tmp_path):
    """7 rows over 2 processes (4 and 3), in batches of 2: every row once, in order, as one process computes them."""
    out = tmp_path / "gathered.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun([str(HERE / "distributed_worker.py"), str(out), "7"], env, timeout=300)
    seen = json.loads(out.read_text())
    assert seen["world"] == 2 and seen["rows_computed"] == 7 and seen["shape"] == [7, 2]
    assert seen["logits_equal"] and seen["tags_equal"]
    assert seen["splits"] == [[[5], 1.0], [[5], 0.0]]  # a one-row batch: rank 1 stands in with weight 0


def test_alone_nothing_is_split():
    assert not distributed.active() and distributed.split_batch([3, 4, 5]) == ([3, 4, 5], 1.0)
    with distributed.sharded():
        assert distributed.my_rows(3) == [0, 1, 2]
        assert distributed.gather_rows(3, [2, 0, 1], ["c", "a", "b"]) == ["a", "b", "c"]
    assert distributed.reduce_sum([1, 2.5], "cpu") == [1.0, 2.5]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "2", True, 10_000])
def test_processes_is_checked(bad):
    with pytest.raises(UserError, match="processes must be a whole number"):
        distributed.check_processes(bad)


def test_processes_under_a_launcher_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="inside a launcher that already started 2 processes"):
        distributed.check_processes(2)


def test_cli_processes_errors_are_one_line(capsys, sentiment_csv, tiny_model_dir, tmp_path):
    line = expect_user_error(capsys, ["finetune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir),
                                      "--processes", "0", "--output-dir", str(tmp_path / "run")])
    assert "processes must be a whole number from 1 to 256, got 0" in line
    line = expect_user_error(capsys, ["finetune", "--data", str(tmp_path / "missing.csv"), "--model",
                                      str(tiny_model_dir), "--processes", "2"])
    assert "missing.csv" in line  # checked before any process starts
    line = expect_user_error(capsys, ["finetune", "--resume", str(tmp_path / "nothing"), "--processes", "2"])
    assert "nothing" in line
    assert not (tmp_path / "run").exists()


def _descendants(pid: int) -> list[int]:
    """The benchmark's process-tree walk (benchmarks/distributed.py), one copy for both."""
    import importlib.util
    benchmarks = HERE.parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))  # for its `_common`
    spec = importlib.util.spec_from_file_location("distributed_benchmark", benchmarks / "distributed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.descendants(pid)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_an_interrupt_stops_every_process_and_the_run_resumes(tiny_model_dir, sentiment_csv, tmp_path):
    """An interrupt of the launching process must stop torchrun's workers too (they run in sessions of
    their own, out of reach of the signal), free the lock, and leave a run that two processes resume
    to the uninterrupted run's result: each process's random generators are in the checkpoint, so
    dropout (on in this model) draws what it would have drawn."""
    import signal
    opts = ["--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--method", "full", "--epochs", "4",
            "--batch-size", "16", "--lr", "3e-3", "--processes", "2", "train.progress=false",
            "train.checkpoint_steps=5", "train.early_stopping_patience=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "transferkit", "finetune", *opts, "--output-dir", str(whole)], check=True,
                   env=env, capture_output=True, timeout=600)
    run, log = tmp_path / "run", tmp_path / "interrupted.log"
    held_env, held = hold_after_first_checkpoint(tmp_path / "hold", env)  # the run cannot finish first
    # SIGINT must reach the launcher as an interrupt: a process started with SIGINT ignored (a background
    # job of a non-interactive shell, as CI may run `make test`) ignores it too, and Python keeps that.
    # A handler set here reverts to the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "transferkit", "finetune", *opts, "--output-dir", str(run)],
                                    start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=held_env)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert wait_until(lambda: held.exists() or proc.poll() is not None, 600), "no checkpoint in 600 s"
        assert proc.poll() is None, (f"the run exited ({proc.returncode}) instead of holding after its first "
                                     f"checkpoint:\n{log.read_text()[-3000:]}")
        assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["global_step"] == 5
        workers = _descendants(proc.pid)
        assert len(workers) >= 3  # torchrun and its two workers
        os.kill(proc.pid, signal.SIGINT)  # the launching process alone, as a notebook's interrupt does
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:  # a failed assertion above: leave nothing running
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
    # the launcher waits for torchrun, which reaps its workers; polled, not a fixed sleep, with a bound against a hang
    assert wait_until(lambda: not any(_running(p) for p in workers), 60), "processes left running after the interrupt"
    assert not (run / "metrics.json").exists(), "the run finished before the interrupt stopped it"
    resumed = api.finetune(resume=run, processes=2)
    a = _metrics(whole)
    assert resumed.metrics["train"]["steps"] == a["train"]["steps"] == 40  # 160 rows / 16 x 4 epochs
    for split in ("test", "validation"):
        assert resumed.metrics[split] == pytest.approx(a[split], abs=1e-6), split


def test_pretraining_runs_under_torchrun(tmp_path):
    """`torchrun -m transferkit pretrain` as a user starts it: rank 0 writes one run directory; the
    held-out loss is near one process's (the masking draws differ per process, so not to the digit)."""
    rows = [t for t, _ in make_sentences(300, seed=3)]
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(" ".join(s.capitalize() + "." for s in rows[i:i + 5]) for i in range(0, 300, 5)),
                      encoding="utf-8")
    args = ["pretrain", "--objective", "mlm", "--corpus", str(corpus), "--from-scratch", "--arch", "bert", "--size",
            "tiny", "--train-tokenizer", "--vocab-size", "300", "--max-length", "48", "--lr", "2e-3",
            "--max-steps", "20", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "transferkit", *args, "--output-dir", str(tmp_path / "one")], env=env,
                   check=True, capture_output=True, timeout=600)
    two = torchrun(["-m", "transferkit", *args, "--output-dir", str(tmp_path / "two")], env)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert b["train"]["steps"] == a["train"]["steps"] == 20
    assert abs(b["heldout"]["loss"] - a["heldout"]["loss"]) < 0.3
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert two.stderr.count("model: ") == 1  # rank 0 alone logs
