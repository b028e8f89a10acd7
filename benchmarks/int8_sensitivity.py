"""Which int8 MatMuls flip a trained run's predictions: can int8 pass the 99.5% gate by keeping some in fp32?

On a finished run (default runs/bench-full), the smoothed model (`export --int8`'s graph before quantisation)
is traced once, then quantised with onnxruntime's dynamic quantisation (int8 weights per channel, activations
per batch) in several ways, and each graph's argmax agreement with the fp32 graph is measured on the run's
validation and test splits:

    all int8          every MatMul/Gemm quantised
    fp32: <one>       every encoder Linear quantised but one, for each of the encoder's Linear layers
    greedy +k         the k layers whose exclusion helped most (on validation) kept in fp32, the rest int8,
                      k = 1, 2, ... until validation agreement reaches --target

Each step is a real quantised graph run on 2 threads; the agreement is what the export gate would measure.

Usage:
    python benchmarks/int8_sensitivity.py --run runs/bench-full          # ~15 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, environment, quiet_libraries, set_threads, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, "int8_sensitivity")
    p.add_argument("--run", type=Path, default=Path("runs/bench-full"), help="a finished classification run")
    p.add_argument("--target", type=float, default=0.998, help="validation agreement at which greedy stops")
    args = p.parse_args(argv)
    set_threads(args.threads)
    quiet_libraries()
    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from transferkit.config.finetune import RunConfig
    from transferkit.core.runs import RunInfo
    from transferkit.data.batches import FirstRows, batch_tokens, sorted_batches
    from transferkit.exporting import int8_smoothing
    from transferkit.inference.loading import merged_model, run_task
    from transferkit.inference.onnx_backend import OnnxModule, session
    from transferkit.inference.onnx_graph import tracing_batch, write_graph
    from transferkit.modeling.resolve import load_tokenizer
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's hints

    info = RunInfo.read(args.run)
    task = run_task(info)
    model = merged_model(info)
    tok = load_tokenizer(str(info.artifact_dir))
    cfg = RunConfig.from_yaml(args.run / "config.yaml")
    splits = task.prepare(cfg.data, cfg.train.seed)
    data = {"validation": task.encode(tok, splits.validation, info.max_length),
            "test": task.encode(tok, splits.test, info.max_length)}
    if args.quick:
        data = {k: FirstRows(v, 200) for k, v in data.items()}
    folder = Path(tempfile.mkdtemp())
    example = tracing_batch(data["test"], 0)
    smoothed = copy.deepcopy(model)
    int8_smoothing.smooth(smoothed, data["validation"], 0)
    write_graph(smoothed, folder / "smoothed.onnx", example, False)
    write_graph(model, folder / "fp32.onnx", example, False)

    def logits(path: Path, d: Any) -> Any:
        m = OnnxModule(session(path), info.label_names, "sequence")
        out = np.zeros((len(d.lengths()), len(info.label_names)), np.float32)
        for idx in sorted_batches(d.lengths(), 64, batch_tokens("cpu")):
            batch = {k: v for k, v in d.collate(idx, 0).items() if k != "labels"}
            out[idx] = m(**batch).logits.numpy()
        return out.argmax(1)

    reference = {k: logits(folder / "fp32.onnx", d) for k, d in data.items()}
    nodes = [n.name for n in onnx.load(str(folder / "smoothed.onnx")).graph.node if n.op_type in ("MatMul", "Gemm")]
    linear = [n for n in nodes if "/encoder/" in n and n.endswith("linear/MatMul")]
    results: list[dict[str, Any]] = []

    def measure(excluded: list[str], label: str) -> float:
        q = folder / "q.onnx"
        quantize_dynamic(str(folder / "smoothed.onnx"), str(q), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=excluded)
        row = {"variant": label, "fp32_layers": len(excluded),
               **{k: float((logits(q, d) == reference[k]).mean()) for k, d in data.items()}}
        results.append(row)
        print(f"{label:48s} fp32 layers {len(excluded):2d}  validation {row['validation']:.2%}  "
              f"test {row['test']:.2%}", flush=True)
        return row["validation"]

    measure([], "all int8")
    alone = {n: measure([n], "fp32: " + n.split("/encoder/")[-1].removesuffix("/linear/MatMul")) for n in linear}
    kept: list[str] = []
    for n in sorted(linear, key=alone.__getitem__, reverse=True):
        kept.append(n)
        if measure(list(kept), f"greedy +{len(kept)}") >= args.target:
            break
    write_json(args.out, {"benchmark": "int8_sensitivity", "quick": args.quick, "environment": environment(args.threads),
                          "run": str(args.run), "method": info.method, "linear_layers": len(linear),
                          "rows": {k: len(d.lengths()) for k, d in data.items()}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
