"""Tag schemes: IOB2 (B-X / I-X / O), IOB1 (an entity may start with I-X) and IOBES (S-X / E-X as well),
all read as IOB2 so the model side sees one scheme; a repaired entity start is counted for the notes."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from ...core.errors import UserError
from ...data.listing import clip

_SCHEME = "expected IOB2 (B-X / I-X / O) or IOBES (S-X / E-X as well)"


def to_iob2(tags: list[str], where: str) -> list[str]:
    """IOB2, IOB1 or IOBES tags of one sentence as IOB2; `where` names the sentence in errors.

    S-X becomes B-X and E-X becomes I-X; an I-X (or E-X) that does not continue an entity
    of type X (after O, another type, or a closed E-/S- entity) starts one: B-X.
    """
    return _convert(tags, lambda t: f"{where}, token {t + 1}")[0]


def _convert(tags: list[str], at: Callable[[int], str]) -> tuple[list[str], list[int]]:
    """IOB2 tags plus the positions of entities that started with I-X / E-X (repaired to B-X)."""
    out: list[str] = []
    repaired: list[int] = []
    open_type: str | None = None  # the entity type the previous token leaves open, if any
    for t, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
            open_type = None
            continue
        prefix, kind = tag[:2], tag[2:]
        if prefix not in ("B-", "I-", "E-", "S-") or not kind:
            raise UserError(f"unknown tag scheme: tag {clip(repr(tag))} at {at(t)}; {_SCHEME}")
        if prefix in ("B-", "S-") or open_type == kind:
            out.append(("B-" if prefix in ("B-", "S-") else "I-") + kind)
        else:
            out.append("B-" + kind)
            repaired.append(t)
        open_type = None if prefix in ("E-", "S-") else kind
    return out, repaired


class SchemeReader:
    """Converts sentence after sentence to IOB2 and remembers what the notes say: whether IOBES
    tags were seen, how many entities were repaired and where the first was."""

    def __init__(self, source: str) -> None:
        self.source, self.iobes, self.repaired, self.first = source, False, 0, None

    def convert(self, tags: list[str], at: Callable[[int], str]) -> list[str]:
        """`tags` of one sentence as IOB2; `at(t)` names token t (e.g. "line 12")."""
        self.iobes = self.iobes or any(tag[:2] in ("S-", "E-") for tag in tags)
        out, fixed = _convert(tags, lambda t: f"{self.source} {at(t)}")
        if fixed and self.first is None:
            self.first = at(fixed[0])
        self.repaired += len(fixed)
        return out

    def notes(self) -> list[str]:
        notes = []
        if self.iobes:
            notes.append(f"{self.source}: tags are IOBES (S-/E- found); read as IOB2 (S-X -> B-X, E-X -> I-X)")
        if self.repaired:
            n = self.repaired
            notes.append(f"{self.source}: {n:,} entit{'y' if n == 1 else 'ies'} started with I-X "
                         f"(IOB1 style{' or a broken E-X' if self.iobes else ''}; first at {self.first}); read as B-X")
        return notes


def entity_counts(tags: list[list[str]]) -> Counter:
    """Entities per type in IOB2 tags (each entity starts with B-)."""
    return Counter(tag[2:] for sent in tags for tag in sent if tag.startswith("B-"))
