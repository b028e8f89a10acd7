"""How much memory a block of work adds at its peak, measured in this process (`PeakMemory`).

`plan`'s dry runs and benchmarks/plan_memory.py measure with it what `memory_estimate` predicts.
Written here because neither torch (no CPU allocator statistics) nor the process's resident memory
(freed pages stay resident for reuse, so a second measurement in one process sees too little) gives
the live bytes of a CPU step; glibc's `mallinfo2` does.
"""
from __future__ import annotations

import ctypes
import gc
import threading
from typing import Any


class PeakMemory:
    """Peak memory a block adds: the GPU allocator's peak on CUDA. On a CPU: the bytes malloc has
    handed out and not taken back (glibc's mallinfo2: live memory, which resident memory is not once
    freed pages are kept for reuse), read at every `mark()` (`watch(model)` marks the end of each
    forward pass, when every saved activation is alive) and every 2 ms in a thread (which the GIL
    can hold back, hence the marks), plus the bytes of the parameters (`watch`), which safetensors
    maps from the file rather than allocating; resident memory where mallinfo2 is missing."""

    def __init__(self, device: Any) -> None:
        import torch
        self.cuda = torch.device(device).type == "cuda"
        self.peak = 0
        self.params = 0
        self._hooks: list[Any] = []

    def watch(self, model: Any) -> None:
        """Mark the end of every forward pass of `model` and count its parameters' bytes."""
        self.params = sum(p.numel() * p.element_size() for p in model.parameters())
        if not self.cuda:
            self._hooks.append(model.register_forward_hook(lambda *_: self.mark()))

    def mark(self) -> None:
        if not self.cuda:
            self._top = max(self._top, _live_bytes())

    def __enter__(self) -> "PeakMemory":
        import torch
        gc.collect()
        trim()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _live_bytes()
            self._stop = threading.Event()
            self._top = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._top = max(self._top, _live_bytes())
            self._stop.wait(0.002)

    def __exit__(self, *exc: Any) -> None:
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            for h in self._hooks:
                h.remove()
            self.peak = max(self._top, _live_bytes()) - self.base + (self.params if _MALLINFO is not None else 0)


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc_mallinfo() -> Any:
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO = _libc_mallinfo()


def _live_bytes() -> int:
    """Live heap bytes (mallinfo2: in use from the heap and from mmap), else resident memory."""
    if _MALLINFO is not None:
        info = _MALLINFO()
        return int(info.uordblks + info.hblkhd)
    import psutil
    return psutil.Process().memory_info().rss


def trim() -> None:
    """Return freed heap memory to the OS (glibc), so resident memory measures live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
