"""Process-wide settings applied once before heavy work: quiet third-party logs, sane threading."""
from __future__ import annotations

import os
import platform
import warnings
from typing import Any

_done = False


def setup() -> None:
    """Silence library progress bars and deprecation chatter; transferkit prints its own progress."""
    global _done
    if _done:
        return
    _done = True
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="peft")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS says, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_hardware(device: Any, processes: int = 1) -> str:
    """The hardware a run trains on, in words (a model card says it): the GPU's name, or the CPU and its cores."""
    import torch  # heavy: only once a run has its device
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        what = f"GPU: {torch.cuda.get_device_name(device)}"
    elif kind == "mps":
        what = "Apple GPU (mps)"
    else:
        cpu = platform.processor() or platform.machine() or "CPU"
        what = f"CPU: {cpu}, {usable_cores()} cores ({torch.get_num_threads()} threads)"
    return what if processes <= 1 else f"{processes} processes, each on {what}"
