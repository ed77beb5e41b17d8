"""``lead-sla serve --role api --workers N``: N API processes on one port.

Each process listens on a socket of its own, bound with ``SO_REUSEPORT``, so the kernel spreads
new connections over the processes. With one shared listening socket (how uvicorn's own
``--workers`` does it), whichever process wakes first accepts a whole burst of connections, and
a CRM that keeps a few connections alive ends up on one process while the others idle.

The parent only supervises: it passes SIGTERM and SIGHUP (policy reload) on to the processes,
turns SIGINT into SIGTERM for them (a terminal's Ctrl-C reaches them too, and a second SIGINT
would make uvicorn drop requests in flight), and when one of them exits it stops the others and
exits with that code, for the orchestrator to restart the whole set.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from multiprocessing.connection import wait
from types import FrameType

FORWARDED = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGTERM,
    signal.SIGHUP: signal.SIGHUP,
}


def serve(
    host: str, port: int, processes: int, log_level: str, app: str = "service.app:api_app"
) -> int:
    """Run ``processes`` copies of the app that the factory ``app`` (an import string) builds."""
    # Metrics go through files the processes share, so a scrape answered by any one of them
    # counts the work of all (see ``metrics.exposition``).
    shared_metrics = tempfile.mkdtemp(prefix="lead-sla-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared_metrics
    try:
        return _supervise(host, port, processes, log_level, app)
    finally:
        shutil.rmtree(shared_metrics, ignore_errors=True)


def _supervise(host: str, port: int, processes: int, log_level: str, app: str) -> int:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_serve_one, args=(app, host, port, log_level), name=f"api-{n}")
        for n in range(processes)
    ]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        sent = FORWARDED[signal.Signals(signum)]
        stopping = stopping or sent == signal.SIGTERM
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, sent)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    for child in children:
        child.start()
    wait([child.sentinel for child in children])
    for child in children:  # one exited: take the others down with it
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join()
    if stopping:  # asked to stop; uvicorn ends by re-raising the signal it shut down on
        return 0
    failed = next((c.exitcode for c in children if c.exitcode), 0) or 0
    return 128 - failed if failed < 0 else failed  # killed by signal N: 128 + N, as shells do


def _serve_one(app: str, host: str, port: int, log_level: str) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    config = uvicorn.Config(app, factory=True, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[listener])
