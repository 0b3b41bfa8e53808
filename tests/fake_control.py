"""A stand-in for the SuperLink's Control API behind Flower's own HTTP client.

``FakeControlApi.install(monkeypatch)`` makes every ``httpx.Client`` the test creates
answer from this object (through ``httpx.MockTransport``): it decodes the protobuf
requests Flower's ``ControlHttpClient`` sends, keeps registered nodes as the
SuperLink does (one node per public key, keys checked), and answers errors the way
the SuperLink does (HTTP 412 with Flower's error JSON). It records each request's
path and headers and the TLS settings each client was made with.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    ListNodesResponse,
    RegisterNodeRequest,
    RegisterNodeResponse,
    UnregisterNodeRequest,
    UnregisterNodeResponse,
)
from flwr.proto.node_pb2 import NodeInfo
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, uses_nist_ec_curve

REAL_CLIENT = httpx.Client


@dataclass
class FakeControlApi:
    """What the fake SuperLink knows and what it was asked."""

    nodes: dict[int, NodeInfo] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    refuse_after: int | None = None
    """Drop the connection from this many requests on (a SuperLink that went away)."""
    status: int | None = None
    """Answer every request with this HTTP status and no Flower error (e.g. 403)."""

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeControlApi:
        """Route every new ``httpx.Client`` to this fake; return it."""
        def client(*args: Any, **kwargs: Any) -> httpx.Client:
            self.clients.append(dict(kwargs))
            kwargs.pop("verify", None)
            return REAL_CLIENT(*args, transport=httpx.MockTransport(self.handle),
                               **kwargs)
        monkeypatch.setattr(httpx, "Client", client)
        return self

    def paths(self) -> list[str]:
        """Return the path of every request, in order."""
        return [request.url.path for request in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request like the SuperLink's Control API."""
        self.requests.append(request)
        if self.refuse_after is not None and len(self.requests) > self.refuse_after:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.status is not None:
            return httpx.Response(self.status, text="<html>nope</html>")
        path = request.url.path
        if path == "/v1/control/register-node":
            return self._register(RegisterNodeRequest.FromString(request.content))
        if path == "/v1/control/list-nodes":
            ListNodesRequest.FromString(request.content)
            return _ok(ListNodesResponse(nodes_info=list(self.nodes.values()),
                                         now=_now()))
        if path == "/v1/control/unregister-node":
            node_id = UnregisterNodeRequest.FromString(request.content).node_id
            if node_id not in self.nodes:
                return _error(24, "Node not found.")
            self.nodes[node_id].status = "unregistered"
            self.nodes[node_id].unregistered_at = _now()
            return _ok(UnregisterNodeResponse())
        return httpx.Response(404)

    def _register(self, req: RegisterNodeRequest) -> httpx.Response:
        try:
            if not uses_nist_ec_curve(bytes_to_public_key(req.public_key)):
                raise ValueError("not NIST")
        except (ValueError, AttributeError):
            return _error(22, "The provided public key is not valid.")
        if any(n.public_key == req.public_key for n in self.nodes.values()):
            return _error(23, "Public key already in use.")
        node_id = 1000 + len(self.nodes) + 1
        self.nodes[node_id] = NodeInfo(node_id=node_id, public_key=req.public_key,
                                       name=req.name, status="registered",
                                       owner_name="<none>", registered_at=_now())
        return _ok(RegisterNodeResponse(node_id=node_id))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _ok(message: Any) -> httpx.Response:
    return httpx.Response(200, content=message.SerializeToString(),
                          headers={"content-type": "application/protobuf"})


def _error(code: int, detail: str) -> httpx.Response:
    return httpx.Response(412, text=json.dumps({"code": code, "detail": detail}),
                          headers={"content-type": "application/json"})
