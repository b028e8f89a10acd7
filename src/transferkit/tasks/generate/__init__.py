"""Generation (`--task generate`): a causal LM tuned on prompt -> completion rows.

    task.py     the Task: the base's own causal LM, completion-only loss, held-out loss and perplexity while
                training, ROUGE and exact match of generated test completions; prediction and pipelines
    read.py     the row layouts (messages, prompt/completion, instruction/input/output) and the split by prompt
    format.py   chat or plain templates, and rows as token ids with the completion-only loss mask
    batches.py  padded batches, or rows packed into blocks with restarting position ids
    model.py    the causal LM wrapper that projects only scored positions, its loss, batched generation
    metrics.py  ROUGE-1/2/L (rouge-score) and exact match
    report.py   evaluation.json, loss curves, report.html with the best and worst examples
    serving.py  OpenAI-shaped routes: /v1/completions, /v1/chat/completions (streaming too)
    complete.py what those routes generate: usage, finish reasons, stop strings, the text in pieces as it grows
    dataset.py  bbc-headlines: BBC article openings -> headlines
"""
from ...core.registry import TASKS
from . import dataset  # noqa: F401 - registers the bundled dataset
from .task import Generation

if Generation.name not in TASKS:  # a module reload must not register twice
    TASKS.register(Generation.name, Generation)
