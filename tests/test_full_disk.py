"""A real full disk at every kind of write: a small tmpfs mounted for the test (root only; skipped elsewhere, with
the reason). Each command says "the disk is full" in one line, exits 2, leaves no temporary file, and a run
resumes once there is space again."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from transferkit.cli.main import main

from helpers import make_sentences, write_csv


def _mount(folder: Path, kilobytes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or proc.returncode}): "
                    "the real-full-disk tests need root with mount rights")


@pytest.fixture
def small_disk(tmp_path):
    """mount(kilobytes) -> a folder on a fresh tmpfs of that size; unmounted after the test."""
    if getattr(os, "geteuid", lambda: -1)() != 0 or shutil.which("mount") is None:
        pytest.skip("the real-full-disk tests mount a tmpfs, which needs root")
    mounted = []

    def mount(kilobytes: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        _mount(folder, kilobytes)
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        done = subprocess.run(["umount", "-l", str(folder)], capture_output=True, text=True)
        assert done.returncode == 0, f"could not unmount {folder}: {done.stderr}"


def _full(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("transferkit:")]
    assert code == 2 and "Traceback" not in err, err
    assert lines and lines[-1].startswith("transferkit: error:") and "full" in lines[-1], err
    return lines[-1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))
                  or ".tmp." in p.name or p.name.startswith(".report-"))


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "sentiment.csv", make_sentences(200))


@pytest.mark.parametrize("method,kilobytes", [("full", 256), ("lora", 96)])
def test_checkpoints_on_a_full_disk_and_resume_when_space_is_back(capsys, small_disk, tiny_model_dir, data, tmp_path,
                                                                   method, kilobytes):
    disk = small_disk(kilobytes)
    run = disk / "run"
    argv = ["finetune", "--data", str(data), "--model", str(tiny_model_dir), "--method", method, "--max-steps",
            "20", "--output-dir", str(run), "train.checkpoint_steps=5", "train.progress=false"]
    _full(capsys, argv)
    assert _leftovers(run) == []
    last = run / "checkpoints" / "last" / "state.json"
    step = json.loads(last.read_text())["global_step"] if last.is_file() else 0
    _full(capsys, ["finetune", "--resume", str(run)])  # still full: the same one line
    assert _leftovers(run) == []
    moved = tmp_path / "roomy" / "run"  # space again: the run continues from its last good checkpoint
    shutil.copytree(run, moved)
    assert main(["finetune", "--resume", str(moved)]) == 0
    err = capsys.readouterr().err
    assert (moved / "metrics.json").is_file()
    if step:  # the disk filled after a checkpoint was whole: the resumed run starts there, not at step 0
        assert f"at step {step} of" in err, err


def test_export_evaluate_and_pretrain_on_a_full_disk(capsys, small_disk, finished_run, tiny_model_dir, tmp_path):
    run = str(finished_run("full"))
    disk = small_disk(48)
    _full(capsys, ["export", run, str(disk / "export")])
    assert not (disk / "export").exists() and _leftovers(disk) == []
    disk = small_disk(8)
    _full(capsys, ["evaluate", run, "--output-dir", str(disk / "report")])
    assert not (disk / "report").exists()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(t for t, _ in make_sentences(40, seed=s)) for s in range(20)))
    disk = small_disk(64)
    _full(capsys, ["pretrain", "--corpus", str(corpus), "--model", str(tiny_model_dir), "--max-steps", "4",
                   "--batch-size", "4", "--max-length", "32", "--output-dir", str(disk / "pre"), "train.progress=false"])
    assert _leftovers(disk) == []
