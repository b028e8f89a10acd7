"""A run's fastest gated backend, built once and cached beside the run in `RUN/backend/`.

`Predictor.from_run(run)` (and so `predict`, `serve`, `pipeline()` and `compare`'s inference column) runs a
finished run on the fastest forward pass that reproduces it. The first time, `build` traces the run's merged
model to onnxruntime graphs (`onnx_graph`: the plain fp32 graph, and the fused one where onnxruntime's
transformer optimiser fuses its attention), checks each against the PyTorch model on the run's own held-out
test split (its first CHECK_ROWS rows) with the export's fp32 gate (`onnx_gate.check_fp32`: argmax agreement
>= 99.5% and largest probability difference <= 1e-3, read the way the task reads its outputs), times every
candidate that passes, PyTorch included, in that same pass, and keeps the fastest (and the fastest graph that
passed, for `backend="onnxruntime"`). `RUN/backend/` then holds that graph and `gate.json`: the checks, the
timings, the onnxruntime version and a fingerprint of the run (run.json and every file of its artefact).

A cached graph is used only while its record holds: the record parses, names this format, this
onnxruntime and the run's current fingerprint, its checks pass the current limits, and the graph file's
sha256 is the one recorded. Anything else (a retrained run, a damaged or missing record, an edited graph,
another onnxruntime) rebuilds it. Where no graph can be built or checked (a method that keeps modules of
its own, a task with no one-pass graph, a run whose data files are gone, a folder that cannot be written)
the run predicts on PyTorch and says why once; `backend="torch"` skips all of this. int8 graphs are not
candidates: they change predictions (`export --int8` writes them, behind its own gate, when asked).

Written here because neither transformers nor optimum keeps a checked, per-run compiled graph beside a
training run; optimum's exporter does not support transformers 5 (see `exporting.onnx_export`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
import transformers

from ..core import fs
from ..core.errors import UserError
from ..core.folders import read_json
from ..core.lock import exclusive
from ..core.runs import RUN_FILE, RunInfo
from ..data.batches import FirstRows
from ..data.bundled import cache_dir
from ..data.fingerprint import file_sha256
from ..modeling.resolve import load_tokenizer
from . import onnx_gate
from .loading import extra_weights, labelled_split, load_run_model, run_base, run_task
from .onnx_backend import OnnxModule, session
from .onnx_graph import OPSET, fused_graph, tracing_batch, write_graph

logger = logging.getLogger(__name__)


class NoGraph(UserError):
    """Why no graph can be built or checked this time (the run then predicts on PyTorch); any other error of the
    run itself (a damaged file, a bad run.json) is raised as it would be on PyTorch."""


FOLDER = "backend"
RECORD = "gate.json"
FORMAT = "transferkit-run-backend"
FORMAT_VERSION = 1
VARIANTS = {"onnxruntime-fp32": "model.onnx", "onnxruntime-fp32-fused": "model.fused.onnx"}
CHECK_ROWS = 1000  # test rows the graphs are checked and timed on (the first, in split order): one flip is 0.1%
BUILT_FILE = "built-backends.json"  # in the transferkit cache: the graphs this machine built and checked
BUILT_MAX = 1000


def fingerprint(info: RunInfo) -> str:
    """sha256 over run.json, every file of the run's artefact (names and contents; its model card aside) and the
    base the artefact goes on (each file's name, size and modification time: a changed base changes the graph)."""
    h = hashlib.sha256()
    h.update((Path(info.run_dir) / RUN_FILE).read_bytes())
    art = Path(info.artifact_dir)
    for path in sorted(p for p in art.rglob("*") if p.is_file() and p.name != "README.md"):
        h.update(str(path.relative_to(art)).encode() + b"\0" + file_sha256(path).encode())
    base = Path(run_base(info).path)
    if base.is_dir():
        for path in sorted(p for p in base.iterdir() if p.is_file()):
            st = path.stat()
            h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import onnxruntime
    return {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _built() -> list[str]:
    try:
        data = read_json(cache_dir() / BUILT_FILE)
    except UserError:
        return []
    return [x for x in data if isinstance(x, str)] if isinstance(data, list) else []


def _remember(graph_sha: str) -> None:
    """Note a graph this machine built and checked (a backend/ folder that arrived with a copied run is not)."""
    known = [x for x in _built() if x != graph_sha] + [graph_sha]
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        fs.write_json(cache_dir() / BUILT_FILE, known[-BUILT_MAX:])
    except (OSError, UserError):
        pass  # a read-only cache only means the graph is checked again next time


def cached(info: RunInfo, key: str | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the run's backend record, "") when it can be used as it is, else (None, why not). A record's
    `variant` is the fastest backend ("torch" or a graph's name); `graph`, the fastest graph that passed (kept
    on disk whether or not it won, for `backend="onnxruntime"`), or None. `key`: the run's `fingerprint`, when the
    caller has it already."""
    folder = Path(info.run_dir) / FOLDER
    path = folder / RECORD
    if not path.is_file():
        return None, "no backend is cached yet"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, f"{path} is damaged"
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        return None, f"{path} is not a backend record of this version"
    graph = record.get("graph")
    if record.get("variant") not in ("torch", graph) or (graph is not None and graph not in VARIANTS):
        return None, f"{path} names an unknown backend"
    if record.get("fingerprint") != (key or fingerprint(info)):
        return None, "the run changed since its backend was built"
    if graph is None:
        return record, ""
    if record.get("versions") != _versions():
        return None, f"its graph was built with other versions ({record.get('versions')})"
    try:
        onnx_gate.check_fp32(record.get("check"), "the recorded check")
    except (UserError, TypeError, KeyError):
        return None, f"{path} records no passing check"
    file = folder / VARIANTS[graph]
    if not file.is_file() or record.get("graph_sha256") != file_sha256(file):
        return None, f"{file.name} is missing or is not the graph that was checked"
    if record["graph_sha256"] not in _built():
        return None, "its graph was not built and checked on this machine"
    return record, ""


def load(run_dir: str | Path, info: RunInfo, batch_size: int = 64, required: bool = False,
         task: Any = None) -> OnnxModule | None:
    """The run's cached (or newly built) gated graph as a module where it is the fastest backend, or None
    where PyTorch is (the fastest, or the only one). `required` (backend="onnxruntime"): the graph whenever one
    passed, and an error saying why where none did. `task`: the run's task, when the caller has it already."""
    task = task or run_task(info)
    why = task.onnx_refusal
    record = None
    if why is None:
        key = fingerprint(info)  # hashed once for every check below and for the build
        record, stale = cached(info, key)
        if record is None:
            try:
                with _building(run_dir):  # one process builds; the others wait and read what it cached
                    record, stale = cached(info, key)
                    if record is None:
                        record = build(run_dir, info, task, batch_size, stale, key)
            except NoGraph as e:
                why = str(e)
                logger.info(f"{run_dir} predicts on PyTorch: {why}")
    if record is not None and record.get("graph") is None:
        why = record.get("reason") or "no graph passed the check against PyTorch"
    if why is not None:
        if required:
            raise UserError(f"{run_dir}: no onnxruntime backend: {why}")
        return None
    assert record is not None
    if record["variant"] == "torch" and not required:
        return None
    graph = record["graph"]
    module = OnnxModule(session(Path(run_dir) / FOLDER / VARIANTS[graph]), list(info.label_names), task.head_kind)
    module.variant = graph
    return module


@contextlib.contextmanager
def _building(run_dir: str | Path) -> Iterator[None]:
    """An exclusive lock on RUN/.backend.lock for as long as the block runs (a run folder that cannot be written
    to: NoGraph, before any work)."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(Path(run_dir) / f".{FOLDER}.lock"))
        except OSError as e:
            raise NoGraph(f"{run_dir} cannot hold a cached backend ({e.strerror or type(e).__name__})") from None
        yield


def _speeds(record: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.0f} rows/s" for k, v in (record.get("rows_per_s") or {}).items() if v)


def build(run_dir: str | Path, info: RunInfo, task: Any, batch_size: int = 64, why: str = "",
          key: str | None = None) -> dict[str, Any]:
    """Trace, check, time and cache the run's graphs (see the module docstring); returns the record.
    A method whose model cannot fold into plain weights gets a cached record saying so (PyTorch); NoGraph says
    why nothing could be built or checked this time; a run that does not load fails as it would on PyTorch."""
    base = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": key or fingerprint(info)}
    model = load_run_model(info, merge=True).eval()  # a damaged run fails here, in one line, as on PyTorch
    extra = extra_weights(model)
    if extra:  # the method keeps modules of its own: PyTorch for as long as the run is this run
        reason = (f"method {info.method!r} cannot be merged into the encoder's weights (its inference model keeps "
                  f"its own modules, e.g. {extra[0]})")
        record = {**base, "variant": "torch", "graph": None, "reason": reason}
        _cache(run_dir, lambda tmp: None, record)
        return record
    logger.info(f"preparing the fastest backend for {run_dir}{f' ({why})' if why else ''}: graphs are checked "
                f"against PyTorch on the run's test split, and the result is cached in {Path(run_dir) / FOLDER}")
    try:
        split, source = labelled_split(run_dir, info, task, None, None, None)
    except UserError as e:
        raise NoGraph(f"its test split cannot be read to check a graph ({e})") from None
    if len(split) == 0:
        raise NoGraph("its test split is empty, so no graph can be checked")
    try:
        return _build_graphs(run_dir, info, task, model, split, source, base, batch_size)
    except NoGraph:
        raise
    except Exception as e:  # noqa: BLE001 - a graph that cannot be traced, run or written leaves PyTorch working
        if isinstance(e, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        logger.debug("building the backend failed", exc_info=True)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise NoGraph(f"no graph could be built ({type(e).__name__}{': ' + first if first else ''})") from None


def _build_graphs(run_dir: str | Path, info: RunInfo, task: Any, model: Any, split: Any, source: Any,
                  base: dict[str, Any], batch_size: int) -> dict[str, Any]:
    tokenizer = load_tokenizer(str(info.artifact_dir))
    held_out = FirstRows(task.encode(tokenizer, split, info.max_length), CHECK_ROWS)
    pad_id = tokenizer.pad_token_id or 0
    per_token = task.head_kind == "token"
    example = tracing_batch(held_out, pad_id)
    n = len(held_out.lengths())
    where = f"{n} texts of {Path(str(source)).name}" + (f" (the first {n} of {len(split)})" if n < len(split) else "")
    record = dict(base)

    def write(tmp: Path) -> None:
        write_graph(model, tmp / VARIANTS["onnxruntime-fp32"], example, per_token)
        try:
            fused = fused_graph(model, tmp / VARIANTS["onnxruntime-fp32-fused"], example, per_token)
        except Exception as e:  # noqa: BLE001 - the optimiser's own failures only cost the fused candidate
            logger.debug(f"no fused graph: {type(e).__name__}: {e}")
            fused = 0
        graphs = {variant: OnnxModule(session(tmp / file), list(info.label_names), task.head_kind)
                  for variant, file in VARIANTS.items() if (tmp / file).is_file()}
        checks = onnx_gate.agreements(model, graphs, held_out, task.gate_view, batch_size, pad_id)
        speeds = {"torch": next(iter(checks.values()))["rows_per_s"]["reference"]}
        for variant, found in checks.items():
            try:
                onnx_gate.check_fp32(found, where)
            except UserError as e:
                logger.info(f"{variant} refused: {e}")
                continue
            speeds[variant] = found["rows_per_s"]["candidate"]
        passed = [v for v in speeds if v != "torch"]
        graph = max(passed, key=speeds.__getitem__) if passed else None
        graphs.clear()  # the sessions' file handles go before the folder moves
        for variant, file in VARIANTS.items():  # keep only the fastest graph that passed
            if variant != graph:
                (tmp / file).unlink(missing_ok=True)
        record.update({
            "variant": max(speeds, key=speeds.__getitem__), "graph": graph, "versions": _versions(), "opset": OPSET,
            "threads": torch.get_num_threads(), "fused_attention_ops": fused, "data": where,
            "checks": {k: {n: v for n, v in found.items() if n != "rows_per_s"} for k, found in checks.items()},
            "limits": onnx_gate.limits(), "rows_per_s": speeds})
        if graph is not None:
            record["check"] = record["checks"][graph]
            record["graph_sha256"] = file_sha256(tmp / VARIANTS[graph])
    _cache(run_dir, write, record)
    if record.get("graph_sha256"):
        _remember(record["graph_sha256"])
    logger.info(f"backend for {run_dir}: {record['variant']} ({_speeds(record)}; checked on {where})")
    return record


def _cache(run_dir: str | Path, write: Any, record: dict[str, Any]) -> None:
    """`write(tmp)` fills a private folder inside the run, `record` goes in last as gate.json, and the folder
    takes the place of RUN/backend (a folder that cannot be written to, or a full disk: NoGraph)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=run_dir))
    except OSError as e:
        raise NoGraph(f"{run_dir} cannot hold a cached backend ({e.strerror or type(e).__name__})") from None
    try:
        write(tmp)
        fs.write_json(tmp / RECORD, record)
        _swap_in(tmp, Path(run_dir) / FOLDER)
    except UserError as e:  # the writers' one line for a full disk or a refused write
        raise NoGraph(str(e)) from None
    except OSError as e:
        raise NoGraph(f"{run_dir}: the backend could not be written ({e.strerror or type(e).__name__})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, final: Path) -> None:
    """Move the finished folder to `final`, replacing a stale one (under the build lock: no other builder)."""
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        fs.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    fs.replace(tmp, final)
