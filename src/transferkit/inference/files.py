"""Prediction files and `predict_runs`, the API/CLI entry for several runs on one base: texts routed by
list, `NAME:text` tag or file column."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.errors import UserError
from .adapters import AdapterPredictor
from .predictor import check_batch_size, check_texts

OUTPUT_SUFFIXES = (".jsonl", ".json", ".csv")  # prediction files


def split_tags(texts: Sequence[str], names: Sequence[str], default: str | None = None) -> tuple[list[str], list[str]]:
    """`NAME:text` -> (text, NAME) for a loaded adapter NAME; untagged texts go to `default`."""
    out_texts, out_names = [], []
    for i, t in enumerate(texts, start=1):
        head, sep, rest = t.partition(":")
        if sep and head.strip() in names:
            out_texts.append(rest.strip())
            out_names.append(head.strip())
        elif default is not None:
            out_texts.append(t)
            out_names.append(default)
        else:
            raise UserError(f"text {i} has no adapter tag: write NAME:text with NAME one of {', '.join(names)} "
                            f"(or pass --use NAME for untagged texts)")
    return out_texts, out_names


def write_predictions(path: Path, rows: list[dict[str, Any]], label_names: Sequence[str] = ()) -> None:
    """The one prediction writer: JSONL (one object per text) or, for a .csv path, one row per text:
    text, label, confidence and a p_<label> column each (one run's labels); with several adapters
    (label sets differ) the probabilities as a JSON column; for entities, the entity list as JSON."""
    import csv
    import io

    from ..core import fs
    buf = io.StringIO(newline="")
    if path.suffix.lower() != ".csv":
        for r in rows:
            buf.write(fs.dumps(r, ensure_ascii=False) + "\n")
    elif rows and "entities" in rows[0] and "adapter" not in rows[0]:
        w = csv.writer(buf)
        w.writerow(["text", "entities"])
        for r in rows:
            w.writerow([r["text"], fs.dumps(r["entities"], ensure_ascii=False)])
    elif rows and "adapter" in rows[0]:  # several runs: a tagger's row has its entities in the last column
        w = csv.writer(buf)
        tagger = any("entities" in r for r in rows)
        w.writerow(["text", "adapter", "label", "confidence", "probs"] + (["entities"] if tagger else []))
        for r in rows:
            if "entities" in r:
                w.writerow([r["text"], r["adapter"], "", "", "", fs.dumps(r["entities"], ensure_ascii=False)])
            else:
                w.writerow([r["text"], r["adapter"], r["label"], f"{r['confidence']:.6f}", fs.dumps(r["probs"])]
                           + ([""] if tagger else []))
    else:
        w = csv.writer(buf)
        w.writerow(["text", "label", "confidence"] + [f"p_{n}" for n in label_names])
        for r in rows:
            w.writerow([r["text"], r["label"], f"{r['confidence']:.6f}"] + [f"{r['probs'][n]:.6f}" for n in label_names])
    fs.write_text(path, buf.getvalue())


def predict_runs(runs: Mapping[str, str | Path], texts: Sequence[str] | None = None, *,
                 adapter: str | None = None, adapters: Sequence[str] | None = None, input: str | None = None,
                 text_column: str | None = None, adapter_column: str | None = None, output: str | None = None,
                 batch_size: int = 64, log: Any = None, base_model: str | None = None) -> list[dict[str, Any]]:
    """`transferkit.predict({name: run_dir, ...}, ...)`: each text goes to one adapter, chosen by
    `adapters` (one name per text), an input file's `adapter_column`, a `NAME:text` tag, or else `adapter`."""
    from ..core import fs
    if texts is None and input is None:
        raise UserError("give texts to predict or --input FILE")
    check_batch_size(batch_size)
    if output is not None:
        fs.check_output_file(output, OUTPUT_SUFFIXES)
    names = [str(n) for n in runs]
    if adapter is not None and adapter not in names:
        raise UserError(f"unknown adapter {adapter!r}; loaded adapters: {', '.join(names)}")
    all_texts = list(texts or [])
    if adapters is not None:
        if len(list(adapters)) != len(all_texts):
            raise UserError(f"adapters: got {len(list(adapters))} names for {len(all_texts)} texts")
        routed = list(adapters)
    else:
        all_texts, routed = split_tags(all_texts, names, adapter)
    if input is not None:
        from ..data.load import read_texts
        file_texts = read_texts(input, text_column)
        if adapter_column is not None:
            file_names = read_texts(input, adapter_column)
            unknown = sorted(set(file_names) - set(names))
            if unknown:
                raise UserError(f"{input}: adapter column {adapter_column!r} names {', '.join(unknown[:3])}, "
                                f"which are not loaded (loaded: {', '.join(names)})")
        else:
            file_texts, file_names = split_tags(file_texts, names, adapter)
        all_texts += file_texts
        routed += file_names
    if not all_texts:
        raise UserError("no texts to predict")
    check_texts(all_texts)
    predictor = AdapterPredictor.from_runs(runs, batch_size=batch_size, base_model=base_model)
    results = predictor.predict(all_texts, adapters=routed)
    if log is not None:
        log(f"predicted {len(all_texts)} texts with {len(set(routed))} adapter(s) on one base model "
            f"at {predictor.last_throughput:.1f} texts/s")
    rows = [{"text": t, **r} for t, r in zip(all_texts, results)]
    if output is not None:
        write_predictions(Path(output), rows)
        if log is not None:
            log(f"wrote {output}")
    return rows
