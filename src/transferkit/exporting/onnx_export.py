"""Export a run as an ONNX graph for onnxruntime, optionally int8, checked before it appears.

`export_onnx(run_dir, out_dir)` merges the run's method into the encoder's weights (as the folder
export does), traces `logits = model(input_ids, attention_mask)` with dynamic batch and sequence
axes at opset OPSET, and writes model.onnx, the tokenizer and manifest.json (task, labels, token
limit, precision, versions and the checks below) to a new folder. Sentence classifiers and taggers
alike; a method that keeps modules of its own (adapter, prefix) is refused by name.

Before the folder appears the graph runs in onnxruntime on held-out labelled texts (the run's own
test split, or `data`) against the PyTorch model (`onnx_gate`); `int8=True` then quantises it with
onnxruntime's dynamic quantisation (int8 weights, per output channel, activations quantised per
batch at run time), after smoothing the Linear layers' inputs (`int8_smoothing`, calibrated on the
run's validation split), and keeps it only if it passes the int8 gate. The numbers go into the manifest.

Why this exporter: optimum's ONNX exporter does not support transformers 5 (optimum-onnx #114, #141),
so the graph comes from `torch.onnx.export`. Its TorchScript route (`dynamo=False`) is used because
the graph from the dynamo route fails onnxruntime's quantiser (its shape inference rejects the
graph's recorded shapes; torch 2.13, onnxruntime 1.31) and took 6x longer to write for MiniLM.
"""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import torch

from ..config.finetune import RunConfig
from ..core import logs, runtime
from ..core.errors import UserError
from ..core.fs import write_folder, write_json
from ..core.runs import RunInfo
from ..inference import onnx_gate
from ..inference.loading import labelled_split, merged_model, run_task
from ..inference.onnx_backend import FORMAT, FORMAT_VERSION, INPUTS, MANIFEST, MODEL_FILE, OUTPUT, OnnxModule, session
from ..inference.onnx_graph import OPSET, tracing_batch, write_graph
from ..modeling.resolve import load_tokenizer
from ..reporting.model_card import write_onnx_card
from . import int8_smoothing
from .folder import check_new_output

logger = logging.getLogger(__name__)


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime dynamic quantisation: int8 weights per output channel for MatMul/Gemm."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quiet = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        quiet.setLevel(level)


def export_onnx(run_dir: str | Path, out_dir: str | Path, int8: bool = False, data: str | None = None,
                text_column: str | None = None, label_column: str | None = None,
                base_model: str | None = None, batch_size: int = 64) -> Path:
    """Write the run as an ONNX export folder (see the module docstring); returns it."""
    runtime.setup()
    info = RunInfo.read(run_dir)
    out = check_new_output(out_dir)
    task = run_task(info)
    if task.onnx_refusal:
        raise UserError(f"{run_dir}: {task.onnx_refusal}")
    try:
        split, source = labelled_split(run_dir, info, task, data, text_column, label_column)
    except UserError as e:
        raise UserError(f"{e} (the export is checked on held-out labelled texts: pass --data FILE)") from None
    if len(split) == 0:
        raise UserError(f"{source}: no labelled rows to check the export on")
    model = merged_model(info, base_model)
    tokenizer = load_tokenizer(str(info.artifact_dir))
    held_out = task.encode(tokenizer, split, info.max_length)
    calibration = None  # int8's calibration texts: the run's validation split; with --data, those texts
    if int8 and data is None:
        def calibration() -> tuple[Any, str]:
            cfg = RunConfig.from_yaml(Path(run_dir) / "config.yaml")
            with logs.quiet():  # the split's summary was shown when the run trained
                val = task.prepare(cfg.data, cfg.train.seed).validation
            if len(val) == 0:
                return held_out, where
            return task.encode(tokenizer, val, info.max_length), f"{len(val)} texts of the validation split"
    pad_id = tokenizer.pad_token_id or 0
    where = f"{len(split)} texts of {source}"
    per_token = task.head_kind == "token"
    metric = task.compare_metrics[0][0]  # accuracy for labels, entity F1 for tags
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_file": MODEL_FILE,
        "precision": "int8" if int8 else "fp32", "task": info.task, "labels": list(info.label_names),
        "max_length": info.max_length, "opset": OPSET,
        "inputs": {name: ["batch", "sequence"] for name in INPUTS},
        "outputs": {OUTPUT: ["batch", "sequence", "tags"] if per_token else ["batch", "labels"]},
        "source": {"run": Path(run_dir).resolve().name, "method": info.method, "model": _portable(info.model_name)},
        "versions": _versions(), "limits": onnx_gate.limits()}

    example = tracing_batch(held_out, pad_id)

    def write(tmp: Path) -> None:
        graph = tmp / MODEL_FILE
        logger.info(f"tracing {info.method} ({info.task}) to ONNX opset {OPSET}")
        write_graph(model, graph, example, per_token)
        fp32 = OnnxModule(session(graph), info.label_names, task.head_kind)
        found = onnx_gate.agreement(model, fp32, held_out, task.gate_view, batch_size, pad_id)
        logger.info(f"fp32 graph vs PyTorch on {where}: argmax agreement {found['argmax_agreement']:.2%}, "
                    f"max |prob diff| {found['max_prob_diff']:.2e}")
        onnx_gate.check_fp32(found, where)
        manifest["check"] = {"data": _portable(source), "texts": len(split), **found}
        if int8:
            quantized = tmp / "model.int8.onnx"
            smoothed = tmp / "model.smoothed.onnx"
            calib, calib_source = calibration() if calibration is not None else (held_out, where)
            n_layers = int8_smoothing.smooth(model, calib, pad_id)
            logger.info(f"int8: smoothing the inputs of {n_layers} Linear layers (alpha {int8_smoothing.ALPHA:g}), "
                        f"calibrated on {calib_source}")
            write_graph(model, smoothed, example, per_token)
            quantize_int8(smoothed, quantized)
            smoothed.unlink()
            q = OnnxModule(session(quantized), info.label_names, task.head_kind)
            vs = onnx_gate.agreement(fp32, q, held_out, task.gate_view, batch_size, pad_id)
            m32 = float(task.evaluate(fp32, held_out, batch_size, pad_id, "cpu")[0][metric])
            m8 = float(task.evaluate(q, held_out, batch_size, pad_id, "cpu")[0][metric])
            logger.info(f"int8 vs fp32 on {where}: argmax agreement {vs['argmax_agreement']:.2%}, "
                        f"{metric} {m8:.2%} vs {m32:.2%}")
            onnx_gate.check_int8(vs, metric, m32, m8, where)
            manifest["int8"] = {"quantization": "onnxruntime dynamic: int8 weights per output channel (MatMul, Gemm), "
                                                "activations per batch", "vs_fp32": vs, "metric": metric,
                                "fp32": m32, "int8": m8,
                                "smoothing": {"alpha": int8_smoothing.ALPHA, "layers": n_layers,
                                              "calibration": _portable(calib_source)}}
            del fp32, q  # release the sessions' file handles before the swap
            quantized.replace(graph)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / MANIFEST, manifest)
        write_onnx_card(tmp, run_dir, manifest)
    write_folder(out, write)
    logger.info(f"exported {run_dir} ({info.method}, {manifest['precision']}) to {out / MODEL_FILE}")
    return out


def _portable(name: str) -> str:
    """A model or data name as the manifest keeps it: a path loses its folders (the export is copied
    to other machines, and an absolute path there is noise that also names this machine's layout)."""
    return Path(name).name if ("/" in name or "\\" in name) else name


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}
