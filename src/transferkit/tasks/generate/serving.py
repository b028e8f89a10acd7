"""generate's HTTP routes (`transferkit serve`), in OpenAI's shapes, so OpenAI's own clients work against the server:

    POST /v1/completions       {"model", "prompt": str | [str], options} -> {"id", "object": "text_completion",
                               "created", "model", "choices": [{"index", "text", "finish_reason", "logprobs"}],
                               "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
    POST /v1/chat/completions  {"model", "messages": [{"role", "content"}], options} -> {"object":
                               "chat.completion", "choices": [{"index", "message": {"role": "assistant",
                               "content"}, "finish_reason", "logprobs"}], "usage"}

A prompt is formatted with the run's training template and decoded as `predict` decodes it (a prompt shaped
like the training file's prompt column gets its completion); the messages of a chat request are the prompt's
turns (system, user, assistant; "developer" is read as system; a content given as a list of text parts is
their text joined). Options: `max_tokens` (chat: also `max_completion_tokens`; 1 to 4,096; default the run's
own budget), `temperature` (0 to 2), `top_p` (over 0, at most 1), `seed`, `stop` (a string or up to 4: the
text is cut at the first and generation ends there), `stream`, `stream_options.include_usage`. Decoding is
the run's own, greedy, unless the request gives a temperature above 0 or a top_p below 1 (then it samples, at
temperature 1 unless given); temperature 0 is greedy. `n` and `best_of` other than 1, `echo`, `logprobs`,
`suffix`, non-zero penalties and a non-empty `logit_bias` are refused (400) rather than silently not done;
`user` and fields this server does not know are ignored, as OpenAI's clients may send them.

`"stream": true` answers server-sent events (`data: {chunk}` lines, then `data: [DONE]`): "text_completion" /
"chat.completion.chunk" objects, token by token as the model generates (whole words at a time: see
`complete`), the last chunk of each choice with its finish_reason; a failure after the stream began is a
`data: {"error": {...}}` event. Several prompts in one streamed request are generated one after another.
Generation runs on the run's own predictor in a thread (`answer(..., call=...)`), never on the event loop;
greedy requests that wait for a run while it generates are generated together, in one batch (`Gather`).

Errors on these paths have OpenAI's body, {"error": {"message", "type", "param", "code"}}, so OpenAI's clients
raise their own exceptions (unknown model: 404, NotFoundError).

Imported when a server starts (`Generation.add_routes`).
"""
from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from typing import Any, AsyncIterator, Optional, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..http import Answer
from .complete import MAX_TOKENS, Completion, Decoding, Gather, Stream, complete

MAX_STOPS, MAX_STOP_CHARS = 4, 256
ERROR_TYPES = {"NotFound": "not_found_error", "Validation": "invalid_request_error", "Unauthorized":
               "authentication_error", "Overloaded": "rate_limit_error"}


def openai_error(status: int, message: str, kind: str) -> dict[str, Any]:
    """An error body as OpenAI's API writes it."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(kind, "server_error"), "param": None,
                      "code": status}}


class Options(BaseModel):
    """What both routes take. Unknown fields are ignored (OpenAI's clients send some of their own)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: Optional[bool] = None
    stream_options: Optional[dict[str, Any]] = None
    n: Optional[int] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, Any]] = None
    user: Optional[str] = None


class CompletionRequest(Options):
    prompt: Union[str, list[str]]
    best_of: Optional[int] = None
    echo: Optional[bool] = None
    logprobs: Optional[int] = None
    suffix: Optional[str] = None


class ChatRequest(Options):
    messages: list[Any]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None


UNSUPPORTED = {"n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False,), "top_logprobs": (0,),
               "suffix": ("",), "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},)}


def _refuse(body: Options) -> None:
    """A 400 for an option this server would otherwise silently not honour (given, and not its default)."""
    for key, allowed in UNSUPPORTED.items():
        value = getattr(body, key, None)
        if value is None or any(value is a if isinstance(a, bool) else
                                (not isinstance(value, bool) and value == a) for a in allowed):
            continue
        what = "one choice per prompt" if key in ("n", "best_of") else "the completion's text only"
        raise HTTPException(400, f"{key}={value!r} is not supported by this server (it gives {what}); leave it out")


def _number(key: str, value: Any, low: float, high: float, low_open: bool) -> None:
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        raise HTTPException(400, f"{key} must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}], "
                                 f"got {value!r}")


def decoding(body: Options, max_tokens: int | None) -> Decoding:
    """The request's decoding (module docstring), each option checked: a 400 naming a bad one."""
    _refuse(body)
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS:
        raise HTTPException(400, f"max_tokens must be an integer in [1, {MAX_TOKENS}], got {max_tokens}")
    if body.temperature is not None:
        _number("temperature", body.temperature, 0.0, 2.0, False)
    if body.top_p is not None:
        _number("top_p", body.top_p, 0.0, 1.0, True)
    if body.seed is not None and not 0 <= body.seed < 2 ** 63:
        raise HTTPException(400, f"seed must be an integer in [0, 2**63), got {body.seed}")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise HTTPException(400, f"stop: at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} "
                                 "characters")
    sample = (body.temperature is not None and body.temperature > 0) or \
             (body.temperature is None and body.top_p is not None and body.top_p < 1)
    return Decoding(max_tokens, sample, float(body.temperature or 1.0) if sample else 1.0,
                    float(body.top_p if body.top_p is not None else 1.0), body.seed, tuple(stops))


def chat_turns(messages: list[Any]) -> list[Any]:
    """The messages as prompt turns ({"role", "content": str}); the task checks roles and contents."""
    turns = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise HTTPException(422, f"messages[{k}]: not a {{\"role\", \"content\"}} object")
        content = m.get("content")
        if isinstance(content, list):  # content parts: their text
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise HTTPException(422, f"messages[{k}].content: only text parts ({{\"type\": \"text\", "
                                         "\"text\"}) can be read")
            content = "".join(p["text"] for p in content)
        role = "system" if m.get("role") == "developer" else m.get("role")
        turns.append({"role": role, "content": content})
    return turns


def _usage(done: list[Completion]) -> dict[str, int]:
    p, c = sum(d.prompt_tokens for d in done), sum(d.completion_tokens for d in done)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Queue(Stream):
    """A `Stream` that hands what the generating thread gives to the event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, event: tuple) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def start(self) -> None:
        self.put(("start",))

    def text(self, index: int, piece: str) -> None:
        self.put(("text", index, piece))

    def done(self, index: int, completion: Completion, rest: str) -> None:
        self.put(("done", index, completion, rest))


def add_routes(app: FastAPI, answer: Answer) -> None:
    """/v1/completions and /v1/chat/completions on `app`."""
    bodies = getattr(app.state, "error_bodies", None)
    if bodies is not None:
        bodies.update({"/v1/completions": openai_error, "/v1/chat/completions": openai_error})
    gather = Gather()

    async def generated(request: Request, model: str, inputs: Any, how: Decoding) -> tuple[Any, list[Completion]]:
        """(served run, completions) of a request that is not streamed: greedy ones gathered into batches with the
        run's other waiting requests (`Gather`), the others on their own."""
        if not gather.batchable(how):
            entry, _, done = await answer(request, model, inputs,
                                          call=lambda predictor, items: complete(predictor, items, how))
            return entry, done
        key = gather.key(model, how)
        job = gather.join(key, inputs)
        try:
            entry, _, done = await answer(request, model, inputs,
                                          call=lambda predictor, items: gather.run(key, job, predictor, how))
        finally:
            gather.leave(key, job)
        return entry, done

    async def streamed(request: Request, body: Options, inputs: Any, how: Decoding, chat: bool) -> StreamingResponse:
        stream = _Queue(asyncio.get_running_loop())
        job = asyncio.ensure_future(answer(request, body.model, inputs,
                                           call=lambda predictor, items: complete(predictor, items, how, stream)))
        job.add_done_callback(lambda _: stream.queue.put_nowait(("end",)))  # events() reads its result or error
        first = await stream.queue.get()
        if first[0] == "end":  # refused before generating (unknown model, bad prompt, too many tokens...)
            job.result()
            stream.queue.put_nowait(first)
        meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": body.model}
        usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(index: int, text: str | None, reason: str | None = None, role: bool = False) -> str:
            if chat:
                delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
            return _sse({**meta, "choices": [choice]} | ({"usage": None} if usage else {}))

        async def events() -> AsyncIterator[str]:
            done: list[Completion] = []
            try:
                if chat:
                    yield chunk(0, "", role=True)
                while True:
                    event = await stream.queue.get()
                    if event[0] == "text":
                        yield chunk(event[1], event[2])
                    elif event[0] == "done":
                        done.append(event[2])
                        yield chunk(event[1], event[3] or (None if chat else ""), event[2].finish_reason)
                    elif event[0] == "end":
                        break
                try:
                    job.result()
                except Exception as e:  # noqa: BLE001 - after the stream began: an error event, as OpenAI sends
                    status, message = getattr(e, "status", getattr(e, "status_code", 500)), getattr(
                        e, "message", getattr(e, "detail", f"{type(e).__name__}: {e}"))
                    yield _sse(openai_error(status, str(message).splitlines()[0] if str(message) else "",
                                            getattr(e, "kind", "Backend")))
                    return
                if usage:
                    yield _sse({**meta, "choices": [], "usage": _usage(done)})
                yield "data: [DONE]\n\n"
            finally:
                stream.cancelled.set()  # a client that went away stops the generation at its next token
                job.add_done_callback(lambda f: f.cancelled() or f.exception())  # an error after it left: read

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        how = decoding(body, body.max_tokens)
        if body.stream:
            return await streamed(request, body, body.prompt, how, chat=False)
        entry, done = await generated(request, body.model, body.prompt, how)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": entry.name, "choices": [{"index": i, "text": d.text, "finish_reason": d.finish_reason,
                                                  "logprobs": None} for i, d in enumerate(done)],
                "usage": _usage(done)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        if body.max_tokens is not None and body.max_completion_tokens is not None:
            raise HTTPException(400, "give max_tokens or max_completion_tokens, not both")
        how = decoding(body, body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens)
        turns = chat_turns(body.messages)
        if not turns:
            raise HTTPException(422, "messages: empty list (give at least one turn)")
        if body.stream:
            return await streamed(request, body, turns, how, chat=True)
        entry, done = await generated(request, body.model, turns, how)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": entry.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done[0].text},
                             "finish_reason": done[0].finish_reason, "logprobs": None}],
                "usage": _usage(done)}
