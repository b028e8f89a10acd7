"""Fully sharded data parallel training (`train.parallel=fsdp`): each process keeps 1/N of the
parameters, gradients and optimizer state instead of a whole copy, for models that do not fit one device.

torch's FSDP2 (`torch.distributed.fsdp.fully_shard`) does the sharding: every transformer block (the
classes a Hugging Face model names in `_no_split_modules`) is one unit whose parameters are gathered
for its forward and backward and freed after, and the root holds the rest (embeddings, head). It runs
on gloo (CPU) as well as NCCL. accelerate wraps models in DDP or its own FSDP plugin only on
accelerators, so the Trainer shards the model here and gives accelerate the optimizer alone.

What the rest of a run sees does not change:
- The model the run built stays an ordinary module on the host; a deep copy is sharded and trained,
  and the trained weights are gathered back into the original at the end, so saving, scoring and
  export work on plain tensors.
- Checkpoints hold full tensors (weights and optimizer state gathered on every process, written by
  rank 0), so a run resumes under FSDP, DDP or one process alike, with any process count.
- Evaluation runs every row on every process: a sharded forward is a collective, so the processes
  must make the same calls (splitting the rows, as DDP runs do, would leave one process waiting).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def _dtensor() -> Any:
    from torch.distributed.tensor import DTensor
    return DTensor


def block_classes(model: nn.Module) -> set[str]:
    """Class names of the model's transformer blocks (`_no_split_modules` of any Hugging Face model inside)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def shard(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """A sharded deep copy of `model`: one FSDP unit per transformer block, the root for the rest.

    `precision` bf16 computes in bf16 with fp32 master weights and fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    sharded = copy.deepcopy(model)
    kw: dict[str, Any] = {}
    if precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = block_classes(sharded)
    for m in sharded.modules():
        if type(m).__name__ in blocks and m is not sharded:
            fully_shard(m, **kw)
    fully_shard(sharded, **kw)
    return sharded


def reshard(model: nn.Module) -> None:
    """Put every FSDP unit of `model` back in its sharded state (no-op for a plain module).

    After a forward the root unit keeps its parameters gathered (the backward would need them next), and
    while gathered, `named_parameters()` names the gathered copies: a write into those is lost when the
    unit reshards. So weights are read and written only with every unit resharded."""
    from torch.distributed.fsdp import FSDPModule
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def full(t: Any) -> Any:
    """A sharded tensor gathered whole (a collective: every process must call it), or `t` itself."""
    return t.full_tensor() if isinstance(t, _dtensor()) else t


def full_tree(obj: Any) -> Any:
    """`obj` (an optimizer state dict: dicts, lists, tensors) with every sharded tensor gathered whole."""
    if isinstance(obj, dict):
        return {k: full_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_tree(v) for v in obj)
    return full(obj)


def put(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a whole tensor into `param`, taking only this process's shard when `param` is sharded."""
    if isinstance(param, _dtensor()):
        from torch.distributed.tensor import distribute_tensor
        value = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)
    param.copy_(value.to(param.device))


def shard_optimizer_state(opt: Any) -> None:
    """After `load_state_dict` of a checkpoint's whole tensors: shard each state tensor like its parameter."""
    from torch.distributed.tensor import distribute_tensor
    inner = opt
    while hasattr(inner, "optimizer"):  # under accelerate's AcceleratedOptimizer
        inner = inner.optimizer
    DTensor = _dtensor()
    for p, state in inner.state.items():
        if not isinstance(p, DTensor):
            continue
        for k, v in list(state.items()):
            if torch.is_tensor(v) and not isinstance(v, DTensor) and tuple(v.shape) == tuple(p.shape):
                state[k] = distribute_tensor(v.to(p.device), p.device_mesh, p.placements)


def gradient_sync(model: nn.Module, on: bool) -> None:
    """Turn the gradient reduce-scatter of a sharded model's backward on or off (off between micro-batches)."""
    setter = getattr(model, "set_requires_gradient_sync", None)
    if setter is not None:
        setter(on)


def gather_into(sharded: nn.Module, plain: nn.Module) -> None:
    """Load the sharded model's weights, gathered whole, into the plain module it was copied from."""
    reshard(sharded)
    state = {k: full(v).detach().cpu() for k, v in sharded.state_dict().items()}
    own = plain.state_dict()
    if set(state) != set(own):
        raise RuntimeError(f"the sharded model's weights do not match the model's: "
                           f"{sorted(set(state) ^ set(own))[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))
