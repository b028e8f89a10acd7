"""How a prompt becomes the text a causal LM reads, and a row becomes token ids with its loss mask.

Two templates (`data.template`):

    chat   the tokenizer's own chat template (`apply_chat_template(..., add_generation_prompt=True)`), as TRL
           and the model's authors format conversations; the completion follows, then the end-of-turn token
    plain  for models without one: a lone user prompt is "{prompt}\\n"; several turns are "{Role}: {content}\\n"
           lines ending in "Assistant: "; the completion follows, then the eos token

`auto` (the default) takes chat when the tokenizer has a template, else plain. The run records the template
it trained with, and prediction, evaluation and serving format prompts the same way.

The prompt and the completion are tokenized apart and joined, so the boundary is exactly where the loss
starts (TRL's prompt-completion rows do the same); the loss covers the completion and its closing token.
A row longer than max_length loses the end of its prompt (the completion, which is what is learnt, stays
whole); a completion that alone exceeds the limit is cut.
"""
from __future__ import annotations

from typing import Any, Sequence

from ...core.errors import UserError

TEMPLATES = ("auto", "chat", "plain")
IGNORE = -100


def choose_template(tokenizer: Any, wanted: str) -> str:
    """The template a run uses: `wanted`, or for auto the chat template when the tokenizer has one."""
    if wanted not in TEMPLATES:
        raise UserError(f"data.template={wanted!r}: choose one of {', '.join(TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if wanted == "chat" and not has_chat:
        raise UserError("data.template=chat: this model's tokenizer has no chat template; use plain (or auto)")
    return wanted if wanted != "auto" else ("chat" if has_chat else "plain")


def end_token(tokenizer: Any) -> int:
    """The token that closes a completion (and stops generation): eos, else [SEP] (a BERT vocabulary's causal LM,
    as `transferkit pretrain` builds them)."""
    for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if tid is not None:
            return int(tid)
    raise UserError(f"a generation run needs a tokenizer with an end-of-sequence token; {type(tokenizer).__name__} "
                    "has none")


def render_prompt(tokenizer: Any, prompt: Sequence[tuple[str, str]], template: str) -> str:
    """The text before the completion: the prompt turns and the opening of the assistant's turn."""
    if template == "chat":
        turns = [{"role": r, "content": c} for r, c in prompt]
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    if len(prompt) == 1 and prompt[0][0] == "user":
        return prompt[0][1] + "\n"
    return "".join(f"{r.capitalize()}: {c}\n" for r, c in prompt) + "Assistant: "


def prompt_ids(tokenizer: Any, prompts: Sequence[Sequence[tuple[str, str]]], template: str) -> list[list[int]]:
    """Token ids of rendered prompts (the template carries the special tokens it needs; a plain prompt gets the
    tokenizer's bos when it adds one)."""
    texts = [render_prompt(tokenizer, p, template) for p in prompts]
    add = template == "plain" and tokenizer.bos_token_id is not None and tokenizer.bos_token_id != end_token(tokenizer)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [([tokenizer.bos_token_id] if add else []) + list(x) for x in ids]


def encode_rows(tokenizer: Any, prompts: Sequence[Sequence[tuple[str, str]]], completions: Sequence[str],
                template: str, max_length: int, completion_only: bool = True) -> tuple[list[list[int]], list[list[int]]]:
    """(input ids, labels) per row: labels are the ids on the completion (and its closing token) and IGNORE on
    the prompt (every token scored when `completion_only` is False). Rows are cut to `max_length` as the module
    docstring says."""
    eos = end_token(tokenizer)
    heads = prompt_ids(tokenizer, prompts, template)
    tails = [list(x) + [eos] for x in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]
    ids_out, labels_out = [], []
    for head, tail in zip(heads, tails):
        tail = tail[:max_length - 1] if len(tail) >= max_length else tail
        head = head[:max_length - len(tail)]
        ids = head + tail
        ids_out.append(ids)
        labels_out.append(list(ids) if not completion_only else [IGNORE] * len(head) + tail)
    return ids_out, labels_out
