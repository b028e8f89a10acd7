"""Running the HTTP server: the options checked (numbers finite and in range, an API key from the environment
rather than the command line), the runs loaded into one `ModelSet`, and uvicorn started on the app."""
from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any, Mapping

import uvicorn

from ..core import runtime
from ..core.errors import UserError
from .app import create_app
from .models import ModelSet

logger = logging.getLogger(__name__)


def run_server(adapters: Mapping[str, str | Path] | None = None, *, adapter_root: str | Path | None = None,
               host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_batch_tokens: int = 16384,
               max_wait_ms: float = 5.0, max_queue: int = 512, max_inputs: int = 256,
               default_model: str | None = None, backend: str = "auto") -> None:
    """Serve `{name: run_dir}` (and runs under `adapter_root`) until stopped; see `api.serve`."""
    runtime.setup()
    if backend not in ("auto", "torch"):
        raise UserError(f"--backend {backend!r}: use auto (each run on its fastest gated backend) or torch")
    api_key = api_key or os.environ.get("TRANSFERKIT_API_KEY") or None  # the environment keeps it out of `ps`
    check_serve_numbers(port=port, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_inputs=max_inputs)
    if not adapters and adapter_root is None:
        raise UserError("nothing to serve: give --adapter NAME=RUN_DIR (repeat) and/or --adapter-root DIR")
    if adapter_root is not None and not Path(adapter_root).is_dir():
        raise UserError(f"adapter root {adapter_root} is not a folder")
    sock = listening_socket(host, port)  # before the runs load and before anything says "serving"
    try:
        _serve(sock, adapters, adapter_root, host, port, api_key, max_batch_tokens, max_wait_ms, max_queue,
               max_inputs, default_model, backend)
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (uvicorn serves on it): a port in use or a host that is not this machine's is
    a one-line error now, not uvicorn's after the runs have loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # uvicorn's rule: "localhost" means IPv4
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host!r} does not resolve ({e})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use (another server?); choose another with "
                            "--port") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"port {port} on {host} needs privileges this user lacks; use a port above 1023") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _serve(sock: socket.socket, adapters: Mapping[str, str | Path] | None, adapter_root: str | Path | None,
           host: str, port: int, api_key: str | None, max_batch_tokens: int, max_wait_ms: float, max_queue: int,
           max_inputs: int, default_model: str | None, backend: str = "auto") -> None:
    models = ModelSet(dict(adapters or {}), backend=backend)
    if default_model is not None and default_model not in models.served:
        raise UserError(f"default model {default_model!r} is not among the served runs")
    first = default_model or next(iter(models.served), None)
    app = create_app(models, default_model=first, adapter_root=adapter_root, api_key=api_key,
                     max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms, max_queue=max_queue,
                     max_inputs=max_inputs)
    logger.info(f"serving {', '.join(models.served) or 'nothing yet'} on http://{host}:{port} (docs at /docs)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=DRAIN_SECONDS)
    try:
        DrainingServer(config, app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGTERM/SIGINT it shut down on, as uvicorn.run expects
        pass


DRAIN_SECONDS = 30  # the longest SIGTERM waits for requests in flight


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but SIGTERM first drains: the port stays open while the requests in flight finish, and a
    request that arrives meanwhile gets 503 with Retry-After and Connection: close (from the app's guard, which
    reads `app.state.draining`) instead of a refused connection; then uvicorn's own graceful shutdown."""

    def __init__(self, config: Any, app: Any) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: Any = None) -> None:
        self.app.state.draining = True
        waited = 0.0
        while self.app.state.in_flight > 0 and waited < DRAIN_SECONDS and not self.force_exit:
            await asyncio.sleep(0.05)
            waited += 0.05
        # uvicorn's own graceful wait gets what is left of the 30 s, not another 30
        self.config.timeout_graceful_shutdown = max(1, round(DRAIN_SECONDS - waited))
        await super().shutdown(sockets)


def check_serve_numbers(**values: Any) -> None:
    """Each option a positive finite number, and the port a valid one: a one-line error naming the option."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{name} must be a positive finite number, got {v!r}")
    if not 1 <= values["port"] <= 65535 or not float(values["port"]).is_integer():
        raise UserError(f"port must be an integer in [1, 65535], got {values['port']!r}")
