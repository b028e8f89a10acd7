"""The HTTP server on tiny runs: every route, bad requests, mixed batches equal to each run alone."""
from __future__ import annotations

import random
import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from transferkit import api
from transferkit.inference import Predictor
from transferkit.serving.app import create_app
from transferkit.serving.models import ModelSet

from helpers import FILLER, NEGATIVE, POSITIVE, make_sentences, tiny_config, wait_until, write_csv

TEXTS = ["a good and great film", "awful boring plot with dull acting", "the movie", "superb"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, finished_run, tiny_model_dir):
    root = tmp_path_factory.mktemp("served")
    rng = random.Random(1)
    neutral = sorted({" ".join(rng.choices(FILLER, k=rng.randint(3, 10))) for _ in range(120)})[:60]
    data = write_csv(root / "three.csv", make_sentences(120, seed=3) + [(t, "neutral") for t in neutral])
    three = api.finetune(tiny_config(data, tiny_model_dir, root / "three", "lora", max_steps=20, lr=1e-2))
    lines = []
    for _ in range(60):
        words = [(w, "O") for w in rng.choices(FILLER, k=4)] + [(rng.choice(POSITIVE), "B-PER")]
        words.insert(2, (rng.choice(NEGATIVE), "B-LOC"))
        lines += [f"{w} {t}" for w, t in words] + [""]
    (root / "tags.conll").write_text("\n".join(lines), encoding="utf-8")
    ner = api.finetune(task="ner", data=str(root / "tags.conll"), model=str(tiny_model_dir), method="lora",
                       max_steps=20, lr=1e-2, batch_size=8, max_length=32, output_dir=str(root / "ner"),
                       **{"train.progress": False})
    return {"sent": finished_run("lora"), "three": three.run_dir, "head": finished_run("head_only"),
            "full": finished_run("full"), "ner": ner.run_dir}


@pytest.fixture(scope="module")
def client(runs):
    app = create_app(ModelSet(runs, backend="torch"), default_model="sent", max_wait_ms=20)  # shared bases
    with TestClient(app) as c:
        yield c


def _probs(run, texts):
    return Predictor.from_run(run).predict_proba(texts)


def test_models_lists_each_run_and_how_it_is_served(client):
    rows = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(rows) == {"sent", "three", "head", "full", "ner"}
    assert {n for n, m in rows.items() if m["shared_base"]} == {"sent", "three", "head", "ner"}
    assert rows["three"]["labels"] == ["negative", "neutral", "positive"] and rows["ner"]["task"] == "ner"
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("name", ["sent", "three", "head", "full"])
def test_classify_equals_the_run_served_alone(client, runs, name):
    body = client.post("/v1/classify", json={"model": name, "input": TEXTS}).json()
    assert body["object"] == "list" and body["model"] == name and body["usage"]["prompt_tokens"] > 0
    got = np.array([d["probs"] for d in body["data"]])
    np.testing.assert_allclose(got, _probs(runs[name], TEXTS), atol=1e-5)
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    one = client.post("/v1/classify", json={"model": name, "input": TEXTS[0]}).json()["data"]
    assert len(one) == 1 and one[0]["num_classes"] == got.shape[1]


def test_predict_in_text_embeddings_inference_shape(client, runs):
    single = client.post("/predict", json={"inputs": TEXTS[0]}).json()  # the default model
    probs = _probs(runs["sent"], TEXTS[:1])[0]
    assert [r["score"] for r in single] == pytest.approx(sorted(probs, reverse=True), abs=1e-5)
    many = client.post("/predict", json={"inputs": TEXTS, "model": "three"}).json()
    assert len(many) == len(TEXTS) and all(len(r) == 3 for r in many)
    raw = client.post("/predict", json={"inputs": [TEXTS[1]], "raw_scores": True}).json()[0]
    assert sum(r["score"] for r in raw) != pytest.approx(1.0)  # logits, not probabilities
    long_text = " ".join(["good"] * 200)
    r = client.post("/predict", json={"inputs": long_text})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "truncate" in r.json()["error"]
    cut = client.post("/predict", json={"inputs": [TEXTS[0], long_text], "truncate": True})
    assert cut.status_code == 200 and cut.headers["X-Truncated-Inputs"] == "1"  # the response says what was cut
    # one rule on every route: /v1/classify refuses the same text unless it asks to truncate, then says so
    r = client.post("/v1/classify", json={"model": "sent", "input": long_text})
    assert r.status_code == 413 and "truncate" in r.json()["error"]
    cut = client.post("/v1/classify", json={"model": "sent", "input": [long_text, TEXTS[0]], "truncate": True})
    assert cut.status_code == 200 and cut.headers["X-Truncated-Inputs"] == "0"
    assert [d.get("truncated", False) for d in cut.json()["data"]] == [True, False]
    whole = client.post("/v1/classify", json={"model": "sent", "input": TEXTS, "truncate": True})
    assert "X-Truncated-Inputs" not in whole.headers and not any("truncated" in d for d in whole.json()["data"])


def test_ner_route_equals_the_tagger_alone(client, runs):
    texts = ["the film with good was quite dull", "superb acting and dreadful music"]
    body = client.post("/v1/ner", json={"model": "ner", "input": texts}).json()
    want = Predictor.from_run(runs["ner"]).predict(texts)
    _same_entities([d["entities"] for d in body["data"]], [w["entities"] for w in want])


def _same_entities(got, want):
    """Equal spans and groups, scores to 1e-5 (the shared encoder pads other rows alongside)."""
    assert [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in g] for g in got] == \
        [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in w] for w in want]
    assert np.allclose([e["score"] for g in got for e in g], [e["score"] for w in want for e in w], atol=1e-5)


def test_concurrent_requests_across_tasks_share_batches_and_match(client, runs):
    batcher = client.app.state.batcher
    before = batcher.batches
    jobs = [("sent", "/v1/classify"), ("three", "/v1/classify"), ("ner", "/v1/ner"), ("head", "/v1/classify")] * 4
    results: dict[int, dict] = {}

    def call(i, name, route):
        results[i] = client.post(route, json={"model": name, "input": TEXTS}).json()
    threads = [threading.Thread(target=call, args=(i, n, r)) for i, (n, r) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batcher.batches - before < len(jobs)  # requests were gathered, not run one by one
    ner_want = [w["entities"] for w in Predictor.from_run(runs["ner"]).predict(TEXTS)]
    for i, (name, route) in enumerate(jobs):
        if route == "/v1/ner":
            _same_entities([d["entities"] for d in results[i]["data"]], ner_want)
        else:
            np.testing.assert_allclose([d["probs"] for d in results[i]["data"]], _probs(runs[name], TEXTS), atol=1e-5)
    metrics = client.get("/metrics").text
    assert "transferkit_batch_texts_count" in metrics and 'route="/v1/classify"' in metrics


@pytest.mark.parametrize("route,body,status,needle", [
    ("/v1/classify", {"model": "nope", "input": "x"}, 404, "not loaded"),
    ("/v1/classify", {"model": "sent", "input": []}, 422, "empty list"),
    ("/v1/classify", {"model": "sent", "input": ["good", " "]}, 422, "input[1]: empty text"),
    ("/v1/classify", {"model": "sent", "input": 5}, 422, "input"),
    ("/v1/classify", {"model": "sent", "input": ["good", 3]}, 422, "input"),
    ("/v1/classify", {"model": "sent"}, 422, "input"),
    ("/v1/classify", {"model": "sent", "input": "x", "extra": 1}, 422, "extra"),
    ("/v1/classify", {"model": "sent", "input": ["good"] * 300}, 413, "more than the 256"),
    ("/v1/classify", {"model": "ner", "input": "x"}, 422, "use /v1/ner"),
    ("/v1/ner", {"model": "sent", "input": "x"}, 422, "use /v1/classify"),
    ("/predict", {"inputs": "x", "raw_scores": "yes"}, 422, "raw_scores"),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"}, 400, "--adapter-root"),
    ("/v1/unload_lora_adapter", {"lora_name": "nope"}, 400, "--adapter-root"),
    ("/v1/nothing", {}, 404, ""),
])
def test_bad_requests_get_a_status_and_one_error_body(client, route, body, status, needle):
    r = client.post(route, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "error_type"} and needle in r.json()["error"]


def test_malformed_json_is_422(client):
    r = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    r = client.post("/v1/classify", content=b'{"model": "sent", "input": "x"}',  # curl -d without the header
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "content-type: application/json" in r.json()["error"]


def test_api_key(runs):
    app = create_app(ModelSet({"sent": runs["sent"]}), api_key="s3cret")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/classify", json={"model": "sent", "input": "good"})
        assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/classify", json={"model": "sent", "input": "good"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # X-API-Key (TEI's and many gateways' header) is the documented alternative
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        # the docs page and its assets need no key
        assert c.get("/docs").status_code == 200 and c.get("/docs/assets/swagger-ui.css").status_code == 200


def test_docs_work_offline_from_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower() and "http" not in page.text.replace(
        "http-equiv", "")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = client.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000 and f"/docs/assets/{asset}" in page.text
    assert client.get("/openapi.json").json()["info"]["title"] == "transferkit"


def test_a_full_queue_answers_429_with_retry_after(runs, monkeypatch):
    models = ModelSet({"sent": runs["sent"]})
    real = models.run
    running, release = threading.Event(), threading.Event()

    def held(items):  # a batch runs until the test lets it end: the queue stays full however slow the machine
        running.set()
        release.wait(60)
        return real(items)
    monkeypatch.setattr(models, "run", held)
    app = create_app(models, max_queue=1, max_wait_ms=0, max_batch_tokens=1)
    with TestClient(app) as c:
        done = []

        def post():
            done.append(c.post("/v1/classify", json={"model": "sent", "input": "good"}))
        threads = [threading.Thread(target=post) for _ in range(2)]
        try:
            threads[0].start()
            assert running.wait(60)  # the first is running
            threads[1].start()
            assert wait_until(lambda: app.state.batcher.depth == 1, 60)  # the second waits in the queue
            r = c.post("/v1/classify", json={"model": "sent", "input": "good"})
        finally:
            release.set()
            for t in threads:
                if t.ident is not None:  # started
                    t.join()
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.json()["error_type"] == "Overloaded"
    assert [x.status_code for x in done] == [200, 200]


def test_error_bodies_name_no_absolute_server_path(tmp_path):
    from transferkit.serving.app import without_server_paths
    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    assert without_server_paths(f"{root}/runs/a: no run.json", root) == "runs/a: no run.json"
    assert without_server_paths(f"lora_path x is outside the adapter root {root}", root).endswith("the adapter root")
    said = without_server_paths(f"cannot read {tmp_path}/other/model.safetensors, use /v1/classify", None)
    assert said == "cannot read .../model.safetensors, use /v1/classify"  # a route is not a path here


def test_load_and_unload_at_run_time(runs, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(runs["three"], root / "three")
    (root / "not-a-run").mkdir()
    outside = tmp_path / "outside"
    shutil.copytree(runs["three"], outside)
    app = create_app(ModelSet({"sent": runs["sent"]}, backend="torch"), adapter_root=root)
    with TestClient(app) as c:
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "topic", "lora_path": str(root / "three")})
        assert r.status_code == 200 and r.json()["shared_base"] is True
        got = c.post("/v1/classify", json={"model": "topic", "input": TEXTS}).json()["data"]
        np.testing.assert_allclose([d["probs"] for d in got], _probs(runs["three"], TEXTS), atol=1e-5)
        sent = c.post("/v1/classify", json={"model": "sent", "input": TEXTS}).json()["data"]  # still served
        np.testing.assert_allclose([d["probs"] for d in sent], _probs(runs["sent"], TEXTS), atol=1e-5)
        for body, needle in [({"lora_name": "x", "lora_path": str(outside)}, "outside the adapter root"),
                             ({"lora_name": "x", "lora_path": "../outside"}, "outside the adapter root"),
                             ({"lora_name": "a/b", "lora_path": "three"}, "use letters, digits"),
                             ({"lora_name": "..", "lora_path": "three"}, "use letters, digits"),
                             ({"lora_name": "x", "lora_path": "not-a-run"}, "not a finished transferkit run"),
                             ({"lora_name": "x", "lora_path": "thr\x00ee"}, "not a usable path"),
                             ({"lora_name": "topic", "lora_path": "three"}, "already loaded")]:
            r = c.post("/v1/load_lora_adapter", json=body)
            assert r.status_code == 400 and needle in r.json()["error"], r.text
            assert str(tmp_path) not in r.text  # no absolute path of the server's machine in an error body
        assert {m["id"] for m in c.get("/v1/models").json()["data"]} == {"sent", "topic"}
        assert c.post("/v1/unload_lora_adapter", json={"lora_name": "topic"}).status_code == 200
        assert c.post("/v1/classify", json={"model": "topic", "input": "x"}).status_code == 404
        assert c.post("/v1/unload_lora_adapter", json={"lora_name": "topic"}).status_code == 404
        metrics = c.get("/metrics").text
        assert 'model="topic"' in metrics and "nope" not in metrics and 'route="unmatched"' not in metrics


def test_a_pickle_in_a_loaded_run_is_refused(runs, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(runs["full"], root / "full")
    (root / "full" / "model" / "model.safetensors").unlink()
    (root / "full" / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04 planted")
    app = create_app(ModelSet({"sent": runs["sent"]}), adapter_root=root)
    with TestClient(app) as c:
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "evil", "lora_path": "full"})
        assert r.status_code == 400 and "pytorch_model.bin" in r.json()["error"], r.text
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["sent"]


def test_serve_checks_its_options_before_loading():
    from transferkit.core.errors import UserError
    with pytest.raises(UserError, match="nothing to serve"):
        api.serve({})
    with pytest.raises(UserError, match="port must be"):
        api.serve({"a": "b"}, port=70000)
    with pytest.raises(UserError, match="max_wait_ms must be a positive finite number"):
        api.serve({"a": "b"}, max_wait_ms=float("nan"))


def test_failures_inside_the_model_are_a_500_body_and_labels_stay_bounded(runs, monkeypatch):
    models = ModelSet({"sent": runs["sent"]})

    def broken(items):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(models, "run", broken)
    app = create_app(models)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/classify", json={"model": "sent", "input": "good"})
        assert r.status_code == 500 and r.json() == {"error": "RuntimeError: out of memory", "error_type": "Backend"}
        for path in ("/a", "/b", "/c"):
            assert c.post(path, json={}).status_code == 404
        c.post("/v1/classify", json={"model": "made-up-1", "input": "x"})
        metrics = c.get("/metrics").text
    assert 'status="500"' in metrics and 'route="unmatched"' in metrics
    assert '"/a"' not in metrics and "made-up-1" not in metrics


def test_a_request_for_a_run_unloaded_while_it_waited_is_404(runs):
    from transferkit.serving.models import Gone
    models = ModelSet({"sent": runs["sent"]})
    assert isinstance(models.run([("classify", "gone", "x")])[0], Gone)


def test_runs_of_two_bases_get_one_shared_encoder_each(runs, tiny_model_dir, sentiment_csv, tmp_path):
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other_base)
    other = api.finetune(tiny_config(sentiment_csv, other_base, tmp_path / "other", "lora", max_steps=6,
                                     lr=1e-2)).run_dir
    models = ModelSet({"sent": runs["sent"], "three": runs["three"], "other": other}, backend="torch")
    assert len(models._shared) == 2  # one AdapterPredictor per base
    with TestClient(create_app(models)) as c:
        for name, run in (("sent", runs["sent"]), ("three", runs["three"]), ("other", other)):
            got = c.post("/v1/classify", json={"model": name, "input": TEXTS}).json()["data"]
            np.testing.assert_allclose([d["probs"] for d in got], _probs(run, TEXTS), atol=1e-5)


def test_a_request_counts_in_flight_until_the_last_byte_of_a_streamed_response(runs):
    """What SIGTERM's drain waits for: a streamed response counts until it ends, not once its headers are out."""
    import asyncio
    from types import SimpleNamespace

    from transferkit.serving.app import InFlight
    state = SimpleNamespace(in_flight=0)
    during = []

    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            during.append(state.in_flight)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def nothing(*args):
        return None
    asyncio.run(InFlight(streaming)({"type": "http", "app": SimpleNamespace(state=state)}, nothing, nothing))
    assert during == [1, 1, 1] and state.in_flight == 0
    app = create_app(ModelSet({"sent": runs["sent"]}))
    assert isinstance(app.user_middleware[0].cls, type) and app.user_middleware[0].cls is InFlight  # outermost
