"""Artefact of the methods peft does not carry (adapter, prefix, bitfit): trainable tensors + a JSON config.

The folder holds `method.json` (method name and the options that rebuild its structure) and
`trainable.safetensors` (only the tensors that trained, the task head included). Loading rebuilds
the untrained base, applies the method with the saved options, then loads the tensors strictly:
a missing or unexpected name is an error rather than a silently half-loaded model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config.base import section_from_dict
from ..config.finetune import MethodConfig
from ..core.errors import UserError
from ..core.folders import read_json_object
from ..core.fs import write_json
from .base import Method

CONFIG_FILE = "method.json"
WEIGHTS_FILE = "trainable.safetensors"
FORMAT_VERSION = 1


def save_trainable(model: nn.Module, out_dir: Path, method: str, options: dict[str, Any],
                   tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write `tensors` (default: every parameter with requires_grad) and the method config to `out_dir`."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tensors is None:
        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
    save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, str(out_dir / WEIGHTS_FILE))
    config = {"method": method, "format_version": FORMAT_VERSION, "options": options,
              "tensors": len(tensors), "parameters": sum(t.numel() for t in tensors.values())}
    write_json(out_dir / CONFIG_FILE, config)


def read_config(art_dir: Path, method: str) -> dict[str, Any]:
    """The saved method options; a UserError if the folder is not this method's artefact."""
    path = Path(art_dir) / CONFIG_FILE
    if not path.is_file() or not (Path(art_dir) / WEIGHTS_FILE).is_file():
        raise UserError(f"{art_dir}: not a transferkit {method} artefact (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_json_object(path, "method config")
    if config.get("method") != method:
        raise UserError(f"{path}: holds a {config.get('method')!r} artefact, not {method!r}")
    if not isinstance(config.get("options"), dict):
        raise UserError(f"{path}: no 'options' object (damaged?)")
    return config["options"]


def load_trainable(model: nn.Module, art_dir: Path) -> nn.Module:
    """Copy the saved tensors into `model` (built with the same method options); names must match exactly."""
    from safetensors.torch import load_file
    saved = load_file(str(Path(art_dir) / WEIGHTS_FILE))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(trainable - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise UserError(f"{art_dir}: saved tensors do not fit the model (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for n, t in saved.items():
            if params[n].shape != t.shape:
                raise UserError(f"{art_dir}: tensor {n} has shape {tuple(t.shape)}, the model expects "
                                f"{tuple(params[n].shape)}")
            params[n].copy_(t)
    return model


class TensorArtifactMethod(Method):
    """A method saved as trainable tensors + `method.json`, which holds the options that shape them."""

    artifact = "adapter"
    artifact_files = (CONFIG_FILE, WEIGHTS_FILE)
    folder_library = "transferkit"

    def saved_options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        save_trainable(model, out_dir, self.name, self.saved_options())

    def load(self, art_dir: Path, build_base: Callable[[], nn.Module]) -> nn.Module:
        options = {**read_config(art_dir, self.name), "name": self.name}
        method = type(self)(section_from_dict(MethodConfig, options, str(Path(art_dir) / CONFIG_FILE)))
        return load_trainable(method.apply(build_base()), art_dir)
