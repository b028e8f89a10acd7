"""Serving many task runs from one process: `models` (the runs, shared bases), `batcher` (dynamic
batching across requests and tasks), `app` (the FastAPI routes); `transferkit.serve` runs it."""
