"""Attack the fedfleet gateway with raw bytes from a container on the edge network.

Run inside a container on the fleet network (``python gateway_probe.py MODE ...``);
prints one JSON document on stdout. Standard library only, plus ``cryptography`` (a
Flower dependency, present in the client image) for the node keys in smuggled requests.

Modes:
  attacks                  every case in CASES, one connection each, one after another
  burst N                  N GET /health over keep-alive connections, as fast as it can
  flood N HOLD             N idle TCP connections; which the gateway cuts, and when

``test_gateway.py`` imports CASES for the expectations and matches each case's time
window with the SuperLink's access log to see what reached it.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOST = "gateway"
PORT = 8000
CA = "/run/secrets/fedfleet/ca.crt"
MiB = 1 << 20

# Status codes that mean "refused by the gateway" (nginx's own and ours).
REFUSED = frozenset({400, 403, 405, 408, 411, 413, 414, 415, 429, 431, 494, 501, 503, 505})


def register_node_body(name: str) -> bytes:
    """Return a valid Control API RegisterNodeRequest for a fresh ECDSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return _field(1, pem) + _field(3, name.encode())  # public_key = 1, name = 3


def _field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def request(line: str | bytes, headers: list[str] | None = None, body: bytes = b"",
            host: str | None = "gateway:8000", length: bool = True) -> bytes:
    """Build one raw HTTP request; ``line`` is written as is."""
    raw = line.encode("latin-1") if isinstance(line, str) else line
    head = [f"Host: {host}"] if host is not None else []
    head += headers or []
    if length and (body or raw.startswith(b"POST")):
        head.append(f"Content-Length: {len(body)}")
    return raw + b"\r\n" + "".join(h + "\r\n" for h in head).encode("latin-1") + b"\r\n" \
        + body


PB = "Content-Type: application/protobuf"


def pct(data: bytes, upper: bool = False, keep: bytes = b"/-") -> str:
    """Percent-encode every byte outside [A-Za-z0-9] and ``keep``."""
    out = []
    for byte in data:
        char = chr(byte)
        if char.isascii() and (char.isalnum() or byte in keep):
            out.append(char)
        else:
            out.append(f"%{byte:02X}" if upper else f"%{byte:02x}")
    return "".join(out)


def split_tail(name: str) -> bytes:
    """Return what a decoded path must hold to turn one upstream request into two.

    The first request ends after its (empty) body; the second is a Control API
    RegisterNode whose headers end in X-Pad, so whatever the proxy appends to the
    request line (" HTTP/1.x", its own headers, Content-Length) completes it and the
    client's real body, a RegisterNodeRequest, becomes its body.
    """
    return (b" HTTP/1.1\r\nHost: server\r\nContent-Type: application/protobuf\r\n"
            b"Content-Length: 0\r\n\r\nPOST /v1/control/register-node HTTP/1.1\r\n"
            b"Content-Type: application/protobuf\r\nX-Smuggled: " + name.encode()
            + b"\r\nX-Pad:")


def split_request(name: str, path: str) -> bytes:
    """Build a request whose path smuggles a RegisterNode (see ``split_tail``)."""
    return request(f"POST {path} HTTP/1.1", [], register_node_body(name))


def _double(encoded: str) -> str:
    return encoded.replace("%", "%25")


@dataclass
class Case:
    """One attack: the bytes sent and what the fixed gateway must answer."""

    name: str
    group: str
    expect: frozenset[int]  # acceptable status codes of the first response
    build: Callable[[str], bytes | list[tuple[float, bytes]]]  # name -> bytes or pieces
    reaches: tuple[str, ...] = ()  # requests the SuperLink may see, e.g. "GET /health"
    tls: bool = True
    responses: int = 1  # responses to wait for
    timeout: float = 6.0
    closed_within: float | None = None  # the gateway must close by then (seconds)
    alpn: list[str] | None = None
    parallel: bool = False  # slow cases run side by side
    note: str = ""


def _c(name: str, group: str, expect: set[int] | int, build: Callable[[str], Any],
       **kw: Any) -> Case:
    codes = {expect} if isinstance(expect, int) else expect
    return Case(name, group, frozenset(codes), build, **kw)


FLEET = "/v1/fleet/get-run"


def _splitting(encode: Callable[[bytes], str]) -> Callable[[str], bytes]:
    return lambda name: split_request(name, FLEET + encode(split_tail(name)))


def _in_path(raw: bytes) -> Callable[[str], bytes]:
    return lambda name: request(b"POST " + FLEET.encode() + raw + b" HTTP/1.1", [PB], b"")


def _register_at(path: str) -> Callable[[str], bytes]:
    return lambda name: request(f"POST {path} HTTP/1.1", [PB], register_node_body(name))


def _method(method: str) -> Callable[[str], bytes]:
    return lambda name: request(f"{method} {FLEET} HTTP/1.1", [PB])
BAD = {400}
FORBIDDEN = {403}
GET_HEALTH = request("GET /health HTTP/1.1")

CASES: list[Case] = [
    # Controls: what must still pass (with no node key the SuperLink refuses, but sees it).
    _c("control: GET /health", "control", 200, lambda n: GET_HEALTH,
       reaches=("GET /health",)),
    _c("control: HEAD /health", "control", 200,
       lambda n: request("HEAD /health HTTP/1.1"), reaches=("HEAD /health",)),
    _c("control: POST /v1/fleet/get-run, protobuf, no node key", "control",
       set(range(200, 500)) - {403, 413, 429},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB], b"\x10\x01"),
       reaches=(f"POST {FLEET}",)),
    _c("control: push-object of one full 5 MiB Flower chunk + 1 KiB", "body",
       set(range(200, 500)) - {403, 413, 429},
       lambda n: request("POST /v1/fleet/push-object HTTP/1.1", [PB],
                         b"\x1a" + _varint(5 * MiB + 1024) + b"\0" * (5 * MiB + 1024)),
       reaches=("POST /v1/fleet/push-object",), timeout=30.0),
    # The Control and Runtime APIs, asked plainly.
    _c("Control API register-node", "route", FORBIDDEN,
       lambda n: request("POST /v1/control/register-node HTTP/1.1", [PB],
                         register_node_body(n))),
    _c("Control API start-run", "route", FORBIDDEN,
       lambda n: request("POST /v1/control/start-run HTTP/1.1", [PB], b"")),
    _c("Runtime API acquire-task", "route", FORBIDDEN,
       lambda n: request("POST /v1/runtime/acquire-task HTTP/1.1", [PB], b"")),
    _c("GET /docs", "route", FORBIDDEN, lambda n: request("GET /docs HTTP/1.1")),
    _c("GET /openapi.json", "route", BAD | FORBIDDEN,
       lambda n: request("GET /openapi.json HTTP/1.1")),
    _c("unknown Fleet route", "route", FORBIDDEN,
       lambda n: request("POST /v1/fleet/no-such-route HTTP/1.1", [PB], b"")),
    _c("Fleet route with trailing slash", "route", BAD | FORBIDDEN,
       lambda n: request(f"POST {FLEET}/ HTTP/1.1", [PB], b"")),
    _c("Fleet route in upper case", "route", BAD | FORBIDDEN,
       lambda n: request("POST /V1/FLEET/GET-RUN HTTP/1.1", [PB], b"")),
    _c("Fleet route with a query string", "route", BAD,
       lambda n: request(f"POST {FLEET}?run_id=1 HTTP/1.1", [PB], b"")),
    _c("Fleet route with an empty query", "route", BAD,
       lambda n: request(f"POST {FLEET}? HTTP/1.1", [PB], b"")),
    _c("Fleet route with ;params", "route", BAD,
       lambda n: request(f"POST {FLEET};x=1 HTTP/1.1", [PB], b"")),
    _c("Fleet route with #fragment", "route", BAD,
       lambda n: request(f"POST {FLEET}#x HTTP/1.1", [PB], b"")),
    _c("double slash before the Control API", "route", BAD,
       lambda n: request("POST //v1/control/register-node HTTP/1.1", [PB],
                         register_node_body(n))),
    _c("merged slashes in a Fleet route", "route", BAD,
       lambda n: request("POST /v1//fleet/get-run HTTP/1.1", [PB], b"")),
    # Request splitting: CR/LF in the path, every way it can be written.
    *[_c(f"request splitting, {label}", "splitting", BAD,
         _splitting(enc))
      for label, enc in [
          ("CR LF as %0d%0a", lambda t: pct(t)),
          ("CR LF as %0D%0A", lambda t: pct(t, upper=True)),
          ("CR LF as mixed-case %0d%0A", lambda t: pct(t).replace("%0a", "%0A")),
          ("bare LF as %0a", lambda t: pct(t.replace(b"\r\n", b"\n"))),
          ("bare CR as %0d", lambda t: pct(t.replace(b"\r\n", b"\r"))),
          ("CR LF double-encoded %250d%250a", lambda t: _double(pct(t))),
          ("CR LF as overlong UTF-8 %c0%8d%c0%8a",
           lambda t: pct(t).replace("%0d", "%c0%8d").replace("%0a", "%c0%8a")),
          ("CR LF as U+560A U+560D (%e5%98%8a%e5%98%8d)",
           lambda t: pct(t).replace("%0d%0a", "%e5%98%8d%e5%98%8a")),
          ("CR LF as %u000d%u000a", lambda t: pct(t).replace("%0d", "%u000d")
           .replace("%0a", "%u000a")),
      ]],
    _c("request splitting, raw CR LF in the path", "splitting", BAD | FORBIDDEN | {0},
       lambda n: request(b"POST " + FLEET.encode() + b"\r\nPOST /v1/control/register-node"
                         b" HTTP/1.1", [PB], register_node_body(n)), responses=2),
    _c("request splitting, raw bare CR in the path", "splitting", BAD,
       lambda n: request(b"POST " + FLEET.encode() + b"\rX: y HTTP/1.1", [PB], b"")),
    _c("request splitting, raw bare LF in the path", "splitting", BAD | {0},
       lambda n: request(b"POST " + FLEET.encode() + b"\nX: y HTTP/1.1", [PB], b"")),
    _c("request splitting, in the Host header (%0d%0a)", "splitting", BAD | {200},
       lambda n: request("GET /health HTTP/1.1",
                         host="gateway%0d%0aX-Injected:%20yes"),
       reaches=("GET /health",)),
    # Other control bytes and NUL.
    *[_c(f"control byte {label} in the path", "control-bytes", BAD,
         _in_path(raw))
      for label, raw in [("%00", b"%00"), ("raw NUL", b"\x00"), ("%09 (tab)", b"%09"),
                         ("raw tab", b"\tx"), ("%0b", b"%0b"), ("%0c", b"%0c"),
                         ("%7f", b"%7f"), ("raw 0x01", b"\x01"), ("raw 0x7f", b"\x7f"),
                         ("raw 0xff", b"\xff"), ("%ff", b"%ff"), ("raw space", b" x")]],
    _c("NUL in a header value", "control-bytes", BAD | {200},
       lambda n: request("GET /health HTTP/1.1", ["X-A: a\x00b"]),
       reaches=("GET /health",)),
    # Encoded dot segments and separators that normalize into the Control API.
    *[_c(f"dot segment {path}", "dot-segments", BAD,
         _register_at(path))
      for path in ["/v1/fleet/../control/register-node",
                   "/v1/fleet/%2e%2e/control/register-node",
                   "/v1/fleet/%2E%2E%2Fcontrol%2Fregister-node",
                   "/v1/fleet/..%2fcontrol/register-node",
                   "/v1/fleet/.%2e/control/register-node",
                   "/v1/fleet/%252e%252e/control/register-node",
                   "/v1/fleet/..%5ccontrol%5cregister-node",
                   "/v1/fleet/..\\control\\register-node",
                   "/v1/fleet/%5c..%5c..%5cv1/control/register-node",
                   "/v1/fleet/./get-run",
                   "/v1/fleet/get-run/..",
                   "/v1/fleet/%c0%ae%c0%ae/control/register-node"]],
    # Absolute-form request targets and Host games.
    _c("absolute-form URI to the Control API", "absolute-form", BAD,
       lambda n: request("POST https://server:8000/v1/control/register-node HTTP/1.1",
                         [PB], register_node_body(n), host="server:8000")),
    _c("absolute-form URI to a Fleet route", "absolute-form", BAD,
       lambda n: request(f"POST https://server:8000{FLEET} HTTP/1.1", [PB], b"")),
    _c("absolute-form http:// URI", "absolute-form", BAD,
       lambda n: request("GET http://server:8000/health HTTP/1.1")),
    _c("CONNECT server:8000", "absolute-form", BAD | {405},
       lambda n: request("CONNECT server:8000 HTTP/1.1", host="server:8000")),
    _c("OPTIONS *", "absolute-form", BAD | {405},
       lambda n: request("OPTIONS * HTTP/1.1")),
    _c("Host: server:8000 (passes; the upstream Host is fixed)", "host", 200,
       lambda n: request("GET /health HTTP/1.1", host="server:8000"),
       reaches=("GET /health",)),
    _c("duplicate Host", "host", BAD,
       lambda n: request("GET /health HTTP/1.1", ["Host: server:8000"])),
    _c("missing Host", "host", BAD, lambda n: request("GET /health HTTP/1.1", host=None)),
    _c("Host with a space", "host", BAD,
       lambda n: request("GET /health HTTP/1.1", host="server 8000")),
    # Protocol versions.
    _c("HTTP/1.0", "protocol", BAD, lambda n: request("GET /health HTTP/1.0")),
    _c("HTTP/1.0 to a Fleet route", "protocol", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.0", [PB], b"")),
    _c("HTTP/0.9 (no version)", "protocol", {0, 400},
       lambda n: b"GET /health\r\n"),
    _c("HTTP/1.2", "protocol", BAD | {505}, lambda n: request("GET /health HTTP/1.2")),
    _c("HTTP/2.0 in the request line", "protocol", BAD | {505},
       lambda n: request("GET /health HTTP/2.0")),
    _c("HTTP/2 connection preface", "protocol", BAD | {0},
       lambda n: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    _c("HTTP/2 preface after offering ALPN h2", "protocol", BAD | {0},
       lambda n: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", alpn=["h2"]),
    # Framing: smuggling through Content-Length and Transfer-Encoding.
    _c("TE.CL: chunked and Content-Length", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         [PB, "Content-Length: 4", "Transfer-Encoding: chunked"],
                         b"0\r\n\r\n" + request("POST /v1/control/register-node HTTP/1.1",
                                                [PB], register_node_body(n)),
                         length=False)),
    _c("CL.CL: two different Content-Lengths", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         [PB, "Content-Length: 0", "Content-Length: 40"], b"x" * 40,
                         length=False)),
    _c("CL.CL: two equal Content-Lengths", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         [PB, "Content-Length: 2", "Content-Length: 2"], b"\x10\x01",
                         length=False)),
    _c("Content-Length: 2, 2", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Content-Length: 2, 2"],
                         b"\x10\x01", length=False)),
    _c("Content-Length: +2", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Content-Length: +2"],
                         b"\x10\x01", length=False)),
    _c("Transfer-Encoding twice", "framing", BAD | {501},
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         [PB, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                         b"0\r\n\r\n", length=False)),
    _c("Transfer-Encoding: gzip, chunked", "framing", BAD | {501},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: gzip, chunked"],
                         b"0\r\n\r\n", length=False)),
    _c("Transfer-Encoding: xchunked", "framing", BAD | {501},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: xchunked"],
                         b"0\r\n\r\n", length=False)),
    _c("Transfer-Encoding with a space before the colon", "framing", BAD | {411, 501},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding : chunked"],
                         b"0\r\n\r\n" + request("POST /v1/control/register-node HTTP/1.1",
                                                [PB], register_node_body(n)),
                         length=False), responses=2),
    _c("Transfer-Encoding on HTTP/1.0", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.0", [PB, "Transfer-Encoding: chunked"],
                         b"0\r\n\r\n", length=False)),
    _c("chunk size not hex", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: chunked"],
                         b"zz\r\nabc\r\n0\r\n\r\n", length=False)),
    _c("chunk size overflowing 64 bits", "framing", BAD | {413},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: chunked"],
                         b"1" + b"0" * 17 + b"\r\nabc\r\n0\r\n\r\n", length=False)),
    _c("negative chunk size", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: chunked"],
                         b"-2\r\nab\r\n0\r\n\r\n", length=False)),
    _c("chunk size 0x-prefixed", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: chunked"],
                         b"0x2\r\nab\r\n0\r\n\r\n", length=False)),
    _c("chunk data longer than its size", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Transfer-Encoding: chunked"],
                         b"2\r\n\x10\x01EXTRA\r\n0\r\n\r\n", length=False)),
    _c("obsolete line folding", "framing", BAD | {200},
       lambda n: request("GET /health HTTP/1.1", ["X-A: a", " folded: yes"]),
       reaches=("GET /health",)),
    _c("folded Content-Length", "framing", BAD,
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB, "Content-Length:", " 2"],
                         b"\x10\x01", length=False)),
    # Sizes.
    _c("one 5 KiB header", "size", BAD | {431, 494},
       lambda n: request("GET /health HTTP/1.1", ["X-Big: " + "a" * 5 * 1024])),
    _c("20 KiB of headers (10 x 2 KiB)", "size", BAD | {431, 494},
       lambda n: request("GET /health HTTP/1.1",
                         [f"X-Big-{i}: " + "a" * 2048 for i in range(10)])),
    _c("a 9 KiB request line", "size", BAD | {414},
       lambda n: request("GET /health" + "a" * 9 * 1024 + " HTTP/1.1")),
    _c("push-object body of 7 MiB", "size", {413},
       lambda n: request("POST /v1/fleet/push-object HTTP/1.1", [PB], b"\0" * 7 * MiB),
       timeout=30.0),
    _c("push-object announcing 2 GiB", "size", {413},
       lambda n: request("POST /v1/fleet/push-object HTTP/1.1",
                         [PB, f"Content-Length: {2 << 30}"], b"", length=False)),
    _c("get-run body of 2 MiB (only push-object carries array chunks)", "size", {413},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB], b"\0" * 2 * MiB),
       timeout=30.0),
    _c("chunked push-object of 7 MiB", "size", {413},
       lambda n: request("POST /v1/fleet/push-object HTTP/1.1",
                         [PB, "Transfer-Encoding: chunked"],
                         f"{7 * MiB:x}\r\n".encode() + b"\0" * 7 * MiB + b"\r\n0\r\n\r\n",
                         length=False), timeout=30.0),
    # Methods and content types.
    *[_c(f"{method} on a Fleet route", "method", FORBIDDEN | {405},
         _method(method))
      for method in ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]],
    _c("lower-case post", "method", BAD,
       lambda n: request(f"post {FLEET} HTTP/1.1", [PB], b"\x10\x01", length=False)),
    _c("mixed-case Post", "method", BAD,
       lambda n: request(f"Post {FLEET} HTTP/1.1", [PB, "Content-Length: 2"], b"\x10\x01",
                         length=False)),
    _c("POST /health", "method", FORBIDDEN | {405},
       lambda n: request("POST /health HTTP/1.1", [PB], b"")),
    _c("Content-Type: application/json", "content-type", BAD | {415},
       lambda n: request(f"POST {FLEET} HTTP/1.1", ["Content-Type: application/json"],
                         b"{}")),
    _c("no Content-Type", "content-type", BAD | {415},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [], b"\x10\x01")),
    _c("Content-Type: application/protobuf; x=y", "content-type", BAD | {415},
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         ["Content-Type: application/protobuf; x=y"], b"\x10\x01")),
    _c("Content-Type: Application/Protobuf", "content-type", BAD | {415},
       lambda n: request(f"POST {FLEET} HTTP/1.1", ["Content-Type: Application/Protobuf"],
                         b"\x10\x01")),
    _c("two Content-Types (the first is checked and passed on alone)", "content-type",
       BAD | {401},
       lambda n: request(f"POST {FLEET} HTTP/1.1",
                         [PB, "Content-Type: application/json"], b"\x10\x01"),
       reaches=(f"POST {FLEET}",)),
    _c("GET /health with a body", "content-type", BAD,
       lambda n: request("GET /health HTTP/1.1", [], b"hello")),
    _c("GET /health with a chunked body holding a request", "content-type", BAD,
       lambda n: request("GET /health HTTP/1.1", ["Transfer-Encoding: chunked"],
                         b"5\r\nhello\r\n0\r\n\r\n", length=False)),
    # Pipelining a forbidden request behind a legal one.
    _c("pipelined: GET /health, then Control API register-node", "pipelining", 200,
       lambda n: GET_HEALTH + request("POST /v1/control/register-node HTTP/1.1", [PB],
                                      register_node_body(n)),
       reaches=("GET /health",), responses=2),
    _c("pipelined: Fleet route, then %0d%0a-split request", "pipelining",
       set(range(200, 500)) - {403, 413, 429},
       lambda n: request(f"POST {FLEET} HTTP/1.1", [PB], b"\x10\x01")
       + split_request(n, FLEET + pct(split_tail(n))),
       reaches=(f"POST {FLEET}",), responses=2),
    # Plain TCP to the TLS port.
    _c("plain HTTP GET /health", "plain-tcp", BAD, lambda n: GET_HEALTH, tls=False),
    _c("plain HTTP Control API register-node", "plain-tcp", BAD,
       lambda n: request("POST /v1/control/register-node HTTP/1.1", [PB],
                         register_node_body(n)), tls=False),
    _c("plain HTTP request splitting", "plain-tcp", BAD,
       lambda n: split_request(n, FLEET + pct(split_tail(n))), tls=False),
    # Slow clients (run side by side).
    _c("slowloris: a header dribbled one line per second", "slow", {0, 400, 408},
       lambda n: [(0.0, b"GET /health HTTP/1.1\r\nHost: gateway\r\n")]
       + [(1.0, f"X-{i}: {i}\r\n".encode()) for i in range(40)],
       timeout=40.0, closed_within=15.0, parallel=True),
    _c("slow body: announced, never sent", "slow", {0, 400, 408},
       lambda n: request("POST /v1/fleet/push-object HTTP/1.1",
                         [PB, "Content-Length: 1000"], b"", length=False),
       timeout=40.0, closed_within=15.0, parallel=True),
    _c("slow body: one byte every 3 s (the SuperLink must not see it)", "slow",
       {0, 400, 408},
       lambda n: [(0.0, request("POST /v1/fleet/push-object HTTP/1.1",
                                [PB, "Content-Length: 1000"], b"", length=False))]
       + [(3.0, b"\0") for _ in range(13)],
       timeout=40.0, parallel=True,
       note="nginx has no total body deadline: the connection stays while bytes come "
            "at least every 10 s; the body is buffered, so the SuperLink sees nothing"),
    _c("idle TLS connection, no request", "slow", {0, 400, 408},
       lambda n: [(0.0, b"")], timeout=40.0, closed_within=15.0, parallel=True),
]


@dataclass
class Result:
    name: str
    start: float
    end: float = 0.0
    statuses: list[int] = field(default_factory=list)
    closed: bool = False
    closed_after: float | None = None
    first_line: str = ""
    alpn: str | None = None
    error: str = ""


STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def _connect(tls: bool, alpn: list[str] | None, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, PORT), timeout=timeout)
    if not tls:
        return sock
    context = ssl.create_default_context(cafile=CA)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context.wrap_socket(sock, server_hostname=HOST)


def parse_responses(data: bytes) -> tuple[list[int], int]:
    """Return the status of each response in ``data`` and how many are complete.

    Responses follow each other directly (a body need not end in a newline), so they
    are walked one after another by Content-Length. HTTP/0.9 answers have no status.
    """
    statuses, complete, pos = [], 0, 0
    while match := STATUS.match(data, pos):
        statuses.append(int(match.group(1)))
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        length = re.search(rb"\r\ncontent-length: *(\d+)", data[pos:end].lower())
        pos = end + 4 + (int(length.group(1)) if length else 0)
        if len(data) < pos:
            break
        complete += 1
    return statuses, complete


class _Connection:
    """One connection to the gateway; keeps what it answered and whether it closed."""

    def __init__(self, case: Case) -> None:
        self.sock = _connect(case.tls, case.alpn, 10.0)
        self.alpn = self.sock.selected_alpn_protocol() if case.tls else None  # type: ignore[union-attr]
        self.data = b""
        self.closed = False
        self.error = ""

    def read(self, wait: float) -> bool:
        """Read what arrives within ``wait`` seconds; return True if anything did."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError as err:  # reset
            self.error = self.error or f"recv: {err}"
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.data += chunk
        return True

    def send(self, piece: bytes) -> bool:
        """Send ``piece``; return False if the gateway has closed the connection."""
        try:
            self.sock.sendall(piece)
        except OSError as err:
            self.error = f"send: {err}"
            return False
        while self.read(0.01):  # collect an early answer, notice a close
            pass
        return not self.closed


def run_case(case: Case) -> Result:
    """Send one case on its own connection; read until closed, complete or timed out."""
    result = Result(case.name, time.time())
    started = time.monotonic()
    conn = None
    try:
        payload = case.build(case.name.replace(" ", "-")[:60])
        pieces = payload if isinstance(payload, list) else [(0.0, payload)]
        conn = _Connection(case)
        result.alpn = conn.alpn
        for delay, piece in pieces:
            if delay and not _wait_open(conn, delay):
                break
            if piece and not conn.send(piece):
                break
        quiet_since = time.monotonic()
        while not conn.closed and time.monotonic() < started + case.timeout:
            if conn.read(0.2):
                quiet_since = time.monotonic()
            elif parse_responses(conn.data)[1] >= case.responses or (
                    conn.data and time.monotonic() - quiet_since > 1.5):
                break
    except OSError as err:
        result.error = f"{type(err).__name__}: {err}"
        result.closed = True
    data = b""
    if conn is not None:
        conn.sock.close()
        data, result.closed = conn.data, conn.closed or result.closed
        result.error = result.error or conn.error
    if result.closed:
        result.closed_after = round(time.monotonic() - started, 2)
    result.statuses = parse_responses(data)[0]
    result.first_line = data[:120].decode("latin-1").split("\r\n")[0]
    result.end = time.time()
    return result


def _wait_open(conn: _Connection, seconds: float) -> bool:
    """Wait ``seconds`` reading; return False as soon as the gateway closes."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and not conn.closed:
        conn.read(max(0.01, min(0.2, until - time.monotonic())))
    return not conn.closed


def attacks() -> list[dict[str, Any]]:
    """Run every case; quick ones one at a time, slow ones side by side."""
    results: dict[str, Result] = {}
    for case in CASES:
        if not case.parallel:
            results[case.name] = run_case(case)
            time.sleep(0.2)
    slow = [case for case in CASES if case.parallel]
    threads = [threading.Thread(target=lambda c=case: results.__setitem__(c.name,
                                                                          run_case(c)))
               for case in slow]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [vars(results[case.name]) for case in CASES]


def burst(count: int) -> dict[str, Any]:
    """Send ``count`` GET /health as fast as possible, reconnecting when closed."""
    statuses: dict[int, int] = {}
    errors = 0
    start = time.time()
    sent = 0
    while sent < count:
        try:
            with _connect(True, None, 10.0) as sock:
                file = sock.makefile("rb")
                while sent < count:
                    sock.sendall(GET_HEALTH)
                    sent += 1
                    line = file.readline()
                    match = STATUS.match(line)
                    if match is None:
                        break
                    code = int(match.group(1))
                    statuses[code] = statuses.get(code, 0) + 1
                    length, close = 0, False
                    while (header := file.readline()) not in (b"\r\n", b""):
                        name, _, value = header.decode("latin-1").partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                        if name.lower() == "connection" and "close" in value.lower():
                            close = True
                    file.read(length)
                    if close:
                        break
        except OSError:
            errors += 1
            if errors > 50:
                break
    return {"start": start, "end": time.time(), "sent": sent, "errors": errors,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def flood(count: int, hold: float) -> dict[str, Any]:
    """Open ``count`` plain TCP connections at once; send nothing; watch them close."""
    start = time.monotonic()
    socks: list[socket.socket | None] = []
    failed = 0
    for _ in range(count):
        try:
            socks.append(socket.create_connection((HOST, PORT), timeout=5))
        except OSError:
            socks.append(None)
            failed += 1
    closed_at: dict[int, float] = {}
    while time.monotonic() - start < hold:
        for i, sock in enumerate(socks):
            if sock is None or i in closed_at:
                continue
            sock.settimeout(0.0)
            try:
                if sock.recv(1) == b"":
                    closed_at[i] = time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - start
        if len(closed_at) + failed == count:
            break
        time.sleep(0.1)
    for sock in socks:
        if sock is not None:
            sock.close()
    times = sorted(closed_at.values())
    return {"opened": count - failed, "failed": failed,
            "closed_within_1s": sum(t <= 1.0 for t in times),
            "closed": len(times), "open_at_end": count - failed - len(times),
            "last_closed_after": round(times[-1], 2) if times else None,
            "held": round(time.monotonic() - start, 2)}


def main(argv: list[str]) -> int:
    """Run the mode named in ``argv`` and print its JSON."""
    mode = argv[1] if len(argv) > 1 else "attacks"
    if mode == "attacks":
        out: Any = attacks()
    elif mode == "burst":
        out = burst(int(argv[2]))
    elif mode == "flood":
        out = flood(int(argv[2]), float(argv[3]))
    else:
        print(f"unknown mode {mode!r}: use attacks, burst N or flood N HOLD",
              file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
