"""Progress lines through Python's logging: a real run's lines reach `logging` (caplog) from the Python API,
the CLI prints the same lines on stderr (`--quiet`: warnings only, `--verbose`: debug too), nothing is shown
unasked, and the helpers of `core.logs` (held, quiet, child_flags, stderr_while) keep what they promise."""
from __future__ import annotations

import logging

import pytest

import transferkit
from transferkit import api, cli
from transferkit.core import logs

from helpers import make_sentences, tiny_config, write_csv

ROOT = logging.getLogger("transferkit")


@pytest.fixture
def repeats_csv(tmp_path):
    """Sentences whose repeats land in validation and test as well as training: a run warns about them."""
    rows = make_sentences(60)
    return write_csv(tmp_path / "repeats.csv", rows + rows[:20])


def _argv(csv, model, out, *extra):
    return ["finetune", "--data", str(csv), "--model", str(model), "--output-dir", str(out), "--max-steps", "2",
            "data.dedupe=false", "train.progress=false", *extra]


def test_a_runs_lines_arrive_through_logging(tiny_model_dir, repeats_csv, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    cfg = tiny_config(repeats_csv, tiny_model_dir, tmp_path / "run", max_steps=2)
    cfg.data.dedupe = False
    result = api.finetune(cfg)
    assert any(m.startswith("split: train ") for m in caplog.messages)
    assert any(m.startswith("training full: lr ") for m in caplog.messages)
    assert caplog.messages[-1] == f"run directory: {result.run_dir}"
    warned = [r for r in caplog.records if r.getMessage().startswith("warning: ")]
    assert warned and all(r.levelno == logging.WARNING for r in warned)
    assert {r.name for r in caplog.records} >= {"transferkit.tasks.classify.splits", "transferkit.recipes.finetune"}
    # the data summary is shown once, after the checks, and before what the run goes on to say
    split = next(i for i, m in enumerate(caplog.messages) if m.startswith("split: "))
    tokens = next(i for i, m in enumerate(caplog.messages) if m.startswith("tokens per text"))
    assert split < tokens and sum(m.startswith("split: ") for m in caplog.messages) == 1


def test_the_api_shows_nothing_unasked(tiny_model_dir, repeats_csv, tmp_path, capfd):
    cfg = tiny_config(repeats_csv, tiny_model_dir, tmp_path / "run", max_steps=2)
    cfg.data.dedupe = False
    api.finetune(cfg)
    assert capfd.readouterr().err == ""  # not even the warnings: the library's NullHandler


def test_the_cli_prints_the_lines_and_quiet_keeps_the_warnings(tiny_model_dir, repeats_csv, tmp_path, capsys):
    assert cli.main(_argv(repeats_csv, tiny_model_dir, tmp_path / "a")) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("split: train ") for line in err)
    assert err[-1] == f"run directory: {tmp_path / 'a'}"
    warnings = [line for line in err if line.startswith("warning: ")]
    assert warnings
    assert cli.main(_argv(repeats_csv, tiny_model_dir, tmp_path / "b", "--quiet")) == 0
    assert capsys.readouterr().err.splitlines() == warnings  # the same warnings, nothing else
    assert cli.main(["--quiet", *_argv(repeats_csv, tiny_model_dir, tmp_path / "c")]) == 0
    assert capsys.readouterr().err.splitlines() == warnings  # anywhere on the line


def test_verbose_adds_debug_lines_and_errors_print_whatever_the_level(finished_run, tmp_path, capsys):
    texts = tmp_path / "in.csv"
    texts.write_text("text,review\ngood film,r\n", encoding="utf-8")  # two text columns: which one is a debug line
    argv = ["predict", str(finished_run("full")), "--input", str(texts)]
    assert cli.main(argv) == 0
    plain = capsys.readouterr().err.splitlines()
    assert cli.main([*argv, "--verbose"]) == 0
    verbose = capsys.readouterr().err.splitlines()
    assert not any(line.startswith("note: ") for line in plain)
    assert [line for line in verbose if not line.startswith("note: ")][0].startswith("predicted 1 texts")
    assert any(line.startswith("note: ") and "'review'" in line for line in verbose)
    with pytest.raises(SystemExit):  # both at once: argparse's own error (exit 2)
        cli.main([*argv, "--verbose", "--quiet"])
    assert "--quiet and --verbose" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "no-run"), "a", "--quiet"]) == 2  # an error is no log line
    assert capsys.readouterr().err.startswith("transferkit: error: ")


def test_the_cli_leaves_the_callers_logging_as_it_was(tmp_path, capsys):
    before = (list(ROOT.handlers), ROOT.level, ROOT.propagate)
    cli.main(["predict", str(tmp_path / "no-run"), "a"])
    capsys.readouterr()
    assert (list(ROOT.handlers), ROOT.level, ROOT.propagate) == before


def test_log_to_stderr_prints_bare_lines_from_rank_zero(capsys, monkeypatch):
    handlers = list(ROOT.handlers)
    try:
        transferkit.log_to_stderr()
        transferkit.log_to_stderr()  # a second call replaces the handler: one line each, not two
        logging.getLogger("transferkit.x").info("one line")
        monkeypatch.setenv("RANK", "1")
        logging.getLogger("transferkit.x").info("from another process")
        assert capsys.readouterr().err == "one line\n"
    finally:
        ROOT.handlers, ROOT.propagate = handlers, True
        ROOT.setLevel(logging.NOTSET)


def test_held_lines_wait_for_release_but_now_lines_do_not(caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    log = logging.getLogger("transferkit.test")
    with logs.held() as records:
        log.info("summary")
        log.info("downloading", extra=logs.NOW)
        assert caplog.messages == ["downloading"]
    assert caplog.messages == ["downloading"]
    logs.release(records)
    assert caplog.messages == ["downloading", "summary"]
    with pytest.raises(ValueError):
        with logs.held():
            log.info("dropped")
            raise ValueError  # an error before the checks passed: the lines are never shown
    log.info("after")
    assert caplog.messages[-1] == "after" and "dropped" not in caplog.messages


def test_quiet_keeps_errors_only_and_restores_the_level(caplog):
    caplog.set_level(logging.INFO, logger="transferkit")
    log = logging.getLogger("transferkit.test")
    with logs.quiet():
        log.warning("hushed")
        log.error("said")
    log.info("again")
    assert caplog.messages == ["said", "again"]


def test_child_flags_hand_the_level_on():
    assert ROOT.level == logging.NOTSET
    ROOT.setLevel(logging.WARNING)
    try:
        assert logs.child_flags() == ["--quiet"]
        assert logs.child_flags(quiet_ok=False) == []  # a child whose whole output goes to a log file
        ROOT.setLevel(logging.INFO)
        assert logs.child_flags() == []
    finally:
        ROOT.setLevel(logging.NOTSET)


def test_compare_children_log_at_info_or_more_and_their_warnings_stay_warnings(tmp_path):
    from transferkit.recipes.compare import run as comparison
    plan = comparison.Plan("lora", None, tmp_path / "lora", "new", "lora")
    ROOT.setLevel(logging.WARNING)  # --quiet: the child still writes every line to its log file
    try:
        assert comparison._child_command(plan, tmp_path / "c.yaml")[-2:] == ["--config", str(tmp_path / "c.yaml")]
        ROOT.setLevel(logging.DEBUG)
        assert comparison._child_command(plan, tmp_path / "c.yaml")[-1] == "--verbose"
    finally:
        ROOT.setLevel(logging.NOTSET)
    assert comparison._level("warning: the test file is identical") == logging.WARNING
    assert comparison._level("transferkit: error: no such file") == logging.WARNING
    assert comparison._level("split: train 80 | validation 10 | test 10") == logging.INFO
