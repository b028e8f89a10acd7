"""Augmenting a training split: new rows appended after the originals, with a record of what was added.

Each step of the spec augments the original rows (not the output of the steps before it). A new
text identical to its source, or to a row already in the split, is not added. Only the training
split ever reaches these functions: the tasks call them from `Task.augment`, which leaves the
validation and test splits as they were.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..core.errors import UserError
from .eda import EDA
from .generative import GenerativeAugmenter
from .spec import Step, text_steps
from .synonyms import load_synonyms


@dataclass
class AugmentReport:
    spec: str
    rows_before: int
    rows_after: int = 0
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> added, dropped, seconds, ...
    origins: list[tuple[str, int]] = field(default_factory=list)  # per new row: (kind, index of its source row)

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "rows_before": self.rows_before, "rows_after": self.rows_after, "steps": self.steps}

    def origin(self, k: int) -> str:
        """Where row `k` of the augmented rows came from: "original", or e.g. "eda of row 12" (1-based)."""
        if k < self.rows_before:
            return "original"
        kind, source = self.origins[k - self.rows_before]
        return f"{kind} of row {source + 1}"

    def describe(self) -> str:
        parts = []
        for kind, s in self.steps.items():
            dropped = {k: v for k, v in (s.get("dropped") or {}).items() if v}
            why = " (dropped: " + ", ".join(f"{k} {v:,}" for k, v in dropped.items()) + ")" if dropped else ""
            parts.append(f"{kind} +{s['added']:,}{why}")
        return (f"augment: {self.rows_before:,} -> {self.rows_after:,} training rows ({'; '.join(parts)}); "
                "validation and test unchanged")


def _eda(step: Step) -> Any:
    needs = step.options["synonym"] > 0 or step.options["insert"] > 0
    return EDA(step.options, load_synonyms(step.options["synonyms"]) if needs else None)


def augment_texts(texts: list[str], labels: list, steps: list[Step], seed: int, spec: str,
                  exclude: Sequence[str] = ()) -> tuple[list[str], list, AugmentReport]:
    """`texts`/`labels` with every text step's new rows appended (labels copied from the source row);
    a new text equal to one of `exclude` (the validation and test texts) is not added."""
    out_t, out_y = list(texts), list(labels)
    seen = {" ".join(t.split()) for t in [*texts, *exclude]}  # a copy differing only in spacing is no new row
    report = AugmentReport(spec, len(texts))
    for step in text_steps(steps):
        added = 0
        if step.kind == "eda":
            eda = _eda(step)
            for i, (text, label) in enumerate(zip(texts, labels)):
                for words, _ in eda.copies(text.split(), None, seed, i, int(step.options["copies"])):
                    new = " ".join(words)
                    if new and new not in seen:
                        seen.add(new)
                        out_t.append(new)
                        out_y.append(label)
                        report.origins.append(("eda", i))
                        added += 1
            report.steps["eda"] = {"added": added}
        else:
            aug = GenerativeAugmenter(step.kind, step.options, seed)
            for i, (label, new_texts) in enumerate(zip(labels, aug.generate(texts))):
                for new in new_texts:
                    if " ".join(new.split()) not in seen:
                        seen.add(" ".join(new.split()))
                        out_t.append(new)
                        out_y.append(label)
                        report.origins.append((step.kind, i))
                        added += 1
            report.steps[step.kind] = {"added": added, "dropped": dict(aug.dropped), "generated": aug.generated,
                                       "seconds": round(aug.seconds, 2)}
    report.rows_after = len(out_t)
    return out_t, out_y, report


def augment_tagged(tokens: list[list[str]], tags: list[list[int]], where: list[str], label_names: list[str],
                   steps: list[Step], seed: int, spec: str, exclude: Sequence[Sequence[str]] = ()
                   ) -> tuple[list[list[str]], list[list[int]], list[str], AugmentReport]:
    """Tagged sentences with EDA copies appended; entity words are never changed and tags stay aligned
    (a copy equal to a sentence of `exclude`, the validation and test sentences, is not added)."""
    for step in text_steps(steps):
        if step.kind != "eda":
            raise UserError(f"augment: {step.kind} cannot keep NER tags aligned (a generated sentence has no "
                            "tags); use eda for ner runs")
    out_tok, out_tags, out_where = [list(t) for t in tokens], [list(t) for t in tags], list(where)
    seen = {tuple(t) for t in [*tokens, *exclude]}
    report = AugmentReport(spec, len(tokens))
    index = {name: i for i, name in enumerate(label_names)}
    for step in text_steps(steps):
        eda, added = _eda(step), 0
        for i, (words, ids) in enumerate(zip(tokens, tags)):
            names = [label_names[j] for j in ids]
            for c, (new_words, new_names) in enumerate(eda.copies(words, names, seed, i, int(step.options["copies"]))):
                key = tuple(new_words)
                if key in seen:
                    continue
                seen.add(key)
                out_tok.append(new_words)
                out_tags.append([index[n] for n in new_names])
                out_where.append(f"{where[i]} (eda copy {c + 1})")
                report.origins.append(("eda", i))
                added += 1
        report.steps["eda"] = {"added": added}
    report.rows_after = len(out_tok)
    return out_tok, out_tags, out_where, report
