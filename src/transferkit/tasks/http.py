"""What every task's HTTP routes (`tasks/*/serving.py`) share: strict request bodies, the
one-text-or-a-list field, and the type of the server's `answer` steps. Imported only by the routes
and the server (fastapi and pydantic stay out of training and prediction)."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Union

from pydantic import BaseModel, ConfigDict

Texts = Union[str, list[str]]

# `answer(request, model, inputs, refuse_longer=False, call=None)`: the server's steps for one task's runs (find
# the run, check the texts, batch them with every other request) -> (served run, tokens per text, per text the
# task's `serving_results`); see `Task.add_routes`. With `call(predictor, inputs)`, that function runs on the
# run's own predictor in a thread instead of the batches (generation), and its result comes back as it is.
Answer = Callable[..., Awaitable[tuple[Any, list[int], list[Any]]]]


class Strict(BaseModel):
    """A request body with no unknown keys and no type coercion (a number is not a text)."""

    model_config = ConfigDict(extra="forbid", strict=True)
