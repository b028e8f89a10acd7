"""ner's HTTP route (`transferkit serve`):

    POST /v1/ner   {"model", "input": str | [str]} -> {"id", "object": "list", "created", "model",
                   "data": [{"index", "entities": [...]}]} (entities aggregated "first")

Imported when a server starts (`TokenClassification.add_routes`).
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request

from ..http import Answer, Strict, Texts


class NerRequest(Strict):
    model: str
    input: Texts


def add_routes(app: FastAPI, answer: Answer) -> None:
    """/v1/ner on `app`, answering from each text's entities."""

    @app.post("/v1/ner")
    async def ner(body: NerRequest, request: Request) -> dict[str, Any]:
        entry, _, entities = await answer(request, body.model, body.input)
        return {"id": f"ner-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": entry.name,
                "data": [{"index": i, "entities": e} for i, e in enumerate(entities)]}
