"""Several processes training one run: who writes, how a batch is split, how rows come back.

A run under N data-parallel processes is started by torch's launcher (`torchrun --nproc-per-node N
-m transferkit finetune ...`), by `accelerate launch -m transferkit finetune ...`, or by
`transferkit finetune --processes N` (`launch`, which hands the command to torchrun on this machine).
Each process reads its rank from the launcher's environment (RANK, WORLD_SIZE); accelerate sets up
the process group (gloo on CPU, NCCL on GPUs) and wraps the model in DDP.

The rules every run follows under N processes:
- `train.batch_size` is the global batch. Every optimizer step sees the same examples whatever N is
  (process r takes rows r, r+N, ... of each batch), and the loss is the mean over the whole batch, so
  a run's steps, results and checkpoints do not depend on N: `--resume` may use another count.
- Rank 0 alone writes the run directory and logs; the others wait for it where they need its files.
- Evaluation inside `sharded()` splits the rows between the processes and gathers them back in
  order, each row exactly once (`gather_rows`), so metrics count every example once however unevenly
  the rows divide.

Why not accelerate's `gather_for_metrics`: it relies on the dataloader it prepared to know how many
rows were duplicated to even out the last batch; transferkit's batches are its own (length-sorted,
bounded in tokens), so each process sends its row numbers with its rows instead.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any, Iterator, Sequence

from ..core.errors import UserError
from ..core.runtime import usable_cores

_sharding = False


def rank() -> int:
    """This process's global rank under a launcher (0 without one)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    """How many processes train this run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def init() -> None:
    """Join the launcher's process group (accelerate's state: gloo on CPU, NCCL on CUDA); no-op alone."""
    if not active():
        return
    import torch
    from accelerate import PartialState
    PartialState(cpu=not torch.cuda.is_available())


def shutdown() -> None:
    """Leave the process group before the interpreter exits (nothing alone). Left to interpreter
    teardown, a worker's gloo threads can be destroyed while still joinable, and the process aborts
    ("terminate called without an active exception", SIGABRT) after its run already finished."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # the command's own exit code matters more than a failed goodbye
            pass


def _group() -> Any:
    import torch.distributed as dist
    return dist if active() and dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    """Wait until every process gets here (nothing alone)."""
    if (dist := _group()) is not None:
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj`, on every process (a small picklable value: a path, a flag)."""
    if (dist := _group()) is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def sharded() -> Iterator[None]:
    """Inside: `my_rows` gives this process its share of an evaluation and `gather_rows` joins them."""
    global _sharding
    before, _sharding = _sharding, _group() is not None
    try:
        yield
    finally:
        _sharding = before


def my_rows(n: int) -> list[int]:
    """The row numbers of `n` this process computes: all of them, or every N-th inside `sharded()`."""
    return list(range(rank(), n, world_size())) if _sharding else list(range(n))


def gather_rows(n: int, rows: Sequence[int], values: Sequence[Any]) -> list[Any]:
    """Every process's `values` (for its `rows`) put together in row order: a list of `n` values.

    Alone, or outside `sharded()`, this process computed all rows already. A row that no process or
    two processes computed is an error: the metrics would count it wrongly."""
    if not _sharding:
        out = [None] * n
        for r, v in zip(rows, values):
            out[r] = v
        return out
    dist = _group()
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, (list(rows), list(values)))
    out, seen = [None] * n, [0] * n
    for part_rows, part_values in parts:
        for r, v in zip(part_rows, part_values):
            out[r] = v
            seen[r] += 1
    if any(c != 1 for c in seen):
        bad = next(i for i, c in enumerate(seen) if c != 1)
        raise RuntimeError(f"gathering evaluation rows: row {bad} was computed {seen[bad]} times, not once")
    return out


def split_batch(batch: Sequence[int]) -> tuple[list[int], float]:
    """This process's rows of one global batch, and the weight of its loss (0 for a stand-in row).

    A batch with fewer rows than processes leaves some without a row; they run the batch's first row
    with weight 0, so every process still takes part in the gradient all-reduce."""
    n, r = world_size(), rank()
    mine = list(batch[r::n]) if n > 1 else list(batch)
    return (mine, 1.0) if mine else ([batch[0]], 0.0)


def gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj` (small and picklable, sent between this run's own processes), in rank order."""
    if (dist := _group()) is None:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_sum(values: Sequence[float], device: Any) -> list[float]:
    """The sums over all processes of a few numbers (this process's own alone)."""
    if (dist := _group()) is None:
        return [float(v) for v in values]
    import torch
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


MAX_PROCESSES = 256


def check_processes(processes: Any) -> int:
    """`--processes N` checked: a whole number from 1 to MAX_PROCESSES, not under a launcher already."""
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= MAX_PROCESSES:
        raise UserError(f"processes must be a whole number from 1 to {MAX_PROCESSES}, got {processes!r}")
    if processes > 1 and active():
        raise UserError(f"processes={processes} inside a launcher that already started {world_size()} processes: "
                        f"give the count to the launcher alone")
    return processes


def launch(argv: Sequence[str], processes: int) -> int:
    """Run `transferkit ARGV` as `processes` data-parallel processes on this machine (torchrun,
    standalone rendezvous); returns the launcher's exit code. The cores are shared out: each process
    gets OMP_NUM_THREADS = cores // processes (at least 1) unless the caller set it."""

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // processes)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "transferkit", *argv]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except BaseException:
        # torchrun starts each worker in a session of its own: killing torchrun would orphan them, still
        # training and holding the run's lock. SIGTERM makes it stop its workers first (Ctrl-C reaches it too).
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def accelerator(cpu: bool, precision: str = "fp32", log_with: list | None = None) -> Any:
    """The Accelerator every training run uses. `split_batches=True` says what transferkit does: a
    batch is global and split between processes, so the learning-rate schedule steps once per
    optimizer step (without it accelerate steps it once per process, running the schedule N times faster).
    `precision` (train.precision): "auto" is bf16 autocast on a CUDA device that supports it, else fp32.
    `log_with`: the experiment trackers the run reports to (`tracking.trackers`)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    if precision == "auto":
        precision = "bf16" if not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    mixed = {"fp32": "no", "bf16": "bf16"}[precision]
    return Accelerator(cpu=cpu, mixed_precision=mixed, dataloader_config=DataLoaderConfiguration(split_batches=True),
                       log_with=log_with or None)
