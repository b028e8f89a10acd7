"""`transferkit serve` as a user starts it: a real uvicorn process on loopback, stopped with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from transferkit.inference import Predictor

from helpers import expect_user_error

TEXTS = ["a good and great film", "awful boring plot with dull acting"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_then_stops_gracefully_on_sigterm(finished_run, tmp_path):
    run = finished_run("lora")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", "--adapter", f"sent={run}",
                             "--port", str(port), "--max-wait-ms", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(proc.stderr.read() if proc.poll() is not None else "server did not start")
        body = httpx.post(url + "/v1/classify", json={"model": "sent", "input": TEXTS}, timeout=30).json()
        np.testing.assert_allclose([d["probs"] for d in body["data"]], Predictor.from_run(run).predict_proba(TEXTS),
                                   atol=1e-5)
        assert httpx.get(url + "/docs", timeout=5).status_code == 200  # OpenAPI docs
        # a request in flight when SIGTERM arrives still gets its answer
        answers = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(
            url + "/v1/classify", json={"model": "sent", "input": TEXTS * 100}, timeout=60)))
        worker.start()
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        worker.join(60)
        assert proc.wait(60) == 0
        assert answers and answers[0].status_code == 200 and len(answers[0].json()["data"]) == 200
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)


def test_serve_refuses_bad_options_in_one_line(capsys, finished_run):
    assert "nothing to serve" in expect_user_error(capsys, ["serve"])
    assert "port must be" in expect_user_error(capsys, ["serve", "--adapter", f"a={finished_run('lora')}",
                                                        "--port", "0"])
    assert "expected NAME=RUN_DIR" in expect_user_error(capsys, ["serve", "--adapter", "nonsense"])
