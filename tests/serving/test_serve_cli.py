"""`transferkit serve` as a user starts it: a real uvicorn process on loopback, stopped with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np

from transferkit.inference import Predictor

from helpers import expect_user_error, wait_until

TEXTS = ["a good and great film", "awful boring plot with dull acting"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches(url: str) -> float:
    """How many batches the server has started (its /metrics)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("transferkit_batch_texts_count"))


def test_serve_answers_then_stops_gracefully_on_sigterm(finished_run, tmp_path):
    run = finished_run("lora")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", "--adapter", f"sent={run}",
                             "--port", str(port), "--max-wait-ms", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        if not wait_until(lambda: proc.poll() is not None or up(), 300) or proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.poll() is not None else "server did not start in 300 s")
        body = httpx.post(url + "/v1/classify", json={"model": "sent", "input": TEXTS}, timeout=30).json()
        np.testing.assert_allclose([d["probs"] for d in body["data"]], Predictor.from_run(run).predict_proba(TEXTS),
                                   atol=1e-5)
        assert httpx.get(url + "/docs", timeout=30).status_code == 200  # OpenAPI docs
        # a request in flight when SIGTERM arrives still gets its answer
        answers = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(
            url + "/v1/classify", json={"model": "sent", "input": TEXTS * 100}, timeout=60)))
        before = _batches(url)
        worker.start()
        # SIGTERM once the server runs the request's batch, so it is in flight: after a fixed sleep, on a loaded
        # machine, the request may not have reached the server yet (uvicorn then closes its connection unanswered)
        assert wait_until(lambda: answers or _batches(url) > before, 60), "the request never reached the server"
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


def test_a_busy_port_is_one_line_before_anything_loads_or_says_serving(capsys, finished_run, monkeypatch):
    from transferkit.serving import run as serving_run
    monkeypatch.setattr(serving_run, "ModelSet", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = expect_user_error(capsys, ["serve", "--adapter", f"a={finished_run('lora')}", "--port", str(port)])
    assert f"port {port} on 127.0.0.1 is already in use" in line and "serving" not in line
    assert "does not resolve" in expect_user_error(capsys, ["serve", "--adapter", f"a={finished_run('lora')}",
                                                            "--host", "no-such-host.invalid"])


def test_sigterm_drains_a_request_arriving_meanwhile_gets_503_and_the_one_in_flight_its_answer(finished_run,
                                                                                              monkeypatch):
    """What SIGTERM does, driven in-process: the server's exit flag set while a request's batch is held running;
    a request that arrives then is answered 503 (not refused), the held one 200, and then the server stops."""
    import uvicorn

    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    from transferkit.serving.run import DrainingServer, listening_socket

    models = ModelSet({"sent": finished_run("lora")})
    real, running, release = models.run, threading.Event(), threading.Event()

    def held(items):
        running.set()
        release.wait(60)
        return real(items)
    monkeypatch.setattr(models, "run", held)
    app = create_app(models, max_wait_ms=0)
    sock = listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = DrainingServer(uvicorn.Config(app, log_level="warning"), app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    answers = []
    try:
        assert wait_until(lambda: server.started, 60)
        first = threading.Thread(target=lambda: answers.append(httpx.post(
            url + "/v1/classify", json={"model": "sent", "input": TEXTS}, timeout=60)))
        first.start()
        assert running.wait(60)  # its batch is in the model
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        assert wait_until(lambda: app.state.draining, 60)
        late = httpx.post(url + "/v1/classify", json={"model": "sent", "input": TEXTS}, timeout=60)
        assert late.status_code == 503 and late.json()["error_type"] == "Unhealthy"
        assert late.headers["retry-after"] == "1" and late.headers["connection"] == "close"
    finally:
        release.set()
    first.join(60)
    thread.join(60)
    assert answers and answers[0].status_code == 200 and not thread.is_alive()
    sock.close()
