"""Writing a run out for use elsewhere: a merged Hugging Face folder (`folder`) or an ONNX graph
for onnxruntime, fp32 or int8, checked before it appears (`onnx_export`, with `inference.onnx_gate`).

Named `exporting` so that it does not shadow `transferkit.export`, the API function."""
