"""Paraphrase and back-translation through a local generator (a causal LM or a seq2seq folder).

    paraphrase:model=smollm2-135m,copies=2        the bundled SmolLM2, asked through its chat template
    backtranslate:model=smollm2-135m,via=French   the same model prompted to translate there and back
    backtranslate:model=en-de/,back_model=de-en/  two seq2seq translation models (e.g. Marian folders)

Generation is batched (left padding for decoders) with transformers' `generate()`, greedy at
temperature 0 and seeded sampling otherwise. Outputs that repeat the input (after case and
punctuation are ignored), repeat an earlier copy, are empty, or whose word count drifts from the
input's by more than `max_drift` (0.5: between half and one and a half times) are dropped and
counted. Every output is cached per model, kind, options and seed in
`<cache>/augment/<key>.jsonl` (one line per input text, appended as batches finish), so a second
run, or a run resumed after an interruption, generates nothing it already has.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core import fs
from ..core.errors import UserError
from ..data.bundled import cache_dir
from ..inference.generation import _load
from ..modeling.lm import model_folder, model_type

logger = logging.getLogger(__name__)

PARAPHRASE_PROMPT = "Rewrite this sentence in other words, keeping its meaning. Reply with the new sentence only.\n\n{text}"
TRANSLATE_PROMPT = "Translate this text to {language}. Reply with the translation only.\n\n{text}"


def _normal(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def _clean(text: str) -> str:
    """A reply as one sentence: its first non-empty line, without quotes or a 'Paraphrase:' label."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    line = re.sub(r"^(?:sure[,!.]?\s*)?(?:here(?: is|'s)[^:]*:|paraphrase[d]?:|rewritten:|translation:)\s*", "", line,
                  flags=re.I)
    return line.strip().strip('"“”').strip()


class Generator:
    """A loaded generator and how to prompt it: `run(prompts, temperature, seed)` -> one reply each."""

    def __init__(self, name: str, batch: int, max_new_tokens_for: Callable[[str], int] | None = None) -> None:
        from transformers.models.auto import modeling_auto as ma
        self.folder = model_folder(name)
        mtype = model_type(self.folder)
        if mtype in ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            self.kind = "seq2seq"
        elif mtype in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mtype not in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            self.kind = "causal"
        else:
            raise UserError(f"augment: {name} ({mtype}) is not a generator; paraphrase and backtranslate need "
                            "a causal LM (e.g. smollm2-135m) or a seq2seq model folder")
        self.model, self.tokenizer = _load(name, self.kind)
        self.name, self.batch = name, batch
        self.chat = self.kind == "causal" and bool(getattr(self.tokenizer, "chat_template", None))

    def fingerprint(self) -> str:
        """Names this model's weights: folder, and each file's size and modification time."""
        files = sorted(p for p in self.folder.iterdir() if p.is_file())
        return hashlib.sha256(json.dumps([str(self.folder.resolve())] + [
            [p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]).encode()).hexdigest()[:16]

    def _inputs(self, prompts: Sequence[str]) -> Any:
        tok = self.tokenizer
        if self.kind == "seq2seq":
            return tok(list(prompts), padding=True, truncation=True, max_length=512, return_tensors="pt")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # a decoder continues from the last position: pad on the left
        if self.chat:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=False) for p in prompts]
            return tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        return tok(list(prompts), padding=True, return_tensors="pt")

    def run(self, prompts: Sequence[str], temperature: float, seed: int, max_new_tokens: int) -> list[str]:
        """One reply per prompt, in batches of `self.batch`."""
        import torch
        from transformers import set_seed
        out: list[str] = []
        dev = next(self.model.parameters()).device
        tok = self.tokenizer
        for start in range(0, len(prompts), self.batch):
            chunk = prompts[start:start + self.batch]
            enc = self._inputs(chunk)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens,
                                      "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=0.95)
            else:
                kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
            set_seed((seed + start) % 2**32)  # a batch's samples do not depend on the batches before it
            with torch.inference_mode():
                ids = self.model.generate(**{k: v.to(dev) for k, v in enc.items()}, **kwargs)
            if self.kind == "causal":
                ids = ids[:, enc["input_ids"].shape[1]:]  # the reply only
            out.extend(tok.batch_decode(ids.cpu(), skip_special_tokens=True))
        return out


class GenerativeAugmenter:
    """`copies` new texts per input by paraphrase or back-translation, cached, with the drop rules above."""

    def __init__(self, kind: str, options: dict[str, Any], seed: int) -> None:
        self.kind, self.options, self.seed = kind, dict(options), seed
        self.generator = Generator(options["model"], int(options["batch"]))
        self.back = (Generator(options["back_model"], int(options["batch"])) if kind == "backtranslate"
                     and options.get("back_model") else None)
        if kind == "backtranslate" and self.back is None and self.generator.kind != "causal":
            raise UserError("augment: backtranslate with a seq2seq model needs back_model=FOLDER (the way back)")
        self.dropped = {"same as input": 0, "length drift": 0, "repeat": 0, "empty": 0}
        self.generated = 0
        self.seconds = 0.0

    def cache_path(self) -> Path:
        key = {"kind": self.kind, "seed": self.seed, "model": self.generator.fingerprint(),
               "back": self.back.fingerprint() if self.back else None,
               "options": {k: v for k, v in self.options.items() if k != "batch"}}  # batch size changes nothing
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return cache_dir() / "augment" / f"{self.kind}-{digest}.jsonl"

    def _max_new(self, texts: Sequence[str]) -> int:
        longest = max(len(self.generator.tokenizer(t)["input_ids"]) for t in texts)
        return min(256, int(longest * 2) + 8)  # room for drift; far longer is dropped anyway

    def _one_copy(self, texts: list[str], copy: int, new: int) -> list[str]:
        """One generated text per input; `new`: the most tokens a reply may take."""
        seed = (self.seed * 1000 + copy) % 2**32
        temp = float(self.options["temperature"])
        if self.kind == "paraphrase":
            return [_clean(t) for t in self.generator.run([PARAPHRASE_PROMPT.format(text=t) for t in texts],
                                                          temp, seed, new)]
        there_prompts = ([TRANSLATE_PROMPT.format(language=self.options["via"], text=t) for t in texts]
                         if self.generator.kind == "causal" else texts)
        there = [_clean(t) for t in self.generator.run(there_prompts, temp, seed, new)]
        back = self.back or self.generator
        back_prompts = ([TRANSLATE_PROMPT.format(language="English", text=t) for t in there]
                        if back.kind == "causal" else there)
        return [_clean(t) for t in back.run(back_prompts, temp, seed, new)]

    def generate(self, texts: Sequence[str]) -> list[list[str]]:
        """Per input text, the kept new texts (0 to `copies`)."""
        path = self.cache_path()
        cached = _read_cache(path)
        todo = list(dict.fromkeys(t for t in texts if _key(t) not in cached))
        copies = int(self.options["copies"])
        if todo:
            logger.info(f"augment: {self.kind} with {self.options['model']}: generating {copies} "
                        f"cop{'y' if copies == 1 else 'ies'} of {len(todo):,} texts (cached in {path})")
            path.parent.mkdir(parents=True, exist_ok=True)
            step = max(int(self.options["batch"]) * 4, 1)
            t0 = time.perf_counter()
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                new = self._max_new(chunk)  # tokenized once per chunk, not once per copy
                outs = [self._one_copy(chunk, c, new) for c in range(copies)]
                for i, text in enumerate(chunk):
                    raw = [outs[c][i] for c in range(copies)]
                    cached[_key(text)] = raw
                    fs.append_line(path, json.dumps({"key": _key(text), "out": raw}, ensure_ascii=False))
            self.seconds = time.perf_counter() - t0
            self.generated = len(todo) * copies
        return [self._keep(t, cached[_key(t)]) for t in texts]

    def _keep(self, text: str, outputs: list[str]) -> list[str]:
        kept: list[str] = []
        seen = {_normal(text)}
        n_in = max(len(text.split()), 1)
        drift = float(self.options["max_drift"])
        for o in outputs:
            norm = _normal(o)
            if not norm:
                self.dropped["empty"] += 1
            elif norm == _normal(text):
                self.dropped["same as input"] += 1
            elif norm in seen:
                self.dropped["repeat"] += 1
            elif abs(len(o.split()) / n_in - 1) > drift:
                self.dropped["length drift"] += 1
            else:
                kept.append(o)
            seen.add(norm)
        return kept


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, list[str]]:
    """The cache file's entries; a torn last line (an interrupted run) or a damaged line is skipped."""
    out: dict[str, list[str]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("out"), list) \
                and all(isinstance(x, str) for x in rec["out"]):
            out[rec["key"]] = rec["out"]
    return out
