"""One virtual device's side of Flower 1.42's Fleet API: signed protobuf over HTTP.

A SuperNode (``flwr/supernode/fleet_http_connection.py``) sends every Fleet request as
``POST /v1/fleet/<route>`` with a protobuf body, its runtime version headers
(``RuntimeVersionHttpInterceptor``) and node-auth headers (``NodeAuthHttpInterceptor``:
its public key, a timestamp and the ECDSA signature of that timestamp). This module
builds exactly those headers with Flower's own functions, over an asyncio HTTP client,
so one process can hold hundreds of devices. ``tests/swarm`` checks the headers
against Flower's interceptors, so a change in Flower fails loudly there.

It retries like the SuperNode: transport errors and 502/503/504 with exponential
backoff (at most 20 s between tries); 401 ends the device (the SuperNode exits on it);
any other status is an error of that call.
"""

from __future__ import annotations

import asyncio
import random
import time
from base64 import b64encode
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.constant import TIMESTAMP_HEADER
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
from flwr.supercore.date import now
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message
from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE
from flwr.supercore.runtime_version_compatibility import RuntimeVersionMetadata
from google.protobuf.message import Message as Proto

T = TypeVar("T", bound=Proto)

RETRYABLE_STATUS = (502, 503, 504)
ACTIVATE_REFUSED = 412
"""activate-node of a key whose earlier session is still 'online' at the SuperLink (a
device that vanished and came back within 2 heartbeats). A SuperNode exits on it and
its supervisor (compose's restart policy, systemd) starts it again: retried here."""
MAX_RETRY_DELAY = 20.0
"""Seconds, Flower's ``MAX_RETRY_DELAY`` for the SuperNode's HTTP retries."""


class Deadline:
    """When a group of devices stops (monotonic seconds); moved earlier to stop them."""

    def __init__(self, at: float) -> None:
        """Stop at ``at``."""
        self.at = at

    def left(self) -> float:
        """Return the seconds left (0 when over)."""
        return max(0.0, self.at - time.monotonic())


class Unauthorized(Exception):
    """The SuperLink answered 401: the device is not (or no longer) admitted."""


class RunNotRunning(Exception):
    """403: the message's run has ended; a SuperNode ignores that message and goes on."""


class CallFailed(Exception):
    """A Fleet call got an answer that is neither success nor retryable."""

    def __init__(self, route: str, status: int, text: str) -> None:
        super().__init__(f"{route}: HTTP {status}: {text[:200]}")
        self.status = status


@dataclass
class Stats:
    """What a group of devices saw: latency per route, statuses, retries."""

    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Route -> (monotonic time answered, seconds it took) per answered request."""
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    retries: int = 0

    def record(self, route: str, seconds: float, status: int) -> None:
        """Count one answered request."""
        self.latencies.setdefault(route, []).append((round(time.monotonic(), 3),
                                                     round(seconds, 5)))
        key = f"{route} {status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def requests(self) -> int:
        """Return the number of answered requests."""
        return sum(len(v) for v in self.latencies.values())


def version_headers() -> dict[str, str]:
    """Return the runtime-version headers a SuperNode sends with every request."""
    return dict(RuntimeVersionMetadata.from_local_component("SuperNode").as_metadata())


class FleetClient:
    """Fleet API calls of one device, signed with its node key."""

    def __init__(self, http: httpx.AsyncClient, base_url: str,
                 key: ec.EllipticCurvePrivateKey, stats: Stats) -> None:
        """Call ``base_url`` (``https://host:port``) through ``http`` as the key's owner."""
        self._http = http
        self._base = base_url.rstrip("/")
        self._key = key
        self.public_key = public_key_to_bytes(key.public_key())
        self._public_b64 = b64encode(self.public_key).decode("ascii")
        self._static = {"content-type": PROTOBUF_MEDIA_TYPE, "accept": PROTOBUF_MEDIA_TYPE,
                        **version_headers()}
        self.stats = stats

    def auth_headers(self) -> dict[str, str]:
        """Return fresh node-auth headers: public key, timestamp, its signature."""
        timestamp = now().isoformat()
        signature = sign_message(self._key, timestamp.encode("ascii"))
        return {FLEET_HTTP_PUBLIC_KEY_HEADER: self._public_b64,
                TIMESTAMP_HEADER: timestamp,
                FLEET_HTTP_SIGNATURE_HEADER: b64encode(signature).decode("ascii")}

    async def call(self, route: str, request: Proto, response_type: type[T],
                   timeout: float = 30.0) -> T:
        """Send one request; return the parsed answer.

        Raises
        ------
        Unauthorized
            On 401.
        RunNotRunning
            On 403 (the run of the message is over).
        CallFailed
            On any other non-200 answer.
        httpx.TransportError
            When no answer came.
        """
        body = request.SerializeToString(deterministic=True)
        headers = {**self._static, **self.auth_headers()}
        started = time.monotonic()
        response = await self._http.post(f"{self._base}/v1/fleet/{route}", content=body,
                                         headers=headers, timeout=timeout)
        self.stats.record(route, time.monotonic() - started, response.status_code)
        if response.status_code == 401:
            raise Unauthorized(response.text[:200])
        if response.status_code == 403:
            raise RunNotRunning(f"{route}: {response.text[:200]}")
        if response.status_code != 200:
            raise CallFailed(route, response.status_code, response.text)
        result = response_type()
        result.ParseFromString(response.content)
        return result

    async def call_retrying(self, route: str, request: Proto, response_type: type[T],
                            deadline: Deadline, timeout: float = 30.0) -> T:
        """Like :meth:`call`, retrying as the SuperNode does until ``deadline``.

        Raises
        ------
        TimeoutError
            When the deadline passes before a usable answer.
        """
        delay = 1.0
        while True:
            try:
                return await self.call(route, request, response_type, timeout)
            except httpx.TransportError:
                self.stats.transport_errors += 1
            except CallFailed as err:
                if err.status not in RETRYABLE_STATUS and not (
                        route == "activate-node" and err.status == ACTIVATE_REFUSED):
                    raise
            self.stats.retries += 1
            wait = min(delay * random.uniform(0.5, 1.0), MAX_RETRY_DELAY)
            if wait >= deadline.left():
                raise TimeoutError(f"{route}: no usable answer before the deadline")
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_RETRY_DELAY)
