"""Completions as a server answers them: the run's own prompt formatting and decoding (`Generation.predict_rows`
gives the same text), plus what OpenAI's shapes add: token counts, why each completion ended, stop strings, and
the text in pieces while it is generated.

Streaming is token by token: after every generated token a stopping-criteria hook decodes the completion so far
and hands on the new text, whole words at a time (a word's last token may still change how it decodes), never
trailing whitespace (the finished text is stripped, as `predict`'s is) and never the start of a stop string
(it may become one). The pieces of a completion always join to its final text.

A stop string cuts the decoded completion at its first occurrence (before the strip) and ends generation there;
the finish reason is then "stop", as it is when the model writes its end token, and "length" when the token
budget ran out.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ...core.errors import UserError
from .format import end_token
from .model import causal_body, generate_ids

MAX_TOKENS = 4096  # the most new tokens one request may ask for


@dataclass
class Decoding:
    """How to decode one request's prompts. `max_new_tokens` None: the run's own budget; `do_sample` False:
    greedy (the run's own decoding)."""

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def final_text(raw: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(the completion a client gets from the decoded `raw`, whether a stop string cut it)."""
    cut = first_stop(raw, stops)
    return (raw if cut is None else raw[:cut]).strip(), cut is not None


class Pieces:
    """The text of a growing completion handed on in pieces that join to its final text (module docstring)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops, self.sent = tuple(stops), ""

    def update(self, raw: str) -> str:
        """The new piece that is safe to send, given the decoded completion so far (no stop string in it)."""
        text = raw.lstrip()
        keep = len(text)
        for s in self.stops:  # the longest end of the text that a stop string starts with is held back
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    keep = min(keep, len(text) - k)
                    break
        safe = text[:keep]
        cut = max(safe.rfind(" "), safe.rfind("\n"), safe.rfind("\t"))  # whole words only
        safe = safe[:cut].rstrip() if cut >= 0 else ""
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        piece, self.sent = safe[len(self.sent):], safe
        return piece

    def finish(self, final: str) -> str:
        """The rest of the final text (empty if what was sent is not its start: a later token re-decoded an
        earlier one differently, which whole-word pieces make rare)."""
        piece = final[len(self.sent):] if final.startswith(self.sent) else ""
        self.sent = final
        return piece


class _Watch(StoppingCriteria):
    """A stopping criterion for one prompt's `generate`: sees each new token, hands on text pieces, and ends
    generation at a stop string or when the client went away."""

    def __init__(self, tokenizer: Any, start: int, stops: Sequence[str], on_text: Callable[[str], None] | None,
                 cancelled: threading.Event | None) -> None:
        self.tokenizer, self.start, self.stops = tokenizer, start, tuple(stops)
        self.on_text, self.cancelled = on_text, cancelled
        self.pieces = Pieces(stops)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> torch.Tensor:
        done = self.cancelled is not None and self.cancelled.is_set()
        if (self.stops or self.on_text) and not done:
            raw = self.tokenizer.decode(input_ids[0, self.start:].tolist(), skip_special_tokens=True)
            done = first_stop(raw, self.stops) is not None
            if self.on_text is not None and not done:
                piece = self.pieces.update(raw)
                if piece:
                    self.on_text(piece)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def context_size(model: Any) -> int | None:
    """The most positions the model reads (None when its config does not say)."""
    config = getattr(causal_body(model), "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


class Stream:
    """Where `complete` hands a streamed request's text while it is generated (called from the generating
    thread): `start()` once the request is checked, `text(index, piece)` as each completion grows, `done(index,
    completion, rest)` when it ends (`rest`: its text not yet handed on). `cancelled` set ends generation at the
    next token (the client went away)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def start(self) -> None: ...

    def text(self, index: int, piece: str) -> None: ...

    def done(self, index: int, completion: Completion, rest: str) -> None: ...


def complete(predictor: Any, items: list[Any], decoding: Decoding, stream: Stream | None = None) -> list[Completion]:
    """Per prompt (a string or chat turns, checked by the caller), its completion from a generation run's
    `Predictor`, formatted and decoded as `predict` does. With a `stream` the prompts are generated one at a
    time and each completion is handed on while it grows (the module docstring). Asking for more tokens than
    the model has positions is a UserError."""
    task, tok = predictor.task, predictor.tokenizer
    budget = int(decoding.max_new_tokens or task.max_new_tokens)
    try:
        prompts = task.prompt_token_ids(tok, items, predictor.max_length)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a chat template that refuses these turns (say, a system turn)
        raise UserError(f"messages: the run's chat template cannot format them: {str(e).splitlines()[0]}") from None
    limit = context_size(predictor.model)
    longest = max(len(p) for p in prompts)
    if limit is not None and longest + budget > limit:
        raise UserError(f"max_tokens: the prompt's {longest} tokens and {budget} new ones exceed the model's "
                        f"{limit} positions; ask for at most {max(limit - longest, 0)}")
    args = (predictor.pad_id, end_token(tok), predictor.device, task.generate_batch, budget, decoding.do_sample,
            decoding.temperature, decoding.top_p, decoding.seed)
    if stream is None and not decoding.stop:  # batched, exactly as `predict`
        return [_completion(tok, p, ids, budget, decoding.stop)
                for p, ids in zip(prompts, generate_ids(predictor.model, prompts, *args))]
    if stream is not None:
        stream.start()
    out = []
    for i, p in enumerate(prompts):  # one prompt at a time, each watched token by token
        if stream is not None and stream.cancelled.is_set():
            break
        emit = (lambda piece, i=i: stream.text(i, piece)) if stream is not None else None
        watch = _Watch(tok, len(p), decoding.stop, emit, stream.cancelled if stream is not None else None)
        ids = generate_ids(predictor.model, [p], *args, stopping_criteria=StoppingCriteriaList([watch]))[0]
        out.append(_completion(tok, p, ids, budget, decoding.stop))
        if stream is not None:
            stream.done(i, out[-1], watch.pieces.finish(out[-1].text))
    return out


def _completion(tokenizer: Any, prompt: list[int], ids: list[int], budget: int, stops: Sequence[str]) -> Completion:
    text, cut = final_text(tokenizer.decode(ids, skip_special_tokens=True), stops)
    return Completion(text, len(prompt), len(ids), "stop" if cut or len(ids) < budget else "length")


class Job:
    """One request waiting in a `Gather`: its inputs, and its completions (or error) once generated."""

    def __init__(self, inputs: Any) -> None:
        self.inputs = inputs
        self.result: list[Completion] | None = None
        self.error: BaseException | None = None

    def answer(self) -> list[Completion]:
        if self.error is not None:
            raise self.error
        return self.result or []


class Gather:
    """Greedy requests of one run that wait while it generates are generated together, in one batch.

    A request `join`s before it queues for the run (`ModelSet.call` lets one call of a run work at a time); the
    call that gets the run next takes every request of its key waiting then (`run`), generates their prompts as
    one batch, left-padded as `predict` batches them, and hands each request its completions: a request whose
    completions were made in an earlier call finds them done when its own call comes. Only greedy requests
    without stop strings gather (`batchable`): a sampled request keeps its own seed, a stop string needs its
    prompt watched token by token. Under load the batch grows with the queue; alone, a request waits for
    nothing. A request whose inputs fail the task's checks, or a batch the model refuses (a prompt too long for
    the new tokens asked), falls back to each request on its own, so one bad request fails alone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple, list[Job]] = {}

    @staticmethod
    def batchable(decoding: Decoding) -> bool:
        return not decoding.do_sample and not decoding.stop

    @staticmethod
    def key(name: str, decoding: Decoding) -> tuple:
        return (name, *dataclasses.astuple(decoding))

    def join(self, key: tuple, inputs: Any) -> Job:
        job = Job(inputs)
        with self._lock:
            self._waiting.setdefault(key, []).append(job)
        return job

    def leave(self, key: tuple, job: Job) -> None:
        """Take back a request that was refused before its call (its inputs are nobody's batch)."""
        with self._lock:
            waiting = self._waiting.get(key, [])
            if job in waiting:
                waiting.remove(job)

    def run(self, key: tuple, job: Job, predictor: Any, decoding: Decoding) -> list[Completion]:
        """`job`'s completions, generating every waiting request of `key` with it (the caller holds the run)."""
        with self._lock:
            if job.result is not None or job.error is not None:
                return job.answer()
            jobs = self._waiting.pop(key, [])
        if job not in jobs:
            jobs.append(job)
        task = predictor.task
        spans, items = [], []
        for j in jobs:
            try:
                checked = task.check_inputs([j.inputs] if task.is_single(j.inputs) else list(j.inputs))
            except UserError as e:
                j.error = e
                continue
            spans.append((j, len(items), len(checked)))
            items += checked
        try:
            done = complete(predictor, items, decoding) if items else []
        except UserError:  # one request's prompt: each on its own, so only that one fails
            done = None
        for j, start, n in spans:
            if done is not None:
                j.result = done[start:start + n]
                continue
            try:
                j.result = complete(predictor, items[start:start + n], decoding)
            except UserError as e:
                j.error = e
        return job.answer()
