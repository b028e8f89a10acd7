"""Process-wide settings applied once before heavy work: quiet third-party logs, sane threading."""
from __future__ import annotations

import os
import warnings

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
