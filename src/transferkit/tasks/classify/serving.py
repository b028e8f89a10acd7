"""classify's HTTP routes (`transferkit serve`), in the shapes clients already speak:

    POST /v1/classify   vLLM: {"model", "input": str | [str]} -> {"id", "object": "list", "created",
                        "model", "data": [{"index", "label", "probs", "num_classes"}], "usage"}
    POST /predict       text-embeddings-inference: {"inputs", "raw_scores", "truncate", "model"?}
                        -> [{"label", "score"}] per input, best first

Imported when a server starts (`SequenceClassification.add_routes`).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Union

import torch
from fastapi import FastAPI, Request

from ..http import Answer, Strict, Texts


class ClassifyRequest(Strict):
    model: str
    input: Texts


class PredictRequest(Strict):
    inputs: Texts
    raw_scores: bool = False
    truncate: bool = False
    model: Union[str, None] = None


def add_routes(app: FastAPI, answer: Answer) -> None:
    """/v1/classify and /predict on `app`, answering from each text's logits [labels]."""

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> dict[str, Any]:
        entry, tokens, logits = await answer(request, body.model, body.input)
        data = []
        for i, row in enumerate(logits):
            probs = torch.softmax(row, dim=-1)
            k = int(probs.argmax())
            data.append({"index": i, "label": entry.labels[k], "probs": [float(p) for p in probs],
                         "num_classes": len(entry.labels)})
        used = sum(tokens)
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": entry.name, "data": data, "usage": {"prompt_tokens": used, "total_tokens": used}}

    @app.post("/predict")
    async def predict(body: PredictRequest, request: Request) -> Any:
        entry, _, logits = await answer(request, body.model, body.inputs, refuse_longer=not body.truncate)
        out = []
        for row in logits:
            scores = row if body.raw_scores else torch.softmax(row, dim=-1)
            order = sorted(range(len(entry.labels)), key=lambda k: -float(scores[k]))
            out.append([{"label": entry.labels[k], "score": float(scores[k])} for k in order])
        return out[0] if isinstance(body.inputs, str) else out
