"""classify's HTTP routes (`transferkit serve`), in the shapes clients already speak:

    POST /v1/classify   vLLM: {"model", "input": str | [str], "truncate"?} -> {"id", "object": "list", "created",
                        "model", "data": [{"index", "label", "probs", "num_classes"}], "usage"}
    POST /predict       text-embeddings-inference: {"inputs", "raw_scores", "truncate", "model"?}
                        -> [{"label", "score"}] per input, best first

On both, a text over the run's token limit is a 413 unless the request says "truncate": true (then it is cut
to the limit, as the model was trained, and the response says so: the X-Truncated-Inputs header lists the cut
inputs' indices, and /v1/classify marks their items "truncated": true). They answer every task that names classify as its `serving_task` too: an input is what the run's task
reads (a pair run: [text, text_pair], so `"inputs": [["a", "b"], ...]` as TEI's /predict takes pairs),
and each data item / score list is the run's task's (`classify_item`, `predict_items`: a multi-label run
adds "labels", a regressor gives "values").

Imported when a server starts (`SequenceClassification.add_routes`).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Union

from fastapi import FastAPI, Request

from .. import get as get_task
from ..http import Answer, Strict, Texts


Inputs = Union[Texts, list[list[str]]]  # texts, or pairs of texts for a pair run


class ClassifyRequest(Strict):
    model: str
    input: Inputs
    truncate: bool = False  # as /predict: a text over the run's token limit is a 413 unless the client asks to cut it


class PredictRequest(Strict):
    inputs: Inputs
    raw_scores: bool = False
    truncate: bool = False
    model: Union[str, None] = None


def add_routes(app: FastAPI, answer: Answer) -> None:
    """/v1/classify and /predict on `app`, answering from each text's logits [labels]."""

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> dict[str, Any]:
        entry, tokens, logits = await answer(request, body.model, body.input, refuse_longer=not body.truncate)
        task = get_task(entry.task)
        cut = set(request.state.truncated)
        data = [{"index": i, **task.classify_item(row, entry.labels), **({"truncated": True} if i in cut else {})}
                for i, row in enumerate(logits)]
        used = sum(tokens)
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": entry.name, "data": data, "usage": {"prompt_tokens": used, "total_tokens": used}}

    @app.post("/predict")
    async def predict(body: PredictRequest, request: Request) -> Any:
        entry, _, logits = await answer(request, body.model, body.inputs, refuse_longer=not body.truncate)
        task = get_task(entry.task)
        out = [task.predict_items(row, entry.labels, body.raw_scores) for row in logits]
        return out[0] if task.is_single(body.inputs) else out
