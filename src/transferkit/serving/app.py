"""`transferkit serve`: a FastAPI app over a `ModelSet`, every prediction through one `Batcher`.

Routes (the shapes clients already speak):
    POST (each task's)            every registered task adds its own (`Task.add_routes`, in tasks/*/serving.py,
                                  which documents their shapes): /v1/classify and /predict for classify runs,
                                  /v1/ner for ner runs, OpenAI's /v1/completions and /v1/chat/completions for
                                  generate runs
    GET  /v1/models               each run: task, method, base, labels, shared base or not, loaded at
    POST /v1/load_lora_adapter    vLLM: {"lora_name", "lora_path"} for a run under --adapter-root
    POST /v1/unload_lora_adapter  {"lora_name"} (also only with --adapter-root)
    GET  /health, GET /metrics    liveness; Prometheus text (requests, errors, batch sizes, queue, latency)

Errors are {"error": ..., "error_type": ...} as text-embeddings-inference writes them (a task's routes that
speak another API may register that API's error body for their paths: `app.state.error_bodies`); no input
gives a 5xx (a failure inside the model is a 500 with that body, never a traceback).

A task whose answers are not one batched forward pass (generation) passes `call` to `answer`: its function
runs on the run's own predictor in a thread of its own (`ModelSet.call`), never on the event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import tasks
from ..core.errors import UserError
from ..tasks.http import Strict
from .batcher import Batcher, Overloaded, ShuttingDown
from .body_limit import BodyLimit
from .models import Gone, ModelSet

MAX_TEXT_CHARS = 100_000  # a longer text is refused before it is tokenized (on the event loop)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


class LoadRequest(Strict):
    lora_name: str
    lora_path: str


class UnloadRequest(Strict):
    lora_name: str


_ABSOLUTE = re.compile(r"(?<![\w.:/])/[^\s'\",;()<>]+")


def without_server_paths(message: str, root: Path | None) -> str:
    """An error message as a client may read it: a path under the adapter root relative to it, and any other absolute
    path of this machine (one whose first folder exists here, as /home or /tmp do and API routes do not) cut to its
    file name (a folder above it may be a user's name)."""
    if root is not None:
        message = message.replace(f"{root}{os.sep}", "").replace(str(root), "the adapter root")

    def cut(found: re.Match) -> str:
        path = found.group(0).rstrip(".")
        parts = [p for p in path.split("/") if p]
        if not parts or not os.path.isdir(os.sep + parts[0]):
            return found.group(0)
        return ".../" + parts[-1] + found.group(0)[len(path):]
    return _ABSOLUTE.sub(cut, message)


DOCS_ASSETS = "/docs/assets/"
MAX_BODY_BYTES = 8 * 2**20  # 256 texts of 32 KB each; larger bodies are refused before they are read


def add_offline_docs(app: FastAPI) -> None:
    """/docs as FastAPI serves it, with Swagger UI's script and style from the installed swagger-ui-bundle package
    rather than a CDN, so the page works on a machine without internet (FastAPI's ReDoc page, CDN-only, is off)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS.rstrip("/"), StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="transferkit API",
                                   swagger_js_url=DOCS_ASSETS + "swagger-ui-bundle.js",
                                   swagger_css_url=DOCS_ASSETS + "swagger-ui.css",
                                   swagger_favicon_url=DOCS_ASSETS + "favicon-32x32.png")


class InFlight:
    """Counts the requests the app is answering (`app.state.in_flight`), each until the last byte of its response
    is sent, a streamed one included: what a draining server waits for (`serving.run.DrainingServer`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope["app"].state
        state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1


def create_app(models: ModelSet, *, default_model: str | None = None, adapter_root: str | Path | None = None,
               api_key: str | None = None, max_batch_tokens: int = 16384, max_wait_ms: float = 5.0,
               max_queue: int = 512, max_inputs: int = 256, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The server's app (uvicorn runs it; tests drive it with TestClient)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    registry = CollectorRegistry()
    requests = Counter("transferkit_requests", "requests by route, model and status", ["route", "model", "status"],
                       registry=registry)
    latency = Histogram("transferkit_request_seconds", "request latency", ["route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    batch_texts = Histogram("transferkit_batch_texts", "texts per model batch", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
    queue_depth = Gauge("transferkit_queue_depth", "requests waiting for a batch", registry=registry)

    batcher = Batcher(models.run, max_batch_tokens, max_wait_ms, max_queue, on_batch=lambda n, _: batch_texts.observe(n))
    calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="transferkit-call")  # `answer(..., call=...)`
    queue_depth.set_function(lambda: batcher.depth)
    root = Path(adapter_root).resolve() if adapter_root else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        batcher.start()
        yield
        await batcher.stop()  # uvicorn stops taking requests first; what is queued still finishes
        calls.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="transferkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Many task models on one base encoder, batched across requests and tasks.")
    add_offline_docs(app)
    app.state.draining, app.state.in_flight = False, 0  # `serving.run.DrainingServer` sets draining on SIGTERM
    app.state.models, app.state.batcher = models, batcher

    # ---- errors in one shape (per path: a task's routes may speak another API's) ---------------
    error_bodies: dict[str, Callable[[int, str, str], Any]] = {}  # path -> body(status, message, kind)
    app.state.error_bodies = error_bodies

    def error_body(path: str, status: int, message: str, kind: str) -> Any:
        body = error_bodies.get(path)
        return body(status, message, kind) if body else {"error": message, "error_type": kind}
    # inside the guard below (Starlette wraps each middleware added later around those before): the key and the
    # drain are checked first, then a body over the cap is refused before a route reads any of it
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, error_body=error_body)

    def error(request: Request, status: int, message: str, kind: str,
              headers: dict[str, str] | None = None) -> JSONResponse:
        message = without_server_paths(message, root)
        return JSONResponse(error_body(request.url.path, status, message, kind), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(request, e.status, e.message, e.kind, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        if "json" not in request.headers.get("content-type", ""):
            return error(request, 422, "send the body as JSON with the header content-type: application/json",
                         "Validation")
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(request, 422, f"{where or 'body'}: {first.get('msg', 'invalid request')}", "Validation")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(request, e.status_code, str(e.detail), "NotFound" if e.status_code == 404 else "Validation")

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        # metric labels come from the app's own routes and models only: client input never adds a series
        route = request.url.path if request.url.path in app.state.route_paths else "unmatched"
        if api_key and route not in ("/health", "/docs", "/openapi.json") and not request.url.path.startswith(DOCS_ASSETS):
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                requests.labels(route, "", "401").inc()
                return error(request, 401, "missing or wrong API key (Authorization: Bearer KEY)", "Unauthorized")
        if app.state.draining:  # after SIGTERM, while the requests in flight finish: say so, do not start work
            requests.labels(route, "", "503").inc()
            return error(request, 503, "the server is shutting down; retry on another instance", "Unhealthy",
                         {"Connection": "close", "Retry-After": "1"})
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - a failure inside the model: the error body, counted, no traceback
            first = str(e).splitlines()[0] if str(e) else ""
            response = error(request, 500, f"{type(e).__name__}: {first}", "Backend")
        latency.labels(route).observe(time.perf_counter() - t0)
        requests.labels(route, getattr(request.state, "model", ""), str(response.status_code)).inc()
        truncated = getattr(request.state, "truncated", None)
        if truncated and response.status_code == 200:  # said on every route, whatever its body's shape
            response.headers["X-Truncated-Inputs"] = ",".join(map(str, truncated))
        return response

    app.add_middleware(InFlight)  # outermost: a request counts until its last byte is sent, streams included

    # ---- helpers ------------------------------------------------------------------------------
    def served(name: str | None, task: str, request: Request) -> Any:
        if name is None:
            if default_model is None:
                raise ApiError(422, "model: required (this server has no default model)", "Validation")
            name = default_model
        try:
            entry = models.get(name)
        except KeyError:
            raise ApiError(404, f"model {name!r} is not loaded; GET /v1/models lists them", "NotFound") from None
        request.state.model = name  # a metric label: only names that are loaded
        if entry.task != task and tasks.get(entry.task).serving_task != task:
            routes = task_routes.get(tasks.get(entry.task).serving_task or entry.task)
            where = f"use {routes[0]}" if routes else "this server has no route for its task"
            raise ApiError(422, f"model {name!r} is a {entry.task} run: {where}", "Validation")
        return entry

    def inputs_of(task: Any, value: Any) -> list[Any]:
        """The request's inputs, each checked by the run's task (a text, for the tasks that read one)."""
        items = [value] if task.is_single(value) else list(value)
        if not items:
            raise ApiError(422, "input: empty list (give at least one text)", "Validation")
        if len(items) > max_inputs:
            raise ApiError(413, f"input: {len(items)} texts, more than the {max_inputs} one request may hold",
                           "Validation")
        for i, item in enumerate(items):
            problem = task.input_problem(item, MAX_TEXT_CHARS)
            if problem is not None:
                status, why = problem
                raise ApiError(status, f"input[{i}]: {why}", "Validation")
        return items

    def token_counts(task: Any, entry: Any, texts: list[Any], refuse_longer: bool) -> list[int]:
        """Tokens per input, uncut; over the run's max_length is a 413 when the client did not ask for truncation."""
        try:
            tokenizer = models.tokenizer(entry.name)
        except KeyError:
            raise ApiError(404, f"model {entry.name!r} is not loaded", "NotFound") from None
        counts = task.token_counts(tokenizer, texts)
        if refuse_longer:
            for i, n in enumerate(counts):
                if n > entry.max_length:
                    raise ApiError(413, f"inputs[{i}]: {n} tokens, more than the model's {entry.max_length} (send "
                                        f"\"truncate\": true to cut it)", "Validation")
        return counts

    async def batched(kind: str, name: str, texts: list[str], tokens: list[int]) -> list[Any]:
        try:
            results = await batcher.submit(kind, [(name, t) for t in texts], sum(tokens))
        except Overloaded as e:
            raise ApiError(429, f"overloaded: {e}", "Overloaded", {"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), "Unhealthy") from None
        if any(isinstance(r, Gone) for r in results):
            raise ApiError(404, f"model {name!r} was unloaded while the request waited", "NotFound")
        for r in results:
            if isinstance(r, torch.Tensor) and not bool(torch.isfinite(r).all()):
                raise ApiError(500, f"model {name!r} produced non-finite scores for this input", "Backend")
        return results

    async def called(name: str, call: Callable[[Any, list[Any]], Any], items: list[Any]) -> Any:
        """`call(predictor, items)` on the run's own predictor, in a thread (`ModelSet.call`)."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(calls, models.call, name, call, items)
        except UserError as e:
            raise ApiError(400, str(e).splitlines()[0], "Validation") from None
        if isinstance(result, Gone):
            raise ApiError(404, f"model {name!r} was unloaded while the request waited", "NotFound")
        return result

    async def answer(task: str, request: Request, name: str | None, inputs: Any, refuse_longer: bool = False,
                     call: Callable[[Any, list[Any]], Any] | None = None) -> tuple[Any, list[int], Any]:
        """Every prediction route's steps for runs of `task`: the run, its checked texts and tokens, the
        batched results (per text, the task's `serving_results`). With `call`, `call(predictor, inputs)`
        on the run's own predictor instead of the batches, its result as it is (and no token counts)."""
        entry = served(name, task, request)
        kind = tasks.get(entry.task)  # the run's own task checks and counts its inputs
        texts = inputs_of(kind, inputs)
        if call is not None:
            return entry, [], await called(entry.name, call, texts)
        counts = token_counts(kind, entry, texts, refuse_longer)
        # the inputs cut to the run's limit (asked for with "truncate": true): the X-Truncated-Inputs header says which
        request.state.truncated = [i for i, n in enumerate(counts) if n > entry.max_length]
        tokens = [min(n, entry.max_length) for n in counts]
        return entry, tokens, await batched(entry.task, entry.name, texts, tokens)

    # ---- routes -------------------------------------------------------------------------------
    task_routes: dict[str, list[str]] = {}  # task -> the paths it added (a wrong-task message names the first)
    for task_name in tasks.TASKS:
        before = len(app.routes)
        tasks.get(task_name).add_routes(app, functools.partial(answer, task_name))
        task_routes[task_name] = [getattr(r, "path", "") for r in app.routes[before:]]

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [s.describe() for s in list(models.served.values())]}

    @app.post("/v1/load_lora_adapter")
    async def load(body: LoadRequest) -> dict[str, Any]:
        if root is None:
            raise ApiError(400, "loading at run time needs the server started with --adapter-root DIR", "Validation")
        if "\x00" in body.lora_path or len(body.lora_path) > 4096:  # checked before the filesystem sees it
            raise ApiError(400, "lora_path: not a usable path (a NUL byte, or over 4,096 characters)", "Validation")
        path = (root / body.lora_path).resolve()  # an absolute lora_path stays itself
        if path != root and root not in path.parents:
            raise ApiError(400, f"lora_path {body.lora_path!r} is outside the adapter root {root}", "Validation")
        try:
            entry = await asyncio.get_running_loop().run_in_executor(None, models.load, body.lora_name, str(path))
        except UserError as e:
            raise ApiError(400, str(e), "Validation") from None
        return {"status": "loaded", **entry.describe()}

    @app.post("/v1/unload_lora_adapter")
    async def unload(body: UnloadRequest) -> dict[str, Any]:
        if root is None:
            raise ApiError(400, "unloading at run time needs the server started with --adapter-root DIR", "Validation")
        try:
            await asyncio.get_running_loop().run_in_executor(None, models.unload, body.lora_name)
        except KeyError:
            raise ApiError(404, f"model {body.lora_name!r} is not loaded", "NotFound") from None
        return {"status": "unloaded", "id": body.lora_name}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(models.served)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.route_paths = {getattr(r, "path", None) for r in app.routes}  # once, not per request
    return app
