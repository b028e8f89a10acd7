"""Request bodies bounded in size and in time, before the app reads them (an ASGI middleware).

FastAPI reads a whole body before validating it, so a 40 MB body was read into memory before the 413 that
`--max-inputs` gives; and uvicorn has no timeout on a body that trickles in (its keep-alive timeout covers idle
connections between requests only). Here a request whose Content-Length is over the cap is answered 413 without
reading a byte of it, a body sent without a length (chunked) is counted as it arrives and cut off at the cap, and a
body whose next chunk takes longer than `chunk_seconds` is answered 408 (once the body is in, the app may wait on
`receive` as long as it likes: a streamed response listens there for the client going away). Starlette has no such setting, so it is
written here; the error body is the route's own shape (`error_body`).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

ErrorBody = Callable[[str, int, str, str], Any]  # (path, status, message, kind) -> the JSON body


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int, error_body: ErrorBody, chunk_seconds: float = 30.0) -> None:
        self.app, self.max_bytes, self.error_body, self.chunk_seconds = app, max_bytes, error_body, chunk_seconds

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable]):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = f"the request body is over the server's limit of {self.max_bytes:,} bytes"
        try:
            if declared is not None and int(declared) > self.max_bytes:
                return await self._answer(scope, send, 413, too_big)
        except ValueError:
            return await self._answer(scope, send, 400, "Content-Length is not a number")
        seen, started, refused = 0, False, False

        async def refuse(status: int, message: str) -> dict:
            """Answer now (the app has not), and tell the app the client left: whatever it sends next is dropped."""
            nonlocal refused
            if not started:
                await self._answer(scope, send, status, message)
            refused = True
            return {"type": "http.disconnect"}

        body_done = False

        async def bounded() -> dict:
            nonlocal seen, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done or started:  # a streamed response waiting to hear of a disconnect: no time limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.chunk_seconds)
            except asyncio.TimeoutError:
                return await refuse(408, f"the request body stalled for {self.chunk_seconds:g} s")
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    return await refuse(413, too_big)
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            if refused:  # the answer was given; the app's own (its error for the "disconnect") is not sent
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, bounded, tracked)

    async def _answer(self, scope: dict, send: Callable[[dict], Awaitable], status: int, message: str) -> None:
        body = json.dumps(self.error_body(scope.get("path", ""), status, message, "Validation")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
