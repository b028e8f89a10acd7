"""Training memory of a run before it runs: weights, gradients, optimizer state and activations.

`training_memory("minilm-l6", "lora", batch_size=16, max_length=128)` builds the classifier with
the method applied on the meta device (no weights are read or allocated, as `param_count` does)
and runs one forward pass of a [batch, length] batch there, counting every tensor autograd saves
for the backward pass (`torch.autograd.graph.saved_tensors_hooks`), storage by storage, parameters
excluded. That is the activation memory of this model, method, batch and length exactly as torch
will hold it: frozen layers save nothing the method does not need, dropout masks and attention
probabilities are counted, a cached-feature method (head_only) saves almost nothing. Weights are
every parameter and buffer; gradients one per trainable parameter; AdamW two states per trainable
parameter. Written here because `accelerate estimate-memory` counts parameters, gradients and
optimizer state only (no activations: accelerate issue #3297) and knows nothing of the method.

What the count leaves out is the backward pass's own working set (gradients of the activations of
the layer being differentiated, freed as it moves down), covered by `BACKWARD_FACTOR` x the largest
saved storage; `MemoryEstimate.total` says how the parts combine at the peak.
benchmarks/plan_memory.py prints estimate and measurement side by side for every method.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock

from .. import tasks
from ..config.finetune import MethodConfig
from ..core.errors import UserError
from ..core.registry import METHODS
from ..modeling.classifier import HEAD_CLASSES, TransferkitClassifierConfig
from ..modeling.params import encoder_config

MB = 2**20
ADAM_STATES = 2  # exp_avg and exp_avg_sq per trainable parameter
BACKWARD_FACTOR = 2.0  # the backward pass's transient tensors, in units of the largest saved storage


@dataclass
class MemoryEstimate:
    """Bytes a training step holds at its peak, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    backward: int  # the backward pass's transient working set
    cached_features: int  # pooled vectors of every text, for methods that cache them
    trainable_params: int
    total_params: int
    # a causal LM's key-value cache while it generates from one batch of test prompts, with that step's logits
    generation: int = 0

    @property
    def total(self) -> int:
        """The peak: the weights, plus the larger of loading them (a second copy while the checkpoint
        is read) and a training step. In a step the gradients fill in as the backward pass frees the
        activations (the embedding matrix's, the largest, come last), so the step holds the optimizer
        state and the larger of the activations (with the backward working set) and the gradients; a
        generation run's test generation holds the optimizer state and its cache."""
        step = (self.optimizer + max(self.activations + self.backward, self.gradients, self.generation)
                + self.cached_features)
        return self.weights + max(self.weights, step)

    def mb(self) -> dict[str, float]:
        """Every part in MB (rounded), and the total."""
        parts = {k: v for k, v in asdict(self).items() if not k.endswith("_params")}
        return {**{k: round(v / MB, 1) for k, v in parts.items()}, "total": round(self.total / MB, 1)}


def training_memory(model: str, method: str, *, batch_size: int, max_length: int, task: str = "classify",
                    num_labels: int = 2, head: str = "auto", pool_layers: int | None = None,
                    method_options: dict[str, Any] | None = None, examples: int = 0) -> MemoryEstimate:
    """The memory of one training step of `method` on `model` at `batch_size` x `max_length` tokens
    (`examples`: the training rows, for methods that cache one pooled vector per text)."""
    import torch

    for name, value in (("batch_size", batch_size), ("max_length", max_length), ("num_labels", num_labels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    task_obj = tasks.get(task)
    m = METHODS.get(method)(MethodConfig.from_dict({"name": method, **(method_options or {})}))
    enc = encoder_config(model)
    enc.pop("architectures", None)
    limit = enc.get("max_position_embeddings") or enc.get("n_positions")
    if limit and max_length > limit:
        raise UserError(f"max_length {max_length} exceeds the model's limit of {limit} tokens")
    if task_obj.model_kind == "decoder":
        return _decoder_memory(task_obj, m, enc, batch_size, max_length)
    layers = 1 if task_obj.head_kind == "token" else (pool_layers or m.default_pool_layers)  # a tagger reads the last layer
    config = TransferkitClassifierConfig(encoder=enc, num_labels=num_labels, pool_layers=layers)
    if (m.default_head if head == "auto" else head) == "mlp":
        config.head_hidden = config.hidden_size
    Classifier = HEAD_CLASSES[task_obj.head_kind]
    with torch.device("meta"):
        net = Classifier(config)
        if task_obj.head_kind == "token":
            net.config.head_kind = "token"
        net = m.apply(net)
    net.train()
    params, weights, n_trainable, grads = _parameter_bytes(net)
    cached = m.cache_features and task_obj.pooled_features
    if cached:  # the loop trains the head on pooled vectors computed once: no encoder activations
        feats = examples * config.hidden_size * layers * 4
        saved, largest = _saved_bytes(net, params, batch_size, 1, features=config.hidden_size * layers)
    else:
        feats = 0
        saved, largest = _saved_bytes(net, params, batch_size, max_length)
    return MemoryEstimate(weights, grads, ADAM_STATES * grads, saved, int(BACKWARD_FACTOR * largest), feats,
                          n_trainable, sum(p.numel() for p in params))


def _parameter_bytes(net: Any) -> tuple[list[Any], int, int, int]:
    """(parameters, bytes of every parameter and buffer, trainable parameters, bytes of their gradients)."""
    params = list(net.parameters())
    weights = sum(p.numel() * p.element_size() for p in params) + sum(b.numel() * b.element_size()
                                                                     for b in net.buffers())
    trainable = [p for p in params if p.requires_grad]
    return params, weights, sum(p.numel() for p in trainable), sum(p.numel() * p.element_size() for p in trainable)


def _saved_by(params: list[Any], forward: Any) -> tuple[int, int]:
    """(bytes autograd saves for backward while `forward()` runs on the meta device, the largest one), storage by
    storage, the parameters' own excluded; `forward` returns the loss."""
    import torch
    own = {p.untyped_storage()._cdata for p in params}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage._cdata not in own:
            seen[storage._cdata] = max(seen.get(storage._cdata, 0), storage.nbytes())
        return t
    with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward().sum()
    return sum(seen.values()), max(seen.values(), default=0)


def _saved_bytes(net: Any, params: list[Any], batch: int, length: int, features: int | None = None) -> tuple[int, int]:
    """(bytes autograd saves for backward in one forward of a [batch, length] batch, the largest one),
    counted on the meta device; `features` feeds pooled vectors [batch, features] instead of tokens."""
    import torch

    def forward() -> Any:
        labels_shape = (batch,) if getattr(net.config, "head_kind", "sequence") != "token" else (batch, length)
        labels = torch.zeros(labels_shape, dtype=torch.long)
        if features is not None:
            return net(pooled=torch.zeros(batch, features), labels=labels).loss
        # no attention mask: transformers would inspect its values, which the meta device has not
        # (the 4-D mask it builds from a padded batch lives during the forward pass only: not saved)
        return net(input_ids=torch.zeros(batch, length, dtype=torch.long), labels=labels).loss
    return _saved_by(params, forward)


GENERATE_PROMPTS = 16  # prompts per generate() call of a generation run's test scoring (tasks/generate)


def _decoder_memory(task: Any, method: Any, enc: dict[str, Any], batch: int, length: int) -> MemoryEstimate:
    """A causal LM's training step, counted as the classifier's is (meta device, saved tensors), with the scored
    positions projected onto the vocabulary as the task's training module does (every position: the bound for
    `train.loss=all`; completion-only runs project fewer), and the key-value cache of generating from a batch of
    prompts of `length` tokens (plus one step's logits, [prompts, vocabulary])."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(**enc)
    with torch.device("meta"):
        net = method.apply(AutoModelForCausalLM.from_config(config))
    net.train()
    params, weights, n_trainable, grads = _parameter_bytes(net)
    wrapped = task.training_module(net)

    def forward() -> Any:
        ids = torch.zeros(batch, length, dtype=torch.long)
        logits = wrapped(input_ids=ids, attention_mask=None, lm_positions=torch.arange(batch * length)).logits
        return torch.nn.functional.cross_entropy(logits.float(), torch.zeros(batch * length, dtype=torch.long))
    # transformers looks for packed rows in the position ids by reading their values, which the meta device has
    # not: the probe is one unpacked row each, so that check is answered for it.
    from transformers import masking_utils
    with mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None):
        saved, largest = _saved_by(params, forward)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    cache = 2 * layers * kv_heads * head_dim * GENERATE_PROMPTS * length * 4  # keys and values, fp32
    step_logits = GENERATE_PROMPTS * config.vocab_size * 4
    return MemoryEstimate(weights, grads, ADAM_STATES * grads, saved, int(BACKWARD_FACTOR * largest), 0,
                          n_trainable, sum(p.numel() for p in params), cache + step_logits)
