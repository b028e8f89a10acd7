"""Checkpoints: nothing is unpickled, a kill at any filesystem step still resumes bit-identically,
damaged folders are one-line errors, a full disk keeps the previous checkpoint, NaN stops the run."""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.training import checkpoint, loop as train
from transferkit.core.errors import TrainingDiverged, UserError
from transferkit.tasks.classify.task import classification_loss

from train_helpers import feature_trainer

FS_STEPS = ("_fs_mkdir", "_fs_rmtree", "_fs_rename", "_fs_save_tensors", "_fs_write_json", "_fs_fsync")
EVALS = [0.6, 0.9, 0.7, 0.8]  # best weights at steps 2 and 4
RUN = {"epochs": 1, "checkpoint_steps": 1, "eval_steps": 2}  # 4 steps: saves after 1, 2, 3 and the final one


class Killed(BaseException):
    """A kill: not an Exception, so no handler in the save path can catch it."""


class Reaper:
    """Counts the checkpoint module's filesystem steps while armed and kills the run at step `at`.

    how="before": the step does not happen. how="partial": a write leaves half a file, a folder
    removal removes one file; an atomic step (mkdir, rename, fsync) happens, then the kill.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int | None = None, how: str = "before") -> None:
        self.at, self.how, self.count, self.armed, self.steps = at, how, 0, False, []
        self.real = {name: getattr(checkpoint, name) for name in FS_STEPS}
        for name in FS_STEPS:
            monkeypatch.setattr(checkpoint, name, self._wrap(name))

    def arm(self, monkeypatch: pytest.MonkeyPatch, function: str, nth: int) -> None:
        """Count only during the `nth` call of checkpoint.`function` (save or save_best)."""
        real, calls = getattr(checkpoint, function), [0]

        def armed(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            self.armed = calls[0] == nth
            try:
                return real(*args, **kwargs)
            finally:
                self.armed = False
        monkeypatch.setattr(checkpoint, function, armed)

    def _wrap(self, name: str) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.count += 1
                self.steps.append(name)
                if self.count == self.at:
                    self.armed = False
                    self._kill(name, args, kwargs)
            return self.real[name](*args, **kwargs)
        return step

    def _kill(self, name: str, args: tuple, kwargs: dict) -> None:
        if self.how == "partial":
            if name == "_fs_save_tensors":
                self.real[name](*args, **kwargs)
                path = Path(args[1])
                path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
            elif name == "_fs_write_json":  # fs.write_json goes through a temporary name: it is the one cut short
                path = Path(args[0])
                text = json.dumps(args[1])
                path.with_name(f".{path.name}.{os.getpid()}.tmp").write_text(text[:len(text) // 2])
            elif name == "_fs_rmtree":
                files = sorted(p for p in Path(args[0]).iterdir())
                if files:
                    files[0].unlink()
            else:
                self.real[name](*args, **kwargs)
        raise Killed(f"{name} (step {self.count}, {self.how})")


def _final(trainer: train.Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _run(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    trainer = feature_trainer(run_dir, EVALS, **RUN)
    trainer.fit()
    return _final(trainer), (run_dir / "metrics.jsonl").read_text().splitlines()


def _resume(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    trainer = feature_trainer(run_dir, EVALS[_evals_done(run_dir):], **RUN)
    trainer.load_checkpoint()
    trainer.fit()
    return _final(trainer), (run_dir / "metrics.jsonl").read_text().splitlines()


def _evals_done(run_dir: Path) -> int:
    """Validation scores the resumed run no longer asks for (those of the checkpoint it continues)."""
    last = run_dir / "checkpoints" / "last"
    for folder in (last, last.with_name("last.old")):
        if checkpoint.problem(folder) is None:
            state = json.loads((folder / "state.json").read_text())
            return sum(1 for s in (2, 4) if s <= state["last_eval_step"])
    return 0


@pytest.mark.parametrize("function,nth", [("save", 1), ("save", 2), ("save_best", 2), ("save", 4)],
                         ids=["first-save", "mid-run-save", "best-weights", "final-save"])
def test_a_kill_at_any_step_resumes_bit_identically(function, nth, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "LOG_EVERY", 1)
    weights, lines = _run(tmp_path / "uninterrupted")
    dry = Reaper(monkeypatch)
    dry.arm(monkeypatch, function, nth)
    _run(tmp_path / "dry")
    steps = dry.steps
    assert len(steps) >= (3 if function == "save_best" else 12), steps
    monkeypatch.undo()
    monkeypatch.setattr(train, "LOG_EVERY", 1)
    cases = [(k, "before") for k in range(1, len(steps) + 1)]
    cases += [(k, "partial") for k, name in enumerate(steps, 1)
              if name in ("_fs_save_tensors", "_fs_write_json", "_fs_rmtree") or k == len(steps)]
    for k, how in cases:
        with monkeypatch.context() as mp:
            reaper = Reaper(mp, at=k, how=how)
            reaper.arm(mp, function, nth)
            run_dir = tmp_path / f"{k}-{how}"
            with pytest.raises(Killed):
                _run(run_dir)
        what = f"killed at step {k} ({steps[k - 1]}, {how})"
        got_weights, got_lines = _resume(run_dir)
        assert got_lines == lines, what
        for n, w in weights.items():
            torch.testing.assert_close(got_weights[n], w, rtol=0, atol=0, msg=what)
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.safetensors", "last"], what
        assert checkpoint.problem(run_dir / "checkpoints" / "last") is None, what


def test_a_kill_while_removing_stale_folders(tmp_path, monkeypatch):
    """A save that starts by removing a stale last.tmp and last.old can itself be killed there."""
    monkeypatch.setattr(train, "LOG_EVERY", 1)
    weights, lines = _run(tmp_path / "uninterrupted")
    for k, how in [(k, how) for k in (1, 2, 3, 4) for how in ("before", "partial")]:
        run_dir = tmp_path / f"{k}-{how}"
        with monkeypatch.context() as mp:  # first kill: the second save dies removing last.old
            reaper = Reaper(mp, at=18, how="partial")
            reaper.arm(mp, "save", 2)
            with pytest.raises(Killed):
                _run(run_dir)
            assert reaper.steps[-1] == "_fs_rmtree"
        ckpt = run_dir / "checkpoints"
        shutil.copytree(ckpt / "last", ckpt / "last.tmp")
        (ckpt / "last.tmp" / "manifest.json").unlink()
        assert (ckpt / "last.old").is_dir()
        with monkeypatch.context() as mp:  # second kill: the resumed run's first save, removing those
            reaper = Reaper(mp, at=k, how=how)
            reaper.arm(mp, "save", 1)
            with pytest.raises(Killed):
                _resume(run_dir)
            assert reaper.steps[:4] == ["_fs_mkdir", "_fs_rmtree", "_fs_rmtree", "_fs_fsync"][:len(reaper.steps)]
        got_weights, got_lines = _resume(run_dir)
        assert got_lines == lines, (k, how)
        for n, w in weights.items():
            torch.testing.assert_close(got_weights[n], w, rtol=0, atol=0, msg=f"{k} {how}")


def test_a_kill_while_loading_from_last_old(tmp_path, monkeypatch):
    """`last` damaged, `last.old` complete: load falls back, and a kill while it renames changes nothing."""
    feature_trainer(tmp_path, EVALS, epochs=1, checkpoint_steps=1, max_steps=2).fit()
    ckpt = tmp_path / "checkpoints"
    for k in range(1, 4):  # rmtree last, rename last.old -> last, fsync
        shutil.rmtree(ckpt / "last.old", ignore_errors=True)
        shutil.copytree(ckpt / "last", ckpt / "last.old")
        (ckpt / "last" / "trainable.safetensors").write_bytes(b"\0" * 64)
        with monkeypatch.context() as mp:
            reaper = Reaper(mp, at=k, how="partial")
            reaper.armed = True
            with pytest.raises(Killed):
                feature_trainer(tmp_path, [], epochs=1, max_steps=2).load_checkpoint()
        trainer = feature_trainer(tmp_path, [], epochs=1, max_steps=2)
        assert trainer.load_checkpoint() and trainer.state.global_step == 2
        assert checkpoint.problem(ckpt / "last") is None and not (ckpt / "last.old").exists()


# ---- the serializer ------------------------------------------------------------------------------

def test_serializer_round_trip():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    obj = {"optimizer": opt.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
           "odd": {"$key": [float("nan"), float("-inf"), (1, "a", None, True)]}}
    tensors: dict[str, torch.Tensor] = {}
    doc = json.loads(json.dumps(checkpoint.encode(obj, tensors), allow_nan=False))
    back = checkpoint.decode(doc, tensors, Path("x.json"))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list(back["optimizer"]["state"]) == [0]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["python"] == random.getstate()
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], np.random.get_state()[1])
    assert back["numpy"][1].dtype == np.uint32
    nan, inf, tup = back["odd"]["$key"]
    assert np.isnan(nan) and inf == float("-inf") and tup == (1, "a", None, True)
    for bad in ({1, 2}, object(), np.int64(3), {True: 1}, lambda: 0):
        with pytest.raises(TypeError, match="cannot store"):
            checkpoint.encode({"x": [bad]}, {})


@pytest.mark.parametrize("doc", [{"$pickle": "x"}, {"$tensor": "t9"}, {"$tuple": 3}, {"a": 1, "$tuple": []},
                                 {"$dict": [[1.5, 2]]}, {"$float": "1e999"}], ids=str)
def test_decode_refuses_anything_unexpected(doc):
    with pytest.raises(UserError, match=r"checkpoint file .*rng.json is damaged: unexpected"):
        checkpoint.decode({"ok": [doc]}, {"t0": torch.zeros(1)}, Path("run/last/rng.json"))


def _saved(tmp_path: Path, **kw: Any) -> train.Trainer:
    trainer = feature_trainer(tmp_path, EVALS, epochs=1, checkpoint_steps=1, **kw)
    trainer.fit()
    return trainer


def _rewrite_manifest(folder: Path) -> None:
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": checkpoint._sha256(folder / n)}
             for n in checkpoint.FILES}
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "files": files}))


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load called")
    monkeypatch.setattr(torch, "load", no_pickles)
    monkeypatch.setattr(pickle, "load", no_pickles)
    monkeypatch.setattr(pickle, "loads", no_pickles)
    _saved(tmp_path, max_steps=2)
    assert feature_trainer(tmp_path, [], epochs=1, max_steps=2).load_checkpoint()
    last = tmp_path / "checkpoints" / "last"
    assert not list(last.glob("*.pt"))
    # a planted rng.json that names something other than the serializer's own types
    doc = json.loads((last / "rng.json").read_text())
    doc["python"] = {"$pickle": "cos\nsystem\n(S'touch pwned'\ntR."}
    (last / "rng.json").write_text(json.dumps(doc))
    _rewrite_manifest(last)
    with pytest.raises(UserError, match=r"rng.json is damaged: unexpected"):
        feature_trainer(tmp_path, [], epochs=1, max_steps=2).load_checkpoint()


def test_old_pickle_checkpoints_are_refused(tmp_path):
    last = tmp_path / "checkpoints" / "last"
    last.mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))
    (last / "rng.pt").write_bytes(pickle.dumps(Planted()))
    (last / "optimizer.pt").write_bytes(pickle.dumps({}))
    (last / "state.json").write_text("{}")
    with pytest.raises(UserError, match="pickle files are not loaded") as e:
        feature_trainer(tmp_path, [], epochs=1).load_checkpoint()
    assert "\n" not in str(e.value) and not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "bad-json", "no-manifest"])
def test_a_damaged_checkpoint_is_a_one_line_error(damage, tmp_path):
    _saved(tmp_path, max_steps=2)
    last = tmp_path / "checkpoints" / "last"
    weights = last / "trainable.safetensors"
    name = {"truncated": weights, "zeroed": weights, "bad-json": last / "state.json",
            "no-manifest": last / "manifest.json"}[damage]
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "zeroed":
        weights.write_bytes(b"\0" * weights.stat().st_size)
    elif damage == "bad-json":
        (last / "state.json").write_text('{"global_step": ')
    else:
        (last / "manifest.json").unlink()
    with pytest.raises(UserError, match="cannot resume") as e:
        feature_trainer(tmp_path, [], epochs=1, max_steps=2).load_checkpoint()
    assert str(name) in str(e.value) and "\n" not in str(e.value)
    if damage == "bad-json":  # damaged but listed in a manifest that matches: still one line naming it
        _rewrite_manifest(last)
        with pytest.raises(UserError, match=r"state.json is damaged") as e:
            feature_trainer(tmp_path, [], epochs=1, max_steps=2).load_checkpoint()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("where", ["last", "last.old"])
def test_a_damaged_checkpoint_with_no_good_one_beside_it_is_refused_wherever_it_lies(tmp_path, where):
    """No save leaves `last.old` alone and damaged, so it is damage, refused in one line as in `last` (before, a
    damaged lone `last.old` restarted the run from step 0 without a word)."""
    _run(tmp_path)
    ckpt = tmp_path / "checkpoints"
    if where == "last.old":
        (ckpt / "last").rename(ckpt / "last.old")
    weights = ckpt / where / checkpoint.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-7] + b"damaged")
    with pytest.raises(UserError, match=f"cannot resume from .*{where}.*remove") as e:
        checkpoint.find(ckpt)
    assert "\n" not in str(e.value)


def test_a_stale_last_old_does_not_block_saves(tmp_path):
    for stale in ("last.old", "last.tmp"):
        (tmp_path / "checkpoints" / stale).mkdir(parents=True)
        (tmp_path / "checkpoints" / stale / "junk").write_text("x")
    _saved(tmp_path, max_steps=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.safetensors", "last"]


def test_restart_from_the_beginning_drops_old_records(tmp_path):
    """No usable checkpoint (a first save was killed): the records and best weights of that attempt go."""
    _, lines = _run(tmp_path / "a")
    b = tmp_path / "b"
    (b / "checkpoints" / "last.tmp").mkdir(parents=True)
    (b / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n")
    (b / "checkpoints" / "best.safetensors").write_bytes(b"stale")
    trainer = feature_trainer(b, EVALS, **RUN)
    assert not trainer.load_checkpoint()
    assert (b / "metrics.jsonl").read_text() == "" and not (b / "checkpoints").joinpath("best.safetensors").exists()
    trainer.fit()
    assert (b / "metrics.jsonl").read_text().splitlines() == lines


# ---- a full disk --------------------------------------------------------------------------------

def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real, calls = checkpoint.save_file, [0]

    def full(tensors, path, metadata=None):
        calls[0] += 1
        if calls[0] == 5:  # the trainable weights of the second checkpoint (after the first one and best)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)
    monkeypatch.setattr(checkpoint, "save_file", full)
    trainer = feature_trainer(tmp_path, EVALS, **RUN)
    with pytest.raises(UserError, match="disk is full") as e:
        trainer.fit()
    assert "last.tmp" in str(e.value)
    ckpt = tmp_path / "checkpoints"
    assert not (ckpt / "last.tmp").exists() and checkpoint.problem(ckpt / "last") is None
    assert json.loads((ckpt / "last" / "state.json").read_text())["global_step"] == 1


def test_a_full_disk_reported_by_safetensors_itself_is_one_line_too(tmp_path, monkeypatch):
    """safetensors raises its own SafetensorError (not an OSError) carrying "(os error 28)"; tokenizers a bare
    Exception: both are a full disk, said in one line, the temporary folder removed, the last checkpoint kept."""
    real, calls = checkpoint.save_file, [0]

    class SafetensorError(Exception):  # what safetensors' Rust core raises
        pass

    def full(tensors, path, metadata=None):
        calls[0] += 1
        if calls[0] == 5:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, metadata=metadata)
    monkeypatch.setattr(checkpoint, "save_file", full)
    trainer = feature_trainer(tmp_path, EVALS, **RUN)
    with pytest.raises(UserError, match="disk is full") as e:
        trainer.fit()
    assert "\n" not in str(e.value)
    ckpt = tmp_path / "checkpoints"
    assert not (ckpt / "last.tmp").exists() and checkpoint.problem(ckpt / "last") is None


def test_a_storage_error_is_recognised_however_it_is_wrapped():
    from transferkit.core import fs
    assert fs.is_storage_error(OSError(errno.EROFS, "Read-only file system"))
    assert fs.is_storage_error(Exception("No space left on device (os error 28)"))  # tokenizers
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("could not save the figure") from inner  # a library wrapping it
    except RuntimeError as outer:
        assert fs.is_storage_error(outer) and "quota" in str(fs.storage_error(outer, None))
    assert not fs.is_storage_error(Exception("shape mismatch (os error in the name only)"))
    assert not fs.is_storage_error(OSError(errno.ENOENT, "No such file"))


# ---- divergence ---------------------------------------------------------------------------------

def _nan_at_step_3(outputs, batch):
    loss, items, correct = classification_loss(outputs, batch)
    _nan_at_step_3.calls += 1
    return (loss * float("nan") if _nan_at_step_3.calls == 3 else loss), items, correct


def test_a_nan_loss_stops_the_run_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "LOG_EVERY", 1)
    _nan_at_step_3.calls = 0
    trainer = feature_trainer(tmp_path, EVALS, loss_fn=_nan_at_step_3, epochs=2, checkpoint_steps=2)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "\n" not in msg and "step 3" in msg and "nan" in msg and "learning rate 0.01" in msg
    assert "step 2" in msg and str(tmp_path / "checkpoints") in msg and "train.lr=" in msg
    last = tmp_path / "checkpoints" / "last"
    assert checkpoint.problem(last) is None
    assert json.loads((last / "state.json").read_text())["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(str(last / "trainable.safetensors")).values())
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and [json.loads(line)["step"] for line in text.splitlines()] == [1, 2]
    # the advice works: resuming with a lower learning rate continues from step 2 at that rate
    resumed = feature_trainer(tmp_path, EVALS, epochs=2, checkpoint_steps=2, lr=2.5e-3, head_lr=2.5e-3)
    assert resumed.load_checkpoint() and resumed.state.global_step == 2
    assert resumed.sched.get_last_lr()[0] == pytest.approx(2.5e-3 * (1 - 2 / 8))
    assert resumed.fit().global_step == 8


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0], ids=["clipped", "unclipped"])
def test_an_infinite_gradient_stops_the_run(max_grad_norm, tmp_path):
    def inf_grads(outputs, batch):
        outputs.logits.register_hook(lambda g: g * float("inf"))
        return classification_loss(outputs, batch)
    trainer = feature_trainer(tmp_path, EVALS, loss_fn=inf_grads, epochs=1, max_grad_norm=max_grad_norm)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(TrainingDiverged, match="step 1: the gradient norm is (inf|nan).*no checkpoint"):
        trainer.fit()
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, before[n]), n  # raised before optimizer.step


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = _saved(tmp_path, max_steps=2)
    with torch.no_grad():
        next(p for p in trainer.model.parameters() if p.requires_grad)[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="not finite"):
        trainer.save_checkpoint()
    assert json.loads((tmp_path / "checkpoints" / "last" / "state.json").read_text())["global_step"] == 2
