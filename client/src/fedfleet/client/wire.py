"""Framing for the local trainer socket: a JSON header plus numpy arrays, no pickle."""

from __future__ import annotations

import io
import json
import socket
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

_LEN = struct.Struct("!Q")
MAX_FRAME = 2**31
"""Refuse frames above 2 GiB: a corrupt length must not allocate the machine's memory."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the trainer closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send_blob(sock: socket.socket, blob: bytes) -> None:
    sock.sendall(_LEN.pack(len(blob)) + blob)


def _recv_blob(sock: socket.socket) -> bytes:
    (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes refused")
    return _recv_exact(sock, size)


def send(sock: socket.socket, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()
         ) -> None:
    """Send ``header`` (JSON) and ``arrays`` (each in .npy format)."""
    _send_blob(sock, json.dumps({**header, "num_arrays": len(arrays)}).encode())
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        _send_blob(sock, buffer.getvalue())


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Receive what :func:`send` sent."""
    header = json.loads(_recv_blob(sock))
    if not isinstance(header, dict):
        raise ConnectionError("malformed header")
    arrays = [np.load(io.BytesIO(_recv_blob(sock)), allow_pickle=False)
              for _ in range(int(header.pop("num_arrays", 0)))]
    return header, arrays
