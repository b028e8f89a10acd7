"""Request bodies bounded before the app reads them: over the cap by Content-Length (nothing read), over it as it
arrives (cut off), stalled (408), and in the route's own error shape."""
from __future__ import annotations

import asyncio
import json

from transferkit.serving.body_limit import BodyLimit


def _error_body(path, status, message, kind):
    return {"path": path, "status": status, "error": message}


async def _echo(scope, receive, send):
    """An app that reads the whole body, then answers 200 with its length."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            await send({"type": "http.response.start", "status": 499, "headers": []})  # must never reach the client
            await send({"type": "http.response.body", "body": b"gone"})
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _call(chunks, headers=(), chunk_seconds=30.0, stall=False):
    """(sent messages, chunks the middleware asked for) for a request of `chunks` through BodyLimit(cap 100)."""
    asked, sent = [], []

    async def receive():
        asked.append(1)
        if stall and len(asked) > 1:
            await asyncio.Event().wait()  # the client never sends the rest
        i = len(asked) - 1
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/v1/classify", "headers": list(headers)}
    asyncio.run(BodyLimit(_echo, 100, _error_body, chunk_seconds)(scope, receive, send))
    return sent, len(asked)


def _status_and_body(sent):
    return sent[0]["status"], json.loads(sent[1]["body"]) if sent[0]["status"] != 200 else sent[1]["body"]


def test_a_declared_length_over_the_cap_is_refused_without_reading_the_body():
    sent, asked = _call([b"x" * 500], headers=[(b"content-length", b"500")])
    status, body = _status_and_body(sent)
    assert status == 413 and asked == 0 and body["path"] == "/v1/classify" and "100 bytes" in body["error"]
    assert (b"connection", b"close") in sent[0]["headers"] and len(sent) == 2


def test_a_body_without_a_length_is_cut_off_at_the_cap_and_only_the_413_is_sent():
    sent, asked = _call([b"x" * 60, b"x" * 60, b"x" * 60])
    assert _status_and_body(sent)[0] == 413 and asked == 2 and len(sent) == 2  # the app's 499 was dropped


def test_a_stalled_body_is_408_and_a_small_one_passes():
    sent, _ = _call([b"x" * 10, b"x" * 10], chunk_seconds=0.05, stall=True)
    assert _status_and_body(sent)[0] == 408
    sent, _ = _call([b"x" * 40, b"x" * 40], headers=[(b"content-length", b"80")])
    assert _status_and_body(sent) == (200, b"80")


def test_once_the_body_is_in_the_app_may_wait_on_receive_without_a_time_limit():
    """A streamed response listens on `receive` for a disconnect for as long as it streams: no 408 cuts it off."""
    sent = []

    async def streaming(scope, receive, send):
        await receive()  # the whole body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        waited = asyncio.ensure_future(receive())  # what Starlette's StreamingResponse does
        for i in range(5):
            await asyncio.sleep(0.05)  # longer, in all, than chunk_seconds
            assert not waited.done()
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        waited.cancel()
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        if not sent:
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected and silent

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(streaming, 100, _error_body, chunk_seconds=0.05)(
        {"type": "http", "path": "/v1/completions", "headers": []}, receive, send))
    assert sent[0]["status"] == 200 and sum(m.get("body") == b"x" for m in sent) == 5


def test_the_server_refuses_a_large_body_in_the_routes_own_shape(finished_run):
    from fastapi.testclient import TestClient

    from transferkit.serving.app import create_app
    from transferkit.serving.models import ModelSet
    app = create_app(ModelSet({"sent": finished_run("lora")}), max_body_bytes=2000)
    with TestClient(app) as c:
        r = c.post("/v1/classify", json={"model": "sent", "input": ["good film " * 50] * 10})
        assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "2,000 bytes" in r.json()["error"]
        r = c.post("/v1/completions", json={"model": "sent", "prompt": "x" * 5000})
        assert r.status_code == 413 and r.json()["error"]["code"] == 413  # OpenAI's error shape on its routes
        assert c.post("/v1/classify", json={"model": "sent", "input": "good film"}).status_code == 200
