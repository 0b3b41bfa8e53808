"""The warm trainer: one long-lived process per device that keeps TensorFlow loaded.

Flower starts a new ClientApp process for every message. Instead of importing
TensorFlow, loading data and building the model each time, the ClientApp hands the
weights over a Unix socket to this worker, which keeps a ``LocalTrainer`` (data,
compiled model, traced functions) per run. Runs never share a trainer, and only the
newest few are kept. ``fedfleet join`` starts the worker and restarts it if it dies;
a ClientApp that cannot reach it trains in its own process instead.

Run it alone with ``python -m fedfleet.client.worker --socket PATH``;
:mod:`fedfleet.client.supervisor` keeps it running.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.client import wire
from fedfleet.client.final_model import reply_of, store_final_model
from fedfleet.client.memory import release_startup_pages, resident_mb
from fedfleet.client.nodedata import NodeData
from fedfleet.client.training import LocalTrainer
from fedfleet.shared import errors
from fedfleet.shared.delivery import unpack_info
from fedfleet.shared.process import peak_rss_mb
from fedfleet.shared.settings import RunSettings

log = logging.getLogger("fedfleet")

KEEP_RUNS = 2
"""Trainers kept at once; older runs are dropped (a run never reuses another's)."""


class WorkerUnavailable(Exception):
    """The worker could not be reached; the caller trains in-process instead."""


class TrainerPool:
    """Trainers by (run, node data), newest last; at most ``KEEP_RUNS`` are kept."""

    def __init__(self) -> None:
        self._trainers: OrderedDict[tuple[int, NodeData], LocalTrainer] = OrderedDict()
        self.warm: set[tuple[int, NodeData]] = set()  # trainers past their first call

    def get(self, run_id: int, node: NodeData) -> LocalTrainer:
        """Return the trainer of ``run_id`` on ``node``, creating it if needed."""
        key = (run_id, node)
        if key not in self._trainers:
            self._trainers[key] = LocalTrainer(node)
            while len(self._trainers) > KEEP_RUNS:
                self.warm.discard(self._trainers.popitem(last=False)[0])
        self._trainers.move_to_end(key)
        return self._trainers[key]


def handle(pool: TrainerPool, header: dict[str, Any], arrays: list[np.ndarray]
           ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Serve one request: ``train``, ``evaluate`` or ``final_model`` for a run here."""
    settings = RunSettings.from_run_config(header["settings"])
    key = (int(header["run_id"]), NodeData.from_node_config(header["node"]))
    trainer = pool.get(*key)
    if header["op"] == "train":
        weights, metrics = trainer.train(arrays, settings,
                                         proximal_mu=float(header.get("proximal_mu", 0.0)))
        reply: tuple[dict[str, Any], list[np.ndarray]] = (
            {"ok": True, "metrics": metrics}, weights)
    elif header["op"] == "evaluate":
        reply = {"ok": True, "metrics": trainer.evaluate(arrays, settings)}, []
    elif header["op"] == "final_model":
        entry = store_final_model(
            Path(str(header["home"])), key[0], trainer.model(settings, arrays), arrays,
            unpack_info(header["info"]), settings, key[1])
        reply = {"ok": True, "metrics": reply_of(entry)}, []
    else:
        raise errors.ConfigError(f"unknown trainer operation {header['op']!r}")
    if key not in pool.warm:  # the model is built and traced: its start-up code is cold
        pool.warm.add(key)
        _release_cold_code()
    return reply


def _release_cold_code() -> None:
    freed = release_startup_pages()
    if freed:
        log.info("Trainer: released %.0f MB of start-up code pages (now %.0f MB resident)",
                 freed, resident_mb())


def serve(socket_path: Path, parent_pid: int | None = None) -> None:
    """Listen on ``socket_path`` (owner-only) and serve requests one at a time.

    With ``parent_pid`` the worker exits once that process is gone.
    """
    import keras  # noqa: F401  (pay for TensorFlow now, not on the first message)

    _release_cold_code()

    pool = TrainerPool()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                header, arrays = wire.receive(self.request)
            except (ConnectionError, ValueError) as err:
                log.warning("Trainer: bad request: %s", err)
                return
            try:
                reply, out = handle(pool, header, arrays)
                reply["metrics"]["trainer_peak_rss_mb"] = peak_rss_mb()
            except errors.FedfleetError as err:
                reply, out = {"ok": False, "error": type(err).__name__,
                              "message": str(err)}, []
            wire.send(self.request, reply, out)

    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)
    try:
        server = socketserver.UnixStreamServer(str(socket_path), Handler)
    finally:
        os.umask(old_umask)
    log.info("Trainer ready on %s", socket_path)
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(server, parent_pid),
                         daemon=True).start()
    with server:
        server.serve_forever()
    socket_path.unlink(missing_ok=True)


def _exit_with_parent(server: socketserver.BaseServer, parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    log.info("Trainer: parent %d is gone; exiting", parent_pid)
    server.shutdown()


def call(socket_path: Path, op: str, run_id: int, settings: dict[str, Any],
         node: dict[str, Any], arrays: Sequence[np.ndarray], timeout: float,
         proximal_mu: float = 0.0, extra: dict[str, Any] | None = None
         ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Ask the worker to ``train`` or ``evaluate``; return its metrics and weights.

    ``extra``: more header fields for the operation (``final_model``: ``home``, ``info``).

    Raises
    ------
    WorkerUnavailable
        If there is no worker or the connection breaks (the caller falls back).
    FedfleetError
        The worker's own error (bad data, mismatched model), re-raised as the same type.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            wire.send(sock, {**(extra or {}), "op": op, "run_id": run_id,
                             "settings": settings, "node": node,
                             "proximal_mu": proximal_mu}, arrays)
            reply, out = wire.receive(sock)
    except (OSError, ConnectionError, ValueError) as err:
        raise WorkerUnavailable(f"trainer at {socket_path}: {err}") from err
    if not reply.get("ok"):
        kind = getattr(errors, str(reply.get("error")), errors.FedfleetError)
        if not (isinstance(kind, type) and issubclass(kind, errors.FedfleetError)):
            kind = errors.FedfleetError
        raise kind(str(reply.get("message")))
    return reply, out


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m fedfleet.client.worker``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path.")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="Exit when this process is gone.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fedfleet trainer %(levelname)s: "
                        "%(message)s")
    try:
        serve(args.socket, args.parent_pid)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
