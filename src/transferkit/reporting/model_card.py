"""Model cards: the README.md that describes a model folder the way Hugging Face users expect.

Filled in below; the exporters call `write_export_card` and `write_onnx_card` inside their folder writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def write_export_card(folder: Path, run_dir: str | Path, plain: bool = False) -> None:
    """Write the card of a merged export folder (being written at `folder`) of the run in `run_dir`."""


def write_onnx_card(folder: Path, run_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Write the card of an ONNX export folder (being written at `folder`), as its `manifest` says."""
