"""`python -m transferkit`: the CLI, and what `--processes N` runs in each torchrun worker."""
import logging
import os
import sys

from .cli import main

code = main()
if os.environ.get("LOCAL_RANK") is not None:
    # A torchrun worker: its run is written and its process group left (cli.main's finally). Interpreter
    # teardown can still destroy a c10d/gloo thread that is joinable and abort the process (SIGABRT,
    # "terminate called without an active exception"), which torchrun reports as a failed run after the run
    # finished; a worker flushes what it printed and skips teardown instead.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
sys.exit(code)
