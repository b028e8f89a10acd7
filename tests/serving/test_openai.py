"""Generation runs behind OpenAI's routes, driven by the stock `openai` client against a real uvicorn server on
loopback: completions, chat, streaming, errors; greedy answers equal `Predictor.from_run(run).predict`."""
from __future__ import annotations

import json
import random
import socket
import threading

import httpx
import openai
import pytest
import torch

import transferkit
from transferkit.inference import Predictor
from transferkit.modeling.lm import build_from_scratch
from transferkit.serving.app import create_app
from transferkit.serving.models import ModelSet
from transferkit.tasks.generate.complete import Decoding, Pieces, complete, final_text

from helpers import VOCAB, make_tokenizer, wait_until

PROMPTS = ["good film was", "the plot is boring and dull"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, finished_run):
    """Tiny generation runs (two lora, one full) on a random 2-layer llama, and a classifier."""
    root = tmp_path_factory.mktemp("gen")
    tok = make_tokenizer()
    torch.manual_seed(0)
    build_from_scratch("llama", "tiny", tok, "clm").save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    words = [w for w in VOCAB if w.isalpha()]
    rng = random.Random(0)
    with open(root / "rows.jsonl", "w", encoding="utf-8") as f:
        for _ in range(100):
            p = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            f.write(json.dumps({"prompt": p, "completion": " ".join(p.split()[:2])}) + "\n")
    out = {}
    # greedy: repeated words, some ending early; the two lora runs answer differently
    for name, method, lr, steps in (("lora", "lora", 1e-3, 6), ("lora2", "lora", 3e-2, 2), ("full", "full", 3e-4, 6)):
        out[name] = transferkit.finetune(task="generate", data=str(root / "rows.jsonl"), model=str(root / "llama"),
                                         method=method, max_steps=steps, batch_size=16, lr=lr,
                                         output_dir=str(root / name), **{"train.progress": False}).run_dir
    out["sent"] = finished_run("lora")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(runs):
    import uvicorn
    app = create_app(ModelSet({"gen": runs["lora"], "gen2": runs["lora2"], "full": runs["full"], "sent": runs["sent"]}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started or not thread.is_alive(), 60) and server.started
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def offline(runs):
    """name -> the run's own Predictor (what `transferkit predict` answers)."""
    return {"gen": Predictor.from_run(runs["lora"]), "gen2": Predictor.from_run(runs["lora2"]),
            "full": Predictor.from_run(runs["full"])}


def test_models_lists_generation_runs_for_the_openai_client(client, url):
    assert {m.id for m in client.models.list()} == {"gen", "gen2", "full", "sent"}
    rows = {m["id"]: m for m in httpx.get(url + "/v1/models").json()["data"]}
    assert rows["gen"]["task"] == "generate" and rows["gen"]["method"] == "lora" and rows["sent"]["task"] == "classify"
    assert rows["gen"]["shared_base"] and rows["gen2"]["shared_base"] and not rows["full"]["shared_base"]


@pytest.mark.parametrize("name", ["gen", "gen2", "full"])
def test_greedy_completions_equal_offline_prediction(client, offline, name):
    want = [r["generated_text"] for r in offline[name].predict(PROMPTS)]
    one = client.completions.create(model=name, prompt=PROMPTS[0], temperature=0)
    assert one.object == "text_completion" and one.model == name and one.choices[0].text == want[0]
    assert one.choices[0].finish_reason in ("stop", "length")
    assert one.usage.prompt_tokens == 3 and one.usage.total_tokens == 3 + one.usage.completion_tokens
    many = client.completions.create(model=name, prompt=PROMPTS)  # no temperature: the run's own (greedy) decoding
    assert [c.text for c in many.choices] == want and [c.index for c in many.choices] == [0, 1]
    budget = client.completions.create(model=name, prompt=PROMPTS[0], max_tokens=2)
    assert budget.usage.completion_tokens <= 2 and want[0].startswith(budget.choices[0].text)


def test_two_lora_runs_share_one_base_and_answer_as_each_alone(runs, offline):
    models = ModelSet({"a": runs["lora"], "b": runs["lora2"]})
    assert len(models._switched) == 1 and not models._alone  # one copy of the base, two named adapters
    want = {n: [r["generated_text"] for r in offline[k].predict(PROMPTS)] for n, k in (("a", "gen"), ("b", "gen2"))}
    assert want["a"] != want["b"]

    def texts(name):
        return [c.text for c in models.call(name, lambda p, items: complete(p, items, Decoding()), PROMPTS)]
    for name in ("a", "b", "a", "b"):  # switching back and forth
        assert texts(name) == want[name]
    models.unload("a")
    assert texts("b") == want["b"] and len(models._switched) == 1
    models.load("a", runs["lora"])  # back on the same base, as a newly added adapter
    assert texts("a") == want["a"] and texts("b") == want["b"]
    models.unload("a")
    models.unload("b")
    assert not models._switched and not models.served


def test_chat_answers_the_messages_as_the_prompt(client, offline):
    turns = [{"role": "system", "content": "the movie"}, {"role": "user", "content": PROMPTS[1]}]
    r = client.chat.completions.create(model="gen", messages=turns, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == offline["gen"].predict(turns)["generated_text"]
    assert r.usage.prompt_tokens > 0 and r.choices[0].finish_reason in ("stop", "length")


SAMPLED = {"temperature": 1.5, "seed": 3, "max_tokens": 12}  # varied words from the tiny model, the same each time


def test_streams_join_to_the_whole_answer(client):
    full = client.completions.create(model="gen", prompt=PROMPTS[0], **SAMPLED)
    whole = full.choices[0]
    chunks = list(client.completions.create(model="gen", prompt=PROMPTS[0], stream=True,
                                            stream_options={"include_usage": True}, **SAMPLED))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.text and len([t for t in texts if t]) > 1  # token by token, not one piece
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.finish_reason and not any(reasons[:-1])
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens and not chunks[-1].choices

    msgs = [{"role": "user", "content": PROMPTS[1]}]
    answer = client.chat.completions.create(model="gen", messages=msgs).choices[0].message.content
    chunks = list(client.chat.completions.create(model="gen", messages=msgs, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks) and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_strings_cut_the_answer_streamed_or_not(client):
    whole = client.completions.create(model="gen", prompt=PROMPTS[1], **SAMPLED).choices[0].text
    words = whole.split()
    assert len(words) > 3, whole
    stop = " " + words[2]
    cut = client.completions.create(model="gen", prompt=PROMPTS[1], stop=[stop, "never there"], **SAMPLED)
    assert cut.choices[0].text == whole[:whole.index(stop)].strip() and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="gen", prompt=PROMPTS[1], stop=stop, stream=True, **SAMPLED)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_sampling_with_a_seed_repeats(client):
    a, b = (client.completions.create(model="full", prompt=PROMPTS[0], temperature=1.5, top_p=0.9, seed=7,
                                      max_tokens=8).choices[0].text for _ in range(2))
    assert a == b


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="a film")
    assert "nope" in e.value.message and e.value.type == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "a"}], stream=True)
    with pytest.raises(openai.UnprocessableEntityError, match="/v1/classify"):
        client.completions.create(model="sent", prompt="a film")
    with pytest.raises(openai.BadRequestError, match="n=2"):
        client.completions.create(model="gen", prompt="a film", n=2)


@pytest.mark.parametrize("route,body,status,words", [
    ("/v1/completions", {"prompt": ""}, 422, "empty"),
    ("/v1/completions", {"prompt": []}, 422, "empty"),
    ("/v1/completions", {"prompt": [1, 2]}, 422, "prompt"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 5000}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 4000, "stream": True}, 400, "positions"),
    ("/v1/completions", {"prompt": "a", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "a", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "a", "stop": [""]}, 400, "stop"),
    ("/v1/chat/completions", {"messages": []}, 422, "empty"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 422, "role"),
    ("/v1/chat/completions", {"messages": ["hi"]}, 422, "messages[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 422, "text"),
])
def test_bad_requests_are_one_line_4xx(url, route, body, status, words):
    r = httpx.post(url + route, json={"model": "gen", **body}, timeout=60)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert "\n" not in r.json()["error"]["message"]


def test_non_finite_temperature_and_the_other_routes_unchanged(url):
    r = httpx.post(url + "/v1/completions", content=b'{"model": "gen", "prompt": "a", "temperature": NaN}',
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/classify", json={"model": "gen", "input": "a"}, timeout=60)
    assert r.status_code == 422 and "/v1/completions" in r.json()["error"] and r.json()["error_type"] == "Validation"
    r = httpx.post(url + "/v1/classify", json={"model": "nope", "input": "a"}, timeout=60)
    assert r.status_code == 404 and r.json()["error_type"] == "NotFound"  # the existing routes keep their body


def test_generation_does_not_hold_up_other_requests(client, url):
    """While a long stream generates, the event loop and the classifier's batches still answer."""
    stream = client.completions.create(model="gen", prompt=PROMPTS[0], max_tokens=400, stream=True)
    first = next(iter(stream))
    assert first.choices[0].text
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    r = httpx.post(url + "/v1/classify", json={"model": "sent", "input": "a good film"}, timeout=30)
    assert r.status_code == 200
    stream.close()  # the client goes away: the server stops generating at the next token
    again = client.completions.create(model="gen", prompt=PROMPTS[0], max_tokens=3)
    assert again.usage.completion_tokens <= 3


def test_pieces_join_to_the_final_text_whatever_the_stops():
    raw = " alpha beta gamma delta epsilon "
    for stops in [(), ("gam",), ("beta gam",), ("a d",), ("zeta",)]:
        pieces = Pieces(stops)
        sent = []
        for k in range(1, len(raw) + 1):
            if final_text(raw[:k], stops)[1]:
                break
            sent.append(pieces.update(raw[:k]))
        final, _ = final_text(raw, stops)
        sent.append(pieces.finish(final))
        assert "".join(sent) == final, stops


def test_concurrent_greedy_requests_are_generated_together(client, offline, monkeypatch):
    """Requests that wait while the run generates go through one batch, and each gets what it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from transferkit.tasks.generate import complete as module
    prompts = [f"{w} film was" for w in ("good", "dull", "great", "boring", "fine", "poor")]
    want = [r["generated_text"] for r in offline["full"].predict(prompts)]
    batches, real = [], module.generate_ids
    joined, join = [], module.Gather.join
    everyone = threading.Event()

    def slow_generate(model, prompts, *args, **kwargs):
        batches.append(len(prompts))
        everyone.wait(30)  # the first batch holds the run until every request has joined
        return real(model, prompts, *args, **kwargs)

    def counted_join(self, key, inputs):
        job = join(self, key, inputs)
        joined.append(job)
        if len(joined) == len(prompts):
            everyone.set()
        return job
    monkeypatch.setattr(module, "generate_ids", slow_generate)
    monkeypatch.setattr(module.Gather, "join", counted_join)
    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(client.completions.create, model="full", prompt=p) for p in prompts]
        got = [f.result().choices[0].text for f in futures]
    assert got == want
    # whoever was in the first batch, the rest waited together and went through the next one
    assert sum(batches) == len(prompts) and len(batches) <= 2
