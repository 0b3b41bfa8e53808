"""The SuperLink's Control API in this process, over one kept-alive connection.

Node registration, listing and revocation call the Control API directly with
Flower's own client (``ControlHttpClient``, the class ``flwr supernode register``,
``list`` and ``unregister`` use), its request messages and the same request headers
(client kind, runtime version, account auth: a no-op in open-source Flower), and the
same TLS trust as the ``flwr`` CLI: the given CA, the system's CAs, or no TLS. One
connection carries every request, so a thousand keys take seconds, not a
``flwr`` process each.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from flwr.cli.auth_plugin.noop_auth_plugin import NoOpCliAuthPlugin
from flwr.cli.cli_account_auth_interceptor import CliAccountAuthHttpInterceptor
from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    RegisterNodeRequest,
    UnregisterNodeRequest,
)
from flwr.proto.node_pb2 import NodeInfo
from flwr.supercore.auth.typing import AccountAuthCredentials
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.date import isoformat8601_utc
from flwr.supercore.error import ApiErrorCode, FlowerError
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

from fedfleet.shared.errors import FedfleetError

# httpx logs every request at INFO: a line per key when a thousand are registered.
logging.getLogger("httpx").setLevel(logging.WARNING)

GATEWAY_HINT = ("it is a fedfleet gateway, which serves devices only; run admin "
                "commands on the server host, e.g. docker compose exec server "
                "fedfleet nodes list")


class ControlApiError(FedfleetError):
    """The SuperLink refused a Control API call, or could not be reached."""

    def __init__(self, message: str, code: int | None = None) -> None:
        """Keep Flower's error ``code`` (None when there is none) with the message."""
        super().__init__(message)
        self.code = code


class KeyInUse(ControlApiError):
    """The public key is registered already (Flower's code 23)."""


def _no_refresh(refresh_token: str) -> AccountAuthCredentials:
    raise ControlApiError("the SuperLink asked for account login, which fedfleet "
                          "does not use")


def http_client(address: str, insecure: bool, root_certificates: Path | None,
                timeout: float) -> ControlHttpClient:
    """Return Flower's Control API client for ``address``, set up as ``flwr`` sets it up.

    Raises
    ------
    ControlApiError
        If the CA file cannot be read or holds no certificate.
    """
    verify: ssl.SSLContext | bool = not insecure  # as ProtobufClient.from_server_address
    if not insecure and root_certificates is not None:
        try:
            ca = root_certificates.read_bytes().decode("ascii", "replace")
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            verify.load_verify_locations(cadata=ca)
        except OSError as err:
            raise ControlApiError(f"cannot read the CA certificate {root_certificates}: "
                                  f"{err.strerror or err}") from None
    return ControlHttpClient(
        f"{'http' if insecure else 'https'}://{address}", verify=verify, timeout=timeout,
        interceptors=[CliClientHttpInterceptor(),
                      RuntimeVersionHttpInterceptor(component_name="flwr CLI"),
                      CliAccountAuthHttpInterceptor(NoOpCliAuthPlugin(), _no_refresh)])


class ControlSession:
    """Node calls to one SuperLink's Control API over one connection; close it after."""

    def __init__(self, client: ControlHttpClient, address: str) -> None:
        """Use ``client`` (see :func:`http_client`) to reach ``address``."""
        self.client = client
        self.address = address

    @classmethod
    def open(cls, address: str, insecure: bool = True,
             root_certificates: Path | None = None, timeout: float = 60.0
             ) -> ControlSession:
        """Return a session with the SuperLink at ``address``."""
        return cls(http_client(address, insecure, root_certificates, timeout), address)

    def __enter__(self) -> ControlSession:
        """Return the session."""
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Close the connection."""
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.client.close()

    def register(self, public_key: bytes, name: str | None = None) -> int:
        """Register ``public_key`` (PEM, see ``nodekeys``); return its node ID.

        Raises
        ------
        KeyInUse
            If the key is registered already.
        ControlApiError
            If the SuperLink refuses the key or cannot be reached.
        """
        request = RegisterNodeRequest(public_key=public_key, name=name or None)
        node_id = int(self._call("register", self.client.RegisterNode, request).node_id)
        if not node_id:
            raise ControlApiError(f"{self.address} registered no node (node ID 0)")
        return node_id

    def unregister(self, node_id: int) -> None:
        """Unregister ``node_id``: it is refused at its next heartbeat."""
        self._call("unregister", self.client.UnregisterNode,
                   UnregisterNodeRequest(node_id=node_id))

    def nodes(self) -> list[dict[str, Any]]:
        """Return the registered nodes, oldest first, as ``flwr supernode list`` does."""
        answer = self._call("list nodes", self.client.ListNodes, ListNodesRequest())
        return node_rows(list(answer.nodes_info), answer.now)

    def _call(self, what: str, method: Any, request: Any) -> Any:
        """Send one request; turn every failure into one :class:`ControlApiError`."""
        try:
            return method(request)
        except httpx.HTTPStatusError as err:
            raise _refusal(what, self.address, err.response) from None
        except httpx.RequestError as err:
            reason = str(err).strip().splitlines()[-1:] or [type(err).__name__]
            raise ControlApiError(f"cannot {what}: the SuperLink at {self.address} does "
                                  f"not answer ({reason[0]})") from None
        except ValueError as err:  # a body that is not the protobuf answer
            raise ControlApiError(f"cannot {what}: {self.address} answered something "
                                  f"that is not a Control API reply ({err})") from None
        except SystemExit as err:  # flwr_exit: SuperLink and client versions differ
            raise ControlApiError(f"cannot {what}: {self.address} runs an incompatible "
                                  f"Flower version (exit {err.code}); install "
                                  "flwr==1.42.0 on both") from None


def _refusal(what: str, address: str, response: httpx.Response) -> ControlApiError:
    """Return the one-line error for a Control API answer that is not 2xx."""
    flower = FlowerError.from_json(response.text)
    if flower is not None:
        detail = " ".join([f"[code: {flower.code}]", flower.message,
                           *([flower.public_details] if flower.public_details else [])])
        kind = KeyInUse if flower.code == ApiErrorCode.PUBLIC_KEY_ALREADY_IN_USE \
            else ControlApiError
        return kind(f"cannot {what}: {address} refused: {detail}", flower.code)
    if response.status_code == httpx.codes.FORBIDDEN:
        return ControlApiError(f"cannot {what}: {address} refused (403): {GATEWAY_HINT}")
    return ControlApiError(f"cannot {what}: {address} answered HTTP "
                           f"{response.status_code} {response.reason_phrase}")


def _when(value: str) -> str:
    """Return a node timestamp as ``flwr supernode list --format json`` shows it."""
    if not value:
        return "N/A"
    moment = datetime.datetime.fromisoformat(value).astimezone(datetime.UTC)
    return isoformat8601_utc(moment).replace("T", " ")


def node_rows(infos: list[NodeInfo], now: str) -> list[dict[str, Any]]:
    """Return ``infos`` as the rows of ``flwr supernode list --format json``, with names."""
    rows = []
    for info in sorted(infos, key=lambda n: datetime.datetime.fromisoformat(
            n.registered_at)):
        elapsed = 0.0
        if info.last_activated_at and now:
            elapsed = (datetime.datetime.fromisoformat(now)
                       - datetime.datetime.fromisoformat(info.last_activated_at)
                       ).total_seconds()
        rows.append({"node-id": str(info.node_id), "owner-name": info.owner_name,
                     "name": info.name, "status": info.status,
                     "created-at": _when(info.registered_at),
                     "online-at": _when(info.last_activated_at),
                     "online-elapsed": elapsed,
                     "offline-at": _when(info.last_deactivated_at),
                     "deleted-at": _when(info.unregistered_at)})
    return rows
